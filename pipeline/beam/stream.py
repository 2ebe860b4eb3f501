"""A round's plan as it streams in: LLM units run on a bounded pool while the caller renders what is ready.

A round's LLM work is split into units (round 0: one request per two pairs; round k: one request per surviving
parent). Units run concurrently, at most `llm_concurrency` at a time, and the caller takes their drafts in a FIXED
order, rendering them while the later units are still with the LLM: level by level (every unit's first draft in
unit order, then every unit's second, ...), one draft per take. Candidate ids, seeds and duplicate decisions are
given out by PlanBuilder in that order, so a report never depends on which unit finished first, and the batches a
round renders and scores in never depend on what happened to be ready.

A streaming round goes one step further: a unit hands each draft over (`emit`) as soon as the LLM has written it,
so a child renders while the rest of its answer is still being written. The single operations (one unit a round)
are taken whole.
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
    """The units of one round, started at once on at most `concurrency` threads, taken back in a fixed order.

    `parents` names the parent of each unit (None for round 0), so a partly planned round can be recorded and
    resumed: `planned_parents` lists the parents whose units have been taken.

    With `interleave` (the per-round operations) drafts are taken one at a time, level by level: every unit's
    first draft in unit order, then every unit's second, and so on; a unit whose answer had fewer drafts drops out.
    So while the first parent's answer is still writing its second child, the second parent's first child, written
    at the same time, renders. `offsets` gives each unit's first level (a resumed round asks a parent only for the
    children it had not planned, which keeps the order an uninterrupted round has). Without it (the single
    operations: one unit a round) each unit is taken whole, in unit order.
    """

    def __init__(self, builder: PlanBuilder, units: Sequence[Callable[..., list]], concurrency: int,
                 should_stop: Callable[[], bool], parents: Sequence[Optional[str]] = (),
                 planned_parents: Sequence[str] = (), expected: int = 0, streaming: bool = False,
                 interleave: bool = False, offsets: Sequence[int] = ()):
        """units: callables returning their drafts in plan order. With `streaming` each is called with
        `emit(draft)`, which hands a draft over before the unit returns; its returned list starts with the drafts
        it emitted (the same objects), followed by the rest."""
        self.builder = builder
        self.streaming = streaming
        self.interleave = interleave
        self.parents = list(parents) or [None] * len(units)
        self.planned_parents = list(planned_parents)
        self.expected = expected                  # how many candidates the round plans (for progress)
        self.should_stop = should_stop
        self.llm_work_s = 0.0                     # summed time of the units (they overlap each other and the GPU)
        self.evaluations: dict[str, dict] = {}    # parent id -> a critic's new evaluation, from the units finished
        self._lock = threading.Lock()
        self._offsets = list(offsets) or [0] * len(units)
        self._taken = [0] * len(units)            # drafts taken from each unit
        self._finished = [False] * len(units)     # units whose drafts have all been taken
        self._level = min(self._offsets, default=0)
        self._turn = 0                            # the unit whose draft comes next within the level
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
        return all(self._finished)

    def __bool__(self) -> bool:
        return not self.complete

    def ready(self) -> bool:
        """Whether next() would return without waiting for the LLM."""
        if self.complete:
            return True
        if not self.interleave:
            return self._futures[self._turn].done()
        return next((self._has_draft(unit) is True for _, unit in self._order()), True)

    def next(self) -> list[Candidate]:
        """The next draft (interleaved) or unit (whole) in order, finalised -> new candidates; waits for the LLM
        as long as it has to, polling the stop flag."""
        if not self.interleave:
            unit = self._turn
            self._wait(lambda: self._futures[unit].done())
            drafts = self._result(unit)[self._taken[unit]:]
            self._taken[unit] += len(drafts)
            self._finish_unit(unit)
            self._turn += 1
            return self.builder.add(drafts)
        try:
            for level, unit in self._order():
                self._wait(lambda: self._has_draft(unit) is not None)
                if self._has_draft(unit):
                    draft = self._draft(unit)
                    self._taken[unit] += 1
                    self._level, self._turn = level, unit + 1
                    return self.builder.add([draft])
            return []
        finally:
            self._finish_ended()

    def _order(self):
        """(level, unit) of the units with a draft still to give (or not known yet), from the current position
        on, level by level: a unit whose answer has ended drops out."""
        level, turn = self._level, self._turn
        while any(self._live(unit) for unit in range(len(self._futures))):
            for unit in range(turn, len(self._futures)):
                if self._offsets[unit] <= level and self._live(unit):
                    yield level, unit
            level, turn = level + 1, 0

    def _live(self, unit: int) -> bool:
        return not self._finished[unit] and self._has_draft(unit) is not False

    def _finish_ended(self) -> None:
        """Finish the units whose answers ended with every draft taken (a failed one ends by raising)."""
        for unit, finished in enumerate(self._finished):
            if not finished and self._has_draft(unit) is False:
                self._finish_unit(unit)

    def _has_draft(self, unit: int) -> Optional[bool]:
        """Whether the unit has a draft for its next level: True, False (its answer ended before it) or None
        (not known yet: the answer is still being written). A unit that failed has one: taking it raises."""
        if self._taken[unit] < len(self._early[unit]):
            return True
        future = self._futures[unit]
        if not future.done():
            return None
        return future.exception() is not None or self._taken[unit] < len(self._result(unit))

    def _draft(self, unit: int):
        """The unit's next draft: one it emitted, else from its result (which raises the unit's error)."""
        index = self._taken[unit]
        return self._early[unit][index] if index < len(self._early[unit]) else self._result(unit)[index]

    def _result(self, unit: int) -> list:
        future = self._futures[unit]
        error = future.exception()
        if error is not None:
            raise error
        drafts = future.result()
        early = self._early[unit]
        if len(drafts) < len(early) or any(a is not b for a, b in zip(drafts, early)):
            raise RuntimeError("a unit's drafts must start with the drafts it emitted")
        return drafts

    def _wait(self, condition: Callable[[], bool]) -> None:
        while not condition():
            if self.should_stop():
                raise StopRequested()
            time.sleep(0.01)      # polling keeps an interrupt within ~10 ms while a unit waits for Ollama

    def _finish_unit(self, unit: int) -> None:
        if self._finished[unit]:
            return
        for draft in self._result(unit):      # set on the drafts when the unit returned (the critic's look)
            if getattr(draft, "parent_evaluation", None) is not None:
                self.evaluations[draft.parent.id] = draft.parent_evaluation
        self._finished[unit] = True
        parent = self.parents[unit]
        if parent is not None:
            self.planned_parents.append(parent)

    def close(self) -> None:
        """Abandon units still running (a stop or a failure): never wait for an LLM call to come back."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _timed(self, unit: Callable[..., list], index: int) -> list:
        started = getattr(unit, "started", None) or time.perf_counter()     # an early unit ran before the round
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
