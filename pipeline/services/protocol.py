"""What travels between the seed's services and their clients (RemoteFluxClient, RemoteScorer): images as JSON
values, so no shared filesystem is needed, and the client's patience with a busy service (503 + Retry-After).
Servers and clients both import this module; it imports nothing of the pack but the bottom, so the generation and
scoring parts may use it without importing a service.

An image travels as a base64 PNG when that is lossless (every value an exact 8-bit level, as for anything read
from a PNG) and as raw float32 RGB otherwise: {"f32": base64 of H*W*3 little-endian float32, "shape": [H, W, 3]}.
Either way the receiver gets the sender's tensor bit for bit.
"""
from __future__ import annotations

import base64
import binascii
import io
import time
from typing import Callable, Union

import torch


def is_8bit(image: torch.Tensor) -> bool:
    """True when every value is k/255 exactly, i.e. a PNG carries the image without loss."""
    levels = (image * 255.0).round()
    return bool(torch.equal(levels / 255.0, image))


def encode_image(image: torch.Tensor, form: str = "auto") -> Union[str, dict]:
    """[H, W, 3] float in [0, 1] -> base64 PNG string (form "png", or "auto" when lossless) or {f32, shape}."""
    image = image.detach().float().cpu().contiguous()
    if form == "png" or (form == "auto" and is_8bit(image)):
        from ..images import tensor_to_pil

        buffer = io.BytesIO()
        tensor_to_pil(image).save(buffer, format="PNG", compress_level=1)
        return base64.b64encode(buffer.getvalue()).decode("ascii")
    data = image.numpy().astype("<f4").tobytes()
    return {"f32": base64.b64encode(data).decode("ascii"), "shape": list(image.shape)}


def decode_image(value: Union[str, dict]) -> torch.Tensor:
    """The inverse of encode_image (also {"png": base64}); ValueError says what is wrong."""
    if isinstance(value, dict) and "png" in value:
        value = value["png"]
    try:
        if isinstance(value, str):
            from PIL import Image

            from ..images import pil_to_tensor

            with Image.open(io.BytesIO(base64.b64decode(value, validate=True))) as picture:
                picture.load()
                return pil_to_tensor(picture)
        if isinstance(value, dict) and "f32" in value and "shape" in value:
            shape = [int(n) for n in value["shape"]]
            data = base64.b64decode(value["f32"], validate=True)
            if len(shape) != 3 or shape[2] != 3 or len(data) != shape[0] * shape[1] * 12:
                raise ValueError(f"{len(data)} bytes of float32 do not fit shape {shape}")
            return torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(shape)
    except (binascii.Error, OSError) as exc:
        raise ValueError(f"not a readable image ({type(exc).__name__})") from None
    raise ValueError("expected a base64 PNG or {f32, shape}")


def send_when_free(send: Callable[[], "object"], budget_s: float, sleep: Callable[[float], None] = time.sleep):
    """Client side: call `send()` (an HTTP request) again after each 503's `Retry-After`, for at most `budget_s`
    seconds of waiting in all; the last answer is returned (a 503 when the service stayed busy)."""
    waited = 0.0
    response = send()
    while getattr(response, "status_code", None) == 503:
        try:
            wait = max(1.0, float(response.headers.get("Retry-After", "")))
        except ValueError:
            return response
        if waited + wait > budget_s:
            return response
        sleep(wait)
        waited += wait
        response = send()
    return response


def answer_detail(response) -> str:
    """What a service said about a refused request: FastAPI's `detail`, else the body (at most 500 characters)."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    return str(detail)[:500]


def json_answer(response, service: str, what: str, failure: type) -> dict:
    """The JSON body of a service's answer to `what` ("POST /score"). A busy service (503), any other error
    status, or a body that is not JSON raises `failure` with the service's own words; callers map the statuses
    that mean a bad parameter (422, 403) to InvalidParameter before calling this."""
    if response.status_code == 503:
        raise failure(f"{service} is busy (503, Retry-After {response.headers.get('Retry-After', '?')} s): "
                      f"{answer_detail(response)}")
    if response.status_code >= 400:
        raise failure(f"{service} answered {response.status_code} to {what}: {answer_detail(response)}")
    try:
        return response.json()
    except ValueError:
        raise failure(f"{service} answered {what} with non-JSON: {response.text[:200]!r}") from None
