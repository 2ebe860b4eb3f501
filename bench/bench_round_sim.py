"""Whole searches on the CPU with the LLM stand-in and a generator that takes a GPU's time per image (a sleep):
the round loop's overlap of LLM answers and rendering, measured without a GPU.

    python bench/bench_round_sim.py              # cases 80x4 and 80x1 (decode tok/s x slots), 0.78 s an image
    PER_IMAGE=0.75 CASES=80x4 python bench/bench_round_sim.py

N=4, M=2, 3 rounds (as bench_round.py). The LLM is the fake Ollama (tests/fixtures/ollama.py) in this process with
its latency model (prefill 5000 tok/s); the images come from HashGenerator after the sleep and are scored by
StatsScorer (pixel statistics). Prints, per case: wall, generation, wall / generation, and the stand-in's own
model time (prefill + decode of every answer, `busy`) with wall / busy, and writes bench_round_sim.json to $OUT: with one slot the LLM is the critical path,
so wall / busy says how much the search adds to it.
"""
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pipeline.beam.search import BeamConfig, BeamSearch  # noqa: E402
from pipeline.llm.client import OllamaClient  # noqa: E402
from pipeline.llm.operations import PromptEngine  # noqa: E402
from tests.beam.test_beam_collaborators import HashGenerator, StatsScorer  # noqa: E402
from tests.fixtures.ollama import FakeOllama, Latency  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "bench"))
from bench_common import Results  # noqa: E402

PER_IMAGE = float(os.environ.get("PER_IMAGE", "0.78"))
CASES = [c for c in os.environ.get("CASES", "80x4,80x1").split(",") if c]
MODEL, PROMPT = "qwen2.5:7b-instruct", "a lighthouse on a cliff at dusk"


class SleepingGenerator(HashGenerator):
    """A GPU's time per image, then HashGenerator's image."""

    def __init__(self):
        super().__init__()
        self.seconds = 0.0

    def generate(self, requests, on_step=None, should_stop=None):
        started = time.perf_counter()
        time.sleep(PER_IMAGE * len(requests))
        images = super().generate(requests, on_step, should_stop)
        self.seconds += time.perf_counter() - started
        return images


def run(case: str) -> dict:
    decode, slots = case.split("x")
    fake = FakeOllama(models=[MODEL], latency=Latency(float(decode), 5000.0, int(slots))).start()
    try:
        generator = SleepingGenerator()
        config = BeamConfig(beam_width=4, keep_top=2, iterations=3, seed=7, width=64, height=64, steps=4,
                            guidance=0.0)
        started = time.perf_counter()
        result = BeamSearch(PromptEngine(OllamaClient(fake.url, MODEL), seed=1), generator, StatsScorer(),
                            config).run(PROMPT, tempfile.mkdtemp())
        wall = time.perf_counter() - started
    finally:
        fake.stop()
    return {"case": case, "wall_s": round(wall, 2), "generation_s": round(generator.seconds, 2),
            "wall_over_generation": round(wall / generator.seconds, 2), "llm_busy_s": round(fake.busy_s, 2),
            "wall_over_llm_busy": round(wall / fake.busy_s, 2), "llm_requests": result.report["llm"]["calls"]}


if __name__ == "__main__":
    result = Results("bench_round_sim", per_image_s=PER_IMAGE, beam_width=4, keep_top=2, iterations=3)
    for name in CASES:
        result.log(name, run(name))
    result.print_final()
