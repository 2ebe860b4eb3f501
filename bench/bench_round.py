"""GPU benchmark of whole searches: the real BeamSearch with full-size Flux-schnell (random weights, bf16, diffusers
backend), full-size CLIP ViT-L/14 + LAION head (random weights, fp16) and the fake Ollama server as the LLM, run
with three LLM speeds (the fake's latency model: decode tokens/s, prefill tokens/s, parallel slots):

    instant      answers at once (the GPU side and the controller alone)
    80x1         80 tokens/s, one request at a time (Ollama's default on small GPUs)
    80x4         80 tokens/s, 4 parallel slots (OLLAMA_NUM_PARALLEL=4)

Each case runs in three modes: "streamed" (PromptEngine: one request for round 0, one per parent, children rendered
while other parents are with the LLM), "phased" (the single operations: expand x2, combine, critique, refine, as
one phase before each round's rendering, as before the streaming rounds) and "vlm" (streamed, plus a separate
vision critic that looks at each new parent and a pairwise judge near the cut, budget JUDGE_BUDGET pairs a round,
served by the same stand-in with its images counted as prompt tokens). For each: wall time, generation, scoring,
LLM wait and LLM work time, wall / generation, the number of LLM requests and of vision requests, beside what the
original system asks of its VLM for the same settings (all pairs of every round, 3 votes each).

    python bench/bench_round.py              # on a GPU machine (~45 GB)
    TINY=1 python bench/bench_round.py       # miniature models on the CPU, to check the script
Env: OUT (folder for bench_round.json, default bench/out), BEAM (default 4), KEEP (2), ROUNDS (3), SIZE (1024),
CASES (default "instant,80x1,80x4"), MODES (default "streamed,phased,vlm"), PREFILL_TPS (5000), JUDGE_BUDGET (4),
JUDGE_MARGIN (1.0).
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
from pipeline.llm.vision import PairwiseJudge  # noqa: E402
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
MODES = [m for m in os.environ.get("MODES", "streamed,phased,vlm").split(",") if m]
PREFILL_TPS = os.environ.get("PREFILL_TPS", "5000")
JUDGE_BUDGET = int(os.environ.get("JUDGE_BUDGET", "4"))
JUDGE_MARGIN = float(os.environ.get("JUDGE_MARGIN", "1.0"))
TEXT_MODEL, VISION_MODEL = "qwen2.5:7b-instruct", "qwen2.5vl:7b"
PROMPT = "a lighthouse on a cliff at dusk"


def start_fake_ollama(case: str):
    """The fake Ollama as a subprocess (its sleeps never contend with this process's GIL). case: "instant" or
    "<decode tok/s>x<slots>"."""
    latency = []
    if case != "instant":
        decode, slots = case.split("x")
        latency = ["--decode-tps", decode, "--slots", slots, "--prefill-tps", PREFILL_TPS]
    process = subprocess.Popen([sys.executable, "-m", "tests.fixtures.ollama", "--port", "0", *latency,
                                "--models", f"{TEXT_MODEL},{VISION_MODEL}"], cwd=REPO, stdout=subprocess.PIPE,
                               text=True)
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
                          "height": SIZE, "steps": bench_flux.STEPS, "guidance": 0.0, "judge_budget": JUDGE_BUDGET,
                          "judge_margin": JUDGE_MARGIN} | changes))


def original_vlm_requests(beam: int, keep: int, rounds: int, votes: int = 3) -> int:
    """What the original system asks of its VLM for these settings at most: every pair of round 0's N candidates,
    then of each later round's pool (M parents + M*floor(N/M) children) less the parents' known pair, 3 votes each
    (its reference account, section 1.11: 186 for N=4, M=2, 5 rounds)."""
    pool = keep + keep * (beam // keep)
    return votes * (beam * (beam - 1) // 2 + (rounds - 1) * (pool * (pool - 1) // 2 - keep * (keep - 1) // 2))


def searcher(url: str, mode: str, generator, scorer, **changes) -> BeamSearch:
    engine = PromptEngine(OllamaClient(url, TEXT_MODEL), seed=1)
    if mode == "phased":
        return BeamSearch(SingleOperations(engine), generator, scorer, config(**changes))
    if mode == "streamed":
        return BeamSearch(engine, generator, scorer, config(**changes))
    vision = PromptEngine(OllamaClient(url, VISION_MODEL), seed=1)
    return BeamSearch(engine, generator, scorer, config(**changes), critic=vision, judge=PairwiseJudge(vision))


def run_case(generator, scorer, case: str, mode: str) -> dict:
    ollama, url = start_fake_ollama(case)
    try:
        started = time.perf_counter()
        search = searcher(url, mode, generator, scorer).run(PROMPT, tempfile.mkdtemp())
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
           "critic_requests": report["llm"]["critic_calls"], "judge_requests": report["llm"]["judge_calls"],
           "pairs_judged": len(report["judgements"]), "judge_s": round(timings.get("judge_s", 0.0), 3),
           "original_vlm_requests_at_most": original_vlm_requests(BEAM, KEEP, ROUNDS),
           "generate_per_image_s": round(timings["generate_s"] / images, 4),
           "score_share_of_gpu_pct": round(100 * timings["score_s"] / (timings["generate_s"] + timings["score_s"]), 2),
           "other_s": round(wall - timings["llm_s"] - timings["generate_s"] - timings["score_s"]
                            - timings.get("judge_s", 0.0), 3),
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
        for mode in MODES:
            searcher(url, mode, generator, scorer, iterations=2, seed=1).run("warm up", tempfile.mkdtemp())
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
