"""The search's scorer when `--scorer` names more than CLIP + aesthetic: the CLIP scorer plus PickScore and/or HPSv2,
each scoring the whole batch in one pass, their scores side by side in `ImageScore.named` and the total ranked by
the named scorers (specs.combined_total).

CLIP alignment and the aesthetic score are always computed (one CLIP ViT-L/14 pass): the critique that steers the
LLM, the adaptive refine policy, the nodes' outputs and the vision service's /analyze read them, whatever the
total ranks by.

    scorer = load_scorer_set(["pickscore", "hpsv2=/models/HPS_v2.1_compressed.pt"], clip_model="ViT-L-14/openai")
    scorer.score(images, "three red apples")[0].as_dict()
        # {"alignment": 27.1, "aesthetic": 5.2, "pickscore": 21.4, "hpsv2": 0.27, "total": 0.35}
"""
from __future__ import annotations

import threading
from typing import Mapping, Optional, Sequence, Union

import torch

from ..errors import InvalidParameter, ScoringFailed
from .clip import resolve_device, resolve_dtype
from .scorer import ImageScore, Scorer, check_texts, load_scorer
from .sources import resolve_hps_arch, resolve_scorer
from .specs import DEFAULT_SCORER, ScorerSpec, is_default, parse_scorer_specs


class ScorerSet:
    """A Scorer (CLIP + aesthetic) and reward models by name, with the Scorer's `score`, `analyze`, `describe`,
    `release` and `load`."""

    def __init__(self, base: Scorer, rewards: Mapping[str, object], specs: Sequence[ScorerSpec]):
        self.base = base
        self.rewards = dict(rewards)                     # "pickscore" | "hpsv2" -> PickScoreModel | HPSv2Model
        self.specs = tuple(specs)
        self.ranked_by = tuple(spec.name for spec in self.specs)
        missing = [name for name in self.ranked_by if name != DEFAULT_SCORER and name not in self.rewards]
        if missing:
            raise InvalidParameter("scorer", f"ranks by {', '.join(missing)} but no such model was given")
        self._lock = threading.RLock()
        self._on_device = True

    @property
    def names(self) -> tuple:
        """Every score this scorer gives besides alignment and aesthetic, "clip" (their total) first."""
        return (DEFAULT_SCORER,) + tuple(self.rewards)

    # The search and the nodes set and read these on the scorer they hold.
    @property
    def after_use(self) -> str:
        return self.base.after_use

    @after_use.setter
    def after_use(self, value: str) -> None:
        self.base.after_use = value

    @property
    def caption_client(self):
        return self.base.caption_client

    def score(self, images, text: Union[str, Sequence[str]], captions: bool = False) -> list[ImageScore]:
        scores = self.base.score(images, text, captions=captions)
        texts = check_texts(text, len(scores))
        prompt = texts[0] if len(texts) == 1 else texts
        with self._lock:
            self._ready()
            try:
                named = {name: model.score(images, prompt) for name, model in self.rewards.items()}
            finally:
                self.release(self.after_use, base=False)
        for name, values in named.items():
            if len(values) != len(scores) or not torch.isfinite(values).all():
                raise ScoringFailed(f"{name} gave {len(values)} scores for {len(scores)} images, or non-finite "
                                    "ones; try dtype fp32 or bf16")
        for index, score in enumerate(scores):
            score.named = {name: float(values[index]) for name, values in named.items()}
            score.ranked_by = self.ranked_by
        return scores

    def analyze(self, image, prompt: str) -> dict:
        return self.base.analyze(image, prompt)

    # -- memory: the reward models follow the base scorer's after_use ("unload" moves them to the CPU too) --------

    @property
    def loaded(self) -> bool:
        return self.base.loaded

    def load(self) -> None:
        self.base.load()
        with self._lock:
            self._ready()

    def _ready(self) -> None:
        if not self._on_device:
            for model in self.rewards.values():
                model.to(model.device)
            self._on_device = True

    def release(self, mode: str = "offload", base: bool = True) -> None:
        if base:
            self.base.release(mode)
        with self._lock:
            if mode in ("offload", "unload") and self._on_device and any(
                    model.device.type != "cpu" for model in self.rewards.values()):
                for model in self.rewards.values():
                    model.to(torch.device("cpu"))
                self._on_device = False
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    def describe(self) -> dict:
        info = self.base.describe()
        info.update(scorers=[str(spec) for spec in self.specs], ranked_by=list(self.ranked_by),
                    rewards={name: model.describe() for name, model in self.rewards.items()})
        return info


