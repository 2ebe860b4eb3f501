"""The prompt operations of the search: expand, refine, combine, critique, negative — and, for whole rounds in
few requests, expand_pairs and refine_children (rounds.py).

Each operation is one structured Ollama call (JSON schema as `format`). A reply that cannot be used is retried
once with the schema spelled out; if it is still unusable, a rule-based fallback produces the value and the
result says so (`OpResult.fallback`). Connection and model errors are never papered over: they propagate as the
typed errors of `llm.client`. System prompts and fallbacks live in `llm.templates`.
"""
from __future__ import annotations

import re
import threading
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from ..errors import InvalidParameter
from . import templates as tpl
from .client import ChatStats, OllamaBadOutput, OllamaClient, OllamaError, extract_json
from .jsonstream import EntryTap
from .rounds import RoundOperations
from .vision import VisionOperations
from .templates import severity  # noqa: F401  (part of this module's API)
from .text import (OpResult, T, _count, _critique_dict, _descriptiveness, _dimension, _index, _messages,  # noqa: F401
                   _negative_terms, _parse_variants, _scores, _sentence, _single_text, _style, _text, clean_text,
                   distinct_key, usable)

DEFAULT_TEMPERATURES = {"expand": 0.85, "refine": 0.7, "combine": 0.5, "critique": 0.4, "negative": 0.3,
                        "critic": 0.2, "judge": 0.0}
DEFAULT_NUM_PREDICT = {"refine": 400, "combine": 600, "critique": 400, "negative": 300}
MAX_EXPAND = 32
MAX_REFINE_VARIANTS = 16


