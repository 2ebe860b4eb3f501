"""One entry of report["candidates"]: what a candidate is, how it ended, and its id (docs/report-schema.md)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional

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
    render: Optional[dict] = None       # where the generator rendered it, when it says (e.g. the ComfyUI worker)
    negative_ignored: bool = False      # a negative prompt the generator did not use (Flux without true CFG > 1)
    evaluation: Optional[dict] = None   # a vision critic's {analysis, strengths, weaknesses, model} of its image
    batch: Optional[int] = None         # the round's generate/score call it was rendered in (0, 1, ...), for replay

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
