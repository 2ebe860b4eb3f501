"""The vision service's batch endpoint body: images sent as data, not paths, so a client on another machine
can score what it holds in memory (pipeline.scoring.remote.RemoteScorer).

An image is either an 8-bit PNG (base64; lossless for images that came from PNGs, as the Flux service's do) or
raw float32 RGB ({"f32": base64, "shape": [H, W, 3]}, values in [0, 1]), which carries a tensor bit for bit: the
scores then equal the local scorer's for the same tensor, not only for its 8-bit rounding.
"""
from __future__ import annotations

import base64
import binascii
import io
from typing import Optional, Union

import torch
from fastapi import HTTPException
from pydantic import BaseModel, Field

MAX_IMAGES = 64          # one beam round is a handful; this keeps one request's memory bounded


class RawImage(BaseModel):
    f32: Optional[str] = None          # base64 of H*W*3 little-endian float32, row-major [H, W, 3]
    shape: Optional[list[int]] = None
    png: Optional[str] = None          # base64 PNG (any mode; converted to RGB)


class ScoreBody(BaseModel):
    images: list[Union[str, RawImage]] = Field(min_length=1, max_length=MAX_IMAGES)
    prompt: Optional[str] = None
    prompts: Optional[list[str]] = None
    scorers: Optional[list[str]] = None     # the specs the client ranks by; the service must score with them


def decode_images(body: ScoreBody, max_bytes: int) -> tuple[list[torch.Tensor], Union[str, list[str]]]:
    """([H, W, 3] float32 tensors, the prompt or one prompt per image), or a 4xx naming the bad part."""
    if body.prompts is not None and body.prompt is not None:
        raise HTTPException(422, "give either prompt or prompts, not both")
    texts = body.prompts if body.prompts is not None else body.prompt
    if not texts or (isinstance(texts, list) and any(not (t or "").strip() for t in texts)) or \
            (isinstance(texts, str) and not texts.strip()):
        raise HTTPException(422, "prompt: is empty; give the prompt the images were made for")
    if isinstance(texts, list) and len(texts) != len(body.images):
        raise HTTPException(422, f"prompts: got {len(texts)} prompts for {len(body.images)} images; give one per "
                                 "image, or one prompt")
    return [_decode(item, index, max_bytes) for index, item in enumerate(body.images)], texts


def _b64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, f"{where}: not valid base64") from None


def _decode(item: Union[str, RawImage], index: int, max_bytes: int) -> torch.Tensor:
    where = f"images[{index}]"
    if isinstance(item, str) or item.png is not None:
        return _decode_png(_b64(item if isinstance(item, str) else item.png, where), where)
    if item.f32 is None or item.shape is None:
        raise HTTPException(422, f"{where}: give a base64 PNG, {{png}} or {{f32, shape}}")
    shape = item.shape
    if len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
        raise HTTPException(422, f"{where}: shape must be [H, W, 3], got {shape}")
    expected = shape[0] * shape[1] * 3 * 4
    if expected > max_bytes:
        raise HTTPException(400, f"{where}: {shape} is larger than {max_bytes >> 20} MB")
    data = _b64(item.f32, where)
    if len(data) != expected:
        raise HTTPException(400, f"{where}: {len(data)} bytes of float32 data do not fit shape {shape} "
                                 f"({expected} bytes)")
    tensor = torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(shape)
    if not torch.isfinite(tensor).all() or tensor.min() < 0 or tensor.max() > 1:
        raise HTTPException(422, f"{where}: values must be finite and within [0, 1]")
    return tensor


def _decode_png(data: bytes, where: str) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    from ..images import pil_to_tensor

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return pil_to_tensor(image)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise HTTPException(400, f"{where}: not an image this service can read ({type(exc).__name__})") from None
