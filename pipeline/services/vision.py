"""The seed's local vision service, served by the CLIP + aesthetic scorer.

    python -m pipeline.services.vision --host 127.0.0.1 --port 8002 [--clip ID] [--aesthetic PATH|v2.5]
        [--aesthetic-dir DIR] [--scorer pickscore[=SOURCE]] [--scorer hpsv2[=FILE] [--hps-arch ARCH]]
        [--device auto|cuda|cpu] [--dtype auto|fp16|bf16|fp32] [--allow-dir DIR ...] [--queue-depth N]
        [--critic-model NAME [--ollama-url URL]]

POST /analyze {imagePath | imageUrl, prompt} -> {alignmentScore, aestheticScore, analysis, strengths, weaknesses};
POST /score {images: [PNG base64 | {png} | {f32, shape}], prompt | prompts, scorers?: [SPEC]} -> {scores:
[{alignment, aesthetic, pickscore?, hpsv2?}]} (a batch in one pass of each model, for RemoteScorer; `scorers`
names what the client ranks by, refused with 422 unless the service was started with those --scorer);
GET /health -> {status, device, models, model_loaded, scorer, queue}; POST /load and POST /unload move the weights.

File access is confined: `imagePath` is read only inside the --allow-dir folders (default: ./output, where the
Flux service writes output/flux and the seed's app copies its images), after symlinks and `..` are resolved;
anything else is a 403 that names the flag. `imageUrl` takes http(s) URLs (10 s timeout, 64 MB cap) and data:
URLs; file:// URLs are refused (403), send the file as imagePath instead.

Differences from the seed's service, on purpose: real scores (CLIPScore alignment, LAION aesthetic predictor)
instead of a clamped logit and a size heuristic; the scorer loads once at startup (the port opens when it is
ready); an unreadable image is a 400 and a scoring failure a 500, never the seed's silent 50.0 / 5.0; at most
--queue-depth requests wait behind the one scoring (then 503 with Retry-After). CLIP_MODEL and AESTHETIC_MODEL set
the defaults of --clip and --aesthetic.

With --critic-model (an Ollama vision model, checked at start through Ollama's /api/show: a text model or a
missing one exits 2), /analyze also shows the image and the prompt to that model and its `analysis`, `strengths`
and `weaknesses` replace the ones written from the two scores; `critic` in the answer says which model, how long
it took, and, when its answer was unusable twice, that the score-based text was kept and why. The scores and the
critic's request run at the same time, each in its own bounded line; an Ollama that fails is a 502 (504 for a
timeout) in one line. OLLAMA_BASE_URL sets the default of --ollama-url.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import io
import os
import sys
import time
import urllib.parse
import urllib.request
from typing import Optional

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict

from ..errors import InvalidParameter, PromptBeamError
from ..llm.client import OllamaError
from ..scoring.scorer_set import check_served
from .confine import AllowedRoots, OutsideRoots
from .guard import DEFAULT_BODY_TIMEOUT_S, RequestGuard, add_guard_arguments, guard_flag_values, guarded_http
from .load import Busy, RenderQueue
from .vision_batch import ScoreBody, decode_images
from .vlm_answers import ollama_failure

MAX_DOWNLOAD_BYTES = 64 << 20        # a generated image is a few MB; refuse to buffer anything much larger
FETCH_TIMEOUT_S = 10.0               # the seed's timeout for imageUrl
DEFAULT_ALLOW_DIRS = ("output",)     # the Flux service's --out default (output/flux) and the seed app's output/
DEFAULT_QUEUE_DEPTH = 32
DEFAULT_MAX_BODY_MB = 256.0          # a round of images as float32 (16 MB each at 1024², in base64) or PNGs


class AnalyzeBody(BaseModel):
    model_config = ConfigDict(extra="allow")   # the seed's client also sends `options`

    imagePath: Optional[str] = None
    imageUrl: Optional[str] = None
    prompt: Optional[str] = None


def create_app(scorer, allow_dirs=DEFAULT_ALLOW_DIRS, queue_depth: int = DEFAULT_QUEUE_DEPTH,
               critic=None, max_body_mb: float = DEFAULT_MAX_BODY_MB,
               body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S) -> FastAPI:
    """The HTTP app around a loaded Scorer. Scoring runs in a worker thread, one call at a time, queued on the
    event loop (pipeline.services.load), so /health answers while images are scored. `critic`: a PromptEngine
    over an Ollama vision model, whose evaluation of each /analyze image replaces the score-based text."""
    from fastapi.responses import JSONResponse

    app = FastAPI(title="Prompt Beam vision service")
    roots = AllowedRoots(allow_dirs, "--allow-dir")
    queue = RenderQueue(queue_depth, what="scoring call")
    # The critic waits in its own line: a slow VLM must not hold up the CLIP scoring of other requests.
    critic_queue = RenderQueue(queue_depth, what="critic request")
    app.add_middleware(RequestGuard, queue=queue, paths=("/analyze", "/score"),
                       max_body_bytes=int(max_body_mb * 2**20), body_timeout_s=body_timeout_s)

    async def in_turn(work):
        try:
            return await queue.run(work)
        except Busy as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
        except InvalidParameter as exc:
            raise HTTPException(422, str(exc)) from None
        except PromptBeamError as exc:
            raise HTTPException(500, f"scoring failed: {exc}") from None

    @app.get("/health")
    async def health() -> dict:
        info = scorer.describe()
        return {"status": "healthy", "device": info["device"],
                "models": [info["clip_model"], info["aesthetic_model"]], "model_loaded": info["loaded"],
                "scorer": info, "queue": queue.describe(), "allow_dirs": [str(root) for root in roots],
                "critic": None if critic is None else {"model": critic.client.model,
                                                       "ollama_url": critic.client.base_url,
                                                       "queue": critic_queue.describe()}}

    async def critique(image, prompt: str) -> dict:
        """What the critic model says of the image: {analysis, strengths, weaknesses} or None, and `critic`."""
        started = time.perf_counter()
        try:
            result = await critic_queue.run(lambda: critic.evaluate_image(prompt, image))
        except Busy as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
        except OllamaError as exc:
            raise HTTPException(*ollama_failure(exc, critic.client.model, "--critic-model")) from None
        info = {"model": critic.client.model, "seconds": round(time.perf_counter() - started, 3),
                "fallback": result.value is None}
        if result.value is None:
            info["problem"] = f"the critic's answer was unusable twice ({result.problem}); the text is written " \
                              f"from the scores"
        return {"evaluation": result.value, "critic": info}

    @app.post("/analyze")
    async def analyze(body: AnalyzeBody) -> dict:
        if not (body.prompt or "").strip():
            raise HTTPException(422, "prompt: is empty; give the prompt the image was made for")
        image = await _run_blocking(lambda: load_image(body.imagePath, body.imageUrl, roots))
        if critic is None:
            return await in_turn(lambda: scorer.analyze(image, body.prompt))
        answer, seen = await asyncio.gather(in_turn(lambda: scorer.analyze(image, body.prompt)),
                                            critique(image, body.prompt))
        return {**answer, **(seen["evaluation"] or {}), "critic": seen["critic"]}

    @app.post("/score")
    async def score(body: ScoreBody) -> dict:
        images, texts = decode_images(body, MAX_DOWNLOAD_BYTES)
        if body.scorers:
            try:
                check_served(scorer, body.scorers)
            except InvalidParameter as exc:
                raise HTTPException(422, str(exc)) from None
        scores = await in_turn(lambda: scorer.score(images, texts))
        return {"scores": [{"alignment": s.alignment, "aesthetic": s.aesthetic, **s.named} for s in scores],
                "scorer": scorer.describe()}

    @app.post("/load")
    async def load() -> dict:
        await in_turn(scorer.load)
        return await health()

    @app.post("/unload")
    async def unload() -> dict:
        await in_turn(lambda: scorer.release("unload"))
        return await health()

    @app.exception_handler(OutsideRoots)
    async def outside(request, exc: OutsideRoots):
        return JSONResponse(status_code=403, content={"detail": str(exc)})

    return app


async def _run_blocking(work):
    """File reads and URL fetches run in a worker thread, outside the scoring line."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(work)


