"""Fake of comfy.sd: `load_lora_for_models` and the CLIP / VAE wrapper classes, with the 0.3.64 method signatures
the pack calls (CLIP.tokenize, CLIP.encode_from_tokens_scheduled, CLIP.clone, CLIP.add_patches, VAE.decode).

The wrapped models are tiny real torch modules (tests/comfy_fakes/fake_models.py), so encodings, LoRA patches and
decoded images are real tensor maths. Calls are recorded in LORA_CALLS and TOKENIZED for contract tests.
"""
import copy
import logging

import torch

from . import fake_model_patcher

LORA_CALLS = []   # (lora keys, strength_model, strength_clip) per load_lora_for_models call
TOKENIZED = []    # every text CLIP.tokenize was given


def _lora_key_map(model, clip):
    """LoRA key prefix -> weight key of the model it patches (the real map also knows kohya/diffusers names)."""
    key_map = {}
    if model is not None:
        for key in model.model.state_dict():
            if key.startswith("diffusion_model.") and key.endswith(".weight"):
                key_map[key[:-len(".weight")]] = key
    if clip is not None:
        for key in clip.cond_stage_model.state_dict():
            if key.endswith(".weight"):
                key_map["text_encoders.clip_l." + key[:-len(".weight")]] = key
    return key_map


def _load_lora(lora, key_map):
    patches, loaded_keys = {}, set()
    for prefix, target in key_map.items():
        up, down = lora.get(f"{prefix}.lora_up.weight"), lora.get(f"{prefix}.lora_down.weight")
        if up is None or down is None:
            continue
        alpha = lora.get(f"{prefix}.alpha")
        loaded_keys.update({f"{prefix}.lora_up.weight", f"{prefix}.lora_down.weight", f"{prefix}.alpha"})
        patches[target] = ("lora", (up, down, None if alpha is None else alpha.item()))
    for key in lora:
        if key not in loaded_keys:
            logging.warning("lora key not loaded: %s", key)
    return patches


def load_lora_for_models(model, clip, lora, strength_model, strength_clip):
    """Return patched clones of (model, clip); the inputs are left untouched, like ComfyUI's."""
    LORA_CALLS.append((sorted(lora), strength_model, strength_clip))
    loaded = _load_lora(lora, _lora_key_map(model, clip))
    new_model = new_clip = None
    taken = set()
    if model is not None:
        new_model = model.clone()
        taken.update(new_model.add_patches(loaded, strength_model))
    if clip is not None:
        new_clip = clip.clone()
        taken.update(new_clip.add_patches(loaded, strength_clip))
    for key in loaded:
        if key not in taken:
            logging.warning("NOT LOADED %s", key)
    return new_model, new_clip


class CLIP:
    """A text encoder behind ComfyUI's CLIP interface. Tokens: {"l": [[(id, weight), ...]]}, 77 per chunk."""

    def __init__(self, cond_stage_model=None, no_init=False):
        if no_init:
            return
        self.cond_stage_model = cond_stage_model
        self.patcher = fake_model_patcher.ModelPatcher(cond_stage_model, torch.device("cpu"), torch.device("cpu"))
        self.layer_idx = None
        self.tokenizer_options = {}

    def clone(self):
        """Same encoder, own patcher (LoRA patches on the clone leave this one as it is)."""
        twin = copy.copy(self)
        twin.patcher = self.patcher.clone()
        twin.tokenizer_options = dict(self.tokenizer_options)
        return twin

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        return self.patcher.add_patches(patches, strength_patch, strength_model)

    def tokenize(self, text, return_word_ids=False, **kwargs):
        TOKENIZED.append(text)
        return {"l": [self.cond_stage_model.tokenize(text)]}

    def encode_from_tokens(self, tokens, return_pooled=False, return_dict=False):
        ids = torch.tensor([[token for token, _weight in tokens["l"][0]]])
        cond, pooled = self.patcher.run(ids)
        if return_dict:
            return {"cond": cond, "pooled_output": pooled}
        return (cond, pooled) if return_pooled else cond

    def encode_from_tokens_scheduled(self, tokens, unprojected=False, add_dict={}, show_pbar=True):
        options = self.encode_from_tokens(tokens, return_pooled=True, return_dict=True)
        cond = options.pop("cond")
        options.update(add_dict)
        return [[cond, options]]


class VAE:
    def __init__(self, first_stage_model):
        self.first_stage_model = first_stage_model
        self.latent_channels = first_stage_model.latent_channels
        self.downscale_ratio = 8

    def decode(self, samples_in, vae_options={}):
        """[B, C, h, w] latent -> [B, 8h, 8w, 3] float in [0, 1] (ComfyUI IMAGE layout)."""
        with torch.no_grad():
            images = self.first_stage_model.decode(samples_in.float())
        return images.clamp(0, 1).movedim(1, -1)
