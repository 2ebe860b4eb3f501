"""Text handling shared by the prompt operations: cleaning a model's text, telling variants apart, and checking
the operations' arguments. Kept apart from PromptEngine so that the per-round operations (rounds.py) use the
same rules without importing the engine."""
from __future__ import annotations

import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Generic, Iterable, Mapping, Optional, TypeVar

from ..errors import InvalidParameter
from . import templates as tpl
from .client import ChatStats, strip_thinking

T = TypeVar("T")

_PREFIX = re.compile(
    r"^\s*(?:here(?:'s| is| are)\b[^:\n]{0,80}:|(?:the\s+)?(?:improved|refined|combined|new|final|negative)?\s*"
    r"(?:what|how)?\s*(?:\((?:content|style)\))?\s*(?:prompt|text|description|version)?\s*"
    r"(?:\((?:content|style)\))?\s*:(?!\S))", re.IGNORECASE)
_TRAILING_NOTE = re.compile(r"\n\s*\n\s*\(?(?:note|explanation|changes|this (?:version|prompt))\b.*$",
                            re.IGNORECASE | re.DOTALL)
_UNUSABLE = re.compile(r"^\s*(?:i'?m sorry|i am sorry|sorry,|i apologi[sz]e|i can ?not|i can't|i'?m unable|"
                       r"i am unable|as an ai|error\b|exception\b|traceback\b)", re.IGNORECASE)
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»"}


@dataclass(frozen=True)
class OpResult(Generic[T]):
    value: T
    fallback: bool = False              # a rule-based fallback produced the value (or, for lists, part of it)
    stats: ChatStats = field(default_factory=ChatStats)
    fallback_count: int = 0             # list values: how many items came from the fallback
    problem: str = ""                   # why the model's output was not used, when it was not


def clean_text(text: str) -> str:
    """One prompt text from a model: no <think>, no fences, no "Here is the prompt:", no wrapping quotes."""
    text, _ = strip_thinking(str(text or ""))
    text = re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", text.strip())
    text = _TRAILING_NOTE.sub("", text)
    for _ in range(3):
        stripped = _PREFIX.sub("", text, count=1).strip()
        if len(stripped) >= 2 and stripped[0] in _QUOTES and stripped[-1] == _QUOTES[stripped[0]]:
            stripped = stripped[1:-1].strip()
        if stripped == text:
            break
        text = stripped
    return " ".join(text.split())


def distinct_key(text: str) -> str:
    """Texts that differ only in case, punctuation or spacing are the same variant."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def usable(text: str) -> str:
    """The cleaned text, or ValueError when it is empty or reads like a refusal or an error message."""
    cleaned = clean_text(text)
    if not cleaned:
        raise ValueError("the text was empty")
    if _UNUSABLE.match(cleaned):
        raise ValueError(f"the text reads like a refusal or an error ({cleaned[:60]!r})")
    return cleaned


# -- helpers ---------------------------------------------------------------------------------------------------------

def _messages(system: str, user: str) -> list:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _parse_variants(data: Any) -> list[str]:
    items = data.get("variants") if isinstance(data, dict) else data
    if isinstance(data, dict) and items is None:
        lists = [v for v in data.values() if isinstance(v, list)]
        items = lists[0] if len(lists) == 1 else None
    if not isinstance(items, list):
        raise ValueError("'variants' was not a list of strings")
    texts = []
    for item in items:
        try:
            texts.append(usable(_single_text(item, "prompt") if isinstance(item, dict) else str(item)))
        except ValueError:
            continue
    if not texts:
        raise ValueError("no usable variant in the list")
    return texts


def _single_text(data: Any, key: str) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, dict):
        if isinstance(data.get(key), str):
            return data[key]
        strings = [v for v in data.values() if isinstance(v, str)]
        if len(strings) == 1:
            return strings[0]
    raise ValueError(f"expected a JSON object with a '{key}' string")


def _negative_terms(terms: Iterable[Any], prompt: str) -> list[str]:
    """Clean terms; drop "no X" wording, duplicates, and anything the prompt itself asks for."""
    wanted = set(tpl.content_words(prompt))
    kept, seen = [], set()
    for term in terms:
        term = re.sub(r"^(?:no|without|avoid)\s+", "", clean_text(str(term)).strip(" .,;").lower())
        words = tpl.content_words(term)
        if not term or len(term) > 60 or not words or all(w in wanted for w in words) or term in seen:
            continue
        seen.add(term)
        kept.append(term)
    return kept[:25]


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidParameter(name, "must be a non-empty text")
    return value.strip()


def _dimension(value: Any) -> str:
    dimension = str(value).strip().lower()
    if dimension not in tpl.DIMENSIONS:
        raise InvalidParameter("dimension", f"must be 'what' or 'how', got {value!r}")
    return dimension


def _style(value: Any) -> str:
    style = str(value).strip().lower()
    if style not in tpl.STYLES:
        raise InvalidParameter("style", f"must be 'natural' or 'booru', got {value!r}")
    return style


def _count(name: str, value: Any, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidParameter(name, f"must be a whole number from 1 to {maximum}, got {value!r}")
    return value


def _descriptiveness(value: Any) -> int:
    if isinstance(value, bool) or value not in (1, 2, 3):
        raise InvalidParameter("descriptiveness", f"must be 1 (concise), 2 (balanced) or 3 (descriptive), "
                                                  f"got {value!r}")
    return int(value)


def _critique_dict(critique: Mapping | str) -> dict:
    if isinstance(critique, str):
        return {"critique": critique.strip(), "recommendation": "", "reason": ""}
    if not isinstance(critique, Mapping):
        raise InvalidParameter("critique", "must be a {critique, recommendation, reason} object or a text")
    return {key: str(critique.get(key) or "") for key in ("critique", "recommendation", "reason")}


def _scores(scores: Any, dimension: str) -> dict:
    if not isinstance(scores, Mapping):
        raise InvalidParameter("scores", "must be an object such as {\"alignment\": 27.5, \"aesthetic\": 6.1}")
    name, _, _, scale = tpl.SEVERITY_BANDS[dimension]
    value = scores.get(name)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidParameter("scores", f"needs a numeric '{name}' (0-{scale[1:]}) to critique "
                                         f"{dimension.upper()}, got {dict(scores)}")
    return dict(scores)


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text[-1:] in ".!?" else text + "."


def _index(seed: Optional[int]) -> int:
    return 0 if seed is None else int(seed) % 4
