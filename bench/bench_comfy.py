"""GPU benchmark of the ComfyUI-native generator (nodes/comfy_generator.py) against ComfyUI's own sampling calls.

Runs inside a ComfyUI checkout's modules (COMFYUI_DIR; never shipped with this pack): a Flux-schnell-size model
built in-process as a real ModelPatcher (comfy.supported_models.Flux, random bf16 weights), a real comfy.sd.VAE
(random weights, Flux's 16-channel AutoencoderKL layout) and a stand-in text encoder (a fixed random T5/CLIP
embedding per prompt, as in bench_flux.py: text encoding is ~1 % of an image). It times

  raw_bs1 / raw_bs4    comfy.sample.sample + VAE decode, batch 1 and 4 — what KSampler + VAEDecode do
  generator_x4         ComfyFluxGenerator.generate(4 requests): one KSampler-equivalent call per request
  generator_b4         the same with max_batch=4: one batched call, each request with its own seed's noise
and checks that the generator's image equals the raw path's for the same seed, and the batched images the
one-by-one ones.

    COMFYUI_DIR=/path/to/ComfyUI python bench/bench_comfy.py
    COMFYUI_DIR=... TINY=1 python bench/bench_comfy.py     # miniature model on the CPU, to check the script
Env: OUT (folder for bench_comfy.json, default bench/out), REPEATS (default 3).
"""
import hashlib
import importlib
import os
import sys
import types

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
if not COMFYUI_DIR or not os.path.isfile(os.path.join(COMFYUI_DIR, "comfy", "sample.py")):
    sys.exit("set COMFYUI_DIR to a ComfyUI checkout")
sys.path.insert(0, COMFYUI_DIR)
sys.path.insert(0, os.path.join(REPO, "bench"))
from bench_common import Results, device_name, median_seconds  # noqa: E402

TINY = os.environ.get("TINY") == "1"
from comfy.cli_args import args  # noqa: E402

if TINY or not torch.cuda.is_available():
    args.cpu = True
import comfy.model_management as mm  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.supported_models  # noqa: E402

DEVICE = mm.get_torch_device()
DTYPE = torch.float32 if TINY else torch.bfloat16
SIZE = 64 if TINY else 1024
STEPS = 4
REPEATS = int(os.environ.get("REPEATS", "1" if TINY else "3"))
TEXT_TOKENS = 256
result = Results("bench_comfy", device=device_name(DEVICE), torch=torch.__version__, size=SIZE, steps=STEPS,
                 tiny=TINY)
log = result.log


def import_comfy_generator():
    """nodes/comfy_generator.py with its relative imports, without running nodes/__init__.py (which would import
    every node module and ComfyUI's server)."""
    for name, path in (("promptbeam_bench", REPO), ("promptbeam_bench.nodes", os.path.join(REPO, "nodes"))):
        package = types.ModuleType(name)
        package.__path__ = [path]
        sys.modules[name] = package
    return importlib.import_module("promptbeam_bench.nodes.comfy_generator")


def build_model():
    config = {"image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2, "vec_in_dim": 768,
              "context_in_dim": 4096, "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 19,
              "depth_single_blocks": 38, "axes_dim": [16, 56, 56], "theta": 10000, "qkv_bias": True,
              "guidance_embed": False}
    if TINY:
        config.update(context_in_dim=64, vec_in_dim=32, hidden_size=64, num_heads=2, depth=1, depth_single_blocks=1,
                      axes_dim=[8, 12, 12])
    model_config = comfy.supported_models.Flux(dict(config))
    model_config.set_inference_dtype(DTYPE, None)
    model = model_config.get_model({}, device=DEVICE)
    generator = torch.Generator(DEVICE).manual_seed(0)
    with torch.no_grad():
        for parameter in model.diffusion_model.parameters():
            parameter.data = torch.randn(parameter.shape, device=DEVICE, dtype=DTYPE, generator=generator) * 0.02
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=DEVICE, offload_device=mm.unet_offload_device())
    return patcher, config


def build_vae():
    """Flux's 16-channel AutoencoderKL with random weights, handed to ComfyUI's VAE loader as a state dict (full size
    also with TINY: ComfyUI's loader assumes this layout's channel widths)."""
    from diffusers import AutoencoderKL
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=[128, 256, 512, 512],
                        layers_per_block=2, down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, use_quant_conv=False, use_post_quant_conv=False)
    return comfy.sd.VAE(sd=vae.state_dict())


