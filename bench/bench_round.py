"""GPU benchmark of whole searches: the real BeamSearch with full-size Flux-schnell (random weights, bf16, diffusers
backend), full-size CLIP ViT-L/14 + LAION head (random weights, fp16) and the fake Ollama server as the LLM, run
with three LLM speeds (the fake's latency model: decode tokens/s, prefill tokens/s, parallel slots):

    instant      answers at once (the GPU side and the controller alone)
    80x1         80 tokens/s, one request at a time (Ollama's default on small GPUs)
    80x4         80 tokens/s, 4 parallel slots (OLLAMA_NUM_PARALLEL=4)

Each case runs twice: "streamed" (PromptEngine: one request for round 0, one per parent, children rendered while
other parents are with the LLM) and "phased" (the single operations: expand x2, combine, critique, refine, as one
phase before each round's rendering, as before the streaming rounds). For each: wall time, generation, scoring,
LLM wait and LLM work time, wall / generation, and the number of LLM requests.

    python bench/bench_round.py              # on a GPU machine (~45 GB)
    TINY=1 python bench/bench_round.py       # miniature models on the CPU, to check the script
Env: OUT (folder for bench_round.json, default bench/out), BEAM (default 4), KEEP (2), ROUNDS (3), SIZE (1024),
CASES (default "instant,80x1,80x4"), MODES (default "streamed,phased"), PREFILL_TPS (5000).
"""
import os
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))

import bench_flux  # noqa: E402  (TINY/DEVICE/SIZE settings are read from the same environment)
import bench_scoring  # noqa: E402
from pipeline.beam.search import BeamConfig, BeamSearch  # noqa: E402
from pipeline.generation.diffusers_flux import DiffusersFluxGenerator  # noqa: E402
from pipeline.llm.client import OllamaClient  # noqa: E402
from pipeline.llm.operations import PromptEngine  # noqa: E402
from bench_common import Results  # noqa: E402

TINY = bench_flux.TINY
SIZE = bench_flux.SIZE
BEAM = int(os.environ.get("BEAM", "4"))
KEEP = int(os.environ.get("KEEP", "2"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
result = Results("bench_round", device=bench_flux.result["device"], torch=torch.__version__, size=SIZE,
                 beam_width=BEAM, keep_top=KEEP, iterations=ROUNDS, tiny=TINY)
log = result.log


CASES = [c for c in os.environ.get("CASES", "instant,80x1,80x4").split(",") if c]
MODES = [m for m in os.environ.get("MODES", "streamed,phased").split(",") if m]
PREFILL_TPS = os.environ.get("PREFILL_TPS", "5000")
PROMPT = "a lighthouse on a cliff at dusk"


def start_fake_ollama(case: str):
    """The fake Ollama as a subprocess (its sleeps never contend with this process's GIL). case: "instant" or
    "<decode tok/s>x<slots>"."""
    latency = []
    if case != "instant":
        decode, slots = case.split("x")
        latency = ["--decode-tps", decode, "--slots", slots, "--prefill-tps", PREFILL_TPS]
    process = subprocess.Popen([sys.executable, "-m", "tests.fixtures.ollama", "--port", "0", *latency], cwd=REPO,
                               stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()          # "listening on http://127.0.0.1:PORT"
    return process, line.strip().split()[-1]


class SingleOperations:
    """PromptEngine without its per-round operations: the search falls back to the single ones, phase-ordered."""

    def __init__(self, engine: PromptEngine):
        self._engine = engine
        self.client = engine.client

    def __getattr__(self, name):
        if name in ("expand_pairs", "refine_children"):
            raise AttributeError(name)
        return getattr(self._engine, name)


def config(**changes) -> BeamConfig:
    return BeamConfig(**({"beam_width": BEAM, "keep_top": KEEP, "iterations": ROUNDS, "seed": 7, "width": SIZE,
                          "height": SIZE, "steps": bench_flux.STEPS, "guidance": 0.0} | changes))


def run_case(generator, scorer, case: str, mode: str) -> dict:
    ollama, url = start_fake_ollama(case)
    try:
        engine = PromptEngine(OllamaClient(url, "qwen2.5:7b-instruct"), seed=1)
        ops = engine if mode == "streamed" else SingleOperations(engine)
        started = time.perf_counter()
        search = BeamSearch(ops, generator, scorer, config()).run(PROMPT, tempfile.mkdtemp())
        wall = time.perf_counter() - started
    finally:
        ollama.terminate()
        ollama.wait()
    report, timings = search.report, search.report["timings"]
    images = sum(1 for c in report["candidates"] if c["status"] == "ok")
    out = {"images": images, "wall_s": round(wall, 3), "generate_s": round(timings["generate_s"], 3),
           "score_s": round(timings["score_s"], 3), "llm_wait_s": round(timings["llm_s"], 3),
           "llm_work_s": round(timings.get("llm_work_s", timings["llm_s"]), 3),
           "wall_over_generation": round(wall / timings["generate_s"], 3),
           "llm_requests": report["llm"]["calls"], "llm_fallbacks": report["llm"]["fallbacks"],
           "generate_per_image_s": round(timings["generate_s"] / images, 4),
           "score_share_of_gpu_pct": round(100 * timings["score_s"] / (timings["generate_s"] + timings["score_s"]), 2),
           "other_s": round(wall - timings["llm_s"] - timings["generate_s"] - timings["score_s"], 3),
           "best": report.get("best"), "stop_reason": report["stop_reason"]}
    return out


def main():
    pipe = bench_flux.build_pipeline()
    encode = bench_flux.random_prompt_encoder(pipe)
    generator = DiffusersFluxGenerator.from_pipeline(pipe, model="random-flux-schnell-size", max_batch=4,
                                                     prompt_encoder=encode)
    scorer = bench_scoring.build_scorer()
    # Warm-up search: CUDA kernels, allocator, cuDNN autotune at every batch size used (not timed).
    ollama, url = start_fake_ollama("instant")
    try:
        engine = PromptEngine(OllamaClient(url, "qwen2.5:7b-instruct"), seed=1)
        for ops in (engine, SingleOperations(engine)):
            BeamSearch(ops, generator, scorer, config(iterations=2, seed=1)).run("warm up", tempfile.mkdtemp())
    finally:
        ollama.terminate()
        ollama.wait()
    for case in CASES:
        for mode in MODES:
            log(f"{case}/{mode}", run_case(generator, scorer, case, mode))
    if not TINY:
        log("peak_mem_GB", round(torch.cuda.max_memory_allocated() / 2**30, 1))
    result.print_final()


if __name__ == "__main__":
    main()
