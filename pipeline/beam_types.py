"""The data a beam search passes around: candidates, progress events, callbacks and the result."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch

# Candidate.status values. "pending" only appears in report["pending"] (planned, not yet rendered).
STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_PENDING = "pending"

# Where a failed candidate failed (Candidate.failed_stage).
STAGE_LLM = "llm"
STAGE_GENERATE = "generate"
STAGE_SCORE = "score"


def candidate_id(iteration: int, index: int) -> str:
    return f"i{iteration}c{index}"


@dataclass
class Candidate:
    """One entry of report["candidates"] (see docs/report-schema.md)."""
    id: str
    iteration: int
    index: int
    parent: Optional[str]
    dimension: Optional[str]            # the half this candidate changed relative to its parent; None in round 0
    what: str
    how: str
    prompt: str
    negative: Optional[str]
    seed: int
    image: Optional[str] = None         # file name inside the run directory
    scores: Optional[dict] = None       # {"alignment", "aesthetic", "total"}
    critique: Optional[dict] = None     # the parent's critique this candidate was refined from
    status: str = STATUS_PENDING
    error: Optional[str] = None
    failed_stage: Optional[str] = None  # "llm" | "generate" | "score" when status == "failed"
    caption: Optional[str] = None       # scorer caption, when captions are on
    fallbacks: list = field(default_factory=list)   # prompt operations answered by a rule-based fallback
    negative_ignored: bool = False      # a negative prompt the generator did not use (Flux without true CFG > 1)

    @property
    def total(self) -> Optional[float]:
        return None if self.scores is None else self.scores.get("total")

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Candidate":
        names = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in names}
        values.setdefault("fallbacks", [])
        return cls(**values)

    def fail(self, stage: str, error: BaseException | str) -> "Candidate":
        self.status = STATUS_FAILED
        self.failed_stage = stage
        self.error = error if isinstance(error, str) else describe_error(error)
        self.image = None
        self.scores = None
        return self


def describe_error(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _plain(value):
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


@dataclass
class ProgressEvent:
    iteration: int          # 0-based round
    iterations: int         # rounds configured
    candidate: int          # 1-based position of the candidate in its round (0 while no candidate finished)
    candidates: int         # candidates of this round
    images_done: int
    images_total: int       # images as planned now: shrinks as near-duplicates are dropped or the search stops
    best_total: Optional[float]
    phase: str              # "llm" | "generate" | "score" | "select" | "control"

    def text(self) -> str:
        """One line for progress displays, e.g. "round 2/3 · candidate 3/4 · best 71.3"."""
        best = "–" if self.best_total is None else f"{self.best_total:.1f}"
        where = f"round {self.iteration + 1}/{self.iterations}"
        if self.phase == "llm":
            step = "writing prompts"
        elif self.phase == "control":
            step = f"control seed {self.candidate}/{self.candidates}"
        elif self.phase in ("generate", "score") and self.candidate == 0:
            step = "rendering" if self.phase == "generate" else "scoring"
        else:
            step = f"candidate {self.candidate}/{self.candidates}"
        return f"{where} · {step} · best {best}"


@dataclass
class SearchCallbacks:
    on_progress: Optional[Callable[[ProgressEvent], None]] = None   # after each finished image (and phase changes)
    on_candidate: Optional[Callable[[Candidate, Optional[torch.Tensor]], None]] = None  # finished candidate + image
    should_stop: Optional[Callable[[], bool]] = None                 # polled before/after every model call
    on_step: Optional[Callable[[int, int], None]] = None             # denoising steps, passed to the generator


@dataclass
class SearchResult:
    run_dir: Path
    report: dict
    stop_reason: str
    best: Candidate
    best_image: torch.Tensor                 # [H, W, 3]
    finalists: list                          # list[Candidate], best first
    finalist_images: torch.Tensor            # [K, H, W, 3], best first
    control: Optional[dict]


class StopRequested(Exception):
    """Raised inside the search when should_stop() answers True; ends the run with stop_reason "interrupted"."""
