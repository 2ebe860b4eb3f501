"""The generation and scoring phases of a round.

Generation is one `generator.generate` call for the whole round; if that batch fails, each request is retried
alone so a single bad candidate is isolated and recorded as failed instead of sinking its round. Scoring is one
`scorer.score` call (one CLIP forward), with the same per-candidate fallback.

An image with NaN or infinite values, or entirely black (what a VAE that produced NaN leaves once the image is
saved as 8-bit, e.g. by a ComfyUI worker), fails its candidate with a reason naming it: it is never scored, so it
can never be chosen. It is not rendered again: the same seed gives the same image.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional, Sequence

import torch

from ..errors import GenerationFailed, Interrupted, ScoringFailed
from ..generation.protocol import GenerationRequest
from .config import BeamConfig
from .types import (STAGE_GENERATE, STAGE_SCORE, STATUS_FAILED, STATUS_OK, Candidate, SearchCallbacks,
                    StopRequested)


class RoundRenderer:
    def __init__(self, generator, scorer, config: BeamConfig, callbacks: SearchCallbacks,
                 check_stop: Callable[[], None], should_stop: Callable[[], bool], score_text: str):
        self.generator = generator
        self.scorer = scorer
        self.config = config
        self.callbacks = callbacks
        self.check_stop = check_stop
        self.should_stop = should_stop
        self.score_text = score_text
        self.generate_s = 0.0        # summed time of the generate() calls (they overlap when concurrency > 1)
        self.score_s = 0.0
        self.concurrency = max(1, int(getattr(generator, "concurrency", 1) or 1))
        self._lock = threading.Lock()
        self._warnings_seen = 0

    def warm_up(self) -> dict:
        """Let a generator that compiles (optional `warm_up(request)`) do so at this search's image settings."""
        warm_up = getattr(self.generator, "warm_up", None)
        if warm_up is None or not getattr(self.generator, "warm_up_needed", True):
            return {"seconds": 0.0, "warning": None}
        c = self.config
        request = GenerationRequest(prompt="warm-up", seed=0, width=c.width, height=c.height, steps=c.steps,
                                    guidance=c.guidance, sampler=c.sampler, scheduler=c.scheduler).validate()
        return warm_up(request)

    def new_warnings(self) -> list[str]:
        """Lines the generator added to its optional `warnings` list since the last call (smaller batches after
        running out of memory, a compile that fell back to eager), for the run record."""
        lines = list(getattr(self.generator, "warnings", None) or [])
        new, self._warnings_seen = lines[self._warnings_seen:], len(lines)
        return new

    def request_for(self, candidate: Candidate) -> GenerationRequest:
        c = self.config
        return GenerationRequest(prompt=candidate.prompt, seed=candidate.seed, width=c.width, height=c.height,
                                 steps=c.steps, guidance=c.guidance, negative=candidate.negative,
                                 sampler=c.sampler, scheduler=c.scheduler).validate()

    # ---- generation ---------------------------------------------------------------------------------------------
    def generate(self, candidates: Sequence[Candidate]) -> dict[str, torch.Tensor]:
        """Render every candidate; failed ones are marked on the candidate. Returns {id: [H, W, 3] image}."""
        if not candidates:
            return {}
        requests = [self.request_for(c) for c in candidates]
        self.check_stop()
        images = self._generate_batch(candidates, requests)
        self.check_stop()
        if images is not None and all(c.id in images or c.status == STATUS_FAILED for c in candidates):
            return images
        images = images or {}     # the images the failed batch did render are kept, not rendered again
        for candidate, request in zip(candidates, requests):
            if candidate.id in images or candidate.status == STATUS_FAILED:     # a broken image: not again
                continue
            self.check_stop()
            try:
                images.update(self._generate_batch([candidate], [request], raise_errors=True))
            except (StopRequested, KeyboardInterrupt):
                raise
            except Exception as exc:   # isolate: any backend error fails this candidate only
                candidate.fail(STAGE_GENERATE, exc)
            self.check_stop()
        return images

    def _generate_batch(self, candidates, requests, raise_errors: bool = False) -> Optional[dict]:
        started = time.perf_counter()
        try:
            results = self.generator.generate(requests, on_step=self.callbacks.on_step,
                                              should_stop=self.should_stop)
            if len(results) != len(requests):
                raise GenerationFailed(f"the generator returned {len(results)} images for {len(requests)} requests")
            return _usable({c.id: _rendered(c, r) for c, r in zip(candidates, results)}, candidates)
        except Interrupted:
            raise StopRequested() from None
        except (StopRequested, KeyboardInterrupt):
            raise
        except Exception as exc:
            if raise_errors:
                raise
            completed = getattr(exc, "completed", None) or {}
            return _usable({candidates[i].id: _rendered(candidates[i], r) for i, r in completed.items()
                            if 0 <= i < len(candidates)}, candidates)
        finally:
            with self._lock:
                self.generate_s += time.perf_counter() - started

    # ---- scoring ------------------------------------------------------------------------------------------------
    def score(self, candidates: Sequence[Candidate], images: dict[str, torch.Tensor]) -> None:
        """Score the rendered candidates in one call; set scores/caption/status on each."""
        rendered = [c for c in candidates if c.id in images]
        if not rendered:
            return
        self.check_stop()
        scores = self._score_batch([images[c.id] for c in rendered])
        if scores is None:
            scores = []
            for candidate in rendered:
                self.check_stop()
                try:
                    scores.append(self._score_batch([images[candidate.id]], raise_errors=True)[0])
                except (StopRequested, KeyboardInterrupt):
                    raise
                except Exception as exc:
                    candidate.fail(STAGE_SCORE, exc)
                    scores.append(None)
        self.check_stop()
        for candidate, score in zip(rendered, scores):
            if score is None:
                continue
            candidate.scores = score.as_dict(self.config.alpha)
            candidate.caption = getattr(score, "caption", None)
            candidate.status = STATUS_OK

    def _score_batch(self, images: list, raise_errors: bool = False):
        started = time.perf_counter()
        try:
            scores = self.scorer.score(images, self.score_text, captions=self.config.captions)
            if len(scores) != len(images):
                raise ScoringFailed(f"the scorer returned {len(scores)} scores for {len(images)} images")
            return list(scores)
        except (StopRequested, KeyboardInterrupt):
            raise
        except Interrupted:
            raise StopRequested() from None
        except Exception:
            if raise_errors:
                raise
            return None
        finally:
            self.score_s += time.perf_counter() - started


