"""Scorers by name: what `--scorer SPEC` may say, and how several scorers make one total.

    clip                 CLIP alignment + LAION aesthetic, the seed's total (models from --clip / --aesthetic)
    pickscore[=SOURCE]   PickScore v1: a hub id or a local folder in the published layout
    hpsv2[=FILE]         HPSv2.1: the published state dict (HPS_v2.1_compressed.pt) on open_clip ViT-H-14

A search ranks by `total`. With one scorer the total is that scorer's own score (for `clip`, the seed formula
alpha*alignment + (1-alpha)*10*aesthetic). With several, scores on different scales are put on one scale first:

    total = mean over the named scorers of (score - typical) / spread

where `spread` is the typical spread of that score between images of one prompt and `typical` a typical score (the
SCALES table). Within one prompt `typical` only shifts every candidate alike, so the ranking depends on the
spreads alone: each scorer moves the total by "how much better than usual for this prompt", in its own units. The
scales are fixed rather than estimated from the run's own images on purpose: a standardisation that changed as
images arrive would change old candidates' totals, and the beam compares survivors of earlier rounds with new
children (elitism), continues runs after an interrupt and stops on --target-score; all three need a total that
means the same in every round.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean
from typing import Iterable, Mapping, Optional, Sequence

from ..errors import InvalidParameter

DEFAULT_SCORER = "clip"
ALIASES = {"clip": "clip", "clip+aesthetic": "clip", "default": "clip", "pickscore": "pickscore",
           "pickscore_v1": "pickscore", "hpsv2": "hpsv2", "hps": "hpsv2", "hpsv2.1": "hpsv2", "hps_v2.1": "hpsv2"}


@dataclass(frozen=True)
class Scale:
    typical: float      # a typical score of an image that fits its prompt
    spread: float       # a typical standard deviation between images (seeds, prompt wordings) of one prompt
    what: str           # the score in a few words, for docs, doctor and the eval page


# Set from each scorer's published score ranges (the seed total: CLIPScore ~28-35 and LAION ~4.5-6.5 for fitting
# images; PickScore ~20-23; HPSv2.1 cosines ~0.25-0.33), not measured on this project's searches. Only the ratios
# of the spreads matter for the ranking; every candidate's per-scorer scores are in report.json to check them.
SCALES = {
    "clip": Scale(typical=40.0, spread=2.0, what="CLIP ViT-L/14 alignment + LAION aesthetic (the seed's total)"),
    "pickscore": Scale(typical=21.0, spread=1.0, what="PickScore v1 (logit_scale.exp() * cosine, about 18-24)"),
    "hpsv2": Scale(typical=0.28, spread=0.01, what="HPSv2.1 (cosine, about 0.2-0.35)"),
}
SCORER_NAMES = tuple(SCALES)

# Named on purpose so that a user who asks for them learns why they are not offered, and what to do instead.
_IMAGEREWARD = ("ImageReward is not offered: its package (image-reward 1.5) imports find_pruneable_heads_and_indices "
                "from transformers.modeling_utils, which transformers 5 removed, and it needs the undeclared OpenAI "
                "`clip` package and timm 0.6.13. Score with pickscore or hpsv2, or run ImageReward in its own "
                "environment with transformers<5 (see docs/eval.md)")
UNSUPPORTED = {
    "imagereward": _IMAGEREWARD,
    "image-reward": _IMAGEREWARD,
    "hpsv3": "HPSv3 is not offered: it is a Qwen2-VL-7B model whose package pins transformers 4.45.2. Use hpsv2, or "
             "run HPSv3 in its own environment (see docs/eval.md)",
    "mps": "MPS is not offered: its checkpoint is a pickled whole model (torch.load runs code from the file). Use "
           "pickscore or hpsv2",
}


@dataclass(frozen=True)
class ScorerSpec:
    name: str                       # "clip" | "pickscore" | "hpsv2"
    source: Optional[str] = None    # pickscore: hub id or folder; hpsv2: the state-dict file; None = the default

    def __str__(self) -> str:
        return self.name + (f"={self.source}" if self.source else "")


def parse_scorer_spec(text: str, flag: str = "scorer") -> ScorerSpec:
    """`NAME` or `NAME=SOURCE` -> ScorerSpec; InvalidParameter(flag) says what is wrong and what is accepted."""
    raw = str(text or "").strip()
    name, sep, source = raw.partition("=")
    key = name.strip().lower()
    source = source.strip() or None
    if not key:
        raise InvalidParameter(flag, f"is empty; give one of {', '.join(SCORER_NAMES)} (e.g. pickscore, or "
                                     "hpsv2=/models/HPS_v2.1_compressed.pt)")
    if key in UNSUPPORTED:
        raise InvalidParameter(flag, UNSUPPORTED[key])
    if key not in ALIASES:
        raise InvalidParameter(flag, f"unknown scorer {name.strip()!r}; known: clip (CLIP + aesthetic), "
                                     "pickscore[=SOURCE], hpsv2[=FILE]")
    canonical = ALIASES[key]
    if sep and source is None:
        raise InvalidParameter(flag, f"{raw!r} has '=' but no source after it; give {canonical} alone for the "
                                     "default weights")
    if canonical == "clip" and source:
        raise InvalidParameter(flag, "clip takes its models from --clip and --aesthetic, not from clip=SOURCE")
    return ScorerSpec(canonical, source)


def parse_scorer_specs(texts: Optional[Iterable[str]], flag: str = "scorer") -> tuple[ScorerSpec, ...]:
    """The scorers a search ranks by, in the order given; none given -> the default (clip). A scorer named twice is
    refused: its weight in the total would double silently."""
    specs = [parse_scorer_spec(text, flag) for text in (texts or ())]
    if not specs:
        return (ScorerSpec(DEFAULT_SCORER),)
    seen: dict[str, ScorerSpec] = {}
    for spec in specs:
        if spec.name in seen:
            raise InvalidParameter(flag, f"{spec.name} is named twice ({seen[spec.name]} and {spec}); name each "
                                         "scorer once")
        seen[spec.name] = spec
    return tuple(specs)


def is_default(specs: Sequence[ScorerSpec]) -> bool:
    return [spec.name for spec in specs] == [DEFAULT_SCORER]


def combined_total(values: Mapping[str, float], ranked_by: Sequence[str]) -> float:
    """The total from the scores named in `ranked_by` (see the module docstring): the score itself for one
    scorer, the mean of the standardised scores for several."""
    if not ranked_by:
        raise ValueError("ranked_by names no scorer")
    missing = [name for name in ranked_by if name not in values]
    if missing:
        raise KeyError(f"no {', '.join(missing)} score to rank by")
    if len(ranked_by) == 1:
        return float(values[ranked_by[0]])
    return fmean((float(values[name]) - SCALES[name].typical) / SCALES[name].spread for name in ranked_by)
