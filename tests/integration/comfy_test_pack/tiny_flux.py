"""A tiny Flux (hidden 64, 2 heads, 1 double + 1 single block) built in-process with ComfyUI's own classes.

UNETLoader cannot load it (ComfyUI's model detection fixes Flux at hidden size 3072 / 24 heads), so it is built
as `comfy.supported_models.Flux(unet_config).get_model({})` wrapped in a ModelPatcher. Context and pooled inputs
are 768-wide so a CLIP-L text encoder (CLIPLoader, type stable_diffusion) conditions it directly.
"""
import torch

TINY_FLUX_CONFIG = {
    "image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2,
    "vec_in_dim": 768, "context_in_dim": 768, "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2,
    "depth": 1, "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 10000, "qkv_bias": True,
    "guidance_embed": True,
}
WEIGHT_STD = 0.08   # large enough that prompt, guidance and LoRA visibly change a 4-step image


def build_tiny_flux(seed: int = 0):
    """MODEL: a ModelPatcher around comfy.model_base.Flux with weights drawn from `seed` (same seed, same model)."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    model_config = comfy.supported_models.Flux(dict(TINY_FLUX_CONFIG))
    model_config.set_inference_dtype(torch.float32, None)
    device = comfy.model_management.get_torch_device()
    model = model_config.get_model({}, device=device)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # comfy's layers skip weight init (they expect a checkpoint): every parameter is set here, in name order.
        for _name, param in sorted(model.diffusion_model.named_parameters()):
            param.copy_(torch.randn(param.shape, generator=generator) * WEIGHT_STD)
    return comfy.model_patcher.ModelPatcher(model, load_device=device,
                                            offload_device=comfy.model_management.unet_offload_device())
