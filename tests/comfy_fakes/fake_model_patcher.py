"""Fake of comfy.model_patcher.ModelPatcher: a model plus a dict of weight patches (LoRAs), applied at run time.

Like the real one, `clone()` shares the model and copies the patch lists, and `add_patches` only accepts keys the
wrapped model has (returning the keys it took). `patched_state_dict()` is this fake's stand-in for ComfyUI's
weight patching at load time: LoRA patches ("lora", (up, down, alpha)) add `strength * alpha/rank * up @ down`.
"""
import copy
import uuid

import torch


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.size = size
        self.weight_inplace_update = weight_inplace_update
        self.patches = {}
        self.patches_uuid = uuid.uuid4()
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}
        self.parent = None

    def clone(self):
        """Same model, own copies of the patch lists and options (patching the clone leaves this one as it is)."""
        twin = copy.copy(self)
        twin.patches = {key: list(entries) for key, entries in self.patches.items()}
        twin.object_patches = dict(self.object_patches)
        twin.model_options = copy.deepcopy(self.model_options)
        twin.parent = self
        return twin

    def is_clone(self, other):
        return hasattr(other, "model") and self.model is other.model

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        taken = set()
        model_sd = self.model.state_dict()
        for key in patches:
            if key in model_sd:
                taken.add(key)
                self.patches.setdefault(key, []).append((strength_patch, patches[key], strength_model, None, None))
        self.patches_uuid = uuid.uuid4()
        return list(taken)

    def get_model_object(self, name):
        if name in self.object_patches:
            return self.object_patches[name]
        obj = self.model
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    def model_state_dict(self, filter_prefix=None):
        sd = self.model.state_dict()
        return {k: v for k, v in sd.items() if filter_prefix is None or k.startswith(filter_prefix)}

    def patched_state_dict(self):
        sd = dict(self.model.state_dict())
        for key, patch_list in self.patches.items():
            weight = sd[key].clone()
            for strength_patch, patch, strength_model, _offset, _function in patch_list:
                kind, (up, down, alpha) = patch
                if kind != "lora":
                    raise NotImplementedError(f"fake ModelPatcher only applies LoRA patches, got {kind}")
                rank = down.shape[0]
                scale = (float(alpha) / rank) if alpha is not None else 1.0
                weight = weight * strength_model + strength_patch * scale * (up.float() @ down.float()).reshape(weight.shape)
            sd[key] = weight
        return sd

    def run(self, *args, **kwargs):
        """Call the wrapped model with its patched weights (the real patcher patches weights in place on load)."""
        return torch.func.functional_call(self.model, self.patched_state_dict(), args, kwargs)
