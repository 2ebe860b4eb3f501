"""Image generation: the request/result types and the Generator protocol every backend implements.

Backends: the diffusers Flux pipeline (standalone, CLI, services), the remote client for the seed's Flux
service, and, in `nodes/comfy_generator.py`, ComfyUI's own sampler on the user's MODEL/CLIP/VAE.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import torch

from ..errors import InvalidParameter

# on_step(done_steps, total_steps) is called after every denoising step of a generate() call.
StepCallback = Callable[[int, int], None]
# should_stop() -> True asks the backend to stop at the next step (it raises pipeline.errors.Interrupted).
StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    seed: int
    width: int = 1024
    height: int = 1024
    steps: int = 4
    guidance: float = 3.5
    negative: Optional[str] = None
    sampler: Optional[str] = None      # backends without named samplers ignore these two
    scheduler: Optional[str] = None

    def validate(self) -> "GenerationRequest":
        """Raise InvalidParameter naming the first bad field; return self so calls can chain."""
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InvalidParameter("prompt", "must be a non-empty string")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value < 16 or value % 16:
                raise InvalidParameter(name, f"must be a positive multiple of 16 (Flux packs 2x2 latent patches), got {value}")
        if self.steps < 1:
            raise InvalidParameter("steps", f"must be at least 1, got {self.steps}")
        if self.guidance < 0:
            raise InvalidParameter("guidance", f"must be >= 0, got {self.guidance}")
        if not 0 <= self.seed < 2**64:
            raise InvalidParameter("seed", f"must be in [0, 2**64), got {self.seed}")
        return self


@dataclass
class GenerationResult:
    image: torch.Tensor                 # [H, W, 3] float32 in [0, 1], see pipeline/images.py
    seed: int
    seconds: float                      # wall time of this image's share of its batch
    prompt: str = ""                    # the text actually rendered (trigger words included)
    metadata: dict = field(default_factory=dict)


@runtime_checkable
class Generator(Protocol):
    """Renders a list of requests, batching them where the backend can. Raises GenerationFailed on failure.

    Results come back in request order. A backend may render requests of different prompts in one batch;
    it must give the same image for a request whether rendered alone or in a batch.

    Optional capability, read with `getattr(generator, "concurrency", 1)`: how many generate() calls the caller
    may have in flight at once (from different threads). A local GPU backend leaves it at 1, so the beam search
    keeps GPU work in one thread; a backend that spreads calls over several servers sets it to their count, and
    the search then renders that many batches of a round at once (scoring and the record stay in plan order).
    It is not a protocol member, so generators without it still satisfy isinstance(g, Generator).
    """

    def generate(self, requests: Sequence[GenerationRequest], on_step: Optional[StepCallback] = None,
                 should_stop: Optional[StopCheck] = None) -> list[GenerationResult]:
        ...

    def describe(self) -> dict:
        """JSON-serialisable settings for the run record (model id, LoRAs, sampler...)."""
        ...


def with_triggers(prompt: str, triggers: Sequence[str]) -> str:
    """Prepend LoRA trigger words the prompt does not already contain (case-insensitive), in LoRA order, each
    once (two LoRAs may share a trigger)."""
    missing: dict[str, str] = {}
    for trigger in triggers:
        trigger = (trigger or "").strip()
        if trigger and trigger.lower() not in prompt.lower():
            missing.setdefault(trigger.lower(), trigger)
    return ", ".join([*missing.values(), prompt]) if missing else prompt


def plan_batches(requests: Sequence[GenerationRequest], key: Callable[[GenerationRequest], tuple],
                 max_batch: int) -> list[list[int]]:
    """Group request indices by `key` (things one pipeline call must share: size, steps, guidance...), in
    first-appearance order, and split each group into chunks of at most `max_batch`."""
    if max_batch < 1:
        raise InvalidParameter("max_batch", f"must be at least 1, got {max_batch}")
    groups: dict[tuple, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(key(request), []).append(index)
    return [indices[start:start + max_batch] for indices in groups.values()
            for start in range(0, len(indices), max_batch)]
