"""GPU benchmark of the diffusers Flux backend: images/s at batch 1 and 4, 1024², 4 steps, Flux-schnell size.

The transformer (11.9 B parameters) and VAE are built directly with random weights (no hub weights needed) in bf16,
and the pipeline has no text encoders: prompts become fixed random embeddings (T5-XXL + CLIP-L cost ~1 % of an
image, see docs). Timings go through DiffusersFluxGenerator.generate, i.e. the backend's own grouping, per-request
seeding and [B, H, W, 3] conversion, next to a raw FluxPipeline call with the same inputs to show its overhead.

    python bench/bench_flux.py                 # on a GPU machine (needs ~45 GB for batch 4)
    TINY=1 python bench/bench_flux.py          # miniature configs on the CPU, to check the script
Env: OUT (folder for bench_flux.json, default bench/out), REPEATS (default 3), OFFLOAD=1 (add a model-offload
run at batch 1), SIZE (default 1024).
"""
import hashlib
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pipeline.generation.diffusers_flux import DiffusersFluxGenerator  # noqa: E402
from pipeline.generation.protocol import GenerationRequest  # noqa: E402
from bench_common import Results, device_name, median_seconds  # noqa: E402

TINY = os.environ.get("TINY") == "1"
DEVICE = "cuda" if torch.cuda.is_available() and not TINY else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
SIZE = 64 if TINY else int(os.environ.get("SIZE", "1024"))
STEPS = 4
REPEATS = int(os.environ.get("REPEATS", "2" if TINY else "3"))
TEXT_TOKENS = 256                                       # FLUX.1-schnell's T5 length

PROMPTS = ["a lighthouse on a cliff at dusk, oil painting", "a red fox in fresh snow, telephoto photograph",
           "an isometric cutaway of a tiny bakery, 3d render", "portrait of an old sailor, charcoal drawing"]

result = Results("bench_flux", device=device_name(DEVICE), torch=torch.__version__,
                 dtype=str(DTYPE).replace("torch.", ""), size=SIZE, steps=STEPS, tiny=TINY)
log = result.log


def build_pipeline():
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    transformer_config = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                              attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                              pooled_projection_dim=768, guidance_embeds=False)
    vae_config = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=[128, 256, 512, 512],
                      layers_per_block=2, down_block_types=["DownEncoderBlock2D"] * 4,
                      up_block_types=["UpDecoderBlock2D"] * 4, scaling_factor=0.3611, shift_factor=0.1159,
                      use_quant_conv=False, use_post_quant_conv=False)
    if TINY:
        transformer_config.update(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                                  joint_attention_dim=32, pooled_projection_dim=16, axes_dims_rope=(4, 6, 6))
        vae_config.update(block_out_channels=[8, 8, 8, 8], layers_per_block=1, norm_num_groups=4)
    start = time.perf_counter()
    with torch.device(DEVICE):
        transformer = FluxTransformer2DModel(**transformer_config).to(DTYPE).eval()
        vae = AutoencoderKL(**vae_config).to(DTYPE).eval()
    log("build_s", round(time.perf_counter() - start, 1))
    log("transformer_params_B", round(sum(p.numel() for p in transformer.parameters()) / 1e9, 3))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)   # schnell's
    return FluxPipeline(scheduler=scheduler, vae=vae, transformer=transformer, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None)


def random_prompt_encoder(pipe):
    """Stand-in for T5/CLIP: a fixed random embedding per prompt text (seeded by its hash), like real encoders
    give the same embedding for the same text."""
    text_dim = pipe.transformer.config.joint_attention_dim
    pooled_dim = pipe.transformer.config.pooled_projection_dim

    def encode(prompts):
        embeds, pooled = [], []
        for prompt in prompts:
            gen = torch.Generator().manual_seed(int(hashlib.sha1(prompt.encode()).hexdigest()[:8], 16))
            embeds.append(torch.randn(TEXT_TOKENS, text_dim, generator=gen))
            pooled.append(torch.randn(pooled_dim, generator=gen))
        return torch.stack(embeds), torch.stack(pooled)

    return encode


def main():
    pipe = build_pipeline()
    encode = random_prompt_encoder(pipe)
    generator = DiffusersFluxGenerator.from_pipeline(pipe, model="random-flux-schnell-size", max_batch=4,
                                                     prompt_encoder=encode)
    requests = [GenerationRequest(prompt=p, seed=100 + i, width=SIZE, height=SIZE, steps=STEPS)
                for i, p in enumerate(PROMPTS)]

    seconds_1 = median_seconds(lambda: generator.generate(requests[:1]), REPEATS)
    log("generator_bs1_s", seconds_1)
    log("generator_bs1_images_per_s", round(1 / seconds_1, 3))
    batch = {}
    seconds_4 = median_seconds(lambda: batch.update(out=generator.generate(requests)), REPEATS)
    assert [r.metadata["batch_size"] for r in batch["out"]] == [4] * 4, "batch of 4 was split"
    log("generator_bs4_s", seconds_4)
    log("generator_bs4_images_per_s", round(4 / seconds_4, 3))
    if DEVICE == "cuda":
        log("peak_mem_GB", round(torch.cuda.max_memory_allocated() / 2**30, 1))

    # Same inputs straight into the pipeline: what the backend's own work costs on top.
    embeds, pooled = encode(PROMPTS)
    embeds, pooled = embeds.to(DEVICE, DTYPE), pooled.to(DEVICE, DTYPE)

    def raw(n):
        with torch.inference_mode():
            return pipe(prompt_embeds=embeds[:n], pooled_prompt_embeds=pooled[:n], num_inference_steps=STEPS,
                        guidance_scale=0.0, height=SIZE, width=SIZE, output_type="pt",
                        generator=[torch.Generator("cpu").manual_seed(100 + i) for i in range(n)]).images

    log("raw_pipeline_bs1_s", median_seconds(lambda: raw(1), REPEATS))
    log("raw_pipeline_bs4_s", median_seconds(lambda: raw(4), REPEATS))
    log("generator_overhead_bs4_pct", round(100 * (seconds_4 / result["raw_pipeline_bs4_s"] - 1), 1))

    # A request gives the same image alone or in a batch (bf16 on GPU: small numeric differences only).
    singles = [generator.generate([r])[0].image for r in requests]
    log("batch_vs_single_max_abs_diff", round(max((b.image - s).abs().max().item()
                                                  for b, s in zip(batch["out"], singles)), 5))

    if os.environ.get("OFFLOAD") == "1" and DEVICE == "cuda":
        pipe.to("cpu")
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        offloaded = DiffusersFluxGenerator.from_pipeline(pipe, model="random-flux-schnell-size", device="cuda",
                                                         offload=True, prompt_encoder=encode)
        log("offload_bs1_s", median_seconds(lambda: offloaded.generate(requests[:1]), repeats=2))
        log("offload_peak_mem_GB", round(torch.cuda.max_memory_allocated() / 2**30, 1))
    result.print_final()


if __name__ == "__main__":
    main()
