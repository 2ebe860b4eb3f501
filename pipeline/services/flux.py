"""The seed's Flux HTTP service, served by the diffusers backend.

    python -m pipeline.services.flux --host 127.0.0.1 --port 8001 [--model ID_OR_PATH] [--base ID_OR_DIR]
        [--out DIR] [--device cuda] [--offload] [--lora PATH[:WEIGHT[:TRIGGER]] ...] [--lora-dir DIR ...]
        [--queue-depth N] [--keep-images N] [--keep-hours H] [--compile [--fp8] [--compile-cache DIR]]

POST /generate {prompt, height, width, steps, guidance, seed, negativePrompt, sampler, scheduler,
                loras: [{path, trigger, weight}] | [{path, scale}] | ["path", ...], lora_scale | loraScale,
                useDefaultLoras}
  -> {localPath, metadata, revisedPrompt}; GET /health -> {status, model, model_loaded, device, loras, queue, ...}.

LoRAs, as the seed's service does them: `loras` omitted, null or `[]` means the service's own LoRAs (--lora /
FLUX_LORAS), re-weighted by `lora_scale` when given; a list names exactly the LoRAs to use (paths take the shared
`lora_scale`, else 1.0). To render without any LoRA on a service that has default LoRAs, send
`useDefaultLoras: false` with `loras: []`. `returnImage: "f32"` (the rendered tensor, bit for bit) or `"png"` adds
the image itself to the answer as `image`, for clients that do not share the service's filesystem. A LoRA path in
a request must lie in a --lora-dir folder (403 otherwise).

Sampler and scheduler names the backend lacks (the seed's UI offers dpmpp_2m, euler_a, ddim, lcm, schedule beta)
are replaced by the closest it has and reported in `metadata.adjusted`, never refused.

Differences from the seed's service, on purpose: the pipeline loads once at startup (the port opens when the
model is ready); each LoRA file is loaded once and later requests only switch adapters and weights; a request
without `seed` gets a random one that is reported in `metadata.seed`; at most --queue-depth requests wait behind
the one rendering (then 503 with Retry-After); the PNGs are pruned to --keep-images / --keep-hours. With
--compile the service compiles Flux once at start, at --compile-size (1024x1024; the port opens after that); another size compiles
once at its first request, and a request with other LoRAs than the last one compiles again (LoRA weights are part
of the compiled code).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from ..config import LoraSpec, Settings
from ..errors import GenerationFailed, InvalidParameter, ModelNotFound
from ..generation.protocol import GenerationRequest
from ..record.pnginfo import save_png
from .compat import adjust_sampler, adjust_scheduler
from .confine import AllowedRoots, OutsideRoots
from .guard import DEFAULT_BODY_TIMEOUT_S, RequestGuard, add_guard_arguments, guard_flag_values, guarded_http
from .load import Busy, RenderQueue, prune_outputs
from .protocol import encode_image

# Body field names for GenerationRequest / generator parameter names, for 422 locations.
_FIELD_NAMES = {"negative": "negativePrompt"}
OUTPUT_PATTERN = "flux_*.png"          # retention only ever deletes the service's own files
DEFAULT_QUEUE_DEPTH = 16
DEFAULT_KEEP_IMAGES = 1000
DEFAULT_MAX_BODY_MB = 1.0              # a prompt and a LoRA list: kilobytes


class LoraBody(BaseModel):
    path: str = Field(min_length=1)
    trigger: str = ""
    weight: Optional[float] = Field(None, validation_alias=AliasChoices("weight", "scale"))


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)  # seed clients also send model, fix_faces...

    prompt: str = Field(min_length=1)
    height: int = 1024
    width: int = 1024
    steps: Optional[int] = Field(None, ge=1, le=200)  # None: 4 for schnell-like models, 28 for dev-like
    guidance: float = Field(3.5, ge=0)
    seed: Optional[int] = Field(None, ge=0, lt=2**64)
    negativePrompt: Optional[str] = None
    loras: Optional[list[Union[LoraBody, str]]] = None
    lora_scale: Optional[float] = Field(None, validation_alias=AliasChoices("lora_scale", "loraScale"))
    useDefaultLoras: bool = True
    returnImage: Optional[Literal["f32", "png"]] = None     # also send the image in the answer (see below)
    sampler: Optional[str] = None
    scheduler: Optional[str] = None

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_16(cls, value: int) -> int:
        if value < 16 or value > 4096 or value % 16:
            raise ValueError(f"must be a multiple of 16 between 16 and 4096 (Flux packs 2x2 latent patches), "
                             f"got {value}")
        return value

    @field_validator("loras")
    @classmethod
    def _paths_not_empty(cls, value):
        if value and any(isinstance(item, str) and not item.strip() for item in value):
            raise ValueError("a LoRA path is empty")
        return value


def output_name(seed: int, now_ns: Optional[int] = None) -> str:
    """flux_<local date-time>_<nanoseconds>_<seed>.png from ONE clock read, so names sort in the order the images
    were saved (two reads, one for the second and one for its fraction, can straddle a second boundary and
    name a newer file before an older one)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    seconds, fraction = divmod(now_ns, 10**9)
    return f"flux_{time.strftime('%Y%m%d-%H%M%S', time.localtime(seconds))}_{fraction:09d}_{seed}.png"


