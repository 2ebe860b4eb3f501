"""A round's plan as it streams in: LLM units run on a bounded pool while the caller renders what is ready.

A round's LLM work is split into units (round 0: one unit; round k: one unit per surviving parent). Units run
concurrently, at most `llm_concurrency` at a time, and the caller takes their results IN UNIT ORDER (`next()`),
rendering each unit's children while the later units are still with the LLM. Candidate ids, seeds and duplicate
decisions are given out by PlanBuilder in that fixed order, so a report never depends on which unit finished first.

A streaming round goes one step further: a unit hands each draft over (`emit`) as soon as the LLM has written it,
and the caller takes drafts ONE AT A TIME, in order, while the rest of the answer is still being written. One
draft per take is a rule, not a matter of what happens to be ready, so the batches a round renders and scores in
never depend on timing either.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional, Sequence

from .selection import DuplicateIndex, normalise_prompt
from .types import STAGE_LLM, STATUS_FAILED, Candidate, StopRequested, candidate_id

# Where a draft's LLM work failed: its halves (expand/critique/refine), its combined prompt, or its negative.
FAILED_HALVES, FAILED_COMBINE, FAILED_NEGATIVE = "halves", "combine", "negative"


class PlanBuilder:
    """Turns drafts (in plan order) into the round's candidates: drops duplicates of earlier prompts (of the run
    or of this round), gives out ids and seeds, and records the dropped ones. Feeding all drafts at once or unit by
    unit gives the same plan."""

    def __init__(self, plan, known, seed_of: Callable):
        self.plan = plan                                  # RoundPlan, filled in place
        self.known = known                                # KnownPrompts of the rounds before this one
        self.seed_of = seed_of
        self.drafts: list = []
        self._pairs: dict[tuple, str] = {}
        self._prompts = DuplicateIndex()
        self._ids: dict[str, str] = {}
        for candidate in plan.candidates:                 # a resumed round: its planned candidates come first
            self._pairs.setdefault(_pair(candidate), candidate.id)
            if candidate.prompt and candidate.failed_stage != STAGE_LLM:
                self._prompts.add(candidate.id, candidate.prompt)

    def add(self, drafts: Sequence) -> list[Candidate]:
        """Finalise the next drafts -> the candidates made from them (duplicates are recorded, not returned)."""
        made = []
        for draft in drafts:
            name = f"draft{len(self.drafts)}"
            self.drafts.append(draft)
            stage = getattr(draft, "failed_stage", None) if draft.error else None
            if draft.error and stage is None:
                stage = FAILED_HALVES
            if stage != FAILED_HALVES:
                # Same (WHAT, HOW) as an earlier candidate: drop it (a pair twin is never combined or negated).
                pair = _pair(draft)
                twin = self.known.pairs.get(pair) or self._pairs.get(pair)
                self._pairs.setdefault(pair, twin or name)
                if twin:
                    draft.error, draft.duplicate_of = None, twin
            if not draft.duplicate_of and stage in (None, FAILED_NEGATIVE):
                twin = self.known.prompts.find(draft.prompt) or self._prompts.find(draft.prompt)
                if twin:
                    draft.error, draft.duplicate_of = None, twin
                else:
                    self._prompts.add(name, draft.prompt)
            if draft.duplicate_of and not draft.error:
                self.plan.duplicates.append({
                    "parent": draft.parent.id if draft.parent else None, "dimension": draft.dimension,
                    "what": draft.what, "how": draft.how, "prompt": draft.prompt or None,
                    "duplicate_of": self._resolve(draft.duplicate_of)})
                continue
            made.append(self._candidate(name, draft))
        return made

    def _candidate(self, name: str, draft) -> Candidate:
        index = len(self.plan.candidates)
        cid = candidate_id(self.plan.iteration, index)
        self._ids[name] = cid
        candidate = Candidate(
            id=cid, iteration=self.plan.iteration, index=index, parent=draft.parent.id if draft.parent else None,
            dimension=draft.dimension, what=draft.what, how=draft.how, prompt=draft.prompt,
            negative=draft.negative, seed=self.seed_of(draft, index), critique=draft.critique,
            fallbacks=list(draft.fallbacks))
        if draft.error:
            candidate.status, candidate.failed_stage, candidate.error = STATUS_FAILED, STAGE_LLM, draft.error
        self.plan.candidates.append(candidate)
        return candidate

    def _resolve(self, key: str) -> Optional[str]:
        """A "draft{i}" twin -> its candidate id (or, if it was dropped too, what it duplicated)."""
        while key and key.startswith("draft") and key not in self._ids:
            key = self.drafts[int(key[len("draft"):])].duplicate_of
        return self._ids.get(key, key)


class RoundStream:
    """The units of one round, started at once on at most `concurrency` threads, taken back in order.

    `parents` names the parent of each unit (None for round 0), so a partly planned round can be recorded and
    resumed: `planned_parents` lists the parents whose units have been taken.
    """

    def __init__(self, builder: PlanBuilder, units: Sequence[Callable[..., list]], concurrency: int,
                 should_stop: Callable[[], bool], parents: Sequence[Optional[str]] = (),
                 planned_parents: Sequence[str] = (), expected: int = 0, streaming: bool = False):
        """units: callables returning their drafts in plan order. With `streaming` each is called with
        `emit(draft)`, which hands a draft over before the unit returns; its returned list starts with the drafts
        it emitted (the same objects), followed by the rest."""
        self.builder = builder
        self.streaming = streaming
        self.parents = list(parents) or [None] * len(units)
        self.planned_parents = list(planned_parents)
        self.expected = expected                  # how many candidates the round plans (for progress)
        self.should_stop = should_stop
        self.llm_work_s = 0.0                     # summed time of the units (they overlap each other and the GPU)
        self.evaluations: dict[str, dict] = {}    # parent id -> a critic's new evaluation, from the units finished
        self._lock = threading.Lock()
        self._taken = 0                           # units taken whole
        self._in_unit = 0                         # drafts of the next unit taken so far (streaming)
        self._early: list[list] = [[] for _ in units]     # drafts each unit has emitted
        self._pool = None
        self._futures: list[Future] = []
        if units:
            self._pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(units))),
                                            thread_name_prefix="promptbeam-llm")
            self._futures = [self._pool.submit(self._timed, unit, i) for i, unit in enumerate(units)]

    @property
    def plan(self):
        return self.builder.plan

    @property
    def complete(self) -> bool:
        return self._taken >= len(self._futures)

    def __bool__(self) -> bool:
        return not self.complete

    def ready(self) -> bool:
        """Whether next() would return without waiting for the LLM."""
        return self.complete or self._futures[self._taken].done() or self._early_left()

    def next(self) -> list[Candidate]:
        """Wait for the next unit in order (polling the stop flag), then finalise its drafts -> new candidates.
        Streaming: the next single draft, as soon as its unit has emitted it."""
        future = self._futures[self._taken]
        while not future.done() and not self._early_left():
            if self.should_stop():
                raise StopRequested()
            time.sleep(0.01)      # polling keeps an interrupt within ~10 ms while a unit waits for Ollama
        if not self._early_left():
            error = future.exception()
            if error is not None:
                raise error
            drafts = future.result()
            early = self._early[self._taken]
            if len(drafts) < len(early) or any(a is not b for a, b in zip(drafts, early)):
                raise RuntimeError("a unit's drafts must start with the drafts it emitted")
        else:
            drafts = self._early[self._taken]
        rest = drafts[self._in_unit:]
        taken = rest[:1] if self.streaming else rest
        self._in_unit += len(taken)
        if future.done() and not future.exception() and self._in_unit >= len(future.result()):
            self._finish_unit(future.result())
        return self.builder.add(taken)

    def _early_left(self) -> bool:
        return self.streaming and len(self._early[self._taken]) > self._in_unit

    def _finish_unit(self, drafts: list) -> None:
        for draft in drafts:      # set on the drafts when the unit returned (the critic's look comes with it)
            if getattr(draft, "parent_evaluation", None) is not None:
                self.evaluations[draft.parent.id] = draft.parent_evaluation
        parent = self.parents[self._taken]
        self._taken += 1
        self._in_unit = 0
        if parent is not None:
            self.planned_parents.append(parent)

    def close(self) -> None:
        """Abandon units still running (a stop or a failure): never wait for an LLM call to come back."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _timed(self, unit: Callable[..., list], index: int) -> list:
        started = time.perf_counter()
        try:
            return unit(self._early[index].append) if self.streaming else unit()
        finally:
            with self._lock:
                self.llm_work_s += time.perf_counter() - started


def recorded_stream(plan) -> RoundStream:
    """A round whose plan is already known (replay, or a resumed round): nothing left to ask the LLM."""
    return RoundStream(PlanBuilder(plan, None, None), [], 1, lambda: False, expected=len(plan.candidates))


def _pair(item) -> tuple:
    return normalise_prompt(item.what), normalise_prompt(item.how)
