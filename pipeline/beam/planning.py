"""The LLM phase of a round: from the user prompt (round 0) or the surviving parents (later rounds) to the
round's planned candidates. Calls run concurrently, bounded by `llm_concurrency`; each is wrapped so that
should_stop is polled before and after it."""
from __future__ import annotations

import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from ..errors import InvalidParameter, PromptBeamError
from .config import BeamConfig
from .selection import DuplicateIndex, choose_dimension, derive_seed, edit_history, normalise_prompt
from .types import STAGE_LLM, STATUS_FAILED, Candidate, StopRequested, candidate_id, describe_error


@dataclass
class RoundPlan:
    iteration: int
    dimension: Optional[str]                        # "what" | "how" | "mixed" (adaptive) | None (round 0)
    candidates: list = field(default_factory=list)  # Candidates, "pending" or failed at the LLM stage
    duplicates: list = field(default_factory=list)  # dropped near-duplicates: {parent, dimension, what, how, prompt, duplicate_of}


@dataclass
class _Draft:
    """A child before it has an id: its halves, where it came from and what it cost."""
    parent: Optional[Candidate]
    dimension: Optional[str]
    what: str
    how: str
    key: tuple                                      # path for this draft's LLM seeds
    critique: Optional[dict] = None
    prompt: str = ""
    negative: Optional[str] = None
    error: Optional[str] = None
    fallbacks: list = field(default_factory=list)
    duplicate_of: Optional[str] = None


class KnownPrompts:
    """The prompts already rendered in the run, so a new prompt that repeats one is dropped before rendering."""

    def __init__(self):
        self.prompts = DuplicateIndex()
        self.pairs: dict[tuple, str] = {}

    def add(self, candidate: Candidate) -> None:
        self.pairs.setdefault((normalise_prompt(candidate.what), normalise_prompt(candidate.how)), candidate.id)
        if candidate.prompt:
            self.prompts.add(candidate.id, candidate.prompt)


