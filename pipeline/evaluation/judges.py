"""Judges of an evaluation: each compares one prompt's two winners, the beam's and the seed-only control arm's, and
says which shows the prompt better.

    --judge hpsv2[=FILE]         a held-out scorer: the higher score wins (pickscore[=SOURCE], clip likewise)
    --judge vlm:MODEL            a vision model shown both images, asked in both orders (pipeline.llm.vision)

A judge must be one the search did not optimise: a search that ranked its candidates by scorer X picked its
winner because X liked it, so X preferring that winner proves nothing. `check_held_out` refuses such a judge.

Every judge has a `name` (the key of its verdicts in eval.json), a one-line `description`, and
`verdict(prompt, image_beam, image_control) -> Verdict`, whose `winner` is "beam", "control" or "tie". Two winners
that are the same image (the beam never beat round 0 and no extra seed beat it either) are a tie for every judge.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Protocol, Sequence

import torch

from ..errors import InvalidParameter

WINNERS = ("beam", "control", "tie")
VLM_PREFIX = "vlm:"


@dataclass
class Verdict:
    winner: str                          # "beam" | "control" | "tie"
    beam: Optional[float] = None         # the judge's own score of each winner, when it gives scores
    control: Optional[float] = None
    note: str = ""                       # what the judge said, e.g. a vision model's reasons in each order

    def __post_init__(self):
        if self.winner not in WINNERS:
            raise ValueError(f"a verdict is one of {', '.join(WINNERS)}, got {self.winner!r}")

    @property
    def gain(self) -> float:
        """The beam's advantage: the score difference for a scoring judge, else +1 / 0 / -1."""
        if self.beam is not None and self.control is not None:
            return self.beam - self.control
        return {"beam": 1.0, "tie": 0.0, "control": -1.0}[self.winner]


class Judge(Protocol):
    name: str
    description: str

    def verdict(self, prompt: str, image_beam: torch.Tensor, image_control: torch.Tensor) -> Verdict: ...

    def describe(self) -> dict: ...


def same_image(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a, b)


class ScorerJudge:
    """A scorer used as a judge: both winners scored in one batch against the user's prompt; the higher score
    wins, an exactly equal score is a tie."""

    def __init__(self, name: str, score: Callable[[list, str], Sequence[float]], description: str,
                 info: Optional[dict] = None):
        self.name, self.description = name, description
        self._score = score                  # ([beam image, control image], prompt) -> [beam score, control score]
        self._info = info or {}

    def verdict(self, prompt: str, image_beam: torch.Tensor, image_control: torch.Tensor) -> Verdict:
        if same_image(image_beam, image_control):
            value = float(self._score([image_beam], prompt)[0])
            return Verdict("tie", value, value, "the two winners are the same image")
        beam, control = (float(v) for v in self._score([image_beam, image_control], prompt))
        winner = "beam" if beam > control else "control" if control > beam else "tie"
        return Verdict(winner, beam, control)

    def describe(self) -> dict:
        return {"name": self.name, "kind": "scorer", "description": self.description, **self._info}


class PairwiseJudge:
    """A judge that compares two images itself, e.g. pipeline.llm.vision.PairwiseJudge (a vision model asked in
    both orders). It needs `compare(prompt, image_a, image_b, names=("beam", "control"))` answering
    {"verdict": "a" | "b" | "tie", "answers": [{"first", "second", "winner", "reason"}, ...]}; a is the beam."""

    def __init__(self, name: str, pairwise, description: str):
        if not callable(getattr(pairwise, "compare", None)):
            raise InvalidParameter("judge", f"{type(pairwise).__name__} cannot compare two images (no compare)")
        self.name, self.description, self.pairwise = name, description, pairwise

    def verdict(self, prompt: str, image_beam: torch.Tensor, image_control: torch.Tensor) -> Verdict:
        if same_image(image_beam, image_control):
            return Verdict("tie", note="the two winners are the same image")
        result = self.pairwise.compare(prompt, image_beam, image_control, names=("beam", "control"))
        winner = {"a": "beam", "b": "control", "tie": "tie"}.get(result.get("verdict"))
        if winner is None:
            raise ValueError(f"{self.name} answered verdict {result.get('verdict')!r}; expected a, b or tie")
        note = " | ".join(f"{answer.get('first')} shown first: {answer.get('winner')}"
                          + (f" ({answer['reason']})" if answer.get("reason") else "")
                          for answer in result.get("answers") or ())
        return Verdict(winner, note=note)

    def describe(self) -> dict:
        info = self.pairwise.describe() if callable(getattr(self.pairwise, "describe", None)) else {}
        return {"name": self.name, "kind": "pairwise", "description": self.description, **info}


# ---- the VLM judge ----------------------------------------------------------------------------------------------------
def vision_judge(model: str, settings: Mapping, flag: str = "judge"):
    """`--judge vlm:MODEL`: the search's own pairwise judge (pipeline.llm.vision) on an Ollama vision model, which
    must take two images a request. Asks the server (refused naming `flag` when the model cannot see, or takes one
    image): call it before any model loads."""
    from ..llm.client import OllamaClient
    from ..llm.operations import PromptEngine
    from ..llm.vision import PairwiseJudge as VisionPairwiseJudge
    from ..llm.vision import require_vision

    client = OllamaClient(settings["ollama_url"], model)
    require_vision(client, flag, images=2)
    return VisionPairwiseJudge(PromptEngine(client))