def _error(status: int, field: str, message: str, headers: Optional[dict] = None):
    from fastapi.responses import JSONResponse

    if status == 422:
        content = {"detail": [{"loc": ["body", _FIELD_NAMES.get(field, field)], "msg": message,
                               "type": "value_error"}]}
    else:
        content = {"detail": message}
    return JSONResponse(status_code=status, content=content, headers=headers)


class LoraRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def request_loras(body: GenerateBody, default_loras: list, lora_roots: AllowedRoots) -> list[LoraSpec]:
    """The LoRAs one request renders with (see the module docstring), request paths confined to the roots."""
    if not body.loras:
        if not body.useDefaultLoras:
            return []
        if body.lora_scale is None:
            return list(default_loras)
        return [LoraSpec(l.path, l.trigger, body.lora_scale) for l in default_loras]
    specs = []
    for item in body.loras:
        entry = LoraBody(path=item) if isinstance(item, str) else item
        weight = entry.weight if entry.weight is not None else (body.lora_scale if body.lora_scale is not None
                                                                else 1.0)
        try:
            found = lora_roots.find(entry.path, (".safetensors",), field="loras")
        except OutsideRoots as exc:
            raise LoraRefused(403, str(exc)) from None
        if found is None:
            raise LoraRefused(422, f"LoRA {entry.path!r} not found. Looked for: "
                                   f"{', '.join(lora_roots.candidates(entry.path, ('.safetensors',)))}. LoRA folders "
                                   f"searched: {lora_roots} (start the service with --lora-dir DIR to add one)")
        specs.append(LoraSpec(str(found), entry.trigger, weight))
    return specs


