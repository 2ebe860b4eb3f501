"""BeamConfig: every parameter of a beam search, validated before any work starts."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional

from ..errors import InvalidParameter

DIMENSION_POLICIES = ("alternate", "adaptive")
SEED_POLICIES = ("inherit", "fresh")
COMBINE_MODES = ("llm", "template")
STYLES = ("natural", "booru")
DESCRIPTIVENESS_LEVELS = (1, 2, 3)
MAX_SEED = 2**64          # ComfyUI seed widgets go up to 0xffffffffffffffff


# What may change when a run continues: how long and how far it goes, and how it uses the machine.
RESUME_OVERRIDES = ("iterations", "patience", "target_score", "time_budget_s", "low_vram", "llm_concurrency",
                    "judge_budget", "judge_margin")
# What may change when recorded prompts are rendered again: rendering and scoring, not the prompts or seeds.
REPLAY_OVERRIDES = ("width", "height", "steps", "guidance", "sampler", "scheduler", "alpha", "score_text",
                    "captions", "control_arm", "patience", "target_score", "time_budget_s")


@dataclass
class BeamConfig:
    beam_width: int = 4            # N candidates per round
    keep_top: int = 2              # M survivors (M <= N)
    iterations: int = 3            # total rounds, round 0 included
    alpha: float = 0.7
    seed: int = 0
    dimension_policy: str = "alternate"   # | "adaptive"
    seed_policy: str = "inherit"          # | "fresh"
    patience: Optional[int] = None        # rounds without a better best before stopping
    target_score: Optional[float] = None
    time_budget_s: Optional[float] = None
    width: int = 1024
    height: int = 1024
    steps: int = 4
    guidance: float = 3.5
    sampler: Optional[str] = None
    scheduler: Optional[str] = None
    descriptiveness: int = 2
    style: str = "natural"
    combine_mode: str = "llm"             # | "template"
    use_negative: bool = False
    score_text: Optional[str] = None      # text for alignment; default = the user prompt
    captions: bool = False                # ask the scorer for VLM captions (critique input)
    low_vram: bool = False                # unload the Ollama model before generation each round
    llm_concurrency: int = 4
    control_arm: bool = False             # equal image budget spent on seeds only for round 0's best prompt
    judge_budget: int = 4                 # pairs a pairwise judge may decide a round (two requests each)
    judge_margin: float = 1.0             # near-cut window, in standard deviations of the round's totals

    # ---- derived quantities -------------------------------------------------------------------------------------
    @property
    def children_per_parent(self) -> int:
        """floor(N / M): each survivor gets this many children, so a round never renders more than N images."""
        return self.beam_width // self.keep_top

    @property
    def image_budget(self) -> int:
        """Most images the beam can render: N in round 0, then M * floor(N/M) per refinement round."""
        return self.beam_width + (self.iterations - 1) * self.keep_top * self.children_per_parent

    @property
    def planned_images(self) -> int:
        """Most images a run renders: the beam's budget, plus, with the control arm, what the beam renders after
        round 0 spent again on seeds."""
        return self.image_budget + (self.image_budget - self.beam_width if self.control_arm else 0)

    # ---- validation ---------------------------------------------------------------------------------------------
    def validate(self) -> "BeamConfig":
        """Raise InvalidParameter naming the first bad parameter; return self so calls can chain."""
        _int_at_least("beam_width", self.beam_width, 1)
        _int_at_least("keep_top", self.keep_top, 1)
        if self.keep_top > self.beam_width:
            raise InvalidParameter(
                "keep_top", f"must be <= beam_width ({self.beam_width}): cannot keep {self.keep_top} of "
                            f"{self.beam_width} candidates")
        _int_at_least("iterations", self.iterations, 1)
        _number("alpha", self.alpha)
        if not 0.0 <= self.alpha <= 1.0:
            raise InvalidParameter("alpha", f"must be in [0, 1] (weight of alignment in the total), got {self.alpha}")
        _int_at_least("seed", self.seed, 0)
        if self.seed >= MAX_SEED:
            raise InvalidParameter("seed", f"must be < 2**64, got {self.seed}")
        _choice("dimension_policy", self.dimension_policy, DIMENSION_POLICIES)
        _choice("seed_policy", self.seed_policy, SEED_POLICIES)
        _choice("combine_mode", self.combine_mode, COMBINE_MODES)
        _choice("style", self.style, STYLES)
        _choice("descriptiveness", self.descriptiveness, DESCRIPTIVENESS_LEVELS)
        if self.patience is not None:
            _int_at_least("patience", self.patience, 1)
        if self.target_score is not None:
            _number("target_score", self.target_score)
        if self.time_budget_s is not None:
            _number("time_budget_s", self.time_budget_s)
            if self.time_budget_s <= 0:
                raise InvalidParameter("time_budget_s", f"must be > 0 seconds, got {self.time_budget_s}")
        for name in ("width", "height"):
            value = getattr(self, name)
            _int_at_least(name, value, 16)
            if value % 16:
                raise InvalidParameter(
                    name, f"must be a multiple of 16 (Flux packs 2x2 patches of 8x latents), got {value}")
        _int_at_least("steps", self.steps, 1)
        _number("guidance", self.guidance)
        if self.guidance < 0:
            raise InvalidParameter("guidance", f"must be >= 0, got {self.guidance}")
        for name in ("sampler", "scheduler"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidParameter(name, f"must be a name (string) or unset, got {value!r}")
        if self.score_text is not None and (not isinstance(self.score_text, str) or not self.score_text.strip()):
            raise InvalidParameter("score_text", "must be a non-empty string, or unset to score against the prompt")
        for name in ("use_negative", "captions", "low_vram", "control_arm"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidParameter(name, f"must be true or false, got {getattr(self, name)!r}")
        _int_at_least("llm_concurrency", self.llm_concurrency, 1)
        _int_at_least("judge_budget", self.judge_budget, 0)
        _number("judge_margin", self.judge_margin)
        if self.judge_margin < 0:
            raise InvalidParameter("judge_margin", f"must be >= 0 (standard deviations), got {self.judge_margin}")
        return self

    # ---- (de)serialisation --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BeamConfig":
        """Build from a dict such as report["config"]; keys that are not parameters (generator, scorer...) are
        ignored so a report's config can be passed as is."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def _int_at_least(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameter(name, f"must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidParameter(name, f"must be >= {minimum}, got {value}")


def _number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidParameter(name, f"must be a finite number, got {value!r}")


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed or isinstance(value, bool):
        raise InvalidParameter(name, f"must be one of {', '.join(map(str, allowed))}; got {value!r}")