def load_image(image_path: Optional[str], image_url: Optional[str], roots: Optional[AllowedRoots] = None):
    """A PIL image from the request, or an HTTPException that says what is wrong with it. With `roots`, a file is
    read only inside them (OutsideRoots otherwise)."""
    if image_path and image_url:
        raise HTTPException(422, "give either imagePath or imageUrl, not both")
    if image_path:
        return open_image_file(image_path, "imagePath", roots)
    if image_url:
        return _open_image(_read_url(image_url), "imageUrl", _short(image_url))
    raise HTTPException(422, "give imagePath (a file in an --allow-dir folder) or imageUrl (http(s) or data: URL)")


def open_image_file(image_path: str, field: str, roots: Optional[AllowedRoots] = None):
    """An RGB PIL image from a file, read only inside `roots` when given (OutsideRoots otherwise); an
    HTTPException naming `field` when it is missing or not an image."""
    path = os.path.expanduser(image_path)
    # Read the checked, resolved path: a link swapped in after the check cannot point the read elsewhere.
    real = str(roots.check(path, field)) if roots is not None else path
    return _open_image(_read_file(real, field, shown=path), field, image_path)


def _read_file(path: str, field: str, shown: Optional[str] = None) -> bytes:
    shown = shown or path
    if not os.path.exists(path):
        raise HTTPException(400, f"{field}: file not found: {shown}")
    if not os.path.isfile(path):
        raise HTTPException(400, f"{field}: {shown} is not a file")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_DOWNLOAD_BYTES + 1)
    except OSError as exc:
        raise HTTPException(400, f"{field}: cannot read {shown} ({exc.strerror or exc})") from None
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise HTTPException(400, f"{field}: {shown} is larger than {MAX_DOWNLOAD_BYTES >> 20} MB")
    return data


