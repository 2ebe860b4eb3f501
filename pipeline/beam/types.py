"""The data a beam search passes around: candidates (defined with the record), progress events, callbacks and the
result."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from ..record.candidate import (STAGE_GENERATE, STAGE_LLM, STAGE_SCORE, STATUS_FAILED, STATUS_OK,  # noqa: F401
                                STATUS_PENDING, Candidate, candidate_id, describe_error)


@dataclass
class ProgressEvent:
    iteration: int          # 0-based round
    iterations: int         # rounds configured
    candidate: int          # 1-based position of the candidate in its round (0 while no candidate finished)
    candidates: int         # candidates of this round
    images_done: int
    images_total: int       # images as planned now: shrinks as near-duplicates are dropped or the search stops
    best_total: Optional[float]
    phase: str              # "llm" | "generate" | "score" | "judge" | "select" | "control"

    def text(self) -> str:
        """One line for progress displays, e.g. "round 2/3 · candidate 3/4 · best 71.3"."""
        best = "–" if self.best_total is None else f"{self.best_total:.1f}"
        where = f"round {self.iteration + 1}/{self.iterations}"
        if self.phase == "llm":
            step = "writing prompts"
        elif self.phase == "judge":
            step = "judging near the cut"
        elif self.phase == "compile":
            step = "compiling Flux (warm-up)"
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
