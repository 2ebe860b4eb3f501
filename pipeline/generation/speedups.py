"""Faster Flux rendering in the diffusers backend: regional compilation (`--compile`) and fp8 weights (`--fp8`).

--compile  `transformer.compile_repeated_blocks(fullgraph=True)`: diffusers compiles ONE transformer block of each
           kind (Flux has two: 19 double-stream and 38 single-stream blocks) and reuses the compiled code for
           every repetition, so a compile costs two small graphs instead of the whole 12 B-parameter model.
           Inductor keeps what it built in a cache folder (`compile_cache_dir()`), so the next process compiles
           from the cache in seconds instead of tens of seconds.
--fp8      torchao float8: dynamic per-row scaled activations, per-row fp8 weights (Ada / Hopper GPUs and newer,
           compute capability 8.9+). Only with --compile: fp8 without it was slower than bf16 (measured).
           Images differ slightly from bf16 ones for the same seed (the weights are rounded to 8 bits).

A compile happens at the first call of each new shape, so the generator warms up before the search: one image at
the search's size and then a batch of two. torch compiles batch 1 as a constant; the second batch size makes it
compile the batch dimension as dynamic, after which batches of 3, 4, ... reuse that code. Another image size
compiles once more (the image token count becomes dynamic too), and then no more.

Nothing here imports torchao before --fp8 is asked for: it is an optional package.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import InvalidParameter

log = logging.getLogger(__name__)

COMPILE_CACHE_ENV = "PROMPTBEAM_COMPILE_CACHE"
WARMUP_BATCHES = (1, 2)          # the second size makes torch compile the batch dimension as dynamic
FP8_MIN_CAPABILITY = (8, 9)      # float8 matmuls (torch._scaled_mm): Ada Lovelace, Hopper, Blackwell

# torch minor version -> the torchao release built against it (torchao's own compatibility table, and the GPU
# machine: torchao 0.17.0 imports on torch 2.11, 0.18 fails there with
# "'Parameter' object has no attribute 'tensor_data_names'").
TORCHAO_FOR_TORCH = {(2, 8): "0.13.0", (2, 9): "0.15.0", (2, 10): "0.16.0", (2, 11): "0.17.0"}


def compile_cache_dir(explicit: Optional[str] = None) -> Path:
    """Where inductor's compiled kernels are kept: the flag, else $PROMPTBEAM_COMPILE_CACHE, else
    ~/.cache/promptbeam/compile."""
    chosen = explicit or os.environ.get(COMPILE_CACHE_ENV)
    if chosen:
        return Path(chosen).expanduser()
    return Path.home() / ".cache" / "promptbeam" / "compile"


def use_compile_cache(folder: Path) -> Path:
    """Point inductor (and the Triton kernels it builds) at `folder`. Raises OSError when it cannot be made."""
    import torch._inductor.config as inductor_config

    folder = Path(folder).expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{folder} is not writable")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)      # read by inductor at each compile, not at import
    inductor_config.fx_graph_cache = True                    # whole compiled graphs, reused by a new process
    return folder


@dataclass
class SpeedupState:
    """What --compile / --fp8 asked for and what happened, for describe() and the run record."""
    compile: bool = False
    fp8: bool = False
    cache_dir: Optional[str] = None
    status: str = "eager"             # eager | compiled | failed (fell back to eager)
    compile_s: float = 0.0            # warm-up seconds, summed over warm-ups
    warmed: list = field(default_factory=list)     # [width, height, batch] shapes compiled so far
    error: Optional[str] = None       # why the compile failed, when it did

    def describe(self) -> dict:
        """For the generator's describe() (the record's config): no seconds here, they go to timings.compile_s, so
        two identical runs keep identical configs."""
        return {"compile": self.compile, "fp8": self.fp8, "status": self.status, "cache_dir": self.cache_dir,
                "warmed": list(self.warmed), "error": self.error}


def compile_blocks(transformer) -> None:
    """Regional compilation: each repeated block class compiled once, reused for all its repetitions."""
    transformer.compile_repeated_blocks(fullgraph=True)


def undo_compile(transformer) -> None:
    """Back to eager after a failed compile: the blocks drop their compiled call, dynamo forgets its caches."""
    import torch

    for module in transformer.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None
    torch._dynamo.reset()


def is_compile_error(exc: BaseException) -> bool:
    """An error raised by torch.compile's machinery (tracing, inductor, the C++/Triton toolchain), not by the
    model's own arithmetic: eager can still render."""
    import torch

    if isinstance(exc, torch._dynamo.exc.TorchDynamoException):
        return True
    module = type(exc).__module__ or ""
    return module.startswith(("torch._dynamo", "torch._inductor", "triton"))


