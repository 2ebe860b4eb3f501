"""Fake of comfy.sample: the three functions the pack calls, with ComfyUI 0.3.64's signatures.

Semantics the tests rely on: the whole batch's noise comes from one CPU generator seeded with `seed` (so image i of
a batch is not the image of a batch of one with seed i), an all-zero latent with the wrong channel count is widened
to the model's latent channels, and `sample` runs the fake KSampler and returns the latent on the CPU.
"""
import torch

from . import fake_samplers


def prepare_noise(latent_image, seed, noise_inds=None):
    if noise_inds is not None:
        raise NotImplementedError("the fake draws whole-batch noise only; the pack never passes noise_inds")
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(tuple(latent_image.shape), generator=generator, dtype=latent_image.dtype)


def fix_empty_latent_channels(model, latent_image):
    channels = model.get_model_object("latent_format").latent_channels
    if latent_image.shape[1] == channels or latent_image.any():
        return latent_image
    return latent_image.new_zeros((latent_image.shape[0], channels, *latent_image.shape[2:]))


def sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise=1.0,
           disable_noise=False, start_step=None, last_step=None, force_full_denoise=False, noise_mask=None,
           sigmas=None, callback=None, disable_pbar=False, seed=None):
    ksampler = fake_samplers.KSampler(model, steps, model.load_device, sampler_name, scheduler, denoise)
    latent = ksampler.sample(noise, positive, negative, cfg, latent_image=latent_image, sigmas=sigmas,
                             callback=callback, seed=seed)
    return latent.cpu()
