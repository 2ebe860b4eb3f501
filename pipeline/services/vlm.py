"""The seed's VLM service (pairwise image comparison, port 8004), served by an Ollama vision model.

    python -m pipeline.services.vlm --host 127.0.0.1 --port 8004 [--ollama-url URL] [--model NAME]
        [--allow-dir DIR ...] [--queue-depth N] [--max-side PX] [--timeout S]

POST /compare, /compare-alignment, /compare-aesthetics {image_a, image_b, prompt} -> {choice: A|B|TIE,
explanation, confidence, ranks: {A: {alignment, aesthetics}, B: {...}}, winner_strengths, loser_weaknesses,
improvement_suggestion} (the focused endpoints rank their own dimension only; /compare-aesthetics takes an empty
prompt, as the seed's client sends); POST /compare-batch {comparisons: [{image_a, image_b, prompt}]} -> {results,
total}; GET /health, POST /load, POST /unload, GET /download/status, GET /bias_stats. These are the endpoints and
JSON of the seed's `services/vlm_service.py`, which its `local-vlm-provider.js` calls.

Differences from the seed's service, on purpose: every pair is asked in BOTH orders (A shown first, then B shown
first) and the answer is A or B only when both orders name that image, TIE otherwise. That costs two VLM requests
per comparison, and it is what makes the answer worth having: vision models prefer one position, most of all when
the images are close, and the seed's client swaps the order at random once per vote, so a biased model's vote
follows the coin. A model that always answers "first" gets TIE here. The model is Ollama's (any vision model that
takes two images a request: qwen2.5vl, qwen3-vl, gemma3, minicpm-v), checked at start through Ollama's /api/show
(a text model, a one-image model or a missing one exits 2 before the port opens); `image_a`/`image_b` are read
only inside the --allow-dir folders (default ./output; anything else is a 403 naming the flag); at most
--queue-depth requests wait behind the one being judged (then 503 with Retry-After); a failing Ollama is a 502
(504 for a timeout) with one line saying what to do. How each response field is derived: vlm_answers.py.
OLLAMA_BASE_URL and VLM_MODEL set the defaults of --ollama-url and --model (VLM_MODEL unset: qwen2.5vl:7b).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidParameter, PromptBeamError
from ..llm.client import OllamaClient, OllamaError, OllamaModelNotFound, same_model
from ..llm.operations import PromptEngine
from ..llm.vision import MAX_SIDE, PairwiseJudge, VisionSupport, encoded, judgement, require_vision
from .confine import AllowedRoots, OutsideRoots
from .guard import DEFAULT_BODY_TIMEOUT_S, RequestGuard, add_guard_arguments, guard_flag_values, guarded_http
from .load import Busy, RenderQueue
from .vision import open_image_file
from .vlm_answers import BiasStats, compare_response, ollama_failure

DEFAULT_ALLOW_DIRS = ("output",)     # where the seed's app keeps its images (output/<date>/<session>/)
DEFAULT_QUEUE_DEPTH = 16
MAX_BATCH = 64                       # comparisons in one /compare-batch; bounds one request's time
DEFAULT_MAX_BODY_MB = 1.0            # file paths and a prompt, 64 of them at most: kilobytes
JUDGED_PATHS = ("/compare", "/compare-alignment", "/compare-aesthetics", "/compare-batch")
HEALTH_TIMEOUT_S = 5.0               # /health asks Ollama what is loaded; it must answer fast or say it cannot


class CompareBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    image_a: str = Field(min_length=1)
    image_b: str = Field(min_length=1)
    prompt: str                       # the seed's client sends '' to /compare-aesthetics


class CompareBatchBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    comparisons: list[CompareBody] = Field(min_length=1, max_length=MAX_BATCH)
    cleanup_between: bool = True      # accepted; Ollama manages the model's memory, there is nothing to clean


def create_app(judge: PairwiseJudge, allow_dirs=DEFAULT_ALLOW_DIRS, queue_depth: int = DEFAULT_QUEUE_DEPTH,
               support: Optional[VisionSupport] = None, max_body_mb: float = DEFAULT_MAX_BODY_MB,
               body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S) -> FastAPI:
    """The HTTP app around a PairwiseJudge over an Ollama vision model. Each comparison (two VLM requests) runs in
    a worker thread, one at a time, queued on the event loop (pipeline.services.load)."""
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    client: OllamaClient = judge.engine.client
    model = client.model
    # /health and /download/status ask Ollama with a short timeout and no retries: they report, never wait.
    probe = OllamaClient(client.base_url, model, timeout=HEALTH_TIMEOUT_S, retries=0)
    roots = AllowedRoots(allow_dirs, "--allow-dir")
    queue = RenderQueue(queue_depth, what="comparison")
    stats = BiasStats()
    app = FastAPI(title="Prompt Beam VLM service")
    app.add_middleware(RequestGuard, queue=queue, paths=JUDGED_PATHS, max_body_bytes=int(max_body_mb * 2**20),
                       body_timeout_s=body_timeout_s)

    async def in_turn(work):
        try:
            return await queue.run(work)
        except Busy as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
        except OllamaError as exc:
            raise HTTPException(*ollama_failure(exc, model)) from None
        except InvalidParameter as exc:
            raise HTTPException(422, str(exc)) from None
        except PromptBeamError as exc:
            raise HTTPException(500, f"comparison failed: {exc}") from None

    def judged(body: CompareBody, aspect: str, images=None) -> dict:
        """One pair, both orders, in the client's shape; counted in /bias_stats."""
        first, second = images or read_pair(body, aspect, roots)
        response = compare_response(both_orders(judge, aspect, body.prompt, first, second), aspect)
        stats.record(response)
        return response

    async def compare_on(body: CompareBody, aspect: str) -> dict:
        images = await run_in_threadpool(lambda: read_pair(body, aspect, roots))
        return await in_turn(lambda: judged(body, aspect, images))

    @app.post("/compare")
    async def compare(body: CompareBody) -> dict:
        return await compare_on(body, "overall")

    @app.post("/compare-alignment")
    async def compare_alignment(body: CompareBody) -> dict:
        return await compare_on(body, "alignment")

    @app.post("/compare-aesthetics")
    async def compare_aesthetics(body: CompareBody) -> dict:
        return await compare_on(body, "aesthetics")

    @app.post("/compare-batch")
    async def compare_batch(body: CompareBatchBody) -> dict:
        def run_all() -> list:
            results = []
            for item in body.comparisons:      # one item failing does not stop the others, as the seed's
                try:
                    results.append(judged(item, "overall"))
                except (HTTPException, OutsideRoots, OllamaError) as exc:
                    status, detail = (exc.status_code, exc.detail) if isinstance(exc, HTTPException) else \
                        (403, str(exc)) if isinstance(exc, OutsideRoots) else ollama_failure(exc, model)
                    results.append({"error": True, "status": status, "detail": detail})
            return results
        results = await in_turn(run_all)
        return {"results": results, "total": len(results)}

    @app.get("/health")
    async def health() -> dict:
        try:
            loaded, problem = await run_in_threadpool(probe.is_loaded), None
        except OllamaError as exc:
            loaded, problem = False, ollama_failure(exc, model)[1]
        body = {"status": "unhealthy" if problem else "healthy", "model": model, "model_repo": model,
                "backend": "ollama", "ollama_url": client.base_url, "model_loaded": loaded,
                "max_image_size": judge.max_side, "orders_per_comparison": 2, "queue": queue.describe(),
                "allow_dirs": [str(root) for root in roots]}
        if support is not None:
            body["vision"] = {"family": support.family, "images_per_request": support.images_per_request}
        if problem:
            body["error"] = problem
        return body

    @app.post("/load")
    async def load() -> dict:
        # An empty chat makes Ollama load the model and keep it for the client's keep_alive (Ollama's API docs).
        await in_turn(lambda: client.chat([], think=None))
        return {"status": "loaded", "model": model, "model_repo": model, "model_loaded": True}

    @app.post("/unload")
    async def unload() -> dict:
        def release() -> bool:
            was_loaded = client.is_loaded()
            client.unload()
            return was_loaded
        if await in_turn(release):
            return {"status": "unloaded", "message": f"Ollama unloaded {model}; its memory is free"}
        return {"status": "not_loaded", "message": "Model was not loaded"}

    @app.get("/download/status")
    async def download_status() -> dict:
        try:
            installed = await run_in_threadpool(probe.list_models)
        except OllamaError as exc:
            return {"status": "error", "model": model, "message": ollama_failure(exc, model)[1]}
        if any(same_model(name, model) for name in installed):
            return {"status": "cached", "model": model, "message": f"{model} is installed in Ollama"}
        return {"status": "not_downloaded", "model": model, "message": f"run `ollama pull {model}`"}

    @app.get("/bias_stats")
    async def bias_stats() -> dict:
        return stats.describe()

    @app.exception_handler(OutsideRoots)
    async def outside(request, exc: OutsideRoots):
        return JSONResponse(status_code=403, content={"detail": str(exc)})

    return app


