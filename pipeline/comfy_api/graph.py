"""Roles in an API-format render workflow, found by following links, and the edits that render one request.

A render workflow (what ComfyUI's editor writes with "Export (API)") is any graph that makes one image with core
nodes. The worker pool needs four roles in it, found from the image output backwards, never by node id:

    image output   SaveImage / PreviewImage (the first one, by node id, whose images come from a sampler)
    sampler        KSampler / KSamplerAdvanced / SamplerCustom / SamplerCustomAdvanced upstream of that output
    prompt         the CLIPTextEncode (or CLIPTextEncodeFlux) at the end of the sampler's positive input, through
                   conditioning pass-through nodes such as FluxGuidance
    latent         the empty latent (EmptyLatentImage, EmptySD3LatentImage, ...) feeding the sampler

plus where the seed and steps live (the sampler itself, or SamplerCustom*'s RandomNoise and scheduler nodes) and,
when present, the FluxGuidance on the positive path and a separate negative text encoder. Loaders are not roles:
GGUF loaders, fp8 checkpoints and LoRA chains all work as long as these roles are there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..errors import InvalidParameter
from .client import is_link, node_order

IMAGE_OUTPUTS = ("SaveImage", "PreviewImage")
# class_type -> (seed input, steps input); None when the value lives on another node (noise / sigmas).
SAMPLERS = {"KSampler": ("seed", "steps"), "KSamplerAdvanced": ("noise_seed", "steps"),
            "SamplerCustom": ("noise_seed", None), "SamplerCustomAdvanced": (None, None)}
TEXT_ENCODERS = {"CLIPTextEncode": ("text",), "CLIPTextEncodeFlux": ("clip_l", "t5xxl")}
EMPTY_LATENTS = ("EmptyLatentImage", "EmptySD3LatentImage", "EmptyHunyuanLatentVideo", "EmptyChromaRadianceLatentImage")
GUIDERS_POSITIVE = {"CFGGuider": "positive", "BasicGuider": "conditioning", "DualCFGGuider": "cond1"}
# Nodes that load files, and the input holding the file name: doctor checks these against /object_info's lists.
LOADER_INPUTS = {"UNETLoader": ("unet_name",), "DualCLIPLoader": ("clip_name1", "clip_name2"),
                 "CLIPLoader": ("clip_name",), "TripleCLIPLoader": ("clip_name1", "clip_name2", "clip_name3"),
                 "VAELoader": ("vae_name",), "CheckpointLoaderSimple": ("ckpt_name",),
                 "LoraLoaderModelOnly": ("lora_name",), "LoraLoader": ("lora_name",),
                 "UnetLoaderGGUF": ("unet_name",), "DualCLIPLoaderGGUF": ("clip_name1", "clip_name2")}
ROLE_NAMES = {
    "output": "an image output (SaveImage or PreviewImage)",
    "sampler": "a sampler (KSampler, KSamplerAdvanced, SamplerCustom or SamplerCustomAdvanced) feeding the image "
               "output through VAEDecode",
    "prompt": "a CLIPTextEncode with a text prompt at the end of the sampler's positive input",
    "latent": "an empty latent (EmptyLatentImage or EmptySD3LatentImage) as the sampler's latent_image",
    "seed": "a seed on the sampler (or a RandomNoise node as SamplerCustom's noise)",
    "steps": "a steps value on the sampler (or on the scheduler node feeding SamplerCustom's sigmas)",
}
MAX_HOPS = 64                      # a conditioning path longer than this is a cycle or not a render workflow


@dataclass(frozen=True)
class RenderRoles:
    """Node ids (and input names) of each role; see the module docstring."""
    output: str
    sampler: str
    prompt: str
    prompt_inputs: tuple           # ("text",) or ("clip_l", "t5xxl")
    latent: str
    seed: tuple                    # (node id, input name)
    steps: tuple                   # (node id, input name)
    guidance: Optional[str] = None     # a FluxGuidance on the positive path
    negative: Optional[str] = None     # a text encoder on the negative path, distinct from the prompt's

    def describe(self) -> dict:
        return {"output": self.output, "sampler": self.sampler, "prompt": self.prompt, "latent": self.latent,
                "seed": list(self.seed), "steps": list(self.steps), "guidance": self.guidance,
                "negative": self.negative}


def find_roles(workflow: dict, name: str = "workflow") -> RenderRoles:
    """The roles of a render workflow; InvalidParameter naming every missing role otherwise."""
    missing: list[str] = []
    details: list[str] = []
    output = sampler = None
    outputs = sorted((i for i, n in workflow.items() if n["class_type"] in IMAGE_OUTPUTS), key=node_order)
    for candidate in outputs:
        sampler = _upstream(workflow, candidate, lambda node: node["class_type"] in SAMPLERS)
        if sampler:
            output = candidate
            break
    if not outputs:
        return _refuse(name, ["output"], details)
    if sampler is None:
        missing.append("sampler")
        return _refuse(name, missing, details)
    sampler_node = workflow[sampler]
    positive_from = _positive_source(workflow, sampler)
    prompt, prompt_inputs, guidance, why = _text_encoder(workflow, positive_from)
    if prompt is None:
        missing.append("prompt")
        if why:
            details.append(why)
    latent = _follow(workflow, sampler_node["inputs"].get("latent_image"))
    if latent is None or workflow[latent]["class_type"] not in EMPTY_LATENTS:
        missing.append("latent")
        if latent is not None:
            details.append(f"the sampler's latent_image comes from node {latent} "
                           f"({workflow[latent]['class_type']}), not from an empty latent")
    seed, steps = _seed_and_steps(workflow, sampler)
    if seed is None:
        missing.append("seed")
    if steps is None:
        missing.append("steps")
    if missing:
        return _refuse(name, missing, details)
    negative = None
    negative_from = sampler_node["inputs"].get("negative")
    if negative_from is not None:
        negative, _inputs, _guidance, _why = _text_encoder(workflow, negative_from)
        if negative == prompt:
            negative = None
    return RenderRoles(output=output, sampler=sampler, prompt=prompt, prompt_inputs=prompt_inputs, latent=latent,
                       seed=seed, steps=steps, guidance=guidance, negative=negative)


def _refuse(name: str, missing: list, details: list):
    roles = "; ".join(ROLE_NAMES[role] for role in missing)
    extra = f" ({'; '.join(details)})" if details else ""
    raise InvalidParameter(name, f"this is not a render workflow the worker pool can drive: it lacks {roles}"
                                 f"{extra}. Start from workflows/api/render_flux_worker.json, or export a graph "
                                 f"with these nodes with Export (API)")


def _follow(workflow: dict, value: Any) -> Optional[str]:
    """The node id a link points at, or None when `value` is not a link to a node of this workflow."""
    if is_link(value) and value[0] in workflow:
        return value[0]
    return None


def _upstream(workflow: dict, start: str, wanted) -> Optional[str]:
    """Breadth-first up the links from `start`, inputs in name order: the nearest node for which wanted(node)."""
    seen, frontier = {start}, [start]
    while frontier:
        next_frontier = []
        for node_id in frontier:
            for _name, value in sorted(workflow[node_id]["inputs"].items()):
                source = _follow(workflow, value)
                if source is None or source in seen:
                    continue
                if wanted(workflow[source]):
                    return source
                seen.add(source)
                next_frontier.append(source)
        frontier = next_frontier
    return None


def _positive_source(workflow: dict, sampler: str) -> Any:
    inputs = workflow[sampler]["inputs"]
    if "positive" in inputs:
        return inputs["positive"]
    guider = _follow(workflow, inputs.get("guider"))
    if guider is not None:
        key = GUIDERS_POSITIVE.get(workflow[guider]["class_type"], "positive")
        return workflow[guider]["inputs"].get(key)
    return None


def _text_encoder(workflow: dict, link: Any) -> tuple[Optional[str], tuple, Optional[str], Optional[str]]:
    """Follow a conditioning link through pass-through nodes (FluxGuidance, ConditioningSetTimestepRange, ...)
    to its text encoder. Returns (encoder id, its text inputs, FluxGuidance id on the way, why not found)."""
    guidance = None
    node_id = _follow(workflow, link)
    for _hop in range(MAX_HOPS):
        if node_id is None:
            return None, (), guidance, None
        node = workflow[node_id]
        if node["class_type"] in TEXT_ENCODERS:
            inputs = TEXT_ENCODERS[node["class_type"]]
            linked = [name for name in inputs if is_link(node["inputs"].get(name))]
            if linked:
                return None, (), guidance, (f"the text of node {node_id} ({node['class_type']}) is linked from "
                                            f"another node; type the text into the encoder itself")
            return node_id, inputs, guidance, None
        if node["class_type"] == "FluxGuidance" and guidance is None:
            guidance = node_id
        conditioning = [value for name, value in sorted(node["inputs"].items())
                        if "conditioning" in name and _follow(workflow, value)]
        node_id = _follow(workflow, conditioning[0]) if conditioning else None
    return None, (), guidance, None


def _seed_and_steps(workflow: dict, sampler: str) -> tuple[Optional[tuple], Optional[tuple]]:
    node = workflow[sampler]
    seed_input, steps_input = SAMPLERS[node["class_type"]]
    seed = (sampler, seed_input) if seed_input and seed_input in node["inputs"] else None
    steps = (sampler, steps_input) if steps_input and steps_input in node["inputs"] else None
    if seed is None:                       # SamplerCustomAdvanced: the seed lives on its noise node
        noise = _follow(workflow, node["inputs"].get("noise"))
        if noise is not None and "noise_seed" in workflow[noise]["inputs"]:
            seed = (noise, "noise_seed")
    if steps is None:                      # SamplerCustom*: steps live on the scheduler node making the sigmas
        sigmas = _follow(workflow, node["inputs"].get("sigmas"))
        for _hop in range(MAX_HOPS):
            if sigmas is None:
                break
            if "steps" in workflow[sigmas]["inputs"] and not is_link(workflow[sigmas]["inputs"]["steps"]):
                steps = (sigmas, "steps")
                break
            sigmas = _follow(workflow, workflow[sigmas]["inputs"].get("sigmas"))
    # A linked seed or steps is computed by the graph: there is no value to set, so the role counts as missing.
    if seed is not None and is_link(workflow[seed[0]]["inputs"][seed[1]]):
        seed = None
    if steps is not None and is_link(workflow[steps[0]]["inputs"][steps[1]]):
        steps = None
    return seed, steps


def defaults_of(workflow: dict, roles: RenderRoles) -> dict:
    """The image settings the workflow itself holds (width, height, steps, guidance, sampler, scheduler)."""
    latent = workflow[roles.latent]["inputs"]
    sampler = workflow[roles.sampler]["inputs"]
    values = {"width": latent.get("width"), "height": latent.get("height"),
              "steps": workflow[roles.steps[0]]["inputs"].get(roles.steps[1])}
    if roles.guidance:
        values["guidance"] = workflow[roles.guidance]["inputs"].get("guidance")
    for key, name in (("sampler", "sampler_name"), ("scheduler", "scheduler")):
        if isinstance(sampler.get(name), str):
            values[key] = sampler[name]
    return {key: value for key, value in values.items() if value is not None and not is_link(value)}


def loader_files(workflow: dict) -> list[tuple[str, str, str, str]]:
    """(node id, class_type, input, file name) of every model file the workflow's loaders name."""
    found = []
    for node_id in sorted(workflow, key=node_order):
        node = workflow[node_id]
        for name in LOADER_INPUTS.get(node["class_type"], ()):
            value = node["inputs"].get(name)
            if isinstance(value, str):
                found.append((node_id, node["class_type"], name, value))
    return found
