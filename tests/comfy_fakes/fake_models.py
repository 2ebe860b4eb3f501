"""Tiny real torch models behind the fake ComfyUI wrappers: a MODEL (ModelPatcher over a Flux-shaped velocity
net), a CLIP (word-hash tokenizer + embedding + projection) and a VAE (16 latent channels -> RGB, 8x upsampling).

Not a ComfyUI module: test code builds its MODEL / CLIP / VAE inputs here, like ComfyUI's loaders would.
Weights are drawn from a seed, so two builds with the same seed are identical.
"""
import zlib

import torch
from torch import nn

from . import fake_model_patcher, fake_sd

LATENT_CHANNELS = 16
TEXT_DIM = 24
CONTEXT_LENGTH = 77
VOCAB_SIZE = 4096


class FluxLatentFormat:
    """The fields of comfy.latent_formats.Flux that sampling and previews read."""
    latent_channels = 16
    latent_dimensions = 2
    scale_factor = 0.3611
    shift_factor = 0.1159
    latent_rgb_factors = None
    latent_rgb_factors_bias = None
    taesd_decoder_name = "taef1_decoder"


class TinyFluxNet(nn.Module):
    """Velocity v(x, sigma | text, guidance): per-pixel channel mixing conditioned on the text and guidance."""

    def __init__(self):
        super().__init__()
        self.img_in = nn.Linear(LATENT_CHANNELS, 32)
        self.txt_in = nn.Linear(TEXT_DIM, 32)
        self.vector_in = nn.Linear(TEXT_DIM, 32)
        self.guidance_in = nn.Linear(1, 32)
        self.final_layer = nn.Linear(32, LATENT_CHANNELS)

    def forward(self, x, sigma, context, pooled, guidance):
        # x [B, 16, h, w]; context [1, 77, D]; pooled [1, D]; guidance a float
        h = self.img_in(x.movedim(1, -1))                                            # [B, h, w, 32]
        text = self.txt_in(context.mean(dim=1)) + self.vector_in(pooled)              # [1, 32]
        g = self.guidance_in(torch.tensor([[float(guidance)]], dtype=x.dtype))        # [1, 32]
        h = torch.tanh(h + (text + g)[:, None, None, :] + float(sigma))
        return self.final_layer(h).movedim(-1, 1)                                     # [B, 16, h, w]


class TinyFluxModel(nn.Module):
    """Stands where comfy.model_base.Flux stands: `.diffusion_model` plus `.latent_format`."""

    def __init__(self):
        super().__init__()
        self.diffusion_model = TinyFluxNet()
        self.latent_format = FluxLatentFormat()

    def forward(self, x, sigma, context, pooled, guidance):
        return self.diffusion_model(x, sigma, context, pooled, guidance)


class TinyTextEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, TEXT_DIM)
        self.proj = nn.Linear(TEXT_DIM, TEXT_DIM)

    @staticmethod
    def tokenize(text):
        """Word-level ids from a stable hash, start/end tokens, padded to 77 (weights 1.0, as ComfyUI's)."""
        ids = [1] + [2 + zlib.crc32(w.encode()) % (VOCAB_SIZE - 2) for w in text.lower().replace(",", " , ").split()]
        ids = (ids + [0])[:CONTEXT_LENGTH]
        return [(i, 1.0) for i in ids + [0] * (CONTEXT_LENGTH - len(ids))]

    def forward(self, ids):
        cond = self.proj(self.embed(ids))                  # [1, 77, D]
        pooled = cond[:, : int((ids != 0).sum())].mean(1)  # [1, D]
        return cond, pooled


class TinyDecoder(nn.Module):
    latent_channels = LATENT_CHANNELS

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(LATENT_CHANNELS, 3, 1)

    def decode(self, z):
        rgb = torch.sigmoid(self.conv(z))                  # [B, 3, h, w]
        return nn.functional.interpolate(rgb, scale_factor=8, mode="nearest")


def _seeded(module, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(module.named_parameters()):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return module.eval()


def tiny_model(seed=0):
    """MODEL: a ModelPatcher around the tiny Flux-shaped model."""
    return fake_model_patcher.ModelPatcher(_seeded(TinyFluxModel(), seed), torch.device("cpu"), torch.device("cpu"))


def tiny_clip(seed=1):
    return fake_sd.CLIP(_seeded(TinyTextEncoder(), seed))


def tiny_vae(seed=2):
    return fake_sd.VAE(_seeded(TinyDecoder(), seed))


def lora_state_dict(seed=3, rank=2, model_keys=("diffusion_model.img_in", "diffusion_model.final_layer"),
                    clip_keys=("text_encoders.clip_l.proj",)):
    """A LoRA in the key layout the fake load_lora_for_models reads (`<prefix>.lora_up/lora_down/alpha`)."""
    shapes = {"diffusion_model.img_in": (32, LATENT_CHANNELS), "diffusion_model.final_layer": (LATENT_CHANNELS, 32),
              "diffusion_model.txt_in": (32, TEXT_DIM), "text_encoders.clip_l.proj": (TEXT_DIM, TEXT_DIM)}
    generator = torch.Generator().manual_seed(seed)
    sd = {}
    for prefix in (*model_keys, *clip_keys):
        out_dim, in_dim = shapes[prefix]
        sd[f"{prefix}.lora_up.weight"] = torch.randn(out_dim, rank, generator=generator)
        sd[f"{prefix}.lora_down.weight"] = torch.randn(rank, in_dim, generator=generator)
        sd[f"{prefix}.alpha"] = torch.tensor(float(rank))
    return sd


def foreign_lora_state_dict(seed=4):
    """A LoRA for another architecture (SDXL-style kohya keys): nothing in it matches the tiny Flux."""
    generator = torch.Generator().manual_seed(seed)
    prefix = "lora_unet_down_blocks_0_attentions_0_proj_in"
    return {f"{prefix}.lora_up.weight": torch.randn(8, 2, generator=generator),
            f"{prefix}.lora_down.weight": torch.randn(2, 8, generator=generator),
            f"{prefix}.alpha": torch.tensor(2.0)}
