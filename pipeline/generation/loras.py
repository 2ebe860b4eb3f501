"""Finding Flux LoRA files and refusing other architectures' LoRAs before any model is loaded.

A LoRA is given by path or by bare name. It is looked up as given (absolute, or relative to the working
directory), then inside each LoRA folder (FLUX_LORAS_DIR, os.pathsep-separated, else ./loras); a name without a
suffix also tries `.safetensors`.

A safetensors LoRA's key names are read from its header (no weights are loaded; other formats are not
checked), and a LoRA whose keys name only another architecture's modules (SD 1.x/2.x/SDXL UNet blocks, SD3 MMDiT
joint blocks) and none of Flux's is refused. Without this check the mistake shows only after the Flux model has
loaded (minutes for a real model), as a shape error or a LoRA with no adapter in the pipeline; checking first
turns it into an immediate error that names the file and a telltale key.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..errors import ModelNotFound


def default_lora_dirs() -> list[str]:
    """Folders searched for LoRAs given by name: FLUX_LORAS_DIR (os.pathsep-separated), else ./loras."""
    return [d for d in os.environ.get("FLUX_LORAS_DIR", "").split(os.pathsep) if d.strip()] or ["loras"]


def resolve_lora_file(path: str, lora_dirs: Sequence[str]) -> Path:
    """The path as given (absolute, or relative to the working directory), then inside each LoRA folder;
    a name without suffix also tries `.safetensors`."""
    given = Path(os.path.expanduser(path))
    folders = [Path(d).expanduser().absolute() for d in lora_dirs]
    candidates = [given] if given.is_absolute() else [Path.cwd() / given] + [folder / given for folder in folders]
    if not given.suffix:
        candidates += [c.with_name(c.name + ".safetensors") for c in candidates]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ModelNotFound(
        f"LoRA {path!r} not found. Looked for: {', '.join(str(c) for c in candidates)}. LoRA folders searched: "
        f"{', '.join(str(folder) for folder in folders) or 'none'} (set FLUX_LORAS_DIR to "
        "add folders, or give the full path).")


# Key fragments that only other architectures' LoRAs have (checked before anything is loaded). Flux LoRAs
# target double_blocks/single_blocks (BFL, kohya) or transformer_blocks/single_transformer_blocks (diffusers).
_OTHER_ARCHITECTURES = {
    "Stable Diffusion 1.x/2.x/SDXL (UNet)": ("down_blocks", "up_blocks", "mid_block", "input_blocks",
                                             "output_blocks", "middle_block"),
    "Stable Diffusion 3 (MMDiT)": ("joint_blocks", "joint_transformer_blocks"),
}
_FLUX_MARKERS = ("double_blocks", "single_blocks", "transformer_blocks", "single_transformer_blocks")


def check_lora_keys(file: Path) -> None:
    """Refuse a LoRA whose keys name another architecture's modules and none of Flux's."""
    if file.suffix.lower() not in (".safetensors", ".sft"):
        return
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as exc:  # safetensors raises its own error type for a damaged header
        raise ModelNotFound(f"LoRA {str(file)!r} is not a readable safetensors file: {exc}") from exc
    for architecture, markers in _OTHER_ARCHITECTURES.items():
        foreign = [k for k in keys if any(m in k for m in markers)]
        flux = [k for k in keys if not any(m in k for m in markers) and any(m in k for m in _FLUX_MARKERS)]
        if foreign and not flux:
            raise ModelNotFound(
                f"LoRA {str(file)!r} is a LoRA for another architecture ({architecture}; e.g. key "
                f"{foreign[0]!r}), not for Flux: use a Flux LoRA (keys with double_blocks/single_blocks or "
                "transformer_blocks/single_transformer_blocks).")
