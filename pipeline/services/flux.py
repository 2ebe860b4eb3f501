"""The seed's Flux HTTP service, served by the diffusers backend.

    python -m pipeline.services.flux --host 127.0.0.1 --port 8001 [--model ID_OR_PATH] [--base ID_OR_DIR]
        [--out DIR] [--device cuda] [--offload] [--lora PATH[:WEIGHT[:TRIGGER]] ...]

POST /generate {prompt, height, width, steps, guidance, seed, negativePrompt, loras: [{path, trigger, weight}]}
  -> {localPath, metadata, revisedPrompt}; GET /health -> {status, model, device, loras, ...}.

Differences from the seed's service, on purpose: the pipeline loads once at startup (the port opens when the
model is ready); each LoRA file is loaded once and later requests only switch adapters and weights; a request
without `seed` gets a random one that is reported in `metadata.seed`; `loras` omitted means the service's own
LoRAs (--lora / FLUX_LORAS), `loras: []` means none; the seed's `{path, scale}` LoRA form is accepted too.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Optional

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from ..config import LoraSpec, Settings
from ..errors import GenerationFailed, InvalidParameter, ModelNotFound
from ..generation.protocol import GenerationRequest
from ..record.pnginfo import save_png

# Body field names for GenerationRequest / generator parameter names, for 422 locations.
_FIELD_NAMES = {"negative": "negativePrompt"}


class LoraBody(BaseModel):
    path: str = Field(min_length=1)
    trigger: str = ""
    weight: float = Field(1.0, validation_alias=AliasChoices("weight", "scale"))


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="ignore")     # seed clients also send model, fix_faces, ... (unused here)

    prompt: str = Field(min_length=1)
    height: int = 1024
    width: int = 1024
    steps: Optional[int] = Field(None, ge=1, le=200)  # None: 4 for schnell-like models, 28 for dev-like
    guidance: float = Field(3.5, ge=0)
    seed: Optional[int] = Field(None, ge=0, lt=2**64)
    negativePrompt: Optional[str] = None
    loras: Optional[list[LoraBody]] = None
    sampler: Optional[str] = None
    scheduler: Optional[str] = None

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_16(cls, value: int) -> int:
        if value < 16 or value > 4096 or value % 16:
            raise ValueError(f"must be a multiple of 16 between 16 and 4096 (Flux packs 2x2 latent patches), "
                             f"got {value}")
        return value


def _unprocessable(field: str, message: str):
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=422, content={"detail": [
        {"loc": ["body", _FIELD_NAMES.get(field, field)], "msg": message, "type": "value_error"}]})


def create_app(generator, out_dir: str | os.PathLike, default_loras=()):
    """FastAPI app around a ready DiffusersFluxGenerator. Endpoints are plain `def`s: FastAPI runs them in a
    thread pool, so /health answers while an image renders; a lock serialises use of the one pipeline."""
    from fastapi import FastAPI

    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    default_loras = [l if isinstance(l, LoraSpec) else LoraSpec.from_dict(l) for l in default_loras]
    lock = threading.Lock()
    app = FastAPI(title="Prompt Beam Flux service")

    @app.get("/health")
    def health() -> dict:
        info = generator.describe()
        return {"status": "ok", "model": info["model"], "device": info["device"], "dtype": info["dtype"],
                "offload": info["offload"], "guidance_embeds": info["guidance_embeds"],
                "loras": [{"file": l.file, "adapter": l.adapter} for l in generator.loaded_loras],
                "active_loras": info["loras"], "lora_loads": generator.lora_loads,
                "default_loras": [vars(l) for l in default_loras], "out": str(out)}

    @app.post("/generate")
    def generate(body: GenerateBody):
        seed = body.seed if body.seed is not None else secrets.randbelow(2**32)
        steps = body.steps or (28 if generator.guidance_embeds else 4)
        request = GenerationRequest(prompt=body.prompt, seed=seed, width=body.width, height=body.height,
                                    steps=steps, guidance=body.guidance, negative=body.negativePrompt,
                                    sampler=body.sampler, scheduler=body.scheduler)
        loras = default_loras if body.loras is None else [LoraSpec(l.path, l.trigger, l.weight) for l in body.loras]
        try:
            generator.check_request(request)
            with lock:
                generator.use_loras(loras)
                result = generator.generate([request])[0]
        except InvalidParameter as exc:
            return _unprocessable(exc.name, str(exc))
        except ModelNotFound as exc:          # a LoRA that is missing or made for another model
            return _unprocessable("loras", str(exc))
        except GenerationFailed as exc:
            from fastapi.responses import JSONResponse

            return JSONResponse(status_code=500, content={"detail": str(exc)})
        path = out / f"flux_{time.strftime('%Y%m%d-%H%M%S')}_{time.time_ns() % 10**9:09d}_{seed}.png"
        metadata = {**result.metadata, "prompt": result.prompt, "seed": seed, "seconds": round(result.seconds, 3),
                    "negativePrompt": body.negativePrompt}
        save_png(path, result.image, {"prompt": result.prompt, "seed": str(seed),
                                      "promptbeam": json.dumps(metadata, default=str)})
        return {"localPath": str(path), "metadata": metadata, "revisedPrompt": result.prompt}

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
    args = parser.parse_args(argv)
    args.loras = [LoraSpec.parse_cli(text) for text in args.lora] if args.lora else list(settings.flux_loras)
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
                                           offload=args.offload, max_batch=1, loras=args.loras)
    except PromptBeamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidParameter) else 1
    app = create_app(generator, args.out, default_loras=args.loras)
    print(f"Flux service: {args.model} on {generator.device} at http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