def _read_url(url: str) -> bytes:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        raise OutsideRoots("imageUrl: file:// URLs are not read by this service; send the file as imagePath, which "
                           "is read inside the --allow-dir folders only")
    if scheme == "data":
        return _read_data_url(url)
    if scheme in ("http", "https"):
        return _fetch(url)
    raise HTTPException(400, f"imageUrl: unsupported URL {_short(url)!r}; use http(s):// or data:, "
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
            data, deadline = bytearray(), time.monotonic() + FETCH_TIMEOUT_S * 3
            for chunk in response.iter_content(chunk_size=1 << 16):
                data += chunk
                if time.monotonic() > deadline:     # `timeout` bounds each read; this bounds a slow trickle
                    raise HTTPException(400, f"imageUrl: {_short(url)} took longer than "
                                             f"{FETCH_TIMEOUT_S * 3:g} s to download")
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
    parser.add_argument("--scorer", action="append", metavar="SPEC",
                        help="also score with pickscore[=SOURCE] or hpsv2[=FILE] (repeatable), for clients that rank "
                             "by them (search --vision-url URL --scorer SPEC); CLIP + aesthetic always run")
    parser.add_argument("--hps-arch", dest="hps_arch", metavar="ARCH",
                        help="open_clip architecture of the hpsv2 weights (default ViT-H-14)")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--dtype", default="auto", help="auto (fp16 on CUDA, fp32 on CPU), fp16, bf16 or fp32")
    parser.add_argument("--allow-dir", dest="allow_dirs", action="append", default=None, metavar="DIR",
                        help="folder imagePath may point into (repeatable; default: ./output, which holds the Flux "
                             "service's output/flux); anything else is refused with 403")
    parser.add_argument("--queue-depth", type=int, default=DEFAULT_QUEUE_DEPTH, metavar="N",
                        help=f"requests that may wait behind the one being scored; more get 503 + Retry-After "
                             f"(default {DEFAULT_QUEUE_DEPTH})")
    parser.add_argument("--critic-model", default=None, metavar="NAME",
                        help="Ollama vision model (e.g. qwen2.5vl:7b, gemma3:12b, minicpm-v, llava) that writes "
                             "/analyze's analysis, strengths and weaknesses from the image itself (default: none; "
                             "the text is written from the two scores)")
    parser.add_argument("--ollama-url", default=settings.ollama_base_url,
                        help=f"Ollama server of --critic-model (default: OLLAMA_BASE_URL, else "
                             f"{settings.ollama_base_url})")
    add_guard_arguments(parser, DEFAULT_MAX_BODY_MB)
    args = parser.parse_args(argv)
    for flag, value in (("--queue-depth", args.queue_depth), *guard_flag_values(args)):
        if value < 0:
            parser.error(f"{flag} must be >= 0, got {value}")
    args.allow_dirs = args.allow_dirs or list(DEFAULT_ALLOW_DIRS)
    return args


def start_critic(ollama_url: str, model: str):
    """A PromptEngine over the critic model, refused before the port opens when Ollama cannot show it an image:
    InvalidParameter naming --critic-model (no vision, not installed) or --ollama-url; OllamaError when Ollama is
    down."""
    from ..llm.client import OllamaClient, OllamaModelNotFound
    from ..llm.operations import PromptEngine
    from ..llm.vision import require_vision

    try:
        client = OllamaClient(ollama_url, model)
    except InvalidParameter as exc:
        where = "--ollama-url" if exc.name == "base_url" else "--critic-model"
        raise InvalidParameter(where, InvalidParameter.bare(exc)) from None
    try:
        require_vision(client, "--critic-model", images=1)
    except OllamaModelNotFound as exc:
        line = ollama_failure(exc, model, "--critic-model")[1]
        raise InvalidParameter("--critic-model", line.removeprefix("--critic-model: ")) from None
    return PromptEngine(client)


def main(argv=None) -> int:
    import uvicorn

    from ..scoring.scorer import load_scorer
    from ..scoring.scorer_set import with_rewards
    from ..scoring.sources import check_scorers

    try:
        args = parse_args(argv)
        # The same verdicts as search and doctor give, before anything loads (CLIP + aesthetic always run).
        specs = check_scorers(args.scorer, args.hps_arch, flag="--scorer", arch_flag="--hps-arch")
        # The critic is checked next: a wrong model name fails in a second, not after the CLIP load.
        critic = start_critic(args.ollama_url, args.critic_model) if args.critic_model else None
        scorer = load_scorer(args.clip, aesthetic_model=args.aesthetic, device=args.device, dtype=args.dtype,
                             aesthetic_dirs=[args.aesthetic_dir] if args.aesthetic_dir else ())
        scorer = with_rewards(scorer, specs, hps_arch=args.hps_arch)
    except OllamaError as exc:
        print(f"error: {ollama_failure(exc, args.critic_model, '--critic-model')[1]}", file=sys.stderr)
        return 1
    except PromptBeamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidParameter) else 1
    info = scorer.describe()
    rewards = "".join(f" + {name}" for name in info.get("rewards") or ())
    print(f"Vision service: {info['clip_model']} + {info['aesthetic_model']}{rewards} on {info['device']} "
          f"at http://{args.host}:{args.port}", flush=True)
    if critic is not None:
        print(f"Vision service: critic {args.critic_model} through Ollama at {critic.client.base_url}", flush=True)
    app = create_app(scorer, allow_dirs=args.allow_dirs, queue_depth=args.queue_depth, critic=critic,
                     max_body_mb=args.max_body_mb, body_timeout_s=args.body_timeout)
    print(f"Vision service: imagePath allowed under {', '.join(os.path.realpath(d) for d in args.allow_dirs)}",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", http=guarded_http(args.header_timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
