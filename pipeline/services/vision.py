"""The seed's local vision service, served by the CLIP + aesthetic scorer.

    python -m pipeline.services.vision --host 127.0.0.1 --port 8002 [--clip ID] [--aesthetic PATH|v2.5]
        [--aesthetic-dir DIR] [--device auto|cuda|cpu] [--dtype auto|fp16|bf16|fp32]

POST /analyze {imagePath | imageUrl, prompt} -> {alignmentScore, aestheticScore, analysis, strengths, weaknesses};
GET /health -> {status, device, models, model_loaded, scorer}; POST /load and POST /unload move the weights.

Differences from the seed's service, on purpose: real scores (CLIPScore alignment, LAION aesthetic predictor)
instead of a clamped logit and a size heuristic; the scorer loads once at startup (the port opens when it is
ready); an unreadable image is a 400 and a scoring failure a 500, never the seed's silent 50.0 / 5.0; imageUrl also
takes file:// and data: URLs. CLIP_MODEL and AESTHETIC_MODEL set the defaults of --clip and --aesthetic.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import io
import os
import sys
import urllib.parse
import urllib.request
from typing import Optional

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict

from ..errors import InvalidParameter, PromptBeamError

MAX_DOWNLOAD_BYTES = 64 << 20        # a generated image is a few MB; refuse to buffer anything much larger
FETCH_TIMEOUT_S = 10.0               # the seed's timeout for imageUrl


class AnalyzeBody(BaseModel):
    model_config = ConfigDict(extra="allow")   # the seed's client also sends `options`

    imagePath: Optional[str] = None
    imageUrl: Optional[str] = None
    prompt: Optional[str] = None


def create_app(scorer) -> FastAPI:
    """The HTTP app around a loaded Scorer (the scorer serialises its own model calls)."""
    app = FastAPI(title="Prompt Beam vision service")

    @app.get("/health")
    def health() -> dict:
        info = scorer.describe()
        return {"status": "healthy", "device": info["device"],
                "models": [info["clip_model"], info["aesthetic_model"]], "model_loaded": info["loaded"],
                "scorer": info}

    @app.post("/analyze")
    def analyze(body: AnalyzeBody) -> dict:
        if not (body.prompt or "").strip():
            raise HTTPException(422, "prompt: is empty; give the prompt the image was made for")
        image = load_image(body.imagePath, body.imageUrl)
        try:
            return scorer.analyze(image, body.prompt)
        except InvalidParameter as exc:
            raise HTTPException(422, str(exc)) from None
        except PromptBeamError as exc:
            raise HTTPException(500, f"scoring failed: {exc}") from None

    @app.post("/load")
    def load() -> dict:
        scorer.load()
        return health()

    @app.post("/unload")
    def unload() -> dict:
        scorer.release("unload")
        return health()

    return app


def load_image(image_path: Optional[str], image_url: Optional[str]):
    """A PIL image from the request, or an HTTPException that says what is wrong with it."""
    if image_path and image_url:
        raise HTTPException(422, "give either imagePath or imageUrl, not both")
    if image_path:
        return _open_image(_read_file(os.path.expanduser(image_path), "imagePath"), "imagePath", image_path)
    if image_url:
        return _open_image(_read_url(image_url), "imageUrl", _short(image_url))
    raise HTTPException(422, "give imagePath (a file on this machine) or imageUrl (http(s), file:// or data: URL)")


def _read_file(path: str, field: str) -> bytes:
    if not os.path.exists(path):
        raise HTTPException(400, f"{field}: file not found: {path}")
    if not os.path.isfile(path):
        raise HTTPException(400, f"{field}: {path} is not a file")
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise HTTPException(400, f"{field}: cannot read {path} ({exc.strerror or exc})") from None


def _read_url(url: str) -> bytes:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise HTTPException(400, f"imageUrl: file:// URLs must point to this machine, got host {parts.netloc!r}")
        return _read_file(urllib.request.url2pathname(parts.path), "imageUrl")
    if scheme == "data":
        return _read_data_url(url)
    if scheme in ("http", "https"):
        return _fetch(url)
    raise HTTPException(400, f"imageUrl: unsupported URL {_short(url)!r}; use http(s)://, file:// or data:, "
                             "or imagePath for a file")


def _read_data_url(url: str) -> bytes:
    header, sep, payload = url[len("data:"):].partition(",")
    if not sep:
        raise HTTPException(400, "imageUrl: a data: URL needs a comma before its payload")
    try:
        if header.endswith(";base64"):
            return base64.b64decode(payload, validate=True)
        return urllib.parse.unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise HTTPException(400, "imageUrl: the data: URL payload is not valid base64") from None


def _fetch(url: str) -> bytes:
    import requests

    try:
        with requests.get(url, stream=True, timeout=FETCH_TIMEOUT_S) as response:
            if response.status_code != 200:
                raise HTTPException(400, f"imageUrl: GET {_short(url)} answered HTTP {response.status_code}")
            data = bytearray()
            for chunk in response.iter_content(chunk_size=1 << 16):
                data += chunk
                if len(data) > MAX_DOWNLOAD_BYTES:
                    raise HTTPException(400, f"imageUrl: {_short(url)} is larger than {MAX_DOWNLOAD_BYTES >> 20} MB")
            return bytes(data)
    except requests.RequestException as exc:
        raise HTTPException(400, f"imageUrl: could not fetch {_short(url)} ({type(exc).__name__})") from None


def _open_image(data: bytes, field: str, where: str):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise HTTPException(400, f"{field}: {where} is not an image this service can read "
                                 f"({type(exc).__name__})") from None


def _short(url: str, limit: int = 120) -> str:
    return url if len(url) <= limit else url[:limit] + "..."


# ---------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None, env=None) -> argparse.Namespace:
    from ..config import Settings
    from ..scoring.aesthetic import default_aesthetic_dir

    settings = Settings.from_env(env)
    parser = argparse.ArgumentParser(prog="python -m pipeline.services.vision", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--clip", default=settings.clip_model,
                        help="open_clip id: ARCH/TAG, hf-hub:ORG/REPO or local-dir:PATH (default: CLIP_MODEL)")
    parser.add_argument("--aesthetic", default=settings.aesthetic_model,
                        help="aesthetic head file or name in --aesthetic-dir, 'laion' or 'v2.5' "
                             "(default: AESTHETIC_MODEL, else LAION's head, downloaded once)")
    parser.add_argument("--aesthetic-dir", default=None,
                        help=f"folder for aesthetic heads (default: {default_aesthetic_dir()})")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--dtype", default="auto", help="auto (fp16 on CUDA, fp32 on CPU), fp16, bf16 or fp32")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    import uvicorn

    from ..scoring.scorer import load_scorer

    try:
        args = parse_args(argv)
        scorer = load_scorer(args.clip, aesthetic_model=args.aesthetic, device=args.device, dtype=args.dtype,
                             aesthetic_dirs=[args.aesthetic_dir] if args.aesthetic_dir else ())
    except PromptBeamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidParameter) else 1
    info = scorer.describe()
    print(f"Vision service: {info['clip_model']} + {info['aesthetic_model']} on {info['device']} "
          f"at http://{args.host}:{args.port}", flush=True)
    uvicorn.run(create_app(scorer), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
