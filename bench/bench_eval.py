"""GPU benchmark of `eval`: the real evaluation loop (per prompt, a beam search with its equal-budget seed-only
control arm, then two held-out judges on the two winners) with full-size models with random weights:

    generator   Flux-schnell size (11.9 B, bf16), diffusers backend, random prompt embeddings (bench_flux.py)
    scorer      CLIP ViT-L/14 + LAION head (fp16), what the search ranks by (bench_scoring.py)
    judges      PickScore: transformers CLIPModel at ViT-H/14 size (fp16); HPSv2: open_clip ViT-H-14 (fp16) with
                the longest-side resize + pad; both as `eval --judge` builds them, one batch of two per prompt
    LLM         the fake Ollama server (tests/fixtures/ollama.py), answering at once

Plumbing and throughput only: random weights do the real arithmetic, so the timings hold, but the images are noise
and the verdicts and the win rate mean nothing. Reported: wall time per prompt, the search's share (generation,
scoring, LLM wait) and the judges' share, images per second over the whole eval, the eval's own overhead (wall
minus searches minus judging) and peak GPU memory.

    python bench/bench_eval.py              # on a GPU machine (~60 GB at batch 4)
    TINY=1 python bench/bench_eval.py       # miniature models on the CPU, to check the script
Env: OUT (folder for bench_eval.json, default bench/out), PROMPTS (default 8: the smoke set, one prompt per
category), BEAM (4), KEEP (2), ROUNDS (3), SIZE (1024).
"""
import os
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))

import bench_flux  # noqa: E402  (TINY/DEVICE/SIZE settings are read from the same environment)
import bench_scoring  # noqa: E402
from bench_common import Results  # noqa: E402
from bench_round import start_fake_ollama  # noqa: E402
from pipeline.beam.search import BeamConfig, BeamSearch  # noqa: E402
from pipeline.evaluation.judges import ScorerJudge  # noqa: E402
from pipeline.evaluation.prompt_sets import load_set, spread_limit  # noqa: E402
from pipeline.evaluation.record import EvalRecord  # noqa: E402
from pipeline.evaluation.runner import Evaluation  # noqa: E402
from pipeline.generation.diffusers_flux import DiffusersFluxGenerator  # noqa: E402
from pipeline.llm.client import OllamaClient  # noqa: E402
from pipeline.llm.operations import PromptEngine  # noqa: E402

TINY = bench_flux.TINY
SIZE = bench_flux.SIZE
DEVICE = torch.device(bench_flux.DEVICE)
DTYPE = torch.float16 if DEVICE.type == "cuda" else torch.float32
PROMPTS = int(os.environ.get("PROMPTS", "8"))
BEAM = int(os.environ.get("BEAM", "4"))
KEEP = int(os.environ.get("KEEP", "2"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
result = Results("bench_eval", device=bench_flux.result["device"], torch=torch.__version__, size=SIZE, prompts=PROMPTS,
                 beam_width=BEAM, keep_top=KEEP, iterations=ROUNDS, tiny=TINY)
log = result.log


def build_judges() -> list:
    """PickScore and HPSv2 judges with random weights at full size (tiny on the CPU, through the loaders)."""
    from pipeline.scoring.specs import SCALES

    if TINY:
        from pipeline.scoring.scorer_set import load_reward_model
        from pipeline.scoring.specs import parse_scorer_spec
        from tests.fixtures.tiny_rewards import build_tiny_hps, build_tiny_hps_arch, build_tiny_pickscore

        folder = tempfile.mkdtemp(prefix="bench_eval_")
        pick = load_reward_model(parse_scorer_spec("pickscore=" + build_tiny_pickscore(f"{folder}/pick")), DEVICE,
                                 DTYPE)
        hps = load_reward_model(parse_scorer_spec("hpsv2=" + build_tiny_hps(f"{folder}/hps.pt")), DEVICE, DTYPE,
                                hps_arch="local-dir:" + build_tiny_hps_arch(f"{folder}/arch"))
    else:
        pick, hps = full_size_pickscore(), full_size_hps()
    return [ScorerJudge(m.name, lambda images, prompt, m=m: m.score(images, prompt), SCALES[m.name].what,
                        m.describe()) for m in (hps, pick)]


def full_size_pickscore():
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from pipeline.scoring.pickscore import PickScoreModel
    from tests.fixtures.tiny_flux import build_clip_tokenizer    # OpenAI's BPE, as LAION's ViT-H/14 uses

    config = CLIPConfig(  # laion/CLIP-ViT-H-14-laion2B-s32B-b79K's shape, which PickScore_v1 fine-tunes
        text_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                         max_position_embeddings=77, vocab_size=49408, hidden_act="gelu"),
        vision_config=dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32,
                           image_size=224, patch_size=14, hidden_act="gelu"),
        projection_dim=1024)
    with torch.device(DEVICE):
        model = CLIPModel(config).to(DTYPE).eval().requires_grad_(False)
    processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    return PickScoreModel(model, processor, build_clip_tokenizer(), DEVICE, DTYPE, "random ViT-H/14 (PickScore size)",
                          "CLIPImageProcessor 224")