def compile_failure_line(exc: BaseException) -> str:
    """The one warning line a failed compile gives."""
    text = " ".join(str(exc).split())
    # BackendCompilerFailed repeats the backend name and a long help text; the first sentence is the cause.
    text = re.split(r"(?<=[.!?])\s|Set TORCH_LOGS", text)[0][:300]
    return (f"--compile failed ({type(exc).__name__}: {text}); rendering without compilation (eager), which is "
            "slower but gives the same images. Run `python -m pipeline doctor` to check torch and the compiler.")


# ---- fp8 ------------------------------------------------------------------------------------------------------------

def torchao_for(torch_version: str) -> Optional[str]:
    """The torchao version to install for this torch (None when this table does not know the torch)."""
    match = re.match(r"(\d+)\.(\d+)", torch_version)
    return TORCHAO_FOR_TORCH.get((int(match.group(1)), int(match.group(2)))) if match else None


def fp8_problem(device) -> Optional[str]:
    """Why --fp8 cannot run here (device, GPU, torchao), with the fix; None when it can."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return (f"needs an NVIDIA GPU with fp8 (compute capability {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]}+: "
                f"Ada, Hopper or newer); this run is on {device}: leave --fp8 out")
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        return (f"{torch.cuda.get_device_name(device)} (compute capability {capability[0]}.{capability[1]}) has no "
                f"fp8 matrix units (8.9+ needed: Ada, Hopper or newer): leave --fp8 out")
    return torchao_problem(torch.__version__)


def torchao_problem(torch_version: str) -> Optional[str]:
    """None when an importable torchao matching this torch is installed, else what is wrong and what to install."""
    from importlib import metadata

    wanted = torchao_for(torch_version)
    install = f"pip install torchao=={wanted}" if wanted else "pip install the torchao release built for this torch"
    try:
        installed = metadata.version("torchao")
    except metadata.PackageNotFoundError:
        return f"torchao is not installed (optional; needed for --fp8): {install}"
    if wanted and not installed.startswith(wanted.rsplit(".", 1)[0] + "."):
        return f"torchao {installed} does not match torch {torch_version}: {install}"
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow  # noqa: F401
    except Exception as exc:                     # a mismatched build fails in many ways at import
        return f"torchao {installed} does not load with torch {torch_version} ({type(exc).__name__}: {exc}): {install}"
    return None


def quantize_fp8(transformer) -> None:
    """Float8 weights (per row) and dynamically scaled float8 activations for every Linear of the transformer."""
    import torch
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    # LoRA adapters stay in bf16: their small ranks do not suit fp8 matmuls, and set_adapters keeps working.
    quantize_(transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
              filter_fn=lambda module, name: isinstance(module, torch.nn.Linear) and "lora_" not in name)


def check_fp8(device, compile_: bool) -> None:
    """Raise InvalidParameter("fp8", ...) when --fp8 cannot run here."""
    if not compile_:
        raise InvalidParameter("fp8", "needs --compile too (fp8 without compilation is slower than bf16)")
    problem = fp8_problem(device)
    if problem:
        raise InvalidParameter("fp8", problem)
