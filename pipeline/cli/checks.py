"""Flag checks for `search`: each turns a flag into a validated value, or raises InvalidParameter naming the
flag, before any model loads. Where a model comes from is decided by each part's own `sources` module (the
same rules its loader applies); this module only names the flag.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

from ..config import DEFAULT_FLUX_MODEL, LoraSpec
from ..errors import InvalidParameter

DEFAULT_FLUX_BASE = DEFAULT_FLUX_MODEL


def check_flux(spec: Optional[str], base: Optional[str], flag: str = "flux") -> None:
    from ..generation.sources import resolve_flux, resolve_flux_base

    if base:
        if not (spec and os.path.isfile(os.path.expanduser(spec))):
            raise InvalidParameter("flux_base", "only applies when --flux is a single-file .safetensors transformer")
        resolve_flux_base(base).raise_if_invalid("flux_base")
    resolve_flux(spec, base).raise_if_invalid(flag)


def check_loras(loras: Sequence[LoraSpec], flag: str = "lora") -> None:
    from ..generation.sources import resolve_loras

    resolve_loras(loras).raise_if_invalid(flag)


def check_clip(spec: Optional[str], flag: str = "clip") -> None:
    from ..scoring.sources import resolve_clip

    resolve_clip(spec).raise_if_invalid(flag)


def check_aesthetic(spec: Optional[str], flag: str = "aesthetic") -> None:
    from ..scoring.sources import resolve_aesthetic

    resolve_aesthetic(spec).raise_if_invalid(flag)


def check_head_fits_clip(aesthetic_spec: Optional[str], clip_spec: Optional[str], flag: str = "aesthetic") -> None:
    from ..scoring.sources import check_head_fits_clip as check

    check(aesthetic_spec, clip_spec, flag)


def check_out_dir(out: str, flag: str = "out") -> None:
    """The run root must be (or become) a writable folder: find the nearest existing ancestor and ask it."""
    path = os.path.abspath(os.path.expanduser(out))
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise InvalidParameter(flag, f"{out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InvalidParameter(flag, f"{out}: no permission to write in {probe}")


def check_device(spec: Optional[str], flag: str = "device") -> Optional[str]:
    """None/auto -> None (the backends pick CUDA, then MPS, then CPU); else a device torch accepts and has."""
    if spec is None or spec.strip().lower() in ("", "auto"):
        return None
    import torch

    try:
        device = torch.device(spec.strip())
    except (RuntimeError, ValueError):
        raise InvalidParameter(flag, f"{spec!r} is not a device; use cuda, cuda:N, mps or cpu") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidParameter(flag, f"{spec}: CUDA is not available (torch {torch.__version__}); use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidParameter(flag, f"{spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InvalidParameter(flag, f"{spec}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise InvalidParameter(flag, f"{spec!r}: use cuda, cuda:N, mps or cpu")
    return str(device)


def check_true_cfg(scale: Optional[float], use_negative: bool, flag: str = "true_cfg") -> None:
    """--true-cfg: the generator's own rule (a finite number >= 1), and only useful with negative prompts."""
    if scale is None:
        return
    from ..generation.diffusers_flux import check_true_cfg_scale

    try:
        check_true_cfg_scale(scale)
    except InvalidParameter as exc:
        raise InvalidParameter(flag, InvalidParameter.bare(exc)) from None
    if scale > 1 and not use_negative:
        raise InvalidParameter(flag, "weights the negative prompt against the prompt, so it needs --negative (the "
                                     "LLM then writes a negative prompt per candidate)")
