"""Loading a Flux pipeline for the diffusers backend: the device and dtype to use, a diffusers folder, hub id or
single transformer file, and the true-CFG scale check. Nothing here renders (generation/diffusers_flux.py does)."""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Optional

import torch

from ..config import DEFAULT_FLUX_MODEL
from ..errors import InvalidParameter, ModelNotFound
from .sources import resolve_flux


def pick_device(device: Optional[str] = None) -> torch.device:
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise InvalidParameter("device", f"{device!r} is not a torch device (try cuda, cuda:1, mps or cpu)") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameter("device", f"{device!r} asked for, but CUDA is not available to torch "
                                         f"{torch.__version__} here; use device='cpu' or fix the CUDA install")
    return chosen


_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
           "fp32": torch.float32, "float32": torch.float32}


def pick_dtype(dtype, device: torch.device) -> torch.dtype:
    """bf16 on accelerators (Flux's training dtype; fp16 overflows in its activations), fp32 on CPU."""
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() not in _DTYPES:
        raise InvalidParameter("dtype", f"{dtype!r} is not one of {', '.join(_DTYPES)}")
    return _DTYPES[str(dtype).lower()]


@contextmanager
def _quiet_dtype_rename():
    # diffusers >= 0.36 renamed torch_dtype to dtype; older releases (still allowed by requirements) only know
    # torch_dtype, so keep it and silence the rename notice.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
        yield


def load_flux_pipeline(model: str, base: Optional[str], dtype: torch.dtype):
    """A diffusers folder or hub id -> FluxPipeline.from_pretrained; a single transformer file -> that file's
    transformer with the other components from `base` (folder or hub id; default FLUX.1-schnell, whose text
    encoders and VAE are those of every FLUX.1 model)."""
    from diffusers import FluxPipeline, FluxTransformer2DModel

    if not model or not str(model).strip():
        raise InvalidParameter("model", "give a diffusers Flux folder, a .safetensors transformer or a hub id")
    source = resolve_flux(str(model), base).require()
    if source.form == "single-file":
        components = base or DEFAULT_FLUX_MODEL
        try:
            # With a base, its transformer config says the shapes (works offline); without, diffusers infers
            # dev/schnell from the checkpoint keys and reads that config from the hub cache.
            config = dict(config=components, subfolder="transformer") if base else {}
            with _quiet_dtype_rename():
                transformer = FluxTransformer2DModel.from_single_file(source.location, torch_dtype=dtype, **config)
                return FluxPipeline.from_pretrained(components, transformer=transformer, torch_dtype=dtype)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelNotFound(
                f"Flux checkpoint {source.location!r} could not be loaded with components from {components!r}: "
                f"{exc}. The file must hold a Flux transformer (BFL or diffusers key layout) matching the base "
                "model (dev checkpoints need a dev base).") from exc
    try:
        with _quiet_dtype_rename():
            return FluxPipeline.from_pretrained(source.location, torch_dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotFound(
            f"Flux model {model!r} could not be loaded: {exc}. Give a diffusers folder (with model_index.json), "
            "a .safetensors transformer file, or a hub id you can access (gated repos need `hf auth login`)."
        ) from exc


def check_true_cfg_scale(scale) -> float:
    """true_cfg_scale: 1 leaves negative prompts unused (one transformer pass); above 1 they are used with true
    CFG (a second pass per step). Raises InvalidParameter("true_cfg_scale", ...)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise InvalidParameter("true_cfg_scale", f"must be a finite number >= 1, got {scale!r}")
    if scale < 1:
        raise InvalidParameter("true_cfg_scale", f"must be >= 1 (1 = negative prompts off), got {scale}")
    return float(scale)