class PromptEngine(RoundOperations, VisionOperations):
    """The LLM side of the search, over one OllamaClient. Safe to call from several threads at once.

    temperature: one value for every operation, or None for the per-operation defaults (DEFAULT_TEMPERATURES).
    seed: default Ollama seed for every call (a per-call seed wins); None leaves sampling unseeded.
    allow_fallback: False turns twice-unusable output into OllamaBadOutput instead of a rule-based value.
    low_vram: a hint to callers to unload the model once the LLM work of a phase is done.
    stream: the per-round operations (expand_pairs, refine_children) ask Ollama to stream, read the JSON as it
    comes, and hand each entry to their `on_item` hook as soon as it is complete (see jsonstream.EntryTap).
    """

    def __init__(self, client: OllamaClient, temperature: Optional[float] = None, seed: Optional[int] = None,
                 top_p: Optional[float] = None, top_k: Optional[int] = None, num_ctx: Optional[int] = None,
                 num_predict: Optional[int] = None, allow_fallback: bool = True, low_vram: bool = False,
                 stream: bool = True):
        if temperature is not None and not 0.0 <= float(temperature) <= 2.0:
            raise InvalidParameter("temperature", f"must be between 0 and 2, got {temperature}")
        if top_p is not None and not 0.0 < float(top_p) <= 1.0:
            raise InvalidParameter("top_p", f"must be in (0, 1], got {top_p}")
        for name, value in (("top_k", top_k), ("num_ctx", num_ctx), ("num_predict", num_predict)):
            if value is not None and int(value) < 1:
                raise InvalidParameter(name, f"must be a positive integer, got {value}")
        self.client = client
        self.temperature = None if temperature is None else float(temperature)
        self.seed = seed
        self.top_p, self.top_k, self.num_ctx, self.num_predict = top_p, top_k, num_ctx, num_predict
        self.allow_fallback = bool(allow_fallback)
        self.low_vram = bool(low_vram)
        self.stream = bool(stream)
        self._stats = ChatStats()
        self._lock = threading.Lock()

    @property
    def stats(self) -> ChatStats:
        """Everything this engine has asked Ollama so far."""
        with self._lock:
            return self._stats

    def describe(self) -> dict:
        return {"provider": "ollama", "base_url": self.client.base_url, "model": self.client.model,
                "temperature": self.temperature if self.temperature is not None else dict(DEFAULT_TEMPERATURES),
                "seed": self.seed, "top_p": self.top_p, "top_k": self.top_k, "num_ctx": self.num_ctx,
                "keep_alive": self.client.keep_alive, "low_vram": self.low_vram, "stream": self.stream}

    # -- operations ---------------------------------------------------------------------------------------------

    def expand(self, prompt: str, dimension: str, n: int, seed: Optional[int] = None) -> OpResult[list]:
        """n distinct WHAT or HOW variants of the user's prompt, asked for in one call."""
        prompt, dimension = _text("prompt", prompt), _dimension(dimension)
        n = _count("n", n, MAX_EXPAND)
        return self._variants("expand", n, seed, lambda k, have: (tpl.expand_system(dimension, k),
                                                                   tpl.expand_user(prompt, dimension, k, have)),
                              exclude=(), fallbacks=lambda: tpl.fallback_variants(prompt, dimension, n + 40))

    def refine(self, prompt: str, dimension: str, critique: Mapping | str, user_prompt: str,
               history: Iterable[Mapping] = (), seed: Optional[int] = None) -> OpResult[str]:
        """One improved half, following the critique and steering away from edits that lowered the score."""
        prompt, dimension, user_prompt = _text("prompt", prompt), _dimension(dimension), _text("user_prompt",
                                                                                                user_prompt)
        critique, history = _critique_dict(critique), list(history)
        messages = _messages(tpl.refine_system(dimension), tpl.refine_user(prompt, dimension, critique,
                                                                          user_prompt, history))

        def parse(data: Any) -> str:
            text = usable(_single_text(data, "prompt"))
            if distinct_key(text) == distinct_key(prompt):
                raise ValueError("it repeated the current text unchanged")
            return text
        return self._single("refine", messages, tpl.PROMPT_SCHEMA, parse, seed,
                            lambda: tpl.fallback_refinement(prompt, dimension, user_prompt, _index(seed)))

    def refine_variants(self, prompt: str, dimension: str, critique: Mapping | str, user_prompt: str, n: int,
                        history: Iterable[Mapping] = (), seed: Optional[int] = None) -> OpResult[list]:
        """n distinct improved halves in one call, each a different way to answer the critique."""
        prompt, dimension, user_prompt = _text("prompt", prompt), _dimension(dimension), _text("user_prompt",
                                                                                                user_prompt)
        n = _count("n", n, MAX_REFINE_VARIANTS)
        critique, history = _critique_dict(critique), list(history)

        def build(k: int, have: Sequence[str]) -> tuple[str, str]:
            user = tpl.refine_user(prompt, dimension, critique, user_prompt, history, n=k)
            if have:
                user += "\nThese improved texts already exist; yours must differ clearly from them:\n" + \
                        "\n".join(f"- {text}" for text in have)
            return tpl.refine_system(dimension, k), user

        return self._variants("refine", n, seed, build, exclude=(prompt,),
                              fallbacks=lambda: tpl.fallback_refinements(prompt, dimension, user_prompt, _index(seed)))

    def combine(self, what: str, how: str, descriptiveness: int = 2, style: str = "natural",
                seed: Optional[int] = None) -> OpResult[str]:
        """WHAT + HOW -> the prompt Flux renders; descriptiveness 1 (concise) to 3 (descriptive)."""
        what, how = _text("what", what), _text("how", how)
        descriptiveness, style = _descriptiveness(descriptiveness), _style(style)
        messages = _messages(tpl.combine_system(descriptiveness, style), tpl.combine_user(what, how))
        return self._single("combine", messages, tpl.PROMPT_SCHEMA,
                            lambda data: usable(_single_text(data, "prompt")), seed,
                            lambda: self.combine_template(what, how, style))

    @staticmethod
    def combine_template(what: str, how: str, style: str = "natural") -> str:
        """Deterministic combine without the LLM: "WHAT. HOW." (natural) or merged comma phrases (booru)."""
        what, how, style = _text("what", what), _text("how", how), _style(style)
        if style == "booru":
            phrases, seen = [], set()
            for part in re.split(r"[.,;\n]+", f"{what}, {how}"):
                phrase = " ".join(part.split()).lower()
                if phrase and phrase not in seen:
                    seen.add(phrase)
                    phrases.append(phrase)
            return ", ".join(phrases)
        return " ".join(_sentence(part) for part in (what, how))

    def critique(self, user_prompt: str, what: str, how: str, prompt: str, scores: Mapping, dimension: str,
                 caption: Optional[str] = None, seed: Optional[int] = None) -> OpResult[dict]:
        """{critique, recommendation, reason} for the next edit of `dimension`, sized by the scores."""
        user_prompt, dimension = _text("user_prompt", user_prompt), _dimension(dimension)
        what, how, prompt = str(what or ""), str(how or ""), str(prompt or "")
        scores = _scores(scores, dimension)
        level, why = tpl.severity(dimension, scores)
        messages = _messages(tpl.critique_system(dimension),
                             tpl.critique_user(user_prompt, what, how, prompt, scores, dimension, level, why, caption))

        def parse(data: Any) -> dict:
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            out = {key: clean_text(str(data.get(key) or "")) for key in ("critique", "recommendation", "reason")}
            for key in ("critique", "recommendation"):
                if not out[key]:
                    raise ValueError(f"'{key}' was missing or empty")
            return out
        return self._single("critique", messages, tpl.CRITIQUE_SCHEMA, parse, seed,
                            lambda: tpl.fallback_critique(user_prompt, what, how, scores, dimension, caption))

    def negative(self, prompt: str, seed: Optional[int] = None) -> OpResult[str]:
        """A comma-separated negative prompt that never negates what the prompt asks for."""
        prompt = _text("prompt", prompt)
        messages = _messages(tpl.NEGATIVE_SYSTEM, tpl.negative_user(prompt))

        def parse(data: Any) -> str:
            terms = data.get("terms") if isinstance(data, dict) else data
            if isinstance(terms, str):
                terms = terms.split(",")
            if not isinstance(terms, list):
                raise ValueError("'terms' was not a list")
            kept = _negative_terms(terms, prompt)
            if len(kept) < 3:
                raise ValueError(f"only {len(kept)} usable terms")
            return ", ".join(kept)
        return self._single("negative", messages, tpl.NEGATIVE_SCHEMA, parse, seed,
                            lambda: ", ".join(_negative_terms(tpl.FALLBACK_NEGATIVE, prompt)))

    # -- machinery ----------------------------------------------------------------------------------------------

    def _options(self, op: str, seed: Optional[int], num_predict: Optional[int], hotter: float = 0.0) -> dict:
        seed = self.seed if seed is None else seed
        temperature = self.temperature if self.temperature is not None else DEFAULT_TEMPERATURES[op]
        return {"temperature": min(2.0, temperature + hotter) if hotter else temperature,
                "top_p": self.top_p, "top_k": self.top_k, "num_ctx": self.num_ctx, "seed": seed,
                "num_predict": num_predict}

    def _ask(self, op: str, messages: list, schema: dict, parse: Callable[[Any], T], seed: Optional[int],
             num_predict: Optional[int] = None, attempts: int = 2, tap: Optional[EntryTap] = None,
             hotter: float = 0.0) -> tuple[Optional[T], ChatStats, str]:
        """Call, parse, and on an unusable reply ask once more with the problem and the schema spelled out.

        With a tap the answer streams and the tap hands entries over as they complete. Entries handed over are
        never taken back: an answer that breaks off after some (dropped, cut by num_predict, malformed further on)
        keeps them, and the caller fills the rest as for any answer with too few entries. An answer that breaks
        off before the first is treated as an unusable answer is today (asked again, then the fallback)."""
        stats, problem = ChatStats(), ""
        num_predict = self.num_predict or num_predict or DEFAULT_NUM_PREDICT.get(op)
        for attempt in range(1, attempts + 1):
            if tap is not None:
                tap.restart()
            try:
                reply = self.client.chat(messages, format=schema, sink=tap,
                                         options=self._options(op, seed, num_predict, hotter))
            except OllamaError as exc:
                if tap is None or not tap.used:
                    raise
                return tap.value, stats, f"the answer broke off after {tap.handed} entries ({_first_sentence(exc)})"
            stats += reply.stats
            with self._lock:
                self._stats += reply.stats
            if tap is not None and tap.used:
                broken = tap.reader.broken or ("" if tap.reader.complete else "it stopped before its end")
                cut = " (the answer hit the num_predict token limit)" if reply.done_reason == "length" else ""
                return tap.value, stats, f"{broken}{cut}" if broken else ""
            try:
                return parse(extract_json(reply.text)), stats, ""
            except ValueError as exc:
                problem = str(exc)
                if reply.done_reason == "length":
                    problem += " (the answer hit the num_predict token limit)"
                    num_predict = 2 * (num_predict or 400)
            if attempt < attempts:
                messages = messages + [{"role": "assistant", "content": reply.text[:2000]},
                                       {"role": "user", "content": tpl.retry_user(problem, schema)}]
        return None, stats, problem

    def _single(self, op: str, messages: list, schema: dict, parse: Callable[[Any], T], seed: Optional[int],
                fallback: Callable[[], T]) -> OpResult[T]:
        value, stats, problem = self._ask(op, messages, schema, parse, seed)
        if value is not None:
            return OpResult(value, stats=stats)
        self._refuse_fallback(op, problem)
        return OpResult(fallback(), fallback=True, stats=stats, problem=problem)

    def _variants(self, op: str, n: int, seed: Optional[int], build: Callable[[int, Sequence[str]], tuple],
                  exclude: Sequence[str], fallbacks: Callable[[], list]) -> OpResult[list]:
        seen = {distinct_key(text) for text in exclude}
        found: list[str] = []

        def take(texts: Iterable[str]) -> None:
            for text in texts:
                key = distinct_key(text)
                if len(found) < n and key not in seen:
                    seen.add(key)
                    found.append(text)

        system, user = build(n, [])
        texts, stats, problem = self._ask(op, _messages(system, user), tpl.variants_schema(n), _parse_variants,
                                          seed, num_predict=200 + 220 * n)
        take(texts or [])
        if texts is not None and len(found) < n:
            # Too few distinct ones: ask once for just the missing ones, showing what we already have.
            missing = n - len(found)
            system, user = build(missing, found)
            more, more_stats, more_problem = self._ask(op, _messages(system, user), tpl.variants_schema(missing),
                                                       _parse_variants, None if seed is None else seed + 1,
                                                       num_predict=200 + 220 * missing, attempts=1)
            stats += more_stats
            take(more or [])
            if len(found) < n:
                problem = more_problem or f"the model gave {len(found)} distinct variants of {n}"
        filled = n - len(found)
        if filled:
            self._refuse_fallback(op, problem)
            take(fallbacks())
        return OpResult(found, fallback=filled > 0, stats=stats, fallback_count=filled, problem=problem)

    def _tap(self, key: str, parse: Callable[[Any], Any], entries_of: Callable[[Any], Sequence],
             on_entry: Optional[Callable[[Any, int], None]], needs: Sequence[str] = ()) -> Optional[EntryTap]:
        """A tap for a per-round operation's answer, or None when this engine does not stream."""
        return EntryTap(key, parse, entries_of, on_entry, needs) if self.stream else None

    def _refuse_fallback(self, op: str, problem: str) -> None:
        if not self.allow_fallback:
            raise OllamaBadOutput(
                f"Ollama model '{self.client.model}' gave unusable output for {op} twice ({problem}). Try a larger "
                f"instruction-tuned model such as qwen2.5:7b-instruct, or a lower temperature.",
                url=self.client.base_url)


def _first_sentence(exc: Exception) -> str:
    text = str(exc)
    return text.split(". ")[0].rstrip(".")
