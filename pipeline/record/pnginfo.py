"""PNG text metadata: one chunk per candidate field, plus an A1111-style `parameters` chunk for the winner.

Keys carry a `promptbeam:` prefix on purpose: ComfyUI reads the plain `prompt` and `workflow` chunks as JSON
graphs when a PNG is dropped on its editor, so a plain-text `prompt` chunk would make that fail. `parameters` is
the de-facto key that A1111, Forge, Civitai and most image browsers read.
"""
from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
from PIL import Image, PngImagePlugin

from ..images import tensor_to_pil
from .storage import replacing

PREFIX = "promptbeam:"
PARAMETERS_KEY = "parameters"
# zlib level 1: on 1024² photographic images it encodes ~6x faster than PIL's default (6) for files ~15 % larger.
# At level 6 writing a candidate's PNG costs about as much CPU time as rendering it on an H100 (bench/bench_round.py).
COMPRESS_LEVEL = 1
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = (b"tEXt", b"iTXt", b"zTXt")


def candidate_text(candidate, run_id: str, user_prompt: str) -> dict[str, str]:
    """The text chunks of one candidate's PNG (all values are strings)."""
    text = {
        "id": candidate.id,
        "run_id": run_id,
        "user_prompt": user_prompt,
        "iteration": str(candidate.iteration),
        "prompt": candidate.prompt,
        "what": candidate.what,
        "how": candidate.how,
        "seed": str(candidate.seed),
        "parent": candidate.parent or "",
        "dimension": candidate.dimension or "",
        "scores": json.dumps(candidate.scores, sort_keys=True) if candidate.scores is not None else "",
    }
    if candidate.negative:
        text["negative"] = candidate.negative
        if getattr(candidate, "negative_ignored", False):
            text["negative_ignored"] = "true"     # written by the LLM, not used by the generator
    return {PREFIX + key: value for key, value in text.items()}


def a1111_parameters(prompt: str, negative: Optional[str], settings: Mapping[str, object]) -> str:
    """A1111's `parameters` text: the prompt, an optional "Negative prompt:" line, then "Key: value" pairs.

    settings is ordered as it should print, e.g. {"Steps": 4, "Sampler": "Euler", "CFG scale": 1, "Seed": 123,
    "Size": "1024x1024", "Model": "FLUX.1-schnell"}; None values are left out.
    """
    lines = [prompt]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    pairs = [f"{key}: {_a1111_value(value)}" for key, value in settings.items() if value is not None]
    lines.append(", ".join(pairs))
    return "\n".join(lines)


def _a1111_value(value: object) -> str:
    text = str(value)
    # A1111 quotes values that would break its "k: v, k: v" parser.
    if any(ch in text for ch in ",:\n\""):
        return json.dumps(text, ensure_ascii=False)
    return text


def parse_a1111_parameters(text: str) -> dict:
    """Inverse of a1111_parameters: {"prompt", "negative", <settings>} (values as strings)."""
    lines = text.split("\n")
    settings_line = lines[-1] if len(lines) > 1 else ""
    body = lines[:-1] if len(lines) > 1 else lines
    negative_at = next((i for i, line in enumerate(body) if line.startswith("Negative prompt: ")), None)
    if negative_at is None:
        prompt, negative = "\n".join(body), None
    else:
        prompt = "\n".join(body[:negative_at])
        negative = "\n".join(body[negative_at:])[len("Negative prompt: "):]
    result = {"prompt": prompt, "negative": negative}
    result.update(_parse_pairs(settings_line))
    return result


def _parse_pairs(line: str) -> dict:
    pairs, i = {}, 0
    while i < len(line):
        colon = line.find(": ", i)
        if colon < 0:
            break
        key = line[i:colon].strip()
        i = colon + 2
        if i < len(line) and line[i] == '"':
            decoder = json.JSONDecoder()
            value, end = decoder.raw_decode(line, i)
            i = end
        else:
            end = line.find(", ", i)
            end = len(line) if end < 0 else end
            value, i = line[i:end], end
        pairs[key] = value
        if line.startswith(", ", i):
            i += 2
    return pairs


def save_png(path: Union[str, Path], image: Union[torch.Tensor, Image.Image], text: Mapping[str, str]) -> None:
    """Write an RGB PNG with text chunks atomically (tmp file + os.replace), so a reader never sees half a file.

    PIL writes tEXt for Latin-1 values and iTXt (UTF-8) for the rest.
    """
    path = Path(path)
    pil = tensor_to_pil(image) if isinstance(image, torch.Tensor) else image.convert("RGB")
    with replacing(path) as handle:
        pil.save(handle, format="PNG", pnginfo=_png_info(text), compress_level=COMPRESS_LEVEL)


def read_png_text(path: Union[str, Path]) -> dict[str, str]:
    """All tEXt/iTXt/zTXt chunks of a PNG."""
    with Image.open(path) as image:
        image.load()
        return dict(image.text)


def load_png_pixels(path: Union[str, Path]) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def rewrite_png_text(path: Union[str, Path], text: Mapping[str, str]) -> None:
    """Replace a PNG's text chunks in place of the old ones, copying the image data chunks byte for byte.

    Moving the winner's `parameters` chunk happens whenever the best changes; re-encoding the pixels for that
    would cost as much as writing the file anew.
    """
    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError(f"{path} is not a PNG file")
    chunks, position = [], len(_PNG_SIGNATURE)
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        end = position + 12 + length
        chunks.append((kind, data[position:end]))
        position = end
    buffer = io.BytesIO()
    for kind, body, _ in _png_info(text).chunks:
        PngImagePlugin.putchunk(buffer, kind, body)
    text_chunks = buffer.getvalue()
    out = [_PNG_SIGNATURE]
    for kind, raw in chunks:
        if kind in _TEXT_CHUNKS:
            continue
        if kind == b"IDAT" and text_chunks:     # text goes before the image data, as PIL writes it
            out.append(text_chunks)
            text_chunks = b""
        out.append(raw)
    with replacing(path) as handle:
        handle.write(b"".join(out))


def _png_info(text: Mapping[str, str]) -> PngImagePlugin.PngInfo:
    """PIL's text chunks: tEXt for Latin-1 values, iTXt (UTF-8) for the rest."""
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    return info
