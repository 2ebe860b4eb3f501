"""Generation nodes: a LoRA stack, the Flux generator built from the user's MODEL/CLIP/VAE, and a one-image render.

PromptBeamLoraStack -> PromptBeamFluxGenerator -> (PromptBeamGenerate | PromptBeamSearch). The generator applies
its LoRAs once, when built; ComfyUI caches the node's output, so the patched model lives as long as the graph's
MODEL/CLIP/LoRA inputs stay the same.
"""
from __future__ import annotations

import os

import comfy.model_management
import comfy.samplers
import folder_paths

from ..pipeline.config import LoraSpec
from ..pipeline.errors import Interrupted, InvalidParameter, ModelNotFound, PromptBeamError
from ..pipeline.generation.protocol import GenerationRequest
from .comfy_generator import ComfyFluxGenerator

CATEGORY = "Prompt Beam/generation"
MAX_RESOLUTION = 16384   # nodes.MAX_RESOLUTION in ComfyUI
MAX_SEED = 0xFFFFFFFFFFFFFFFF


def resolve_lora(lora_name) -> str:
    """Full path of a LoRA listed in ComfyUI's loras folders. A path instead of a listed name is refused: the
    node's value is a name from the list, and `..` or an absolute path would reach files outside those folders."""
    if not isinstance(lora_name, str) or not lora_name.strip():
        raise InvalidParameter("lora_name", "choose a LoRA file from the list")
    parts = lora_name.replace("\\", "/").split("/")
    if os.path.isabs(lora_name) or not parts[0] or ".." in parts or ":" in parts[0]:
        raise InvalidParameter("lora_name", f"{lora_name!r} is a path; give a file name as listed from ComfyUI's "
                                            f"loras folders (e.g. 'my_style.safetensors' or 'flux/my_style.safetensors')")
    path = folder_paths.get_full_path("loras", lora_name)
    if path is None:
        searched = ", ".join(folder_paths.get_folder_paths("loras")) or "(no loras folder is configured)"
        raise ModelNotFound(f"lora_name: LoRA {lora_name!r} was not found. Searched the loras folders: {searched}. "
                            f"Put the file in one of them (or add a folder under 'loras' in extra_model_paths.yaml) "
                            f"and refresh the page")
    return path


class PromptBeamLoraStack:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lora_name": (folder_paths.get_filename_list("loras"),
                              {"tooltip": "A LoRA file from ComfyUI's loras folders."}),
                "trigger": ("STRING", {"default": "", "tooltip": "Trigger words, prepended to every prompt the "
                                                                  "generator renders (once, if not already there)."}),
                "weight": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                                     "tooltip": "LoRA strength for the diffusion model and the text encoder."}),
            },
            "optional": {
                "loras": ("PROMPTBEAM_LORAS", {"tooltip": "LoRAs stacked so far; this one is added after them."}),
            },
        }

    RETURN_TYPES = ("PROMPTBEAM_LORAS",)
    RETURN_NAMES = ("loras",)
    FUNCTION = "stack"
    CATEGORY = CATEGORY
    DESCRIPTION = "Adds a LoRA (with its trigger words and weight) to a stack for the Prompt Beam Flux generator."

    @classmethod
    def VALIDATE_INPUTS(cls, lora_name):
        # Declaring lora_name here replaces ComfyUI's own list check for it, so this must reject what that would.
        if lora_name is None:   # linked input: checked when the node runs
            return True
        try:
            resolve_lora(lora_name)
        except PromptBeamError as exc:
            return str(exc).removeprefix("lora_name: ")   # ComfyUI prefixes the input name itself
        return True

    def stack(self, lora_name, trigger, weight, loras=None):
        spec = LoraSpec(path=resolve_lora(lora_name), trigger=trigger.strip(), weight=float(weight))
        return (tuple(loras or ()) + (spec,),)


class PromptBeamFluxGenerator:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The Flux diffusion model (e.g. from Load Diffusion Model)."}),
                "clip": ("CLIP", {"tooltip": "The text encoder(s) (e.g. DualCLIPLoader, type flux)."}),
                "vae": ("VAE", {"tooltip": "The Flux VAE (ae.safetensors)."}),
                "width": ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 16}),
                "height": ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 16}),
                "steps": ("INT", {"default": 4, "min": 1, "max": 10000,
                                  "tooltip": "4 for Flux schnell, 20-30 for Flux dev."}),
                "guidance": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1,
                                       "tooltip": "Flux guidance (as FluxGuidance); schnell ignores it."}),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"default": "euler"}),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "simple"}),
            },
            "optional": {
                "loras": ("PROMPTBEAM_LORAS", {"tooltip": "Applied once, for every image this generator renders."}),
                "cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "KSampler cfg. Flux uses 1.0, which ignores negative prompts."}),
            },
        }

    RETURN_TYPES = ("PROMPTBEAM_GENERATOR",)
    RETURN_NAMES = ("generator",)
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = ("A Flux image generator on ComfyUI's own sampler: each image equals CLIPTextEncode -> "
                   "FluxGuidance -> KSampler -> VAEDecode for the same seed. LoRAs are applied once.")

    def build(self, model, clip, vae, width, height, steps, guidance, sampler_name, scheduler, loras=None, cfg=1.0):
        return (ComfyFluxGenerator(model, clip, vae, loras=tuple(loras or ()), width=width, height=height,
                                   steps=steps, guidance=guidance, sampler_name=sampler_name, scheduler=scheduler,
                                   cfg=cfg),)


class PromptBeamGenerate:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": ("PROMPTBEAM_GENERATOR",),
                "prompt": ("STRING", {"multiline": True, "dynamicPrompts": False,
                                      "tooltip": "The prompt; the generator's LoRA trigger words are prepended."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"
    CATEGORY = CATEGORY
    DESCRIPTION = "Renders one prompt with a Prompt Beam generator (the same image the search would make)."

    def generate(self, generator, prompt, seed):
        if not prompt or not prompt.strip():
            raise InvalidParameter("prompt", "is empty: type what the image should show")
        try:
            # A generator from another backend has no request(): its GenerationRequest defaults apply.
            request = generator.request(prompt, seed) if hasattr(generator, "request") \
                else GenerationRequest(prompt=prompt, seed=seed)
            result = generator.generate([request])[0]
        except Interrupted as exc:
            # ComfyUI reports its own exception type as "interrupted" rather than as a failed node.
            raise comfy.model_management.InterruptProcessingException() from exc
        return (result.image.unsqueeze(0),)


NODE_CLASS_MAPPINGS = {
    "PromptBeamLoraStack": PromptBeamLoraStack,
    "PromptBeamFluxGenerator": PromptBeamFluxGenerator,
    "PromptBeamGenerate": PromptBeamGenerate,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PromptBeamLoraStack": "Prompt Beam LoRA Stack",
    "PromptBeamFluxGenerator": "Prompt Beam Flux Generator",
    "PromptBeamGenerate": "Prompt Beam Generate",
}