class RandomTextEncoder:
    """Stand-in for ComfyUI's Flux CLIP (T5-XXL + CLIP-L): a fixed random embedding per prompt text."""

    def __init__(self, context_dim, pooled_dim):
        self.context_dim, self.pooled_dim = context_dim, pooled_dim

    def tokenize(self, text):
        return text

    def encode_from_tokens_scheduled(self, text):
        seed = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
        generator = torch.Generator().manual_seed(seed)
        cond = torch.randn(1, TEXT_TOKENS, self.context_dim, generator=generator)
        return [[cond, {"pooled_output": torch.randn(1, self.pooled_dim, generator=generator)}]]


def main():
    comfy_generator = import_comfy_generator()
    patcher, config = build_model()
    vae = build_vae()
    clip = RandomTextEncoder(config["context_in_dim"], config["vec_in_dim"])
    log("transformer_params_B", round(sum(p.numel() for p in patcher.model.diffusion_model.parameters()) / 1e9, 3))
    prompts = ["a lighthouse at dusk", "a red fox in snow", "a tiny bakery, isometric", "an old sailor, charcoal"]

    def raw(batch, seed=1):
        cond = [[torch.cat([clip.encode_from_tokens_scheduled(p)[0][0] for p in prompts[:batch]]),
                 {"pooled_output": torch.cat([clip.encode_from_tokens_scheduled(p)[0][1]["pooled_output"]
                                              for p in prompts[:batch]]), "guidance": 3.5}]]
        negative = [[torch.zeros(batch, TEXT_TOKENS, config["context_in_dim"]),
                     {"pooled_output": torch.zeros(batch, config["vec_in_dim"]), "guidance": 3.5}]]
        latent = torch.zeros(batch, 16, SIZE // 8, SIZE // 8)
        noise = comfy.sample.prepare_noise(latent, seed)
        with torch.inference_mode():
            samples = comfy.sample.sample(patcher, noise, STEPS, 1.0, "euler", "simple", cond, negative, latent,
                                          disable_pbar=True, seed=seed)
            return vae.decode(samples)

    generator = comfy_generator.ComfyFluxGenerator(patcher, clip, vae, width=SIZE, height=SIZE, steps=STEPS)
    requests = [generator.request(p, seed=1 + i) for i, p in enumerate(prompts)]
    log("raw_bs1_s", median_seconds(lambda: raw(1), REPEATS))
    log("raw_bs4_s", median_seconds(lambda: raw(4), REPEATS))
    log("raw_bs4_per_image_s", round(result["raw_bs4_s"] / 4, 4))
    log("generator_x4_s", median_seconds(lambda: generator.generate(requests), REPEATS))
    log("generator_per_image_s", round(result["generator_x4_s"] / 4, 4))
    log("generator_overhead_vs_raw_bs1_pct", round(100 * (result["generator_per_image_s"] / result["raw_bs1_s"] - 1), 1))
    batched = comfy_generator.ComfyFluxGenerator(patcher, clip, vae, width=SIZE, height=SIZE, steps=STEPS,
                                                 max_batch=4)
    log("generator_b4_s", median_seconds(lambda: batched.generate(requests), REPEATS))
    log("generator_b4_per_image_s", round(result["generator_b4_s"] / 4, 4))
    log("generator_b4_vs_raw_bs4_pct", round(100 * (result["generator_b4_s"] / result["raw_bs4_s"] - 1), 1))
    singles = [r.image for r in generator.generate(requests)]
    in_batch = [r.image for r in batched.generate(requests)]
    log("batch_vs_single_max_abs_diff", round(max((a - b).abs().max().item() for a, b in zip(in_batch, singles)), 6))
    to_u8 = lambda image: (image.clamp(0, 1) * 255).round().to(torch.uint8)   # noqa: E731  (as SaveImage)
    log("batch_vs_single_uint8_equal_pct", round(100 * sum((to_u8(a) == to_u8(b)).float().mean().item()
                                                           for a, b in zip(in_batch, singles)) / len(singles), 4))
    if DEVICE.type == "cuda":
        log("peak_mem_GB", round(torch.cuda.max_memory_allocated() / 2**30, 1))
    ours = generator.generate(requests[:1])[0].image
    reference = raw(1, seed=1)[0].float().cpu()
    log("generator_vs_raw_max_abs_diff", round((ours - reference).abs().max().item(), 6))
    result.print_final()


if __name__ == "__main__":
    main()