class RoundPlanner:
    def __init__(self, ops, config: BeamConfig, user_prompt: str, check_stop: Callable[[], None]):
        self.ops = ops
        self.config = config
        self.user_prompt = user_prompt
        self.check_stop = check_stop
        self.calls = 0
        self.fallbacks = 0
        self._lock = threading.Lock()

    def _require_llm(self, iteration: int) -> None:
        if self.ops is None:
            raise InvalidParameter("llm", f"round {iteration} has no recorded prompts, so it needs the prompt "
                                          f"operations (an LLM): pass them to BeamSearch")

    # ---- round 0 ------------------------------------------------------------------------------------------------
    def plan_initial(self, known: KnownPrompts) -> RoundPlan:
        """N WHAT+HOW pairs from ONE expand call per dimension (pair i with i), then combined."""
        self._require_llm(0)
        n = self.config.beam_width
        expansions = self._concurrently([
            lambda dim=dim: self._call("expand_" + dim, self.ops.expand, self.user_prompt, dim, n,
                                       seed=self._seed("expand", dim))
            for dim in ("what", "how")])
        for outcome in expansions:
            if isinstance(outcome, BaseException):
                raise outcome    # without an expansion the run cannot start
        (whats, what_fb), (hows, how_fb) = expansions
        whats, hows = _texts(whats), _texts(hows)
        if not whats or not hows:
            raise PromptBeamError(f"the LLM returned no {'WHAT' if not whats else 'HOW'} variants for the prompt")
        drafts = []
        for i in range(n):
            draft = _Draft(None, None, whats[i % len(whats)], hows[i % len(hows)], key=(0, i))
            draft.fallbacks += (["expand_what"] if what_fb else []) + (["expand_how"] if how_fb else [])
            drafts.append(draft)
        return self._finish(0, None, drafts, known, seed_of=lambda draft, index: self._image_seed(0, index))

    # ---- refinement rounds --------------------------------------------------------------------------------------
    def plan_refinement(self, iteration: int, parents: Sequence[Candidate], pool: Sequence[Candidate],
                        candidates: Mapping[str, Candidate], known: KnownPrompts) -> RoundPlan:
        self._require_llm(iteration)
        n_children = self.config.children_per_parent
        dims = [choose_dimension(self.config.dimension_policy, p, pool, iteration) for p in parents]

        critiques = self._concurrently([
            lambda p=p, dim=dim: self._call(
                "critique", self.ops.critique, self.user_prompt, p.what, p.how, p.prompt, dict(p.scores), dim,
                caption=p.caption, seed=self._seed("critique", iteration, p.id))
            for p, dim in zip(parents, dims)])

        def refine(p, dim, critique):
            if isinstance(critique, BaseException):
                return critique
            return self._call("refine", self.ops.refine_variants, getattr(p, dim), dim, critique[0],
                              self.user_prompt, n_children, history=edit_history(candidates, p.id),
                              seed=self._seed("refine", iteration, p.id))
        variants = self._concurrently([
            lambda p=p, dim=dim, c=c: refine(p, dim, c) for p, dim, c in zip(parents, dims, critiques)])

        drafts = []
        for p, dim, critique, outcome in zip(parents, dims, critiques, variants):
            if isinstance(outcome, BaseException):
                stage = "critique" if isinstance(critique, BaseException) else "refine"
                for j in range(n_children):
                    drafts.append(_Draft(p, dim, p.what, p.how, key=(iteration, p.id, j),
                                         error=f"{stage} failed: {describe_error(outcome)}"))
                continue
            halves, refine_fb = outcome
            critique_value, critique_fb = critique
            for j, half in enumerate(_texts(halves)[:n_children]):
                what, how = (half, p.how) if dim == "what" else (p.what, half)
                draft = _Draft(p, dim, what, how, key=(iteration, p.id, j), critique=_plain_dict(critique_value))
                draft.fallbacks += (["critique"] if critique_fb else []) + (["refine"] if refine_fb else [])
                drafts.append(draft)

        if self.config.dimension_policy == "alternate":
            label = dims[0] if dims else None
        else:
            label = dims[0] if len(set(dims)) == 1 else "mixed"

        def seed_of(draft: _Draft, index: int) -> int:
            if self.config.seed_policy == "inherit":
                return draft.parent.seed
            return self._image_seed(iteration, index)
        return self._finish(iteration, label, drafts, known, seed_of)

    # ---- shared tail: dedupe, combine, negative, ids ------------------------------------------------------------
    def _finish(self, iteration: int, label: Optional[str], drafts: list, known: KnownPrompts,
                seed_of: Callable[[_Draft, int], int]) -> RoundPlan:
        # Duplicates are found twice: on the (WHAT, HOW) pair before combining (saves the combine call), then on
        # the combined prompt. A twin in this round is named "draft{i}" until ids are given out below.
        round_pairs: dict[tuple, str] = {}
        for i, draft in enumerate(drafts):
            if draft.error:
                continue
            pair = (normalise_prompt(draft.what), normalise_prompt(draft.how))
            draft.duplicate_of = known.pairs.get(pair) or round_pairs.get(pair)
            round_pairs.setdefault(pair, draft.duplicate_of or f"draft{i}")

        live = [d for d in drafts if not d.error and not d.duplicate_of]
        combined = self._concurrently([lambda d=d: self._combine(d) for d in live])
        for draft, outcome in zip(live, combined):
            if isinstance(outcome, BaseException):
                draft.error = f"combine failed: {describe_error(outcome)}"
                continue
            draft.prompt, fallback = outcome
            draft.prompt = (draft.prompt or "").strip()
            if fallback:
                draft.fallbacks.append("combine")
            if not draft.prompt:
                draft.error = "combine failed: the LLM returned an empty prompt"

        round_prompts = DuplicateIndex()
        for i, draft in enumerate(drafts):
            if draft.error or draft.duplicate_of:
                continue
            draft.duplicate_of = known.prompts.find(draft.prompt) or round_prompts.find(draft.prompt)
            if not draft.duplicate_of:
                round_prompts.add(f"draft{i}", draft.prompt)

        if self.config.use_negative:
            wanted = [d for d in live if not d.error and not d.duplicate_of]
            negatives = self._concurrently([
                lambda d=d: self._call("negative", self.ops.negative, d.prompt, seed=self._seed("negative", *d.key))
                for d in wanted])
            for draft, outcome in zip(wanted, negatives):
                if isinstance(outcome, BaseException):
                    draft.error = f"negative failed: {describe_error(outcome)}"
                else:
                    draft.negative = (_text(outcome[0]) or "").strip() or None
                    if outcome[1]:
                        draft.fallbacks.append("negative")

        plan = RoundPlan(iteration, label)
        ids_by_draft: dict[str, str] = {}
        for i, draft in enumerate(drafts):
            if draft.duplicate_of and not draft.error:
                continue
            index = len(plan.candidates)
            ids_by_draft[f"draft{i}"] = candidate_id(iteration, index)
            candidate = Candidate(
                id=candidate_id(iteration, index), iteration=iteration, index=index,
                parent=draft.parent.id if draft.parent else None, dimension=draft.dimension,
                what=draft.what, how=draft.how, prompt=draft.prompt, negative=draft.negative,
                seed=seed_of(draft, index), critique=draft.critique, fallbacks=list(draft.fallbacks))
            if draft.error:
                candidate.status = STATUS_FAILED
                candidate.failed_stage = STAGE_LLM
                candidate.error = draft.error
            plan.candidates.append(candidate)

        def resolve(key: str) -> Optional[str]:
            """A "draft{i}" twin -> its candidate id (or, if it was dropped too, what it duplicated)."""
            while key and key.startswith("draft") and key not in ids_by_draft:
                key = drafts[int(key[len("draft"):])].duplicate_of
            return ids_by_draft.get(key, key)
        for draft in drafts:
            if draft.duplicate_of and not draft.error:
                plan.duplicates.append({
                    "parent": draft.parent.id if draft.parent else None, "dimension": draft.dimension,
                    "what": draft.what, "how": draft.how, "prompt": draft.prompt or None,
                    "duplicate_of": resolve(draft.duplicate_of)})
        return plan

    def _combine(self, draft: _Draft):
        if self.config.combine_mode == "template":
            self.check_stop()
            return _unwrap(self.ops.combine_template(draft.what, draft.how, style=self.config.style))
        return self._call("combine", self.ops.combine, draft.what, draft.how,
                          descriptiveness=self.config.descriptiveness, style=self.config.style,
                          seed=self._seed("combine", *draft.key))

    # ---- plumbing -----------------------------------------------------------------------------------------------
    def _call(self, name: str, fn: Callable, *args, **kwargs) -> tuple[Any, bool]:
        """One LLM operation with stop checks around it -> (value, fallback)."""
        self.check_stop()
        result = fn(*args, **kwargs)
        self.check_stop()
        value, fallback = _unwrap(result)
        with self._lock:
            self.calls += 1
            self.fallbacks += int(fallback)
        return value, fallback

    def _concurrently(self, tasks: list) -> list:
        """Run tasks on at most llm_concurrency threads; results (or the exceptions raised) in task order.

        A stop request ends the phase at once: calls in flight are abandoned, not waited for, so an interrupt
        takes effect within one stop-check rather than one LLM call.
        """
        if not tasks:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.config.llm_concurrency, len(tasks)),
                                  thread_name_prefix="promptbeam-llm")
        try:
            futures = [pool.submit(task) for task in tasks]
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    if isinstance(future.exception(), (StopRequested, KeyboardInterrupt)):
                        raise future.exception()
            return [f.exception() if f.exception() is not None else f.result() for f in futures]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _seed(self, *parts) -> int:
        return derive_seed(self.config.seed, "llm", *parts)

    def _image_seed(self, iteration: int, index: int) -> int:
        return derive_seed(self.config.seed, "image", iteration, index)


def _unwrap(result) -> tuple[Any, bool]:
    """PromptEngine operations return OpResult(value, fallback, stats); combine_template returns a plain str."""
    if hasattr(result, "value") and hasattr(result, "fallback"):
        return result.value, bool(result.fallback)
    return result, False


def _text(value) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _texts(values) -> list[str]:
    if isinstance(values, str):
        values = [values]
    return [text.strip() for text in (_text(v) for v in (values or [])) if text.strip()]


def _plain_dict(value) -> Optional[dict]:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    return {"critique": str(value), "recommendation": "", "reason": ""}

