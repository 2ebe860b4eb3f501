"""HPSv2.1 (Wu et al. 2023): open_clip ViT-H-14 fine-tuned on HPDv2 human preferences, loaded from the published
state dict with stock open_clip, without the `hpsv2` package (its wheel lacks the tokenizer's vocabulary file and
pins old protobuf and pytest).

    score = cos(image_emb, text_emb)         no logit scale; about 0.2..0.35 (benchmarks print it x100)

The published checkpoint `HPS_v2.1_compressed.pt` (hub `xswu/HPSv2`) is a torch file whose `state_dict` entry holds
the whole CLIP. Images are resized on their longest side and padded to a square (open_clip's
`image_resize_mode='longest'`, what hpsv2's `light_augmentation` selects), not centre-cropped. The architecture is
ViT-H-14 unless `arch` names another open_clip architecture or a `local-dir:` folder holding only
open_clip_config.json (tests use a tiny one); the weights always come from the state-dict file.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..errors import ModelNotFound
from .clip import _PRECISION, TensorPreprocess, check_values, image_groups

HPS_REPO = "xswu/HPSv2"
HPS_FILE = "HPS_v2.1_compressed.pt"
DEFAULT_ARCH = "ViT-H-14"
WRAPPER_PREFIXES = ("module.",)     # checkpoints saved from DistributedDataParallel


class HPSv2Model:
    """One CLIP image forward and one text forward per `score` call, for the whole batch."""

    name = "hpsv2"

    def __init__(self, model, tokenizer, preprocess, device: torch.device, dtype: torch.dtype, weights: str,
                 arch: str = DEFAULT_ARCH):
        self.model, self.tokenizer = model, tokenizer
        self.preprocess = TensorPreprocess(preprocess)
        self.device, self.dtype = torch.device(device), dtype
        self.weights, self.arch = weights, arch
        self.context_length = int(getattr(model, "context_length", None) or
                                  getattr(tokenizer, "context_length", 77))

    def score(self, images, texts: Union[str, Sequence[str]]) -> torch.Tensor:
        """[B] cosines of `images` against one prompt or one prompt per image (already checked by the caller)."""
        batches, offset = [], 0
        for group in image_groups(images):
            pixels = group.to(self.device)
            check_values(pixels, offset)
            offset += len(group)
            batches.append(self.preprocess(pixels.permute(0, 3, 1, 2)))          # [b, 3, S, S], padded
        prompts = [texts] if isinstance(texts, str) else list(texts)
        with torch.inference_mode():
            pixels = torch.cat(batches).to(self.dtype)
            image_emb = F.normalize(self.model.encode_image(pixels).float(), dim=-1)                # [B, D]
            # open_clip's tokenizers cut at the context and keep the end-of-text token.
            tokens = self.tokenizer(prompts, context_length=self.context_length)[:, :self.context_length]
            text_emb = F.normalize(self.model.encode_text(tokens.to(self.device)).float(), dim=-1)  # [1 or B, D]
            scores = (image_emb * text_emb).sum(dim=-1)
        return scores.cpu()

    def to(self, device: torch.device) -> "HPSv2Model":
        self.model.to(device)
        return self

    def describe(self) -> dict:
        return {"weights": self.weights, "arch": self.arch, "device": str(self.device),
                "dtype": _PRECISION.get(self.dtype, str(self.dtype)), "context_length": self.context_length}


def read_hps_state_dict(path: str) -> dict:
    """The CLIP weights of an HPS checkpoint: `ckpt['state_dict']` of a torch file (a bare state dict and a
    .safetensors file are read too), without a DistributedDataParallel `module.` prefix."""
    if path.endswith((".safetensors", ".sft")):
        from safetensors.torch import load_file
        try:
            state = load_file(path, device="cpu")
        except Exception as exc:
            raise ModelNotFound(f"HPS checkpoint {path} is not a readable safetensors file ({exc})") from None
    else:
        try:
            # weights_only: a checkpoint is data; a file that needs arbitrary unpickling is refused, not run.
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelNotFound(f"HPS checkpoint {path} could not be read as a torch file of tensors "
                                f"({' '.join(str(exc).split())[:300]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelNotFound(f"HPS checkpoint {path} holds no state dict of tensors (expected ckpt['state_dict'], as "
                            f"in {HPS_FILE})")
    for prefix in WRAPPER_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def check_fits(state: dict, expected: dict, weights: str, arch: str) -> None:
    """Every key of the architecture present with its shape, and nothing else: say which do not fit."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    resized = [f"{key} {list(state[key].shape)} vs {list(expected[key].shape)}" for key in expected
               if key in state and state[key].shape != expected[key].shape]
    if missing or unexpected or resized:
        raise ModelNotFound(
            f"{os.path.basename(weights)} does not fit open_clip {arch}: {len(missing)} missing keys "
            f"({', '.join(missing[:3])}), {len(unexpected)} unexpected ({', '.join(unexpected[:3])}), "
            f"{len(resized)} of another shape ({', '.join(resized[:2])}); HPSv2.1 is {DEFAULT_ARCH} (set "
            "--hps-arch only for a checkpoint of another architecture)")


def load_hpsv2(weights: Optional[str], device: torch.device, dtype: torch.dtype,
               arch: Optional[str] = None) -> HPSv2Model:
    """HPSv2 from a state-dict file (None: the published one, downloaded once into the Hugging Face cache)."""
    import open_clip

    arch = arch or DEFAULT_ARCH
    if weights is None:
        from huggingface_hub import hf_hub_download

        try:
            weights = hf_hub_download(HPS_REPO, HPS_FILE)
        except Exception as exc:
            raise ModelNotFound(f"{HPS_FILE} could not be fetched from {HPS_REPO} ({type(exc).__name__}); download "
                                f"it yourself and pass --scorer hpsv2=PATH") from None
    state = read_hps_state_dict(weights)
    previous = logging.root.manager.disable
    try:
        # The architecture only, random until the checkpoint below: a local-dir: folder's own weights are skipped.
        # open_clip warns "initialized randomly" here, which is true only until load_state_dict: kept quiet.
        logging.disable(logging.WARNING)
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=None, load_weights=False, precision=_PRECISION[dtype], device=device,
            image_resize_mode="longest")
        tokenizer = open_clip.get_tokenizer(arch)
    except (FileNotFoundError, RuntimeError, ValueError, OSError) as exc:
        raise ModelNotFound(f"open_clip architecture {arch!r} could not be built: {exc}") from None
    finally:
        logging.disable(previous)
    check_fits(state, model.state_dict(), weights, arch)
    model.load_state_dict(state)
    return HPSv2Model(model.eval().requires_grad_(False), tokenizer, preprocess, device, dtype, weights, arch)
