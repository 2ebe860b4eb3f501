"""Bench-only ComfyUI node (never shipped with the pack): a Flux-schnell-size MODEL with random weights, built
in-process, for timing render workers on machines that have no Flux weights (bench/bench_workers.py).

Same shapes as FLUX.1-schnell (hidden 3072, 24 heads, 19 double + 38 single blocks, no guidance embedding), except
that its text context is 768-wide so a CLIP-L text encoder conditions it: T5-XXL would add 4.7 B parameters per
server for a text pass that is ~1 % of an image's time.
"""
import os

import torch

BENCH_FLUX_CONFIG = {
    "image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2,
    "vec_in_dim": 768, "context_in_dim": 768, "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24,
    "depth": 19, "depth_single_blocks": 38, "axes_dim": [16, 56, 56], "theta": 10000, "qkv_bias": True,
    "guidance_embed": False,
}
# PROMPTBEAM_BENCH_TINY=1 (the bench's TINY mode): the same graph on the CPU with a miniature model.
TINY_CONFIG = {**BENCH_FLUX_CONFIG, "hidden_size": 64, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
               "axes_dim": [8, 12, 12]}


class PromptBeamBenchFlux:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "build"
    CATEGORY = "Prompt Beam/bench"
    DESCRIPTION = "A Flux-schnell-size random-weight MODEL (bf16) for benchmarks."

    def build(self, seed):
        import comfy.model_management
        import comfy.model_patcher
        import comfy.supported_models

        tiny = bool(os.environ.get("PROMPTBEAM_BENCH_TINY"))
        config = comfy.supported_models.Flux(dict(TINY_CONFIG if tiny else BENCH_FLUX_CONFIG))
        config.set_inference_dtype(torch.float32 if tiny else torch.bfloat16, None)
        device = comfy.model_management.get_torch_device()
        model = config.get_model({}, device=device)
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            # comfy's layers skip weight init (they expect a checkpoint): set every parameter, small and finite.
            for _name, param in sorted(model.diffusion_model.named_parameters()):
                param.copy_(torch.randn(param.shape, generator=generator, device=device, dtype=param.dtype) * 0.02)
        return (comfy.model_patcher.ModelPatcher(model, load_device=device,
                                                 offload_device=comfy.model_management.unet_offload_device()),)


NODE_CLASS_MAPPINGS = {"PromptBeamBenchFlux": PromptBeamBenchFlux}
