"""GPU benchmark of the scorer: CLIP ViT-L/14 (image + text) + LAION aesthetic head, batches 1 / 4 / 8 / 16.

The CLIP model is open_clip's full-size ViT-L-14 with random weights (`pretrained=None`, QuickGELU as for OpenAI's
weights) and the head a random LAION-layout MLP: the arithmetic is the real one, no download needed. Two timings per
batch size:
  score_s    Scorer.score on [B, SIZE, SIZE, 3] CPU images, as ComfyUI hands them over: transfer, resize / crop /
             normalise on the GPU, one CLIP image forward, head (the prompt's text embedding is cached after the
             first call, as in a search where the user prompt never changes)
  forward_s  encode_image + encode_text + head on already preprocessed 224² pixels

    python bench/bench_scoring.py              # on a GPU machine
    TINY=1 python bench/bench_scoring.py       # tiny local-dir model on the CPU, to check the script
Env: OUT (folder for bench_scoring.json, default bench/out), REPEATS (default 5), SIZE (default 1024),
DTYPE (fp16 default, bf16 or fp32).
"""
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pipeline.scoring.aesthetic import LaionAestheticHead  # noqa: E402
from pipeline.scoring.scorer import Scorer, load_scorer, resolve_dtype  # noqa: E402
from bench_common import Results, device_name, median_seconds  # noqa: E402

TINY = os.environ.get("TINY") == "1"
DEVICE = torch.device("cuda" if torch.cuda.is_available() and not TINY else "cpu")
DTYPE = resolve_dtype(os.environ.get("DTYPE", "fp16") if DEVICE.type == "cuda" else "fp32", DEVICE)
SIZE = 64 if TINY else int(os.environ.get("SIZE", "1024"))
REPEATS = int(os.environ.get("REPEATS", "2" if TINY else "5"))
BATCHES = (1, 4, 8, 16)
PROMPT = "a red fox standing in fresh snow at dawn, telephoto photograph"

result = Results("bench_scoring", device=device_name(DEVICE), torch=torch.__version__,
                 dtype=str(DTYPE).replace("torch.", ""), image_size=SIZE, tiny=TINY, runs=[])
log = result.log


def build_scorer():
    if TINY:
        from tests.fixtures.tiny_clip import build_tiny_aesthetic, build_tiny_clip
        folder = tempfile.mkdtemp(prefix="bench_scoring_")
        clip_dir = build_tiny_clip(os.path.join(folder, "clip"))
        head = build_tiny_aesthetic(os.path.join(folder, "head.pth"))
        return load_scorer(f"local-dir:{clip_dir}", aesthetic_model=head, device=DEVICE, dtype=DTYPE)
    import open_clip
    precision = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[DTYPE]
    clip, _, preprocess = open_clip.create_model_and_transforms("ViT-L-14", pretrained=None, precision=precision,
                                                                device=DEVICE, force_quick_gelu=True)
    head = LaionAestheticHead(768).eval().to(DEVICE)
    return Scorer(clip.eval(), open_clip.get_tokenizer("ViT-L-14"), preprocess, head, device=DEVICE, dtype=DTYPE,
                  clip_id="ViT-L-14 (random weights)", aesthetic_id="LAION layout (random weights)")


def main():
    started = time.perf_counter()
    scorer = build_scorer()
    log("build_s", round(time.perf_counter() - started, 2))
    log("scorer", scorer.describe())
    log("clip_params_M", round(sum(p.numel() for p in scorer.clip.parameters()) / 1e6, 1))
    generator = torch.Generator().manual_seed(0)
    tokens = scorer.tokenizer([PROMPT], context_length=scorer.context_length).to(DEVICE)
    crop = scorer.clip.visual.image_size
    crop = crop if isinstance(crop, int) else crop[0]

    for batch in BATCHES:
        images = torch.rand(batch, SIZE, SIZE, 3, generator=generator)     # CPU, ComfyUI IMAGE layout
        pixels = torch.randn(batch, 3, crop, crop, generator=generator).to(DEVICE, DTYPE)
        if DEVICE.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def forward():
            with torch.inference_mode():
                image = torch.nn.functional.normalize(scorer.clip.encode_image(pixels).float(), dim=-1)
                scorer.clip.encode_text(tokens)
                scorer.aesthetic(image)

        score_s = median_seconds(lambda: scorer.score(images, PROMPT), REPEATS, digits=5)
        forward_s = median_seconds(forward, REPEATS, digits=5)
        run = {"batch": batch, "score_s": score_s, "score_per_image_s": round(score_s / batch, 5),
               "images_per_s": round(batch / score_s, 1), "forward_s": forward_s}
        if DEVICE.type == "cuda":
            run["peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["runs"].append(run)
        result.save()

    print(f"\nCLIP ViT-L/14 + LAION head on {result['device']} ({result['dtype']}, {SIZE}x{SIZE} inputs)")
    header = f"{'batch':>5} {'score s':>9} {'s/image':>9} {'images/s':>9} {'forward s':>10} {'peak GB':>8}"
    print(header + "\n" + "-" * len(header))
    for run in result["runs"]:
        print(f"{run['batch']:>5} {run['score_s']:>9.4f} {run['score_per_image_s']:>9.4f} "
              f"{run['images_per_s']:>9.1f} {run['forward_s']:>10.4f} {run.get('peak_gb', float('nan')):>8.2f}")
    print(f"\nwrote {result.path}")


if __name__ == "__main__":
    main()
