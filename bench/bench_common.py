"""What the benchmark scripts share: where results go, how they are recorded, how a call is timed."""
import json
import os
import statistics
import time

import torch

# Every script writes <OUT>/<script name>.json.
OUT = os.environ.get("OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def device_name(device) -> str:
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


class Results(dict):
    """A benchmark's numbers, rewritten to OUT/<name>.json after every entry, so a run stopped at its time limit
    keeps what it had measured."""

    def __init__(self, name: str, **header):
        super().__init__(header)
        self.path = os.path.join(OUT, name + ".json")

    def log(self, key, value) -> None:
        self[key] = value
        print(f"{key}: {value}", flush=True)
        self.save()

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "w") as handle:
            json.dump(self, handle, indent=1)

    def print_final(self) -> None:
        print("RESULT", json.dumps(self), flush=True)


def median_seconds(fn, repeats: int, warmup: int = 1, digits: int = 4) -> float:
    """Median wall time of `fn()` over `repeats` calls after `warmup` untimed ones; queued CUDA work is waited for
    on both sides of each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), digits)


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
