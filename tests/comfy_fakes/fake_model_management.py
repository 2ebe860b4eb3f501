"""Fake of comfy.model_management: the interrupt flag and device queries the pack uses."""
import threading

import torch


class InterruptProcessingException(Exception):
    pass


interrupt_processing_mutex = threading.RLock()
interrupt_processing = False


def interrupt_current_processing(value=True):
    global interrupt_processing
    with interrupt_processing_mutex:
        interrupt_processing = value


def processing_interrupted():
    with interrupt_processing_mutex:
        return interrupt_processing


def throw_exception_if_processing_interrupted():
    global interrupt_processing
    with interrupt_processing_mutex:
        if interrupt_processing:
            interrupt_processing = False
            raise InterruptProcessingException()


def get_torch_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def soft_empty_cache(force=False):
    pass


def unload_all_models():
    pass
