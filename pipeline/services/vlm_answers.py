"""The VLM service's answers in the original client's shape, from a pair judged in both orders.

`local-vlm-provider.js` reads a CompareResponse: {choice: A|B|TIE, explanation, confidence, ranks: {A: {alignment,
aesthetics}, B: {...}}, winner_strengths, loser_weaknesses, improvement_suggestion}. Here every pair has been asked
twice (A shown first, then B shown first: `vlm.both_orders`), so the fields are derived from two answers:

- choice: A or B only when both answers name that image; anything else (a tie in either, or each answer naming
  the image in the same position) is TIE. A model that always prefers one position gets TIE, never a win.
- ranks: restate the choice in the dimensions the endpoint judges (the winner 1, the other 2; a tie ranks both 1,
  as the original's prompt asked). They never contradict the choice, so the client's ensemble rule (averaged
  ranks, 0.7 alignment + 0.3 aesthetics) and its vote count agree.
- confidence: 1.0 when the two orders gave the same answer, 0.5 when they did not (how far the verdict survives
  swapping the images; the model's own number is not asked for, small VLMs state it without calibration).
- explanation: both reasons, each with the order it was asked in; winner_strengths / loser_weaknesses: both
  answers' points for a decided pair, none for a tie (the images were not told apart); improvement_suggestion: the
  first one given.

Extra keys the client ignores: `answers` (both orders as asked), `model`, `seconds`.

Also here: `ollama_failure`, the one-line answer (and HTTP status) for an Ollama that fails, shared with the vision
service's critic.
"""
from __future__ import annotations

import threading
from typing import Mapping, Sequence

from ..llm.client import OllamaError, OllamaModelNotFound, OllamaTimeout, OllamaUnreachable

CHOICES = {"a": "A", "b": "B", "tie": "TIE"}
# The rank dimensions each endpoint answers: /compare both, the focused endpoints their own (as the original).
DIMENSIONS = {"overall": ("alignment", "aesthetics"), "alignment": ("alignment",), "aesthetics": ("aesthetics",)}
MAX_POINTS = 5


def compare_response(judged: Mapping, aspect: str) -> dict:
    """A CompareResponse (plus `answers`, `model`, `seconds`) from a judgement of the pair named A and B
    (pipeline.llm.vision.judgement, as vlm.both_orders makes it)."""
    choice = CHOICES[judged["verdict"]]
    answers = list(judged["answers"])
    agree = len({_named(answer) for answer in answers}) == 1
    dimensions = DIMENSIONS[aspect]
    ranks = {side: {dim: 1 if choice in ("TIE", side) else 2 for dim in dimensions} for side in ("A", "B")}
    decided = choice != "TIE"
    return {
        "choice": choice,
        "explanation": _explanation(answers, choice, agree),
        "confidence": 1.0 if agree else 0.5,
        "ranks": ranks,
        "winner_strengths": _merged(answers, "winner_strengths") if decided else [],
        "loser_weaknesses": _merged(answers, "loser_weaknesses") if decided else [],
        "improvement_suggestion": next((a.get("improvement_suggestion") for a in answers
                                        if a.get("improvement_suggestion")), ""),
        "answers": [{key: answer.get(key) for key in ("first", "second", "winner", "reason")}
                    | ({"unusable": True} if answer.get("unusable") else {}) for answer in answers],
        "model": judged.get("model"),
        "seconds": judged.get("seconds"),
    }


def _named(answer: Mapping) -> str:
    """The image an answer prefers, by name ("A", "B"), or "tie"."""
    winner = answer.get("winner")
    return str(answer.get(winner)) if winner in ("first", "second") else "tie"


def _explanation(answers: Sequence[Mapping], choice: str, agree: bool) -> str:
    parts = [f"With {a.get('first')} shown first, {'a tie' if _named(a) == 'tie' else _named(a) + ' is better'}: "
             f"{(a.get('reason') or 'no reason given').rstrip('.')}." for a in answers]
    if choice == "TIE" and not agree:
        parts.append("The two orders disagree, so the pair is a tie.")
    return " ".join(parts)


def _merged(answers: Sequence[Mapping], key: str) -> list[str]:
    seen: dict[str, None] = {}
    for answer in answers:
        for point in answer.get(key) or []:
            seen.setdefault(point, None)
    return list(seen)[:MAX_POINTS]


class BiasStats:
    """What GET /bias_stats reports, counted over the service's life.

    The original's keys (total_comparisons, json_parse_success_rate, fallback_rate, choice_distribution,
    choice_percentages, rank_mismatch_count, rank_mismatch_rate) keep their meaning per pair; `answers` counts the
    model's single-order answers (two a pair), `position` how often it preferred each position, and
    `order_disagreements` the pairs where each order named a different image (the same position both times): the
    position bias the two orders cancel. Ranks are derived from the choice, so rank mismatches stay 0."""

    def __init__(self):
        self._lock = threading.Lock()
        self.pairs = 0
        self.answers = 0
        self.unusable = 0
        self.choices = {"A": 0, "B": 0, "TIE": 0}
        self.position = {"first": 0, "second": 0, "tie": 0}
        self.disagreements = 0

    def record(self, response: Mapping) -> None:
        answers = response.get("answers") or []
        named = [_named(answer) for answer in answers]
        with self._lock:
            self.pairs += 1
            self.choices[response["choice"]] += 1
            self.answers += len(answers)
            for answer in answers:
                self.unusable += bool(answer.get("unusable"))
                winner = answer.get("winner")
                self.position[winner if winner in self.position else "tie"] += 1
            self.disagreements += len(set(named)) > 1 and "tie" not in named

    def describe(self) -> dict:
        with self._lock:
            pairs, answers = self.pairs, self.answers

            def share(count: int, total: int) -> float:
                return count / total if total else 0

            return {
                "total_comparisons": pairs,
                "json_parse_success_rate": share(answers - self.unusable, answers),
                "fallback_rate": share(self.unusable, answers),
                "choice_distribution": dict(self.choices),
                "choice_percentages": {key: share(count, pairs) * 100 for key, count in self.choices.items()},
                "rank_mismatch_count": 0,
                "rank_mismatch_rate": 0,
                "answers": answers,
                "position": dict(self.position),
                "order_disagreements": self.disagreements,
                "order_disagreement_rate": share(self.disagreements, pairs),
            }


def ollama_failure(exc: OllamaError, model: str, model_flag: str = "--model") -> tuple[int, str]:
    """(HTTP status, one line saying what to do) for an Ollama failure behind a service: 504 when it did not
    answer in time, 502 otherwise. The lines name the service's flags, not the client's settings."""
    if isinstance(exc, OllamaModelNotFound):
        listed = ", ".join(exc.installed) or "none"
        return 502, (f"{model_flag}: Ollama model '{model}' is not installed at {exc.url} (installed: {listed}); "
                     f"run `ollama pull {model}`, or start the service with {model_flag} NAME")
    if isinstance(exc, OllamaTimeout):
        return 504, " ".join(str(exc).split())
    if isinstance(exc, OllamaUnreachable):
        return 502, (f"Cannot reach Ollama at {exc.url}: start it with `ollama serve`, or start the service with "
                     f"--ollama-url URL (default OLLAMA_BASE_URL)")
    return 502, " ".join(str(exc).split())