def full_size_hps():
    import open_clip

    from pipeline.scoring.hps import HPSv2Model

    model, _, preprocess = open_clip.create_model_and_transforms(
        "ViT-H-14", pretrained=None, precision="fp16" if DTYPE == torch.float16 else "fp32", device=DEVICE,
        image_resize_mode="longest")
    return HPSv2Model(model.eval().requires_grad_(False), open_clip.get_tokenizer("ViT-H-14"), preprocess, DEVICE,
                      DTYPE, "random ViT-H-14 (HPSv2 size)")


class Timed:
    """A judge whose verdicts are timed (CUDA work waited for), per call."""

    def __init__(self, judge):
        self.judge, self.name, self.description, self.seconds = judge, judge.name, judge.description, []

    def verdict(self, prompt, image_beam, image_control):
        _sync()
        started = time.perf_counter()
        verdict = self.judge.verdict(prompt, image_beam, image_control)
        _sync()
        self.seconds.append(time.perf_counter() - started)
        return verdict

    def describe(self):
        return self.judge.describe()


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def run_eval(make_search, judges, items, config) -> tuple:
    settings = {"search": config.to_dict(), "scorers": ["clip"], "prompts": {"source": "bench", "count": len(items)},
                "bootstrap": {"resamples": 2000, "seed": 0, "confidence": 0.95}}
    record = EvalRecord.create(tempfile.mkdtemp(prefix="bench_eval_"), settings, [j.describe() for j in judges], items)
    started = time.perf_counter()
    Evaluation(record, make_search, judges).run()
    return record, time.perf_counter() - started


def main():
    pipe = bench_flux.build_pipeline()
    generator = DiffusersFluxGenerator.from_pipeline(pipe, model="random-flux-schnell-size", max_batch=4,
                                                     prompt_encoder=bench_flux.random_prompt_encoder(pipe))
    scorer = bench_scoring.build_scorer()
    started = time.perf_counter()
    judges = [Timed(judge) for judge in build_judges()]
    log("judges_build_s", round(time.perf_counter() - started, 1))
    config = BeamConfig(beam_width=BEAM, keep_top=KEEP, iterations=ROUNDS, seed=7, width=SIZE, height=SIZE,
                        steps=bench_flux.STEPS, guidance=0.0, control_arm=True)
    items = spread_limit(load_set("smoke" if PROMPTS <= 8 else "promptbeam-v1"), PROMPTS)
    ollama, url = start_fake_ollama("instant")
    try:
        engine = PromptEngine(OllamaClient(url, "qwen2.5:7b-instruct"), seed=1)

        def make_search():
            return BeamSearch(engine, generator, scorer, config)

        # Warm-up (not timed): CUDA kernels and the allocator at every batch size a prompt uses.
        run_eval(make_search, judges, items[:1], config)
        for judge in judges:
            judge.seconds.clear()
        if DEVICE.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        record, wall = run_eval(make_search, judges, items, config)
    finally:
        ollama.terminate()
        ollama.wait()
    entries = record.data["prompts"]
    reports = [record.eval_dir / e["beam"]["run_dir"] / "report.json" for e in entries]
    import json

    timings = [json.loads(path.read_text())["timings"] for path in reports]
    searches = sum(t["wall_s"] for t in timings)
    judging = sum(sum(j.seconds) for j in judges)
    images = record.data["summary"]["images"]
    log("prompts_judged", len(entries))
    log("images", images)
    log("wall_s", round(wall, 2))
    log("per_prompt_s", round(wall / len(entries), 3))
    log("images_per_s", round(images / wall, 3))
    log("search_s", round(searches, 2))
    log("generate_s", round(sum(t["generate_s"] for t in timings), 2))
    log("score_s", round(sum(t["score_s"] for t in timings), 2))
    log("llm_wait_s", round(sum(t["llm_s"] for t in timings), 2))
    log("judging_s", {j.name: round(sum(j.seconds), 3) for j in judges})
    log("judge_per_prompt_s", {j.name: round(sum(j.seconds) / len(j.seconds), 4) for j in judges})
    log("judging_share_pct", round(100 * judging / wall, 2))
    log("eval_overhead_s", round(wall - searches - judging, 3))
    if DEVICE.type == "cuda":
        log("peak_mem_GB", round(torch.cuda.max_memory_allocated() / 2**30, 1))
    log("win_rate_random_weights", record.data["summary"]["win_rate"])     # meaningless with random weights
    result.print_final()


if __name__ == "__main__":
    main()
