"""Loading CLIP and preparing image batches for it.

`load_clip` goes from an open_clip id (`ARCH/TAG`, `hf-hub:ORG/REPO` or `local-dir:PATH`) to a ready model,
tokenizer and eval transform, like open_clip's factory; `parse_clip_id` checks the id before any weights load.
`TensorPreprocess` applies that transform to a tensor batch on the device, and `image_groups` / `check_values`
turn any accepted image input into checked [b, H, W, 3] batches.
"""
from __future__ import annotations

import difflib
import json
import os
from typing import Callable, Optional, Union

import torch

from ..errors import InvalidParameter, ModelNotFound
from ..images import to_batch

# ---------------------------------------------------------------------------------------------------------------
# Device, precision and CLIP ids

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
_PRECISION = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    if device is None or str(device).strip().lower() in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidParameter("device", f"{device!r} is not a torch device (use auto, cuda, cuda:N or cpu)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameter("device", "CUDA was requested but torch sees no CUDA device here; use cpu or auto")
    return resolved


def resolve_dtype(dtype: Union[str, torch.dtype, None], device: torch.device) -> torch.dtype:
    """fp16 on CUDA and fp32 elsewhere by default; fp16 / bf16 / fp32 on request."""
    if dtype is None or str(dtype).strip().lower() in ("", "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype) and dtype in _PRECISION:
        return dtype
    key = str(dtype).strip().lower().replace("torch.", "")
    if key not in _DTYPES:
        raise InvalidParameter("dtype", f"{dtype!r} is not supported (use auto, fp16, bf16 or fp32)")
    return _DTYPES[key]


def parse_clip_id(clip_model: str) -> tuple[str, Optional[str]]:
    """`ARCH/TAG` -> (ARCH, TAG); `hf-hub:ORG/REPO` and `local-dir:PATH` -> (id, None). Checked before loading;
    only an `ARCH/TAG` id imports open_clip (seconds), to ask it for its architectures and tags."""
    text = (clip_model or "").strip()
    if not text:
        raise InvalidParameter("clip_model", "is empty: give an open_clip id such as ViT-L-14/openai, "
                                             "hf-hub:ORG/REPO or local-dir:PATH")
    if text.startswith("local-dir:"):
        folder = os.path.abspath(os.path.expanduser(text[len("local-dir:"):]))
        config = os.path.join(folder, "open_clip_config.json")
        if not os.path.isfile(config):
            raise ModelNotFound(f"{text}: {config} not found (a local-dir: folder holds "
                                "open_clip_config.json and open_clip_model.safetensors)")
        return "local-dir:" + folder, None
    if text.startswith("hf-hub:"):
        return text, None
    import open_clip

    arch, _, tag = text.partition("/")
    known = open_clip.list_models()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InvalidParameter("clip_model", f"unknown open_clip architecture {arch!r}{hint}; ids look like "
                                             "ViT-L-14/openai, hf-hub:ORG/REPO or local-dir:PATH")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if not tag:
        # open_clip would build the architecture with random weights: never what a scorer wants.
        raise InvalidParameter("clip_model", f"{arch!r} names an architecture without weights; add a pretrained "
                                             f"tag, e.g. {arch}/{tags[0] if tags else 'openai'}")
    if tag not in tags and not os.path.isfile(tag):
        raise InvalidParameter("clip_model", f"{tag!r} is neither a pretrained tag of {arch} "
                                             f"(known: {', '.join(tags) or 'none'}) nor a weights file")
    return arch, tag


def configured_embed_dim(clip_model: str) -> Optional[int]:
    """The embedding width a CLIP id declares in its config, without loading weights (None when unknown)."""
    import open_clip

    name, _ = parse_clip_id(clip_model)
    if name.startswith("local-dir:"):
        with open(os.path.join(name[len("local-dir:"):], "open_clip_config.json"), encoding="utf-8") as handle:
            config = json.load(handle).get("model_cfg", {})
    elif name.startswith("hf-hub:"):
        return None
    else:
        config = open_clip.get_model_config(name) or {}
    width = config.get("embed_dim")
    return int(width) if isinstance(width, int) else None


def load_clip(clip_model: str, device: torch.device, dtype: torch.dtype):
    """(model, tokenizer, eval transform) for an open_clip id; never a randomly initialised model."""
    import open_clip

    name, tag = parse_clip_id(clip_model)
    extra = {}
    if tag and open_clip.get_pretrained_cfg(name, tag).get("quick_gelu"):
        # OpenAI's weights were trained with QuickGELU; the plain config uses nn.GELU and gives wrong embeddings.
        extra["force_quick_gelu"] = True
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=tag, precision=_PRECISION[dtype], device=device, require_pretrained=True, **extra)
        tokenizer = open_clip.get_tokenizer(name)
    except torch.OutOfMemoryError:
        raise
    except (FileNotFoundError, RuntimeError, ValueError, OSError) as exc:
        raise ModelNotFound(f"clip_model {clip_model!r} could not be loaded: {exc}") from None
    return model.eval().requires_grad_(False), tokenizer, preprocess


# ---------------------------------------------------------------------------------------------------------------
# Batch preprocessing on tensors


class TensorPreprocess:
    """The model's own open_clip eval transform (resize, crop, normalise) applied to a [B, 3, H, W] batch on the
    device: no PIL round trip per image."""

    def __init__(self, transform: Callable):
        self.steps = list(getattr(transform, "transforms", [transform]))

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        from open_clip.transform import MaybeConvertMode, ResizeKeepRatio
        from torchvision.transforms import Resize, ToTensor

        for step in self.steps:
            if isinstance(step, (MaybeConvertMode, ToTensor)) or getattr(step, "__name__", "") == "_convert_to_rgb":
                continue                                   # PIL-only steps: the input is already an RGB tensor
            if isinstance(step, ResizeKeepRatio):
                pixels = _resize_keep_ratio(pixels, step)
            elif isinstance(step, Resize):
                # PIL saturates bicubic overshoot at 0 / 255; do the same so tensors and PNGs score alike.
                pixels = step(pixels).clamp_(0.0, 1.0)
            else:
                pixels = step(pixels)
        return pixels


def _resize_keep_ratio(pixels: torch.Tensor, step) -> torch.Tensor:
    import torchvision.transforms.functional as TF

    height, width = pixels.shape[-2:]
    target_h, target_w = step.size
    ratio_h, ratio_w = height / target_h, width / target_w
    ratio = max(ratio_h, ratio_w) * step.longest + min(ratio_h, ratio_w) * (1.0 - step.longest)
    size = [round(height / ratio), round(width / ratio)]
    return TF.resize(pixels, size, interpolation=step.interpolation, antialias=True).clamp_(0.0, 1.0)


def image_groups(images, name: str = "images") -> list[torch.Tensor]:
    """Any accepted image input -> [b, H, W, 3] float tensors in batch order: one group when the images share a
    size, one per image otherwise. Only shapes are checked here; values are checked on the device (`check_values`)
    so a large batch is not scanned twice on the CPU."""
    if isinstance(images, torch.Tensor) and images.dim() == 4 and images.shape[1] == 3 and images.shape[-1] != 3:
        raise InvalidParameter(name, f"got shape {list(images.shape)}, which looks like [B, 3, H, W]; images here "
                                     "are [B, H, W, 3] (ComfyUI layout): use images.permute(0, 2, 3, 1)")
    if not isinstance(images, (list, tuple)):
        return [to_batch(images, name)]
    if not images:
        raise InvalidParameter(name, "the batch is empty: give at least one image")
    parts = [to_batch(item, name) for item in images]
    if len({tuple(part.shape[1:]) for part in parts}) == 1:
        return [torch.cat(parts)] if len(parts) > 1 else parts
    return [image[None] for part in parts for image in part]


def check_values(pixels: torch.Tensor, offset: int = 0, name: str = "images") -> None:
    """[b, H, W, 3] must be finite and in [0, 1]; the message names the first bad image."""
    flat = pixels.flatten(1)
    finite = torch.isfinite(flat).all(dim=1)
    if not bool(finite.all()):
        raise InvalidParameter(name, f"image {offset + int((~finite).nonzero()[0])} contains NaN or infinite values")
    low, high = flat.aminmax(dim=1)
    bad = (low < -1e-3) | (high > 1.0 + 1e-3)
    if bool(bad.any()):
        index = int(bad.nonzero()[0])
        raise InvalidParameter(name, f"image {offset + index} has values in [{float(low[index]):g}, "
                                     f"{float(high[index]):g}]; expected [0, 1] (divide 8-bit values by 255)")