def load_reward_model(spec: ScorerSpec, device: torch.device, dtype: torch.dtype, hps_arch: Optional[str] = None):
    """The PickScore or HPSv2 model a spec names, after the same checks `search` and `doctor` apply."""
    if spec.name == "hpsv2":
        resolve_hps_arch(hps_arch).require()
    source = resolve_scorer(spec, hps_arch=hps_arch).require()
    if spec.name == "pickscore":
        from .pickscore import load_pickscore

        return load_pickscore(source.location, device, dtype)
    if spec.name == "hpsv2":
        from .hps import load_hpsv2

        return load_hpsv2(spec.source and source.location, device, dtype, arch=hps_arch)
    raise InvalidParameter("scorer", f"{spec.name} is not a reward model")


def with_rewards(base: Scorer, specs: Sequence[Union[str, ScorerSpec]], hps_arch: Optional[str] = None,
                 dtype: Union[str, torch.dtype, None] = None) -> Union[Scorer, ScorerSet]:
    """`base` as it is for the default scorer; otherwise a ScorerSet with every reward model `specs` name loaded
    once, on the base scorer's device."""
    specs = parse_scorer_specs(str(spec) for spec in specs)
    if is_default(specs):
        return base
    dtype = resolve_dtype(dtype, base.device) if dtype is not None else base.dtype
    rewards = {spec.name: load_reward_model(spec, base.device, dtype, hps_arch)
               for spec in specs if spec.name != DEFAULT_SCORER}
    return ScorerSet(base, rewards, specs)


def load_scorer_set(specs: Sequence[Union[str, ScorerSpec]] = (), device=None, dtype=None,
                    hps_arch: Optional[str] = None, **scorer_options) -> Union[Scorer, ScorerSet]:
    """load_scorer (CLIP + aesthetic, `scorer_options` as for it) with the reward models `specs` name."""
    device = resolve_device(device)
    base = load_scorer(device=device, dtype=dtype, **scorer_options)
    return with_rewards(base, specs, hps_arch=hps_arch)


def served_specs(scorer) -> tuple[ScorerSpec, ...]:
    """The scorers a loaded scorer gives: a ScorerSet's, or the default for a plain Scorer."""
    return tuple(getattr(scorer, "specs", None) or (ScorerSpec(DEFAULT_SCORER),))


def check_served(scorer, requested: Sequence[str], flag: str = "scorers") -> tuple[ScorerSpec, ...]:
    """The scorers a client asks a loaded scorer for (the vision service's /score): each must parse and be one it
    was started with (same source, when the client names one)."""
    served = {spec.name: spec for spec in served_specs(scorer)}
    served.setdefault(DEFAULT_SCORER, ScorerSpec(DEFAULT_SCORER))      # alignment + aesthetic always come along
    wanted = parse_scorer_specs(requested, flag)
    for spec in wanted:
        have = served.get(spec.name)
        if have is None:
            raise InvalidParameter(flag, f"this service does not score with {spec.name}; it scores with "
                                         f"{', '.join(map(str, served.values()))}. Start it with --scorer {spec}")
        if spec.source and spec.source != have.source:
            raise InvalidParameter(flag, f"this service scores {spec.name} with {have.source or 'the default'}, "
                                         f"not {spec.source}")
    return wanted