def both_orders(judge: PairwiseJudge, aspect: str, prompt: str, image_a, image_b) -> dict:
    """PairwiseJudge.compare with one of the service's focused questions (ASPECT_QUESTIONS, with the feedback the
    client reads): A shown first, then B shown first -> {verdict, answers, model, seconds}, the images named A, B."""
    started = time.perf_counter()
    a, b = encoded(image_a, judge.max_side), encoded(image_b, judge.max_side)

    def ask(first: str, second: str) -> dict:
        return judge.engine.judge_aspect(aspect, prompt, first, second, max_side=judge.max_side)
    a_first, b_first = ask(a, b), ask(b, a)
    return judgement(("A", "B"), a_first, b_first, judge.model, time.perf_counter() - started)


def read_pair(body: CompareBody, aspect: str, roots: AllowedRoots) -> tuple:
    """The two images of a request (read inside the roots only), or a 4xx naming the field."""
    if aspect != "aesthetics" and not body.prompt.strip():
        raise HTTPException(422, "prompt: is empty; give the prompt the images were made for (only "
                                 "/compare-aesthetics judges without one)")
    return open_image_file(body.image_a, "image_a", roots), open_image_file(body.image_b, "image_b", roots)


# ---------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None, env=None) -> argparse.Namespace:
    from ..config import Settings

    settings = Settings.from_env(env)
    parser = argparse.ArgumentParser(prog="python -m pipeline.services.vlm", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8004)
    parser.add_argument("--ollama-url", default=settings.ollama_base_url,
                        help=f"Ollama server (default: OLLAMA_BASE_URL, else {settings.ollama_base_url})")
    parser.add_argument("--model", default=settings.vlm_model,
                        help="Ollama vision model that takes two images a request, e.g. qwen2.5vl:7b, qwen3-vl:8b, "
                             "gemma3:12b (default: VLM_MODEL, else qwen2.5vl:7b)")
    parser.add_argument("--allow-dir", dest="allow_dirs", action="append", default=None, metavar="DIR",
                        help="folder image_a/image_b may point into (repeatable; default: ./output, where the seed's "
                             "app keeps its images); anything else is refused with 403")
    parser.add_argument("--queue-depth", type=int, default=DEFAULT_QUEUE_DEPTH, metavar="N",
                        help=f"requests that may wait behind the one being judged; more get 503 + Retry-After "
                             f"(default {DEFAULT_QUEUE_DEPTH})")
    parser.add_argument("--max-side", type=int, default=MAX_SIDE, metavar="PX",
                        help=f"longest side of each image sent to the model (default {MAX_SIDE})")
    parser.add_argument("--timeout", type=float, default=180.0, metavar="S",
                        help="seconds to wait for one Ollama answer (default 180; a cold model loads first)")
    add_guard_arguments(parser, DEFAULT_MAX_BODY_MB)
    args = parser.parse_args(argv)
    for flag, value, least in (("--queue-depth", args.queue_depth, 0), ("--max-side", args.max_side, 28),
                               ("--timeout", args.timeout, 1), *((f, v, 0) for f, v in guard_flag_values(args))):
        if value < least:
            parser.error(f"{flag} must be >= {least}, got {value:g}")
    args.allow_dirs = args.allow_dirs or list(DEFAULT_ALLOW_DIRS)
    return args


