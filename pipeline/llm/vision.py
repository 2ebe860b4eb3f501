"""Vision models in the search: a critic that looks at one candidate's image, a judge that compares two.

Both are asked through Ollama's /api/chat, the images in the message's `images` field (base64 PNG, longer side
at most 768 px) and the answer shaped by a JSON-schema `format`. Both see the user's original prompt and the
pixels only, never candidate ids, scores or the rewritten prompts: what they say is about the image against what
the user asked for.

    critic = PromptEngine(OllamaClient(url, "qwen2.5vl:7b"))
    critic.evaluate_image("three red apples on a plate", image).value   # {analysis, strengths, weaknesses}
    judge = PairwiseJudge(PromptEngine(OllamaClient(url, "qwen2.5vl:7b")))
    judge.compare("three red apples on a plate", image_a, image_b)     # both orders asked -> verdict a|b|tie

A judge is asked every pair in both orders, and two answers that disagree are a tie: vision models prefer one
position, most of all when the images are close, which is exactly when the search asks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

from ..errors import InvalidParameter
from ..images import png_base64
from . import templates as tpl
from .client import OllamaClient
from .text import OpResult, _text, clean_text

MAX_SIDE = 768                  # longest side sent to the model: detail enough for hands and text, few tiles
MAX_POINTS = 5                  # strengths / weaknesses kept from one evaluation
WINNERS = ("first", "second", "tie")
VERDICTS = ("a", "b", "tie")
# Model families that take one image per request. Ollama refuses a second one for mllama (llama3.2-vision):
# "this model only supports one image while more than one image requested".
ONE_IMAGE_FAMILIES = frozenset({"mllama"})
PAIR_MODELS = "qwen2.5vl, qwen3-vl, gemma3 or minicpm-v"

CRITIC_SYSTEM = """You review an image that an image model generated for a user's request.
Look at the image itself and judge it only against the request: every subject, count, colour, position and piece
of text the request names; faces, hands and anatomy; visible defects and artefacts; then composition, lighting and
overall quality.
"analysis": two or three sentences on what the image actually shows and how far it meets the request.
"strengths": what it gets right (short phrases). "weaknesses": what is missing, wrong or flawed (short phrases,
the most important first; an empty list only if there is truly nothing to fix). Be specific and visual.
Answer with JSON only: {"analysis": "...", "strengths": ["..."], "weaknesses": ["..."]}"""

JUDGE_SYSTEM = """You compare two images that an image model generated for the same user request and say which one
shows the request better. Judge, in this order: every subject, count, colour, position and piece of text the
request names; correct faces, hands and anatomy, without visible defects; then composition, lighting and overall
quality. The order in which the images are shown means nothing. If neither is clearly better, answer "tie".
Answer with JSON only: {"reason": "one or two sentences", "winner": "first" | "second" | "tie"}"""

EVALUATION_SCHEMA = {"type": "object", "properties": {
    "analysis": {"type": "string"},
    "strengths": {"type": "array", "items": {"type": "string"}},
    "weaknesses": {"type": "array", "items": {"type": "string"}}},
    "required": ["analysis", "strengths", "weaknesses"]}
JUDGE_SCHEMA = {"type": "object", "properties": {"reason": {"type": "string"},
                                                 "winner": {"type": "string", "enum": list(WINNERS)}},
                "required": ["reason", "winner"]}

# Focused pair questions for the original system's VLM service (pipeline.services.vlm): its /compare-alignment and
# /compare-aesthetics ask about one aspect, and its client reads feedback beside the winner. "overall" is the
# search's own question (JUDGE_SYSTEM's criteria).
ASPECT_QUESTIONS = {
    "overall": JUDGE_SYSTEM.split("\nAnswer with JSON only")[0],
    "alignment": """You compare two images that an image model generated for the same user request and say which one
matches the request better. Judge prompt adherence only: every subject, count, colour, position and piece of text
the request names, and the scene it describes; ignore visual quality. The order in which the images are shown means
nothing. If neither matches the request clearly better, answer "tie".""",
    "aesthetics": """You compare two images and say which one has the better visual quality. Judge quality only:
