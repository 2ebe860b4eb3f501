"""Write the tiny random model files the integration tests load through ComfyUI's real loaders.

Run with ComfyUI's Python (it imports comfy.* for the exact layouts):
    $COMFYUI_PYTHON tests/integration/build_tiny_models.py COMFYUI_DIR OUT_DIR

OUT_DIR/vae/tiny_taef1.safetensors            random TAESD layout, 16 latent channels (VAELoader detects TAESD)
OUT_DIR/text_encoders/tiny_clip_l.safetensors random CLIP-L text model + projection, HF keys, fp16 (CLIPLoader)
OUT_DIR/loras/tiny_flux_lora.safetensors      a LoRA for the test pack's tiny Flux (LoraLoader / Prompt Beam)
OUT_DIR/loras/sdxl_unet_lora.safetensors      a LoRA for another architecture: none of its keys fit Flux
Everything is drawn from fixed seeds, so every build gives the same files.
"""
import math
import os
import sys


def build_taesd(path):
    import torch
    import comfy.taesd.taesd
    from safetensors.torch import save_file

    model = comfy.taesd.taesd.TAESD(latent_channels=16)
    generator = torch.Generator().manual_seed(11)
    sd = {}
    for name, tensor in sorted(model.state_dict().items()):
        if tensor.dim() == 4:   # variance-preserving init through the ReLU stacks
            fan_in = tensor.shape[1] * tensor.shape[2] * tensor.shape[3]
            sd[name] = torch.randn(tensor.shape, generator=generator) * math.sqrt(1.0 / fan_in)
        else:
            sd[name] = torch.zeros(tensor.shape)
    # The decoder's output layer is damped and centred on mid-grey, so decoded images spread over [0, 1]
    # instead of clipping to black and white (a flat image would make pixel comparisons meaningless).
    last = max((n for n in sd if n.startswith("taesd_decoder.") and n.endswith(".weight")),
               key=lambda n: int(n.split(".")[1]))
    sd[last] = sd[last] * 0.3
    sd[last[:-len("weight")] + "bias"] = torch.full(sd[last[:-len("weight")] + "bias"].shape, 0.5)
    # Without these two scalars in the file, decode() reads uninitialised memory and returns NaN.
    sd["vae_scale"] = torch.tensor(1.0)
    sd["vae_shift"] = torch.tensor(0.0)
    save_file(sd, path)


def build_clip_l(path):
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(12)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, max_position_embeddings=77, projection_dim=768)
    # The projection head matters: ComfyUI's CLIP-L always has text_projection, and a file without it leaves
    # that layer uninitialised (the pooled output becomes garbage). Its keys are HF's `text_model.*` layout.
    model = CLIPTextModelWithProjection(config).half()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def build_flux_lora(path, rank=4):
    """lora_up/lora_down/alpha for a few linear layers of the tiny Flux, shaped from the model itself."""
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "comfy_test_pack"))
    from tiny_flux import build_tiny_flux

    model_sd = build_tiny_flux(0).model.state_dict()
    generator = torch.Generator().manual_seed(13)
    sd = {}
    for key in ("diffusion_model.double_blocks.0.img_attn.qkv", "diffusion_model.double_blocks.0.img_mlp.0",
                "diffusion_model.single_blocks.0.linear1", "diffusion_model.final_layer.linear"):
        out_dim, in_dim = model_sd[key + ".weight"].shape
        sd[key + ".lora_up.weight"] = torch.randn(out_dim, rank, generator=generator) * 0.5
        sd[key + ".lora_down.weight"] = torch.randn(rank, in_dim, generator=generator) * 0.5
        sd[key + ".alpha"] = torch.tensor(float(rank))
    save_file(sd, path)


def build_sdxl_lora(path):
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(14)
    prefix = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    save_file({prefix + ".lora_up.weight": torch.randn(640, 4, generator=generator),
               prefix + ".lora_down.weight": torch.randn(4, 640, generator=generator),
               prefix + ".alpha": torch.tensor(4.0)}, path)


def main(comfyui_dir, out_dir):
    sys.path.insert(0, comfyui_dir)
    from comfy.cli_args import args
    args.cpu = True   # before comfy.model_management is imported: it probes CUDA on import otherwise
    for folder in ("vae", "text_encoders", "loras"):
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    build_taesd(os.path.join(out_dir, "vae", "tiny_taef1.safetensors"))
    build_clip_l(os.path.join(out_dir, "text_encoders", "tiny_clip_l.safetensors"))
    build_flux_lora(os.path.join(out_dir, "loras", "tiny_flux_lora.safetensors"))
    build_sdxl_lora(os.path.join(out_dir, "loras", "sdxl_unet_lora.safetensors"))


if __name__ == "__main__":
    main(*sys.argv[1:3])