def start_judge(ollama_url: str, model: str, timeout: float, max_side: int = MAX_SIDE,
                flag: str = "--model") -> tuple[PairwiseJudge, VisionSupport]:
    """A judge over the model, refused before any request when Ollama cannot show it two images: InvalidParameter
    naming the flag (no vision, one image a request, not installed, a bad URL), OllamaError when Ollama is down."""
    try:
        client = OllamaClient(ollama_url, model, timeout=timeout)
    except InvalidParameter as exc:
        where = "--ollama-url" if exc.name == "base_url" else flag
        raise InvalidParameter(where, InvalidParameter.bare(exc)) from None
    try:
        support = require_vision(client, flag, images=2)
    except OllamaModelNotFound as exc:
        raise InvalidParameter(flag, ollama_failure(exc, model, flag)[1].removeprefix(f"{flag}: ")) from None
    return PairwiseJudge(PromptEngine(client), max_side=max_side), support


def main(argv=None) -> int:
    import uvicorn

    try:
        args = parse_args(argv)
        judge, support = start_judge(args.ollama_url, args.model, args.timeout, args.max_side)
    except OllamaError as exc:
        print(f"error: {ollama_failure(exc, args.model)[1]}", file=sys.stderr)
        return 1
    except PromptBeamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidParameter) else 1
    app = create_app(judge, allow_dirs=args.allow_dirs, queue_depth=args.queue_depth, support=support,
                     max_body_mb=args.max_body_mb, body_timeout_s=args.body_timeout)
    print(f"VLM service: {args.model} ({support.family or 'vision'}) through Ollama at {judge.engine.client.base_url}, "
          f"each pair asked in both orders, at http://{args.host}:{args.port}", flush=True)
    print(f"VLM service: image_a/image_b allowed under {', '.join(os.path.realpath(d) for d in args.allow_dirs)}",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", http=guarded_http(args.header_timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