composition and framing, lighting and exposure, colour harmony, sharpness, correct anatomy without visible defects,
overall appeal; ignore what they depict. The order in which the images are shown means nothing. If neither is
clearly better, answer "tie".""",
}
FEEDBACK_RULES = """Also name what the better image does well ("winner_strengths", two or three short phrases) and
what the other one should improve ("loser_weaknesses", two or three short phrases), both empty for a tie, and one
concrete change to the request's wording that would make the next image better ("improvement_suggestion").
Answer with JSON only: {"reason": "one or two sentences", "winner": "first" | "second" | "tie",
"winner_strengths": ["..."], "loser_weaknesses": ["..."], "improvement_suggestion": "..."}"""
FEEDBACK_SCHEMA = {"type": "object", "properties": {
    **JUDGE_SCHEMA["properties"],
    "winner_strengths": {"type": "array", "items": {"type": "string"}},
    "loser_weaknesses": {"type": "array", "items": {"type": "string"}},
    "improvement_suggestion": {"type": "string"}},
    "required": ["reason", "winner", "winner_strengths", "loser_weaknesses", "improvement_suggestion"]}

ImageInput = Union[str, Any]     # a base64 PNG already encoded, or an image png_base64 takes


# ---- what a model can see ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VisionSupport:
    model: str
    vision: bool
    images_per_request: Optional[int]      # 1 for families that take a single image; None when no limit is known
    family: str
    reported: bool                         # the server listed capabilities (Ollama 0.6.4 and later)


def vision_support(client: OllamaClient) -> VisionSupport:
    """Whether the client's model takes images, from Ollama's /api/show. Servers that predate `capabilities` are
    read from the model's projector (vision models carry one: `projector_info`, or a `clip` family)."""
    info = client.show()
    details = info.get("details") or {}
    families = [str(f) for f in (details.get("families") or [])] + [str(details.get("family") or "")]
    capabilities = info.get("capabilities")
    if isinstance(capabilities, list):
        vision, reported = "vision" in capabilities, True
    else:
        model_info = info.get("model_info") or {}
        vision = bool(info.get("projector_info")) or "clip" in families or \
            any(str(key).split(".")[0] in ("clip", "vision") or ".vision." in str(key) for key in model_info)
        reported = False
    one_image = any(f in ONE_IMAGE_FAMILIES for f in families)
    return VisionSupport(model=client.model, vision=vision, images_per_request=1 if one_image else None,
                         family=str(details.get("family") or ""), reported=reported)


def require_vision(client: OllamaClient, flag: str, images: int = 1) -> VisionSupport:
    """Refuse, naming `flag`, a model that cannot see images, or one that takes fewer images a request than the
    role needs (a pairwise judge needs two). Model errors (not installed, server down) propagate as they are."""
    support = vision_support(client)
    if not support.vision:
        how = "Ollama lists no 'vision' capability for it" if support.reported else "it has no image projector"
        raise InvalidParameter(flag, f"'{client.model}' cannot see images ({how}). Use an Ollama vision model such "
                                     f"as qwen2.5vl:7b, qwen3-vl:8b, gemma3:12b, minicpm-v or llava (ollama pull "
                                     f"qwen2.5vl:7b)")
    if support.images_per_request is not None and support.images_per_request < images:
        raise InvalidParameter(flag, f"'{client.model}' ({support.family}) takes one image per request, and a "
                                     f"pairwise judge shows two at once. Use a model that takes two: {PAIR_MODELS} "
                                     f"(e.g. ollama pull qwen2.5vl:7b)")
    return support


