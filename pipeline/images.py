"""Image layout conventions shared by generators, scorers, the record and the ComfyUI adapters.

The canonical in-memory image is ComfyUI's: a float32 torch tensor, shape [H, W, 3], values in [0, 1].
A batch is [B, H, W, 3]. Converting at the edges (PIL for PNG files and diffusers, [B, 3, H, W] for CLIP)
happens here only.
"""
from __future__ import annotations

import base64
import io
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

from .errors import InvalidParameter

ImageLike = Union[torch.Tensor, Image.Image, np.ndarray]


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> [H, W, 3] float32 in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy())


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """[H, W, 3] (or [1, H, W, 3]) float in [0, 1] -> 8-bit RGB PIL image."""
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    check_hwc(image, "image")
    array = (image.detach().float().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array, mode="RGB")


def png_base64(image: Union[torch.Tensor, Image.Image], max_side: int = 768) -> str:
    """An image as base64 PNG for a vision model's `images` field, shrunk so its longer side is at most `max_side`
    (vision models cut large images into many tiles, each costing context). PNG, not JPEG: what the model sees
    is exactly the recorded pixels, resized."""
    picture = image if isinstance(image, Image.Image) else tensor_to_pil(image)
    if max(picture.size) > max_side:
        picture = picture.copy()
        picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def check_hwc(image: torch.Tensor, name: str = "images") -> None:
    if image.dim() != 3 or image.shape[-1] != 3:
        raise InvalidParameter(
            name, f"expected an image tensor of shape [H, W, 3] (ComfyUI layout), got {list(image.shape)}")


def to_batch(images: Union[ImageLike, Sequence[ImageLike]], name: str = "images") -> torch.Tensor:
    """Accept a [B, H, W, 3] tensor, one [H, W, 3] tensor, PIL images or a list of those -> [B, H, W, 3].

    Images of different sizes cannot be stacked; callers that mix sizes pass lists to per-image code instead.
    """
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[-1] != 3:
            raise InvalidParameter(
                name, f"expected a tensor of shape [B, H, W, 3] (ComfyUI IMAGE layout), got {list(images.shape)}")
        if images.shape[0] == 0:
            raise InvalidParameter(name, "the batch is empty: give at least one image")
        return images.float()
    if isinstance(images, (Image.Image, np.ndarray)):
        images = [images]
    items = list(images)
    if not items:
        raise InvalidParameter(name, "the batch is empty: give at least one image")
    tensors = []
    for item in items:
        if isinstance(item, Image.Image):
            item = pil_to_tensor(item)
        elif isinstance(item, np.ndarray):
            item = torch.from_numpy(np.asarray(item, dtype=np.float32))
            if item.max() > 1.0:
                item = item / 255.0
        elif item.dim() == 4 and item.shape[0] == 1:
            item = item[0]
        check_hwc(item, name)
        tensors.append(item.float())
    if len({tuple(t.shape) for t in tensors}) > 1:
        raise InvalidParameter(name, "images in one batch must share a size; score them in separate calls")
    return torch.stack(tensors)
