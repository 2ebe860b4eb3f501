"""ComfyFluxGenerator: the Generator that renders with ComfyUI's own Flux stack (the user's MODEL, CLIP and VAE).

Each image is made exactly as the standard graph makes it —
CLIPTextEncode -> FluxGuidance -> KSampler (EmptySD3LatentImage) -> VAEDecode —
so that, for one seed and one set of settings, a candidate of the search is the same picture the user gets by
wiring those core nodes by hand. LoRAs are applied once, when the generator is built, and stay applied for its
lifetime: re-patching per image would make ComfyUI reload the model weights every time.

This is the only generator that touches comfy.* (see ARCHITECTURE.md).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Optional, Sequence

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.sd
import comfy.utils
import latent_preview
import node_helpers
import torch

from ..pipeline.config import LoraSpec
from ..pipeline.errors import GenerationFailed, Interrupted, InvalidParameter, ModelNotFound, PromptBeamError
from ..pipeline.generation.protocol import GenerationRequest, GenerationResult, StepCallback, StopCheck, with_triggers

log = logging.getLogger(__name__)

# Samplers whose result depends only on the initial noise (no noise drawn during the steps): a batch of them can
# carry each request's own seed noise and still give each request KSampler's image for that seed.
DETERMINISTIC_SAMPLERS = frozenset((
    "euler", "euler_cfg_pp", "heun", "heunpp2", "dpm_2", "lms", "dpm_fast", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "gradient_estimation",
    "gradient_estimation_cfg_pp", "ddim", "uni_pc", "uni_pc_bh2"))
FLUX_LATENT_CHANNELS = 16   # EmptySD3LatentImage's channel count; fix_empty_latent_channels adapts other models
LATENT_DOWNSCALE = 8        # pixels per latent cell


def _patch_count(model_or_clip) -> int:
    """Number of weight patches a ModelPatcher (or a CLIP, through its .patcher) carries."""
    patcher = getattr(model_or_clip, "patcher", model_or_clip)
    return sum(len(patch_list) for patch_list in getattr(patcher, "patches", {}).values())


def apply_loras(model, clip, loras: Sequence[LoraSpec]):
    """Patch MODEL and CLIP with each LoRA (strength_model = strength_clip = weight), like a chain of LoraLoader
    nodes. Returns the patched clones; raises InvalidParameter when a LoRA patches nothing (wrong architecture)."""
    for lora in loras:
        if lora.weight == 0:
            continue   # LoraLoader skips zero-strength LoRAs too
        if not os.path.isfile(lora.path):
            raise ModelNotFound(f"loras: LoRA file {lora.path!r} does not exist")
        try:
            state_dict = comfy.utils.load_torch_file(lora.path, safe_load=True)
        except Exception as exc:
            raise ModelNotFound(f"loras: could not read LoRA {os.path.basename(lora.path)!r}: {exc}") from exc
        before = _patch_count(model) + _patch_count(clip)
        model, clip = comfy.sd.load_lora_for_models(model, clip, state_dict, lora.weight, lora.weight)
        applied = _patch_count(model) + _patch_count(clip) - before
        # ComfyUI only logs "lora key not loaded" and carries on, which renders the base model under a LoRA's name.
        if applied == 0:
            raise InvalidParameter(
                "loras", f"LoRA {os.path.basename(lora.path)!r} doesn't match this model: none of its "
                f"{len(state_dict)} tensors apply to the MODEL or CLIP (is it a LoRA for another architecture, "
                f"e.g. SDXL or SD1.5 instead of Flux?)")
        log.info("LoRA %s: %d weight patches (strength %s)", os.path.basename(lora.path), applied, lora.weight)
    return model, clip


class ComfyFluxGenerator:
    """Renders GenerationRequests on ComfyUI's MODEL / CLIP / VAE through ComfyUI's own sampler.

    The constructor settings are the defaults of `request()`; each request's own width, height, steps, guidance,
    sampler and scheduler are what gets rendered (a request's sampler/scheduler of None means this generator's).
    """

    def __init__(self, model, clip, vae, loras: Sequence[LoraSpec] = (), width: int = 1024, height: int = 1024,
                 steps: int = 4, guidance: float = 3.5, sampler_name: str = "euler", scheduler: str = "simple",
                 cfg: float = 1.0, denoise: float = 1.0, max_batch: int = 1):
        if model is None or clip is None or vae is None:
            missing = [name for name, value in (("model", model), ("clip", clip), ("vae", vae)) if value is None]
            raise InvalidParameter(missing[0], "is missing: connect a MODEL, a CLIP and a VAE (a checkpoint without "
                                               "a text encoder or VAE gives None here)")
        self._check_sampler(sampler_name, scheduler)
        if cfg < 0:
            raise InvalidParameter("cfg", f"must be >= 0, got {cfg}")
        if not 0 < denoise <= 1:
            raise InvalidParameter("denoise", f"must be in (0, 1], got {denoise}")
        self.loras = tuple(loras)
        self.defaults = GenerationRequest(prompt="defaults", seed=0, width=width, height=height, steps=steps,
                                          guidance=guidance, sampler=sampler_name, scheduler=scheduler).validate()
        if int(max_batch) < 1:
            raise InvalidParameter("max_batch", f"must be at least 1, got {max_batch}")
        self.cfg = float(cfg)
        self.denoise = float(denoise)
        # Above 1: requests that share their settings and a deterministic sampler render as one batch (see
        # _render_batch); ancestral/SDE samplers always render one by one. Off by default: each request gets its
        # own seed's noise, but on a GPU in bf16 a batch rounds differently from a batch of one (docs/performance.md),
        # so only max_batch=1 keeps every image equal to KSampler + VAEDecode for its seed.
        self.max_batch = int(max_batch)
        # A zero-weight LoRA is not applied (see apply_loras), so its trigger words are left out too.
        self.triggers = [lora.trigger.strip() for lora in self.loras
                         if lora.weight != 0 and (lora.trigger or "").strip()]
        self.model, self.clip = apply_loras(model, clip, self.loras)
        self.vae = vae
        self._negatives: dict = {}   # (text, guidance) -> conditioning; nearly always just the empty prompt

    @staticmethod
    def _check_sampler(sampler_name, scheduler):
        if sampler_name not in comfy.samplers.KSampler.SAMPLERS:
            raise InvalidParameter("sampler_name", f"unknown sampler {sampler_name!r} (ComfyUI has: "
                                                   f"{', '.join(comfy.samplers.KSampler.SAMPLERS)})")
        if scheduler not in comfy.samplers.KSampler.SCHEDULERS:
            raise InvalidParameter("scheduler", f"unknown scheduler {scheduler!r} (ComfyUI has: "
                                                f"{', '.join(comfy.samplers.KSampler.SCHEDULERS)})")

    # ---- Generator protocol -------------------------------------------------------------------------------

    def request(self, prompt: str, seed: int, negative: Optional[str] = None) -> GenerationRequest:
        """A request with this generator's settings (what the generator node's widgets say)."""
        d = self.defaults
        return GenerationRequest(prompt=prompt, seed=seed, width=d.width, height=d.height, steps=d.steps,
                                 guidance=d.guidance, negative=negative, sampler=d.sampler, scheduler=d.scheduler)

    def describe(self) -> dict:
        d = self.defaults
        return {"backend": "comfyui", "model": type(getattr(self.model, "model", self.model)).__name__,
                "width": d.width, "height": d.height, "steps": d.steps, "guidance": d.guidance,
                "sampler": d.sampler, "scheduler": d.scheduler, "cfg": self.cfg, "denoise": self.denoise,
                "loras": self._lora_record()}

    def _lora_record(self) -> list[dict]:
        return [{"path": os.path.basename(l.path), "trigger": l.trigger, "weight": l.weight} for l in self.loras]

    def generate(self, requests: Sequence[GenerationRequest], on_step: Optional[StepCallback] = None,
                 should_stop: Optional[StopCheck] = None) -> list[GenerationResult]:
        """Render each request with its own seed, one at a time (or, with max_batch > 1, in batches: see
        _generate_batched).

        Why not one batched KSampler call: ComfyUI's prepare_noise draws a whole batch's noise from ONE seed, so
        image i of a batch is not the image KSampler gives for a batch of one with seed i. Rendering one by one
        keeps every result equal to what the standard graph gives for that seed — the property that lets a
        user reproduce any candidate by hand. (Flux at 1024px also fills a GPU with batch 1 already.)
        """
        requests = [self._check_request(r) for r in requests]
        if self.max_batch > 1:
            return self._generate_batched(requests, on_step, should_stop)
        total_steps = sum(r.steps for r in requests)
        done_steps = 0
        results = []
        for request in requests:
            self._raise_if_stopped(should_stop)
            started = time.perf_counter()
            text = with_triggers(request.prompt, self.triggers)

            def step_done(_step, _total, _offset=done_steps):
                if on_step is not None:
                    on_step(_offset + _step, total_steps)
                self._raise_if_stopped(should_stop)

            try:
                positive = self._encode(text, request.guidance)
                negative = self._encode_negative(request.negative or "", request.guidance)
                image = self._render(request, positive, negative, step_done)
            except GenerationFailed as exc:
                exc.completed = dict(enumerate(results))     # what rendered before this request
                raise
            done_steps += request.steps
            results.append(self._result(request, image, time.perf_counter() - started, text))
        return results

    def _result(self, request: GenerationRequest, image: torch.Tensor, seconds: float, text: str):
        return GenerationResult(
            image=image, seed=request.seed, seconds=seconds, prompt=text,
            metadata={"width": request.width, "height": request.height, "steps": request.steps,
                      "guidance": request.guidance, "sampler": request.sampler, "scheduler": request.scheduler,
                      "cfg": self.cfg, "denoise": self.denoise, "negative": request.negative,
                      "loras": self._lora_record(),
                      # ComfyUI's sampler skips the negative (uncond) pass at cfg 1, Flux's usual setting.
                      **({"negative_ignored": True} if request.negative and math.isclose(self.cfg, 1.0) else {})})

    def _generate_batched(self, requests, on_step, should_stop) -> list[GenerationResult]:
        """Requests that share size, steps, guidance, sampler, scheduler and negative, with a deterministic
        sampler and conditionings of one shape, render max_batch at a time; the rest one by one."""
        total_steps = sum(r.steps for r in requests)
        done = [0]
        results: dict[int, GenerationResult] = {}
        groups: dict[tuple, list[int]] = {}
        encoded = []
        for index, request in enumerate(requests):
            text = with_triggers(request.prompt, self.triggers)
            positive = self._encode(text, request.guidance)
            encoded.append((text, positive))
            shape = _conditioning_shape(positive)
            batchable = request.sampler in DETERMINISTIC_SAMPLERS and shape is not None
            key = (request.width, request.height, request.steps, request.guidance, request.sampler,
                   request.scheduler, request.negative or "", shape) if batchable else ("alone", index)
            groups.setdefault(key, []).append(index)
        chunks = [indices[i:i + self.max_batch] for indices in groups.values()
                  for i in range(0, len(indices), self.max_batch)]
        for chunk in sorted(chunks):
            self._raise_if_stopped(should_stop)
            batch = [requests[i] for i in chunk]
            started = time.perf_counter()

            def step_done(_step, _total, _offset=done[0], _size=len(chunk)):
                if on_step is not None:
                    on_step(_offset + _step * _size, total_steps)
                self._raise_if_stopped(should_stop)

            try:
                negative = self._encode_negative(batch[0].negative or "", batch[0].guidance)
                images = self._render_batch(batch, [encoded[i][1] for i in chunk], negative, step_done)
            except GenerationFailed as exc:
                exc.completed = dict(results)          # what rendered before this batch
                raise
            done[0] += sum(r.steps for r in batch)
            seconds = (time.perf_counter() - started) / len(chunk)
            for i, image in zip(chunk, images):
                results[i] = self._result(requests[i], image, seconds, encoded[i][0])
        return [results[i] for i in range(len(requests))]

    # ---- the standard chain, node by node -----------------------------------------------------------------

    def _check_request(self, request: GenerationRequest) -> GenerationRequest:
        request.validate()
        if request.sampler is None or request.scheduler is None:
            request = dataclasses.replace(request, sampler=request.sampler or self.defaults.sampler,
                                          scheduler=request.scheduler or self.defaults.scheduler)
        self._check_sampler(request.sampler, request.scheduler)
        return request

    def _encode(self, text: str, guidance: float):
        """CLIPTextEncode, then FluxGuidance: the guidance value travels in the conditioning's options."""
        try:
            with torch.inference_mode():
                conditioning = self.clip.encode_from_tokens_scheduled(self.clip.tokenize(text))
        except Exception as exc:
            raise GenerationFailed(f"the CLIP text encoder failed on the prompt: {exc}") from exc
        return node_helpers.conditioning_set_values(conditioning, {"guidance": guidance})

    def _encode_negative(self, text: str, guidance: float):
        # KSampler ignores the negative at cfg 1 (Flux's usual setting) but still wants one; encode it once.
        key = (text, guidance)
        if key not in self._negatives:
            if len(self._negatives) >= 8:
                self._negatives.clear()
            self._negatives[key] = self._encode(text, guidance)
        return self._negatives[key]

    def _render(self, request: GenerationRequest, positive, negative, step_done) -> torch.Tensor:
        """EmptySD3LatentImage -> KSampler (as nodes.common_ksampler does) -> VAEDecode; returns [H, W, 3]."""
        return self._render_batch([request], [positive], negative, step_done)[0]

    def _render_batch(self, requests: Sequence[GenerationRequest], positives, negative, step_done) -> list:
        """The same chain for requests that share every setting but prompt and seed: a latent batch whose noise is
        each request's own seed's (prepare_noise per request, exactly as KSampler draws it for a batch of one)
        and a conditioning batch (the per-request tensors stacked). Returns [H, W, 3] images in request order."""
        request = requests[0]
        latent = torch.zeros([1, FLUX_LATENT_CHANNELS, request.height // LATENT_DOWNSCALE,
                              request.width // LATENT_DOWNSCALE], device=comfy.model_management.intermediate_device())
        positive = positives[0] if len(positives) == 1 else _stack_conditionings(positives)
        try:
            with torch.inference_mode():
                latent = comfy.sample.fix_empty_latent_channels(self.model, latent)
                noise = torch.cat([comfy.sample.prepare_noise(latent, r.seed, None) for r in requests])
                latent = latent.repeat(len(requests), 1, 1, 1)
                preview_callback = latent_preview.prepare_callback(self.model, request.steps)

                def callback(step, x0, x, total_steps):
                    preview_callback(step, x0, x, total_steps)   # ComfyUI's progress bar: progress + interrupt
                    comfy.model_management.throw_exception_if_processing_interrupted()
                    step_done(step + 1, total_steps)

                samples = comfy.sample.sample(
                    self.model, noise, request.steps, self.cfg, request.sampler, request.scheduler, positive,
                    negative, latent, denoise=self.denoise, callback=callback,
                    disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=request.seed)
                images = self.vae.decode(samples)
        except comfy.model_management.InterruptProcessingException as exc:
            raise Interrupted("generation interrupted in ComfyUI") from exc
        except PromptBeamError:
            raise
        except Exception as exc:
            raise GenerationFailed(f"ComfyUI sampling failed for seed {request.seed} "
                                   f"({type(exc).__name__}: {exc})") from exc
        if images.dim() == 5:   # video VAEs return [B, T, H, W, 3]; VAEDecode folds T into the batch
            images = images.reshape(-1, *images.shape[-3:])
        # clone() outside inference mode: callers (scorers, the record) may edit the image in place.
        return [images[i].float().cpu().clone() for i in range(len(requests))]

    @staticmethod
    def _raise_if_stopped(should_stop: Optional[StopCheck]):
        if should_stop is not None and should_stop():
            raise Interrupted("generation stopped on request")
        if comfy.model_management.processing_interrupted():
            comfy.model_management.interrupt_current_processing(False)
            raise Interrupted("generation interrupted in ComfyUI")


def _conditioning_shape(conditioning) -> Optional[tuple]:
    """What conditionings must share to be stacked into one batch (None: this one cannot be batched)."""
    if len(conditioning) != 1:
        return None                      # scheduled/hooked conditionings: keep them alone
    cond, options = conditioning[0]
    shapes = [("cond", tuple(cond.shape))]
    for key, value in sorted(options.items()):
        if isinstance(value, torch.Tensor):
            shapes.append((key, tuple(value.shape)))
        elif isinstance(value, (int, float, str, bool, type(None))):
            shapes.append((key, value))
        else:
            return None
    return tuple(shapes) if cond.shape[0] == 1 else None


def _stack_conditionings(conditionings) -> list:
    """[[cond [1, T, D], {pooled_output [1, P], guidance, ...}]] per request -> one [[cond [B, T, D], {...}]]."""
    conds = [c[0][0] for c in conditionings]
    options = dict(conditionings[0][0][1])
    for key, value in options.items():
        if isinstance(value, torch.Tensor):
            options[key] = torch.cat([c[0][1][key] for c in conditionings])
    return [[torch.cat(conds), options]]