# ---- the critic and the judge, as prompt operations of a PromptEngine over a vision model -----------------------
class VisionOperations:
    """Mixed into PromptEngine: uses its `_ask` (one retry with the problem spelled out), `_refuse_fallback`,
    options and stats, like the text operations."""

    def evaluate_image(self, user_prompt: str, image: ImageInput, seed: Optional[int] = None,
                       max_side: int = MAX_SIDE) -> OpResult[Optional[dict]]:
        """{analysis, strengths, weaknesses} of one image against the user's request. Twice unusable: value None
        and the problem (nothing can be said of the pixels without looking; the caller goes on without it)."""
        user_prompt = _text("user_prompt", user_prompt)
        message = {"role": "user", "content": f"User request: {tpl._quote(user_prompt)}\n\nReview the image.",
                   "images": [encoded(image, max_side)]}
        messages = [{"role": "system", "content": CRITIC_SYSTEM}, message]
        value, stats, problem = self._ask("critic", messages, EVALUATION_SCHEMA, parse_evaluation, seed,
                                          num_predict=600)
        if value is None:
            self._refuse_fallback("critic", problem)
        return OpResult(value, fallback=value is None, stats=stats, problem=problem)

    def judge_pair(self, user_prompt: str, first: ImageInput, second: ImageInput, seed: Optional[int] = None,
                   max_side: int = MAX_SIDE) -> dict:
        """One order: {winner: first|second|tie, reason} for two images shown in this order. Twice unusable: a
        tie whose reason says why, marked `unusable`."""
        user_prompt = _text("user_prompt", user_prompt)
        message = {"role": "user", "content": f"User request: {tpl._quote(user_prompt)}\n\nThe first image is "
                                              f"shown first, the second image second. Which shows the request "
                                              f"better?", "images": [encoded(first, max_side),
                                                                      encoded(second, max_side)]}
        messages = [{"role": "system", "content": JUDGE_SYSTEM}, message]
        value, _, problem = self._ask("judge", messages, JUDGE_SCHEMA, parse_judge_answer, seed, num_predict=300)
        if value is None:
            return {"winner": "tie", "reason": f"the answer could not be used: {problem}", "unusable": True}
        return value

    def judge_aspect(self, aspect: str, user_prompt: str, first: ImageInput, second: ImageInput,
                     seed: Optional[int] = None, max_side: int = MAX_SIDE) -> dict:
        """One order, one aspect of ASPECT_QUESTIONS, with feedback: {winner, reason, winner_strengths,
        loser_weaknesses, improvement_suggestion}. "aesthetics" is asked without the request (the original's
        client sends none). Twice unusable: a tie marked `unusable`, as judge_pair."""
        if aspect not in ASPECT_QUESTIONS:
            raise InvalidParameter("aspect", f"{aspect!r} is not one of {', '.join(ASPECT_QUESTIONS)}")
        asked = "Which has the better visual quality?" if aspect == "aesthetics" else \
            f"User request: {tpl._quote(_text('user_prompt', user_prompt))}\n\nWhich shows the request better?"
        message = {"role": "user", "content": f"The first image is shown first, the second image second. {asked}",
                   "images": [encoded(first, max_side), encoded(second, max_side)]}
        messages = [{"role": "system", "content": f"{ASPECT_QUESTIONS[aspect]}\n{FEEDBACK_RULES}"}, message]
        value, _, problem = self._ask("judge", messages, FEEDBACK_SCHEMA, parse_judge_feedback, seed,
                                      num_predict=500)
        if value is None:
            return {"winner": "tie", "reason": f"the answer could not be used: {problem}", "unusable": True,
                    "winner_strengths": [], "loser_weaknesses": [], "improvement_suggestion": ""}
        return value


def encoded(image: ImageInput, max_side: int = MAX_SIDE) -> str:
    return image if isinstance(image, str) else png_base64(image, max_side)


def parse_evaluation(data: Any) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    analysis = clean_text(str(data.get("analysis") or ""))
    if not analysis:
        raise ValueError("'analysis' was missing or empty")
    return {"analysis": analysis, "strengths": _points(data.get("strengths")),
            "weaknesses": _points(data.get("weaknesses"))}


def parse_judge_answer(data: Any) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    winner = str(data.get("winner") or "").strip().lower()
    if winner not in WINNERS:
        raise ValueError(f"'winner' was {data.get('winner')!r}, not one of {', '.join(WINNERS)}")
    return {"winner": winner, "reason": clean_text(str(data.get("reason") or ""))}


def parse_judge_feedback(data: Any) -> dict:
    answer = parse_judge_answer(data)
    return {**answer, "winner_strengths": _points(data.get("winner_strengths")),
            "loser_weaknesses": _points(data.get("loser_weaknesses")),
            "improvement_suggestion": clean_text(str(data.get("improvement_suggestion") or ""))}