def _rendered(candidate: Candidate, result) -> torch.Tensor:
    """A result's image. The candidate notes where it was rendered (metadata["render"], when the generator says,
    e.g. the ComfyUI worker pool) and whether the generator left its negative prompt unused (Flux is
    guidance-distilled: diffusers uses a negative only with true_cfg_scale > 1, ComfyUI's KSampler only at cfg > 1)."""
    metadata = getattr(result, "metadata", None) or {}
    if metadata.get("render"):
        candidate.render = dict(metadata["render"])
    candidate.negative_ignored = bool(candidate.negative and metadata.get("negative_ignored"))
    return _as_hwc(result.image)


def _usable(images: dict, candidates) -> dict:
    """The images that are real pictures; a candidate whose image is broken fails here, with the reason."""
    by_id = {c.id: c for c in candidates}
    for candidate_id, image in list(images.items()):
        fault = image_fault(image)
        if fault:
            by_id[candidate_id].fail(STAGE_GENERATE, GenerationFailed(fault))
            del images[candidate_id]
    return images


def image_fault(image: torch.Tensor) -> Optional[str]:
    """Why an [H, W, 3] image in [0, 1] cannot be a candidate (NaN, infinite or all-black pixels), else None."""
    nan = int(torch.isnan(image).sum())
    infinite = int(torch.isinf(image).sum())
    if nan or infinite:
        what = " and ".join(part for part in (f"{nan} NaN" if nan else "", f"{infinite} infinite" if infinite else "")
                            if part)
        return (f"the image has {what} values of {image.numel()}: the model or its VAE produced NaN (often fp16 "
                "overflow, or a broken checkpoint or LoRA); it is not scored")
    if image.numel() and not bool(image.any()):
        return ("the image is all black (every pixel 0), as a VAE that produced NaN leaves it once saved as 8-bit: "
                "check the VAE (run it in bf16 or fp32) and the model; it is not scored")
    return None


def _as_hwc(image: torch.Tensor) -> torch.Tensor:
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[-1] != 3:
        raise GenerationFailed(f"the generator returned an image of shape {list(image.shape)}, expected [H, W, 3]")
    return image.detach().float().cpu()
