"""Parents asked for their children before their round starts.

A round's parents are known only once its last candidate is scored, so the next round's first answer used to start
after the last image of the round was rendered: one render of waiting per round on the critical path, with every
LLM slot idle. Yet before the last candidates are scored some candidates are already sure to survive: with M to
keep and r candidates still to score, a scored candidate with fewer than M - r candidates above it stays among the
M whatever the r score. Such a parent's request can start at once (EarlyUnit) and be taken as the next round's
unit for that parent when the round starts.

The request is exactly the one the next round would send (same parent, half, history, image, seed), and whether it
starts early depends only on the scores, never on timing, so a report is the same as without it. It starts only
when the next round is certain to happen and to pick its parents by score alone: not with a target score or a time
budget (either may end the search here), a judge (it may reorder the cut), the adaptive half (chosen from the whole
round's scores), negative prompts (their requests are skipped for prompts the round may still render) or
low_vram (Ollama is unloaded while the round renders).
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional, Sequence

from .config import BeamConfig
from .selection import rank
from .types import STATUS_FAILED, STATUS_PENDING, Candidate, StopRequested


def early_starts_possible(config: BeamConfig, judged: bool) -> bool:
    """Whether this search's settings let a parent be asked before its round (see the module's text)."""
    return (config.target_score is None and config.time_budget_s is None and not judged
            and config.dimension_policy == "alternate" and not config.use_negative and not config.low_vram)


def still_to_score(planned: Sequence[Candidate], unplanned: int) -> int:
    """Candidates of the round without a score yet: planned and not rendered, plus those not planned yet."""
    return unplanned + sum(1 for c in planned if c.status == STATUS_PENDING and c.scores is None)


def certain_survivors(parents: Sequence[Candidate], planned: Sequence[Candidate], remaining: int,
                      keep_top: int) -> list[Candidate]:
    """The candidates sure to be among the round's keep_top survivors whatever the `remaining` ones score."""
    return [c for position, c in enumerate(rank([*parents, *planned])) if position + remaining < keep_top]


def next_round_certain(config: BeamConfig, iteration: int, planned: Sequence[Candidate], remaining: int,
                       best_before: Optional[float], rounds_without_gain: int) -> bool:
    """Whether the round after `iteration` happens whatever the `remaining` candidates score (the stop rules of
    SearchRun._stop_reason, each at its worst case)."""
    if iteration + 1 >= config.iterations or config.target_score is not None or config.time_budget_s is not None:
        return False
    scored = [c for c in planned if c.ok and c.scores is not None]
    failed = sum(1 for c in planned if c.status == STATUS_FAILED)
    if not scored or failed + remaining > len(scored):     # "failures": more than half could have failed
        return False
    if config.patience is not None:
        improved = best_before is None or max(c.total for c in scored) > best_before
        if not improved and rounds_without_gain + 1 >= config.patience:
            return False
    return True


class EarlyUnit:
    """A parent's unit running before its round. The round takes it over with `adopt(emit)`: the drafts the unit
    emitted so far are handed over first, the later ones go straight on, and its result (or error) is returned as
    if the round had started it."""

    def __init__(self, run: Callable[[Optional[Callable]], list], streaming: bool):
        self.started = time.perf_counter()
        self._lock = threading.Lock()
        self._emitted: list = []
        self._target: Optional[Callable] = None
        self._cancelled = False
        self._done = threading.Event()
        self._result: list = []
        self._error: Optional[BaseException] = None
        threading.Thread(target=self._run, args=(run, streaming), daemon=True, name="promptbeam-llm-early").start()

    def _run(self, run, streaming: bool) -> None:
        try:
            self._check()
            self._result = run(self._emit if streaming else None)
        except BaseException as exc:     # handed to the round that adopts the unit, as its own unit's would be
            self._error = exc
        finally:
            self._done.set()

    def _check(self) -> None:
        if self._cancelled:
            raise StopRequested()

    def _emit(self, draft) -> None:
        with self._lock:
            self._check()                # a unit nobody will take: stop reading its answer
            if self._target is not None:
                self._target(draft)
            else:
                self._emitted.append(draft)

    def adopt(self, emit: Optional[Callable] = None) -> list:
        with self._lock:
            if emit is not None:
                for draft in self._emitted:
                    emit(draft)
                self._target = emit
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result

    __call__ = adopt              # a RoundStream unit

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