def _points(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    points = [clean_text(str(item)) for item in value if isinstance(item, (str, int, float))]
    return [p for p in points if p][:MAX_POINTS]


def evaluation_text(evaluation: Mapping) -> str:
    """A recorded evaluation as the lines a text model reads (the split critic: a vision model looked, a text
    model writes the children)."""
    lines = [f"What a vision model saw in the rendered image: {evaluation.get('analysis', '')}"]
    for key, label in (("strengths", "Strengths"), ("weaknesses", "Weaknesses")):
        points = evaluation.get(key) or []
        lines.append(f"{label}: " + ("; ".join(points) if points else "none named"))
    return "\n".join(lines)


# ---- a pair, both orders -------------------------------------------------------------------------------------------
def verdict_of(a_first: Mapping, b_first: Mapping) -> str:
    """The verdict from a pair asked in both orders: "a" or "b" only when both answers name the same image,
    otherwise (a tie in either, or answers that follow the position) "tie"."""
    if a_first.get("winner") == "first" and b_first.get("winner") == "second":
        return "a"
    if a_first.get("winner") == "second" and b_first.get("winner") == "first":
        return "b"
    return "tie"


class PairwiseJudge:
    """A vision model that compares two images for the user's prompt, asked in both orders.

    `budget` and `margin` are the settings a ComfyUI judge node hands to the search (BeamConfig.judge_budget,
    judge_margin); in Python and on the command line they are BeamConfig fields, and None here."""

    def __init__(self, engine, budget: Optional[int] = None, margin: Optional[float] = None,
                 max_side: int = MAX_SIDE):
        if not hasattr(engine, "judge_pair"):
            raise InvalidParameter("judge", f"{type(engine).__name__} cannot compare images (no judge_pair)")
        self.engine = engine
        self.budget = budget
        self.margin = margin
        self.max_side = int(max_side)

    @property
    def model(self) -> str:
        client = getattr(self.engine, "client", None)
        return str(getattr(client, "model", "") or type(self.engine).__name__)

    def describe(self) -> dict:
        client = getattr(self.engine, "client", None)
        return {"provider": "ollama", "model": self.model, "base_url": getattr(client, "base_url", None),
                "max_side": self.max_side}

    def encode(self, image: ImageInput) -> str:
        """An image as the judge sends it (a search encodes each candidate once for all its pairs)."""
        return encoded(image, self.max_side)

    def ask(self, user_prompt: str, first: ImageInput, second: ImageInput, seed: Optional[int] = None) -> dict:
        """One order -> {winner: first|second|tie, reason}. Connection and model errors propagate."""
        return self.engine.judge_pair(user_prompt, first, second, seed=seed, max_side=self.max_side)

    def judgement(self, names: Sequence[str], a_first: Mapping, b_first: Mapping, seconds: float) -> dict:
        return judgement(names, a_first, b_first, self.model, seconds)

    def compare(self, user_prompt: str, image_a: ImageInput, image_b: ImageInput,
                names: Sequence[str] = ("a", "b"), seed: Optional[int] = None) -> dict:
        """Both orders, one after the other -> {verdict, answers: [{first, second, winner, reason}], model,
        seconds}, the answers naming the images by `names`."""
        started = time.perf_counter()
        a, b = self.encode(image_a), self.encode(image_b)
        a_first, b_first = self.ask(user_prompt, a, b, seed), self.ask(user_prompt, b, a, seed)
        return self.judgement(names, a_first, b_first, time.perf_counter() - started)


def judgement(names: Sequence[str], a_first: Mapping, b_first: Mapping, model: str, seconds: float) -> dict:
    """The record of one pair asked in both orders (the `answers` of report["judgements"])."""
    a, b = names
    answers = [{"first": a, "second": b, **dict(a_first)}, {"first": b, "second": a, **dict(b_first)}]
    return {"verdict": verdict_of(a_first, b_first), "answers": answers, "model": model,
            "seconds": round(float(seconds), 3)}


__all__ = ["PairwiseJudge", "VisionOperations", "VisionSupport", "require_vision", "vision_support",
           "evaluation_text", "verdict_of", "judgement", "encoded", "MAX_SIDE", "ASPECT_QUESTIONS"]
