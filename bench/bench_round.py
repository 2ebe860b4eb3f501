"""GPU benchmark of whole search rounds: the real BeamSearch with full-size Flux-schnell (random weights, bf16,
diffusers backend), full-size CLIP ViT-L/14 + LAION head (random weights, fp16) and the fake Ollama server as the
LLM (so the numbers are the GPU side and the controller, not a language model's speed).

It answers two questions of the design:
  * is scoring invisible next to Flux? (target: score_s < 3 % of a round's time)
  * what does the controller itself cost? (wall time - LLM - generation - scoring, and per image against a raw
    FluxPipeline call on the same inputs)

    python bench/bench_round.py              # on a GPU machine (~45 GB)
    TINY=1 python bench/bench_round.py       # miniature models on the CPU, to check the script
Env: OUT (folder for bench_round.json, default bench/out), BEAM (default 4), KEEP (2), ROUNDS (3), SIZE (1024).
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


def start_fake_ollama():
    process = subprocess.Popen([sys.executable, "-m", "tests.fixtures.ollama", "--port", "0"], cwd=REPO,
                               stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()          # "listening on http://127.0.0.1:PORT"
    return process, line.strip().split()[-1]


def main():
    pipe = bench_flux.build_pipeline()
    encode = bench_flux.random_prompt_encoder(pipe)
    generator = DiffusersFluxGenerator.from_pipeline(pipe, model="random-flux-schnell-size", max_batch=4,
                                                     prompt_encoder=encode)
    scorer = bench_scoring.build_scorer()
    ollama, url = start_fake_ollama()
    try:
        ops = PromptEngine(OllamaClient(url, "qwen2.5:7b-instruct"), seed=1)
        config = BeamConfig(beam_width=BEAM, keep_top=KEEP, iterations=ROUNDS, seed=7, width=SIZE, height=SIZE,
                            steps=bench_flux.STEPS, guidance=0.0)
        # Warm-up round: CUDA kernels, allocator, cuDNN autotune (not timed).
        BeamSearch(ops, generator, scorer, BeamConfig(beam_width=BEAM, keep_top=KEEP, iterations=1, seed=1,
                                                      width=SIZE, height=SIZE, steps=bench_flux.STEPS,
                                                      guidance=0.0)).run("warm up", tempfile.mkdtemp())
        started = time.perf_counter()
        search = BeamSearch(ops, generator, scorer, config).run("a lighthouse on a cliff at dusk", tempfile.mkdtemp())
        wall = time.perf_counter() - started
    finally:
        ollama.terminate()
    report = search.report
    timings = report["timings"]
    images = sum(1 for c in report["candidates"] if c["status"] == "ok")
    log("images", images)
    log("stop_reason", report["stop_reason"])
    log("wall_s", round(wall, 3))
    for key in ("llm_s", "generate_s", "score_s"):
        log(key, round(timings[key], 3))
    log("rounds", timings.get("rounds"))
    gpu = timings["generate_s"] + timings["score_s"]
    log("generate_per_image_s", round(timings["generate_s"] / images, 4))
    log("score_share_of_gpu_pct", round(100 * timings["score_s"] / gpu, 2))
    log("score_share_of_wall_pct", round(100 * timings["score_s"] / wall, 2))
    log("controller_overhead_s", round(wall - timings["llm_s"] - gpu, 3))
    log("controller_overhead_pct", round(100 * (wall - timings["llm_s"] - gpu) / wall, 2))
    if not TINY:
        log("peak_mem_GB", round(torch.cuda.max_memory_allocated() / 2**30, 1))
    result.print_final()


if __name__ == "__main__":
    main()
