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
from comfy_api.v0_0_2 import io

from ..pipeline.config import LoraSpec
from ..pipeline.errors import Interrupted, InvalidParameter, ModelNotFound, PromptBeamError
from ..pipeline.generation.protocol import GenerationRequest
from .comfy_generator import ComfyFluxGenerator
from .sockets import GENERATOR, LORAS, SEED_MAX, Choice

CATEGORY = "Prompt Beam/generation"
MAX_RESOLUTION = 16384   # nodes.MAX_RESOLUTION in ComfyUI


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


class PromptBeamLoraStack(io.ComfyNode):
    """One LoRA file + trigger words + weight, added to a stack (chain several through `loras`)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PromptBeamLoraStack",
            display_name="Prompt Beam LoRA Stack",
            category=CATEGORY,
            description="Adds a LoRA (with its trigger words and weight) to a stack for the Prompt Beam Flux "
                        "generator.",
            inputs=[
                Choice("lora_name", options=folder_paths.get_filename_list("loras"),
                       tooltip="A LoRA file from ComfyUI's loras folders."),
                io.String.Input("trigger", default="", tooltip="Trigger words, prepended to every prompt the "
                                                               "generator renders (once, if not already there)."),
                io.Float.Input("weight", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="LoRA strength for the diffusion model and the text encoder."),
                LORAS.Input("loras", optional=True, tooltip="LoRAs stacked so far; this one is added after them."),
            ],
            outputs=[LORAS.Output(display_name="loras")],
        )

    @classmethod
    def validate_inputs(cls, lora_name):
        # Declaring lora_name here replaces ComfyUI's own list check for it, so this must reject what that would.
        if lora_name is None:   # linked input: checked when the node runs
            return True
        try:
            resolve_lora(lora_name)
        except PromptBeamError as exc:
            return str(exc).removeprefix("lora_name: ")   # ComfyUI prefixes the input name itself
        return True

    @classmethod
    def execute(cls, lora_name, trigger, weight, loras=None):
        spec = LoraSpec(path=resolve_lora(lora_name), trigger=trigger.strip(), weight=float(weight))
        return io.NodeOutput(tuple(loras or ()) + (spec,))


class PromptBeamFluxGenerator(io.ComfyNode):
    """The user's MODEL / CLIP / VAE + image settings -> a PROMPTBEAM_GENERATOR on ComfyUI's own sampler."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PromptBeamFluxGenerator",
            display_name="Prompt Beam Flux Generator",
            category=CATEGORY,
            description="A Flux image generator on ComfyUI's own sampler: each image equals CLIPTextEncode -> "
                        "FluxGuidance -> KSampler -> VAEDecode for the same seed. LoRAs are applied once.",
            inputs=[
                io.Model.Input("model", tooltip="The Flux diffusion model (e.g. from Load Diffusion Model)."),
                io.Clip.Input("clip", tooltip="The text encoder(s) (e.g. DualCLIPLoader, type flux)."),
                io.Vae.Input("vae", tooltip="The Flux VAE (ae.safetensors)."),
                io.Int.Input("width", default=1024, min=16, max=MAX_RESOLUTION, step=16),
                io.Int.Input("height", default=1024, min=16, max=MAX_RESOLUTION, step=16),
                io.Int.Input("steps", default=4, min=1, max=10000, tooltip="4 for Flux schnell, 20-30 for Flux dev."),
                io.Float.Input("guidance", default=3.5, min=0.0, max=100.0, step=0.1,
                               tooltip="Flux guidance (as FluxGuidance); schnell ignores it."),
                Choice("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler"),
                Choice("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple"),
                LORAS.Input("loras", optional=True, tooltip="Applied once, for every image this generator renders."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01, optional=True,
                               tooltip="KSampler cfg. Flux uses 1.0, which ignores negative prompts."),
            ],
            outputs=[GENERATOR.Output(display_name="generator")],
        )

    @classmethod
    def execute(cls, model, clip, vae, width, height, steps, guidance, sampler_name, scheduler, loras=None,
                cfg=1.0):
        return io.NodeOutput(ComfyFluxGenerator(model, clip, vae, loras=tuple(loras or ()), width=width,
                                                height=height, steps=steps, guidance=guidance,
                                                sampler_name=sampler_name, scheduler=scheduler, cfg=cfg))


class PromptBeamGenerate(io.ComfyNode):
    """A prompt + a seed -> one image from a Prompt Beam generator."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PromptBeamGenerate",
            display_name="Prompt Beam Generate",
            category=CATEGORY,
            description="Renders one prompt with a Prompt Beam generator (the same image the search would make).",
            inputs=[
                GENERATOR.Input("generator"),
                io.String.Input("prompt", multiline=True, dynamic_prompts=False,
                                tooltip="The prompt; the generator's LoRA trigger words are prepended."),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, generator, prompt, seed):
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
        return io.NodeOutput(result.image.unsqueeze(0))


NODES = [PromptBeamLoraStack, PromptBeamFluxGenerator, PromptBeamGenerate]