def create_app(generator, out_dir: str | os.PathLike, default_loras=(), lora_dirs=("loras",),
               queue_depth: int = DEFAULT_QUEUE_DEPTH, keep_images: Optional[int] = DEFAULT_KEEP_IMAGES,
               keep_hours: Optional[float] = None, max_body_mb: float = DEFAULT_MAX_BODY_MB,
               body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S):
    """FastAPI app around a ready DiffusersFluxGenerator. Renders run one at a time in a worker thread, queued on
    the event loop (pipeline.services.load), so /health answers while an image renders."""
    from fastapi import FastAPI

    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    default_loras = [l if isinstance(l, LoraSpec) else LoraSpec.from_dict(l) for l in default_loras]
    lora_roots = AllowedRoots(lora_dirs, "--lora-dir")
    queue = RenderQueue(queue_depth, what="render")
    max_age_s = keep_hours * 3600 if keep_hours is not None else None
    app = FastAPI(title="Prompt Beam Flux service")
    app.add_middleware(RequestGuard, queue=queue, paths=("/generate",), max_body_bytes=int(max_body_mb * 2**20),
                       body_timeout_s=body_timeout_s)

    @app.get("/health")
    async def health() -> dict:
        info = generator.describe()
        return {"status": "ok", "model": info["model"], "model_loaded": True, "device": info["device"],
                "dtype": info["dtype"], "offload": info["offload"], "guidance_embeds": info["guidance_embeds"],
                "loras": [{"file": l.file, "adapter": l.adapter} for l in generator.loaded_loras],
                "active_loras": info["loras"], "lora_loads": generator.lora_loads,
                "default_loras": [vars(l) for l in default_loras], "lora_dirs": [str(d) for d in lora_roots],
                "out": str(out), "queue": queue.describe(), "speed": info.get("speed"),
                "retention": {"keep_images": keep_images, "keep_hours": keep_hours}}

    @app.get("/download/status")
    async def download_status() -> dict:
        # The seed's client asks this before every render to pick its timeout; the model here is always loaded.
        return {"status": "downloaded", "model": generator.describe()["model"], "model_loaded": True}

    @app.post("/generate")
    async def generate(body: GenerateBody):
        seed = body.seed if body.seed is not None else secrets.randbelow(2**32)
        steps = body.steps or (28 if generator.guidance_embeds else 4)
        sampler, sampler_note = adjust_sampler(body.sampler)
        scheduler, scheduler_note = adjust_scheduler(body.scheduler)
        adjusted = [note for note in (sampler_note, scheduler_note) if note]
        request = GenerationRequest(prompt=body.prompt, seed=seed, width=body.width, height=body.height,
                                    steps=steps, guidance=body.guidance, negative=body.negativePrompt or None,
                                    sampler=sampler, scheduler=scheduler)
        try:
            loras = request_loras(body, default_loras, lora_roots)
            generator.check_request(request)
        except LoraRefused as exc:
            return _error(exc.status, "loras", str(exc))
        except InvalidParameter as exc:
            return _error(422, exc.name, str(exc))

        def render():
            generator.use_loras(loras)
            return generator.generate([request])[0]

        try:
            result = await queue.run(render)
        except Busy as exc:
            return _error(503, "queue", str(exc), headers={"Retry-After": str(exc.retry_after)})
        except InvalidParameter as exc:
            return _error(422, exc.name, str(exc))
        except ModelNotFound as exc:          # a LoRA that is unreadable or made for another model
            return _error(422, "loras", str(exc))
        except GenerationFailed as exc:
            return _error(500, "generate", str(exc))
        path = out / output_name(seed)
        metadata = {**result.metadata, "prompt": result.prompt, "seed": seed, "seconds": round(result.seconds, 3),
                    "negativePrompt": body.negativePrompt}
        if adjusted:
            metadata["adjusted"] = adjusted
            metadata["requested_sampler"], metadata["requested_scheduler"] = body.sampler, body.scheduler
        save_png(path, result.image, {"prompt": result.prompt, "seed": str(seed),
                                      "promptbeam": json.dumps(metadata, default=str)})
        prune_outputs(out, OUTPUT_PATTERN, keep_images, max_age_s)
        answer = {"localPath": str(path), "metadata": metadata, "revisedPrompt": result.prompt}
        if body.returnImage:
            answer["image"] = encode_image(result.image, body.returnImage)
        return answer

    return app


