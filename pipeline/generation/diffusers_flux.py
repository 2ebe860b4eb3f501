"""Flux through diffusers: the generator for standalone runs, the CLI and the seed's Flux service.

One `DiffusersFluxGenerator` owns one `FluxPipeline`. It loads the model once, loads each LoRA file once (later
requests only re-weight adapters with `set_adapters`), and renders requests in as few pipeline calls as the
requests allow: requests sharing size, steps and (for guidance-distilled "dev" models) guidance go through one
call, each with its own seeded `torch.Generator`, so an image is the same whether rendered alone or in a batch.

Choices worth knowing:
- guidance: FLUX.1-schnell has no guidance embedding, so `guidance` is ignored (and not a batching key) there;
  FLUX.1-dev-style models embed it.
- negative prompts: Flux is guidance-distilled and has no real negative conditioning. A negative prompt is used
  only with `true_cfg_scale > 1` (diffusers' true CFG: a second transformer pass per step, twice the cost);
  otherwise it is ignored and the result's metadata says so.
- seeds: initial noise is drawn on the CPU from the request's seed, so a seed gives the same noise on any device.
- speed: `compile=True` compiles the transformer's repeated blocks and `fp8=True` stores its weights in float8
  (generation/speedups.py); `warm_up()` compiles before the first real request. A compile that fails falls back
  to eager rendering with one warning.
- out of GPU memory: a batch that does not fit is split in halves (down to one image) and the smaller size is
  kept for later calls, with one warning; only a request that does not fit alone fails.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ..config import DEFAULT_FLUX_MODEL, LoraSpec
from ..errors import GenerationFailed, Interrupted, InvalidParameter, ModelNotFound, PromptBeamError
from .loras import check_lora_keys, default_lora_dirs, resolve_lora_file
from . import speedups
from .flux_loading import check_true_cfg_scale, load_flux_pipeline, pick_device, pick_dtype  # noqa: F401 (re-exported)
from .protocol import GenerationRequest, GenerationResult, StepCallback, StopCheck, plan_batches, with_triggers
from .sources import resolve_loras

log = logging.getLogger(__name__)

# prompts -> (prompt_embeds [B, L, joint_attention_dim], pooled_prompt_embeds [B, pooled_projection_dim]).
# For pipelines built without text encoders (benchmarks, external encoders).
PromptEncoder = Callable[[list[str]], "tuple[torch.Tensor, torch.Tensor]"]

SAMPLERS = ("euler",)                      # flow-matching Euler, the only sampler the Flux pipeline has
# ComfyUI scheduler names -> FlowMatchEulerDiscreteScheduler options; simple/normal = the model's own schedule.
SCHEDULERS = {"simple": {}, "normal": {}, "karras": {"use_karras_sigmas": True},
              "exponential": {"use_exponential_sigmas": True}}


@dataclass(frozen=True)
class LoadedLora:
    file: str          # resolved absolute path
    adapter: str       # adapter name inside the pipeline


def _adapter_name(file: Path) -> str:
    # Stable across runs and unique per file: two LoRAs with the same file name in different folders differ.
    stem = re.sub(r"[^A-Za-z0-9_]", "_", file.stem)[:40]
    return f"{stem}_{hashlib.sha1(str(file).encode()).hexdigest()[:8]}"


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _root_cause(exc: BaseException) -> BaseException:
    """The exception a GenerationFailed wraps (its __cause__), else the exception itself."""
    return exc.__cause__ if isinstance(exc, GenerationFailed) and exc.__cause__ is not None else exc


class OutOfGPUMemory(GenerationFailed):
    """A pipeline call ran out of GPU memory: generate() splits its batch, or fails the one request."""


class _StepReporter:
    """callback_on_step_end: counts steps across the pipeline calls of one generate() and stops on request."""

    def __init__(self, total: int, on_step: Optional[StepCallback], should_stop: Optional[StopCheck]):
        self.total, self.done, self.on_step, self.should_stop = total, 0, on_step, should_stop

    def __call__(self, pipe, step: int, timestep, tensors: dict) -> dict:
        self.done += 1
        if self.on_step is not None:
            self.on_step(self.done, self.total)
        self.check()
        return tensors

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Interrupted(f"image generation stopped at step {self.done}/{self.total}")


class DiffusersFluxGenerator:
    """Flux (schnell or dev, any diffusers-loadable checkpoint) with LoRAs, implementing the Generator protocol.

    model: hub id (black-forest-labs/FLUX.1-schnell), a local diffusers folder, or a single transformer file
    (.safetensors, BFL or diffusers layout) whose other components come from `base`.
    loras: LoraSpec / {path, trigger, weight} items, loaded once here; trigger words are prepended to prompts.
    offload: model-level CPU offload for cards with <= 12 GB (one component on the GPU at a time).
    max_batch: images per pipeline call (default 4, 1 with offload).
    compile / fp8 / compile_cache: regional compilation, float8 weights (with compile) and inductor's cache folder
    (generation/speedups.py).
    """

    def __init__(self, model: str = DEFAULT_FLUX_MODEL, loras: Sequence = (), device: Optional[str] = None,
                 dtype=None, offload: bool = False, base: Optional[str] = None, max_batch: Optional[int] = None,
                 true_cfg_scale: float = 1.0, lora_dirs: Optional[Sequence[str]] = None,
                 max_sequence_length: Optional[int] = None, prompt_encoder: Optional[PromptEncoder] = None,
                 compile: bool = False, fp8: bool = False, compile_cache: Optional[str] = None):
        device_ = pick_device(device)
        dtype_ = pick_dtype(dtype, device_)
        if offload and device_.type == "cpu":
            raise InvalidParameter("offload", "CPU offload moves models to a GPU when needed; this run is on the CPU")
        if fp8:
            speedups.check_fp8(device_, compile)      # before a 30 GB load, not after
        loras = [s if isinstance(s, LoraSpec) else LoraSpec.from_dict(s) for s in loras]
        lora_dirs = default_lora_dirs() if lora_dirs is None else lora_dirs
        resolve_loras(loras, lora_dirs).require()   # a missing or foreign LoRA fails now, not after the model loads
        pipe = load_flux_pipeline(model, base, dtype_)
        self._setup(pipe, str(model), base, device_, dtype_, offload, max_batch, true_cfg_scale, lora_dirs,
                    max_sequence_length, prompt_encoder)
        self.use_loras(loras)
        self._speed_up(compile, fp8, compile_cache)

    @classmethod
    def from_pipeline(cls, pipe, model: str = "custom", loras: Sequence = (), device: Optional[str] = None,
                      offload: bool = False, max_batch: Optional[int] = None, true_cfg_scale: float = 1.0,
                      lora_dirs: Optional[Sequence[str]] = None, max_sequence_length: Optional[int] = None,
                      prompt_encoder: Optional[PromptEncoder] = None, compile: bool = False, fp8: bool = False,
                      compile_cache: Optional[str] = None) -> "DiffusersFluxGenerator":
        """Wrap an existing FluxPipeline (built from components, e.g. for benchmarks) without reloading it."""
        self = cls.__new__(cls)
        device_ = pick_device(device) if device else pipe.transformer.device
        if fp8:
            speedups.check_fp8(device_, compile)
        self._setup(pipe, model, None, device_, pipe.transformer.dtype, offload, max_batch, true_cfg_scale,
                    lora_dirs, max_sequence_length, prompt_encoder)
        self.use_loras(loras)
        self._speed_up(compile, fp8, compile_cache)
        return self

    @classmethod
    def from_settings(cls, settings, **overrides) -> "DiffusersFluxGenerator":
        """FLUX_MODEL / FLUX_LORAS (pipeline.config.Settings) with keyword overrides (device, offload, ...)."""
        if settings.image_provider != "flux":
            raise InvalidParameter("IMAGE_PROVIDER", f"{settings.image_provider!r} is not 'flux'")
        options = dict(model=settings.flux_model, loras=settings.flux_loras)
        options.update(overrides)
        return cls(**options)

    def _setup(self, pipe, model, base, device, dtype, offload, max_batch, true_cfg_scale, lora_dirs,
               max_sequence_length, prompt_encoder) -> None:
        if max_batch is not None and max_batch < 1:
            raise InvalidParameter("max_batch", f"must be at least 1, got {max_batch}")
        true_cfg_scale = check_true_cfg_scale(true_cfg_scale)
        if prompt_encoder is None and (pipe.text_encoder is None or pipe.text_encoder_2 is None):
            raise InvalidParameter("prompt_encoder", "the pipeline has no text encoders: pass prompt_encoder=")
        self.pipe, self.model, self.base = pipe, model, base
        self.device, self.dtype, self.offload = device, dtype, offload
        self.max_batch = max_batch or (1 if offload else 4)
        self.true_cfg_scale = float(true_cfg_scale)
        self.lora_dirs = [str(d) for d in (default_lora_dirs() if lora_dirs is None else lora_dirs)]
        self.prompt_encoder = prompt_encoder
        self.guidance_embeds = bool(pipe.transformer.config.guidance_embeds)
        # FLUX.1-schnell was trained with 256 T5 tokens, dev with 512.
        self.max_sequence_length = max_sequence_length or (512 if self.guidance_embeds else 256)
        self.lora_loads = 0                         # LoRA files read since construction (each at most once)
        self._loaded: dict[str, LoadedLora] = {}   # resolved file -> adapter
        self._active: list[tuple[LoraSpec, LoadedLora]] = []
        self._schedulers = {"simple": pipe.scheduler}   # ComfyUI scheduler name -> scheduler, built once
        self.speed = speedups.SpeedupState()
        self.warnings: list[str] = []               # lines for the run record (a compile fallback, smaller batches)
        self.oom_splits = 0                         # batches split because they did not fit in GPU memory
        pipe.set_progress_bar_config(disable=True)
        if offload:
            pipe.enable_model_cpu_offload(device=device)
        elif pipe.transformer.device != device:
            pipe.to(device)

    # ---- compile / fp8 -----------------------------------------------------------------------------------

    def _speed_up(self, compile_: bool, fp8: bool, cache: Optional[str]) -> None:
        """After the LoRAs are in place (compiled code is specialised to the modules it traced)."""
        self.speed = speedups.SpeedupState(compile=bool(compile_), fp8=bool(fp8))
        if fp8:
            speedups.quantize_fp8(self.pipe.transformer)
        if not compile_:
            return
        try:
            self.speed.cache_dir = str(speedups.use_compile_cache(speedups.compile_cache_dir(cache)))
            speedups.compile_blocks(self.pipe.transformer)
            self.speed.status = "compiled"
        except Exception as exc:        # an unusable cache folder, a diffusers without regional compilation
            self._compile_failed(exc)

    def _compile_failed(self, exc: BaseException) -> str:
        speedups.undo_compile(self.pipe.transformer)
        line = speedups.compile_failure_line(exc)
        self.speed.status, self.speed.error = "failed", line
        log.warning(line)
        return line

    @property
    def warm_up_needed(self) -> bool:
        return self.speed.status == "compiled"

    def warm_up(self, request: GenerationRequest) -> dict:
        """Compile before the first real request: render `request`'s size at batch 1 and 2 (1 step each).
        Returns {"seconds", "warning"}: the warm-up's time and the line a failed compile gave (else None).
        A generator that does not compile returns at once."""
        if self.speed.status != "compiled":
            return {"seconds": 0.0, "warning": None}
        request = dataclasses.replace(self.check_request(request), steps=1, negative=None)
        shape = [request.width, request.height]
        started = time.perf_counter()
        warning = None
        try:
            for size in speedups.WARMUP_BATCHES[:self.max_batch]:
                if [*shape, size] in self.speed.warmed:
                    continue
                batch = [dataclasses.replace(request, prompt=f"warm-up {i}", seed=i) for i in range(size)]
                try:
                    self._render(batch, _StepReporter(size, None, None), compiling=True)
                except OutOfGPUMemory:
                    if size > 1:                  # batches of one only: nothing more to warm up
                        self._smaller_batches(size, 1, request)
                    break
                self.speed.warmed.append([*shape, size])
        except Exception as exc:
            if not speedups.is_compile_error(_root_cause(exc)):
                raise
            warning = self._compile_failed(_root_cause(exc))
        seconds = time.perf_counter() - started
        self.speed.compile_s += seconds
        return {"seconds": seconds, "warning": warning}

    # ---- LoRAs -------------------------------------------------------------------------------------------

    def load_lora(self, spec) -> LoadedLora:
        """Load a LoRA file into the pipeline once; a second call for the same file is a no-op."""
        spec = spec if isinstance(spec, LoraSpec) else LoraSpec.from_dict(spec)
        file = resolve_lora_file(spec.path, self.lora_dirs)
        key = str(file)
        if key in self._loaded:
            return self._loaded[key]
        check_lora_keys(file)
        adapter = _adapter_name(file)
        try:
            self.pipe.load_lora_weights(key, adapter_name=adapter)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise ModelNotFound(
                f"LoRA {spec.path!r} ({file}) could not be loaded into this Flux model: {exc}. It may be a LoRA "
                "for another architecture or another Flux variant (shapes must match the transformer).") from exc
        if not any(adapter in names for names in self.pipe.get_list_adapters().values()):
            raise ModelNotFound(
                f"LoRA {spec.path!r} ({file}) has no weights for Flux's transformer or text encoder: it is "
                "probably a LoRA for another architecture (SD 1.5/SDXL/...).")
        self.lora_loads += 1
        self._loaded[key] = LoadedLora(file=key, adapter=adapter)
        return self._loaded[key]

    def use_loras(self, specs: Sequence) -> None:
        """Make exactly these LoRAs (with these weights and triggers) active; load files not yet loaded."""
        specs = [s if isinstance(s, LoraSpec) else LoraSpec.from_dict(s) for s in specs]
        active = [(spec, self.load_lora(spec)) for spec in specs]
        adapters = [lora.adapter for _, lora in active]
        if len(set(adapters)) != len(adapters):
            raise InvalidParameter("loras", "the same LoRA file is listed twice; give it once with one weight")
        if [(s.weight, l.adapter) for s, l in active] != [(s.weight, l.adapter) for s, l in self._active]:
            if active:
                self.pipe.enable_lora()     # set_adapters does not undo an earlier disable_lora()
                self.pipe.set_adapters(adapters, [spec.weight for spec, _ in active])
            elif self._loaded:
                self.pipe.disable_lora()
        self._active = active

    @property
    def loaded_loras(self) -> list[LoadedLora]:
        """Every LoRA file loaded so far (active or not); each stays loaded for the generator's lifetime."""
        return list(self._loaded.values())

    @property
    def triggers(self) -> list[str]:
        return [spec.trigger for spec, _ in self._active if spec.trigger]

    # ---- generation --------------------------------------------------------------------------------------

    def check_request(self, request: GenerationRequest) -> GenerationRequest:
        request.validate()
        if request.sampler not in (None, "", *SAMPLERS):
            raise InvalidParameter("sampler", f"{request.sampler!r} is not available in the diffusers Flux backend "
                                              f"(it has: {', '.join(SAMPLERS)}); ComfyUI's generator has the others")
        if request.scheduler not in (None, "", *SCHEDULERS):
            raise InvalidParameter("scheduler", f"{request.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        return request

    def _uses_cfg(self, request: GenerationRequest) -> bool:
        return self.true_cfg_scale > 1 and bool(request.negative and request.negative.strip())

    def _batch_key(self, request: GenerationRequest) -> tuple:
        guidance = request.guidance if self.guidance_embeds else None
        return (request.width, request.height, request.steps, guidance, self._uses_cfg(request),
                request.scheduler or "simple")

    def generate(self, requests: Sequence[GenerationRequest], on_step: Optional[StepCallback] = None,
                 should_stop: Optional[StopCheck] = None) -> list[GenerationResult]:
        requests = [self.check_request(r) for r in requests]
        plan = deque(plan_batches(requests, self._batch_key, self.max_batch))
        reporter = _StepReporter(sum(requests[chunk[0]].steps for chunk in plan), on_step, should_stop)
        results: list[Optional[GenerationResult]] = [None] * len(requests)
        while plan:
            chunk = plan.popleft()
            reporter.check()
            try:
                rendered = self._render([requests[i] for i in chunk], reporter)
            except OutOfGPUMemory as exc:
                if len(chunk) == 1:           # it does not fit alone: only this request fails
                    exc.completed = {i: r for i, r in enumerate(results) if r is not None}
                    raise
                half = (len(chunk) + 1) // 2
                self._smaller_batches(len(chunk), half, requests[chunk[0]])
                plan.extendleft([chunk[half:], chunk[:half]])     # the same requests, in halves, in order
                reporter.total += requests[chunk[0]].steps         # the steps of the failed call come again
                continue
            except GenerationFailed as exc:
                exc.completed = {i: r for i, r in enumerate(results) if r is not None}
                raise
            for index, result in zip(chunk, rendered):
                results[index] = result
        return results

    def _smaller_batches(self, tried: int, now: int, request: GenerationRequest) -> None:
        """Keep the batch size that fits for the rest of this generator's life; say so once."""
        self.oom_splits += 1
        if now < self.max_batch:
            first = not any("out of GPU memory" in w for w in self.warnings)
            self.max_batch = now
            if first:
                line = (f"out of GPU memory rendering {tried} images at {request.width}x{request.height}: rendering "
                        f"at most {now} at a time from now on (--offload or smaller images need less memory)")
                self.warnings.append(line)
                log.warning(line)

    def _scheduler(self, name: Optional[str]):
        name = name or "simple"
        if name not in self._schedulers:
            default = self._schedulers["simple"]
            self._schedulers[name] = (default if not SCHEDULERS[name]
                                      else type(default).from_config(default.config, **SCHEDULERS[name]))
        return self._schedulers[name]

    def _render(self, batch: list[GenerationRequest], reporter: _StepReporter,
                compiling: bool = False) -> list[GenerationResult]:
        """One pipeline call. A compile error outside the warm-up (e.g. at a new size) falls back to eager and
        renders the batch again; the warm-up lets it through to warm_up(), which does the same."""
        try:
            return self._call_pipeline(batch, reporter)
        except GenerationFailed as exc:
            cause = _root_cause(exc)
            if compiling or self.speed.status != "compiled" or not speedups.is_compile_error(cause):
                raise
            self.warnings.append(self._compile_failed(cause))
        return self._call_pipeline(batch, reporter)

    def _call_pipeline(self, batch: list[GenerationRequest], reporter: _StepReporter) -> list[GenerationResult]:
        first = batch[0]
        prompts = [with_triggers(r.prompt, self.triggers) for r in batch]
        use_cfg = self._uses_cfg(first)
        kwargs = dict(height=first.height, width=first.width, num_inference_steps=first.steps,
                      guidance_scale=first.guidance, max_sequence_length=self.max_sequence_length,
                      generator=[torch.Generator("cpu").manual_seed(r.seed) for r in batch],
                      output_type="pt", callback_on_step_end=reporter)
        if use_cfg:
            kwargs["true_cfg_scale"] = self.true_cfg_scale
        if self.prompt_encoder is not None:
            kwargs.update(self._encode(prompts, "prompt_embeds", "pooled_prompt_embeds"))
            if use_cfg:
                kwargs.update(self._encode([r.negative for r in batch], "negative_prompt_embeds",
                                           "negative_pooled_prompt_embeds"))
        else:
            kwargs["prompt"] = prompts
            if use_cfg:
                kwargs["negative_prompt"] = [r.negative for r in batch]
        self.pipe.scheduler = self._scheduler(first.scheduler)
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                images = self.pipe(**kwargs).images                     # [B, 3, H, W] in [0, 1]
            images = images.permute(0, 2, 3, 1).float().cpu()          # -> [B, H, W, 3], ComfyUI layout
        except PromptBeamError:
            raise
        except Exception as exc:
            if _is_oom(exc):
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                raise OutOfGPUMemory(
                    f"out of GPU memory rendering {len(batch)} image(s) at {first.width}x{first.height}: enable "
                    "offload (--offload / offload=True) or render smaller images") from exc
            raise GenerationFailed(f"Flux generation failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self.pipe.scheduler = self._scheduler(None)
        seconds = (time.perf_counter() - start) / len(batch)
        meta = self._metadata(first, len(batch))
        return [GenerationResult(image=image, seed=r.seed, seconds=seconds, prompt=prompt,
                                 metadata={**meta, "negative": r.negative if use_cfg else None,
                                           **({"negative_ignored": True} if r.negative and not use_cfg else {})})
                for image, r, prompt in zip(images, batch, prompts)]

    def _encode(self, texts: list[str], embeds_key: str, pooled_key: str) -> dict:
        embeds, pooled = self.prompt_encoder(texts)
        return {embeds_key: embeds.to(self.device, self.dtype), pooled_key: pooled.to(self.device, self.dtype)}

    def _metadata(self, request: GenerationRequest, batch_size: int) -> dict:
        return {"backend": "diffusers-flux", "model": self.model, "width": request.width, "height": request.height,
                "steps": request.steps, "guidance": request.guidance if self.guidance_embeds else None,
                "sampler": "euler", "scheduler": request.scheduler or "simple", "batch_size": batch_size,
                "true_cfg_scale": self.true_cfg_scale, "loras": self._lora_record()}

    def _lora_record(self) -> list[dict]:
        return [{"path": spec.path, "file": lora.file, "weight": spec.weight, "trigger": spec.trigger,
                 "adapter": lora.adapter} for spec, lora in self._active]

    def describe(self) -> dict:
        return {"backend": "diffusers-flux", "model": self.model, "base": self.base, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "offload": self.offload,
                "max_batch": self.max_batch, "guidance_embeds": self.guidance_embeds,
                "max_sequence_length": self.max_sequence_length, "true_cfg_scale": self.true_cfg_scale,
                "loras": self._lora_record(), "speed": self.speed.describe()}