def connect_vision_judges(specs: Sequence[JudgeSpec], settings: Mapping, flag: str = "judge") -> dict:
    """{model: pairwise judge} for the vlm:MODEL judges, checked against the Ollama server."""
    return {spec.model: vision_judge(spec.model, settings, flag) for spec in specs if spec.kind == "vlm"}


# ---- specs -----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JudgeSpec:
    name: str                    # the key of its verdicts: "hpsv2", "pickscore", "clip" or "vlm:MODEL"
    kind: str                    # "scorer" | "vlm"
    scorer: object = None        # scoring.specs.ScorerSpec for a scorer judge
    model: str = ""              # the vision model of a vlm judge

    def __str__(self) -> str:
        return str(self.scorer) if self.kind == "scorer" else self.name


def parse_judge_spec(text: str, flag: str = "judge") -> JudgeSpec:
    from ..scoring.specs import parse_scorer_spec

    text = str(text or "").strip()
    if text.lower().startswith(VLM_PREFIX):
        model = text[len(VLM_PREFIX):].strip()
        if not model:
            raise InvalidParameter(flag, "vlm: needs an Ollama vision model after it, e.g. vlm:qwen2.5vl:7b")
        return JudgeSpec(VLM_PREFIX + model, "vlm", model=model)
    scorer = parse_scorer_spec(text, flag)
    return JudgeSpec(scorer.name, "scorer", scorer=scorer)


def parse_judge_specs(texts: Optional[Iterable[str]], flag: str = "judge") -> tuple[JudgeSpec, ...]:
    specs = [parse_judge_spec(text, flag) for text in (texts or ())]
    if not specs:
        raise InvalidParameter(flag, "is missing: name at least one judge the search does not optimise, e.g. "
                                     "--judge hpsv2 --judge pickscore (or vlm:MODEL)")
    names = [spec.name for spec in specs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InvalidParameter(flag, f"{', '.join(twice)} is named twice; name each judge once")
    return tuple(specs)


def optimised_names(settings: Mapping) -> set:
    """What a search with these settings optimised: the scorers its total ranks by, and the vision judge that
    decides near the keep_top boundary when it has one (settings["judge_model"])."""
    from ..scoring.specs import parse_scorer_specs

    names = {spec.name for spec in parse_scorer_specs(settings.get("scorers"))}
    if settings.get("judge_model"):
        names.add(VLM_PREFIX + str(settings["judge_model"]))
    return names


def check_held_out(judges: Sequence[JudgeSpec], settings: Mapping, flag: str = "judge") -> None:
    """Refuse a judge the search optimised (see the module docstring)."""
    optimised = optimised_names(settings)
    for judge in judges:
        if judge.name in optimised:
            others = [name for name in ("clip", "pickscore", "hpsv2") if name not in optimised]
            raise InvalidParameter(flag, f"{judge} is what this search optimises (it ranks by "
                                         f"{', '.join(sorted(optimised))}), so it would judge its own choice; "
                                         f"judge with one the search did not optimise ({', '.join(others)} or "
                                         "vlm:MODEL), or change --scorer")


# ---- loading -------------------------------------------------------------------------------------------------------

def build_judges(specs: Sequence[JudgeSpec], settings: Mapping, alpha: float, clip_scorer=None, say=None,
                 vision: Optional[Mapping] = None) -> list:
    """Ready judges, each model loaded once. `clip_scorer` is the search's own CLIP + aesthetic scorer when it runs
    in this process (a `clip` judge then reuses it); otherwise one is loaded from --clip / --aesthetic. `vision`:
    the vlm:MODEL judges already connected (connect_vision_judges), else they are connected here."""
    from ..scoring.clip import resolve_device, resolve_dtype
    from ..scoring.specs import SCALES

    device = resolve_device(settings.get("device"))
    dtype = resolve_dtype(None, device)
    judges = []
    for spec in specs:
        if say:
            say(f"loading judge {spec} ...")
        if spec.kind == "vlm":
            pairwise = (vision or {}).get(spec.model) or vision_judge(spec.model, settings)
            judges.append(PairwiseJudge(spec.name, pairwise, f"{spec.model} shown both winners, asked in both "
                                                             "orders (disagreement is a tie)"))
        elif spec.name == "clip":
            judges.append(_clip_judge(clip_scorer, settings, alpha, device))
        else:
            from ..scoring.scorer_set import load_reward_model

            model = load_reward_model(spec.scorer, device, dtype, settings.get("hps_arch"))
            judges.append(ScorerJudge(spec.name, lambda images, prompt, model=model: model.score(images, prompt),
                                      SCALES[spec.name].what, model.describe()))
    return judges


def _clip_judge(scorer, settings: Mapping, alpha: float, device) -> ScorerJudge:
    from ..scoring.scorer import load_scorer
    from ..scoring.specs import SCALES

    scorer = getattr(scorer, "base", scorer)        # a ScorerSet's CLIP + aesthetic part, without its reward models
    if scorer is None or not hasattr(scorer, "clip"):
        scorer = load_scorer(settings.get("clip"), aesthetic_model=settings.get("aesthetic"), device=device)

    def score(images, prompt):
        return [image_score.total(alpha) for image_score in scorer.score(images, prompt)]

    return ScorerJudge("clip", score, f"{SCALES['clip'].what}, alpha {alpha:g}", {"alpha": alpha,
                                                                                  **scorer.describe()})