def parse_args(argv=None) -> argparse.Namespace:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="python -m pipeline.services.flux", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model", default=settings.flux_model,
                        help="hub id, diffusers folder or single-file transformer (default: FLUX_MODEL)")
    parser.add_argument("--base", default=None, help="components for a single-file --model (folder or hub id)")
    parser.add_argument("--out", default=os.path.join("output", "flux"), help="folder for the PNGs")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available)")
    parser.add_argument("--dtype", default=None, help="bf16 (default on GPU), fp16 or fp32 (default on CPU)")
    parser.add_argument("--offload", action="store_true", help="model CPU offload, for cards with <= 12 GB")
    parser.add_argument("--lora", action="append", default=None, metavar="PATH[:WEIGHT[:TRIGGER]]",
                        help="LoRA used when a request names none (repeatable; default: FLUX_LORAS)")
    parser.add_argument("--lora-dir", dest="lora_dirs", action="append", default=None, metavar="DIR",
                        help="folder requests may name LoRAs from (repeatable; default: FLUX_LORAS_DIR, else "
                             "./loras); a request LoRA elsewhere is refused with 403")
    parser.add_argument("--queue-depth", type=int, default=DEFAULT_QUEUE_DEPTH, metavar="N",
                        help=f"requests that may wait behind the one rendering; more get 503 + Retry-After "
                             f"(default {DEFAULT_QUEUE_DEPTH})")
    parser.add_argument("--keep-images", type=int, default=DEFAULT_KEEP_IMAGES, metavar="N",
                        help=f"keep only the newest N PNGs in --out, 0 = keep all (default {DEFAULT_KEEP_IMAGES})")
    parser.add_argument("--keep-hours", type=float, default=None, metavar="H",
                        help="also delete PNGs in --out older than H hours (default: no age limit)")
    add_guard_arguments(parser, DEFAULT_MAX_BODY_MB)
    parser.add_argument("--compile", action="store_true", help="compile Flux's transformer blocks at start")
    parser.add_argument("--fp8", action="store_true", help="with --compile: float8 weights (torchao; fp8 GPUs)")
    parser.add_argument("--compile-size", dest="compile_size", default="1024x1024", metavar="WxH",
                        help="the image size compiled at start (default 1024x1024; other sizes compile at their "
                             "first request)")
    parser.add_argument("--compile-cache", dest="compile_cache", default=None, metavar="DIR",
                        help="compiled kernels kept between starts (default: $PROMPTBEAM_COMPILE_CACHE, else "
                             "~/.cache/promptbeam/compile)")
    args = parser.parse_args(argv)
    args.loras = [LoraSpec.parse_cli(text) for text in args.lora] if args.lora else list(settings.flux_loras)
    try:
        args.compile_width, args.compile_height = (int(n) for n in args.compile_size.lower().split("x"))
    except ValueError:
        parser.error(f"--compile-size must be WIDTHxHEIGHT, e.g. 1024x1024, got {args.compile_size!r}")
    if not args.lora_dirs:
        from ..generation.loras import default_lora_dirs

        args.lora_dirs = default_lora_dirs()
    for flag, value in (("--queue-depth", args.queue_depth), ("--keep-images", args.keep_images),
                        ("--keep-hours", args.keep_hours), *guard_flag_values(args)):
        if value is not None and value < 0:
            parser.error(f"{flag} must be >= 0, got {value}")
    return args


def main(argv=None) -> int:
    import sys

    import uvicorn

    from ..errors import PromptBeamError
    from ..generation.diffusers_flux import DiffusersFluxGenerator

    args = parse_args(argv)
    try:
        # The default LoRAs load now: a bad one stops the service at startup, not at its first request.
        generator = DiffusersFluxGenerator(args.model, base=args.base, device=args.device, dtype=args.dtype,
                                           offload=args.offload, max_batch=1, loras=args.loras,
                                           compile=args.compile, fp8=args.fp8, compile_cache=args.compile_cache)
        if generator.warm_up_needed:
            done = generator.warm_up(GenerationRequest("warm-up", seed=0, width=args.compile_width,
                                                       height=args.compile_height,
                                                       steps=28 if generator.guidance_embeds else 4))
            print(f"Flux service: compiled in {done['seconds']:.1f} s (cache {generator.speed.cache_dir})"
                  if not done["warning"] else f"warning: {done['warning']}", flush=True)
    except PromptBeamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidParameter) else 1
    app = create_app(generator, args.out, default_loras=args.loras, lora_dirs=args.lora_dirs,
                     queue_depth=args.queue_depth, keep_images=args.keep_images or None,
                     keep_hours=args.keep_hours or None, max_body_mb=args.max_body_mb,
                     body_timeout_s=args.body_timeout)
    print(f"Flux service: {args.model} on {generator.device} at http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", http=guarded_http(args.header_timeout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
