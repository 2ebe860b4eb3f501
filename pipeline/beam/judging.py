"""The pairwise judge near the cut: which candidates a round asks a vision model about, what earlier verdicts
already decide, and the order the verdicts give (docs/judges.md states the same rules for users).

- The cut is the midpoint between the totals of the last survivor and the first candidate left out, by score.
- The window is every candidate of the selection pool (parents and new candidates) whose total lies within
  `judge_margin` standard deviations of the pool's totals from the cut. Only a window with candidates on both
  sides of the cut is judged: elsewhere a verdict could not change who survives.
- The pairs asked are survivor x left-out candidate within the window, the closest totals first, at most
  `judge_budget` a round, each asked in both orders (two requests). A pair that earlier verdicts decide is not
  asked: asked before (a tie included), or implied by a chain of wins (a beat b and b beat c: a beats c).
- The order: within the window, by net judged wins (the window members a candidate beats, directly or through a
  chain, minus those that beat it); equal nets keep their score order. Outside the window, the score order.

Verdicts are asked in waves so that several requests run at once and the record is still the one a sequential
judge would write: a wave is the longest prefix of the remaining pairs none of which the verdict of an earlier
pair of the wave could decide. Timing never changes a report.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait
from statistics import pstdev
from typing import Callable, Iterable, Mapping, Optional, Sequence

from .selection import derive_seed
from .types import Candidate, StopRequested, describe_error

Pair = tuple[str, str]


class VerdictGraph:
    """The run's judged pairs: who beat whom (ties decide a pair but order nothing)."""

    def __init__(self, judgements: Iterable[Mapping] = ()):
        self.beats: dict[str, set[str]] = {}
        self.asked: set[frozenset] = set()
        for entry in judgements:
            self.add(entry["a"], entry["b"], entry["verdict"])

    def add(self, a: str, b: str, verdict: str) -> None:
        self.asked.add(frozenset((a, b)))
        if verdict == "a":
            self.beats.setdefault(a, set()).add(b)
        elif verdict == "b":
            self.beats.setdefault(b, set()).add(a)

    def reaches(self, x: str, y: str) -> bool:
        """x beats y directly or through a chain of wins (x == y counts, for the wave rule)."""
        seen, todo = {x}, [x]
        while todo:
            current = todo.pop()
            if current == y:
                return True
            for loser in self.beats.get(current, ()):
                if loser not in seen:
                    seen.add(loser)
                    todo.append(loser)
        return False

    def decided(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.asked or self.reaches(a, b) or self.reaches(b, a)

    def could_decide(self, asked: Pair, other: Pair) -> bool:
        """Whether some verdict on `asked` would decide `other` (through a chain with the wins known now)."""
        for winner, loser in (asked, asked[::-1]):
            for x, y in (other, other[::-1]):
                if self.reaches(x, winner) and self.reaches(loser, y):
                    return True
        return frozenset(asked) == frozenset(other)

    def net_wins(self, candidate: str, members: Sequence[str]) -> int:
        return sum(self.reaches(candidate, other) for other in members if other != candidate) - \
            sum(self.reaches(other, candidate) for other in members if other != candidate)


def near_cut(ranked: Sequence[Candidate], keep_top: int, margin: float) -> list[Candidate]:
    """The candidates (in score order) whose total lies within `margin` standard deviations of the cut; empty
    when no candidate is left out or the window does not straddle the cut."""
    if len(ranked) <= keep_top or keep_top < 1:
        return []
    totals = [c.total for c in ranked]
    cut = (totals[keep_top - 1] + totals[keep_top]) / 2.0
    reach = margin * pstdev(totals)
    window = [c for c in ranked if abs(c.total - cut) <= reach]
    survivors = {c.id for c in ranked[:keep_top]}
    if not any(c.id in survivors for c in window) or all(c.id in survivors for c in window):
        return []
    return window


def pairs_across_cut(window: Sequence[Candidate], survivors: set) -> list[Pair]:
    """Survivor x left-out pairs of the window, closest totals first (then by score rank, for a fixed order)."""
    rank = {c.id: i for i, c in enumerate(window)}
    total = {c.id: c.total for c in window}
    inside = [c.id for c in window if c.id in survivors]
    outside = [c.id for c in window if c.id not in survivors]
    pairs = [(s, o) for s in inside for o in outside]
    return sorted(pairs, key=lambda p: (abs(total[p[0]] - total[p[1]]), rank[p[0]] + rank[p[1]], rank[p[0]]))


def judged_order(ranked: Sequence[Candidate], window: Sequence[Candidate], graph: VerdictGraph) -> list[Candidate]:
    """The score order with the window re-ordered by net judged wins (stable: equal nets keep score order)."""
    members = [c.id for c in window]
    positions = [i for i, c in enumerate(ranked) if c.id in set(members)]
    reordered = sorted(window, key=lambda c: -graph.net_wins(c.id, members))   # sorted() is stable
    order = list(ranked)
    for position, candidate in zip(positions, reordered):
        order[position] = candidate
    return order


class JudgePhase:
    """Runs the judge on one round's selection pool and records each verdict as it is decided.

    judge: an object with `ask(user_prompt, first, second, seed) -> {winner, reason}`, `encode(image) -> str`,
    `judgement(names, a_first, b_first, seconds) -> dict` and `model` (llm.vision.PairwiseJudge), or None for a
    replay, which only looks verdicts up in `recorded`. recorded: earlier judgements to reuse instead of asking
    ({(iteration, frozenset(a, b)): entry}) — a resumed round's, or the replayed run's.
    """

    def __init__(self, judge, config, user_prompt: str, record, image_of: Callable[[Candidate], object],
                 should_stop: Callable[[], bool], recorded: Optional[Mapping] = None):
        self.judge = judge
        self.config = config
        self.user_prompt = user_prompt
        self.record = record
        self.image_of = image_of
        self.should_stop = should_stop
        self.recorded = dict(recorded or {})
        self.requests = 0                     # VLM requests made (two a pair)

    def order(self, iteration: int, ranked: list[Candidate]) -> tuple[list[Candidate], Optional[dict]]:
        """-> (the order survivors are taken from, the iteration entry's "judge" summary or None)."""
        earlier = [j for j in self.record.report.get("judgements") or []
                   if j["iteration"] < iteration and not j.get("error")]
        graph = VerdictGraph(earlier)
        window = near_cut(ranked, self.config.keep_top, self.config.judge_margin)
        if not window or self.config.judge_budget < 1:
            return ranked, None
        todo = pairs_across_cut(window, {c.id for c in ranked[:self.config.keep_top]})
        by_id = {c.id: c for c in window}
        asked, inferred, failure = 0, 0, None
        encoded: dict[str, str] = {}
        while todo and asked < self.config.judge_budget and failure is None:
            undecided = [p for p in todo if not graph.decided(*p)]
            inferred += len(todo) - len(undecided)
            wave: list[Pair] = []
            for pair in undecided[:self.config.judge_budget - asked]:
                if any(graph.could_decide(done, pair) for done in wave):
                    break
                wave.append(pair)
            if not wave:
                break
            entries, failure = self._ask_wave(iteration, wave, by_id, encoded)
            for entry in entries:
                graph.add(entry["a"], entry["b"], entry["verdict"])
            asked += len(entries)
            todo = undecided[len(wave):]
        order = judged_order(ranked, window, graph)
        summary = {"window": [c.id for c in window], "order": [c.id for c in order if c.id in by_id],
                   "asked": asked, "inferred": inferred}
        if failure is not None:
            summary["error"] = failure
        return order, summary

    # ---- asking ---------------------------------------------------------------------------------------------------
    def _ask_wave(self, iteration: int, wave: list[Pair], by_id: dict, encoded: dict
                  ) -> tuple[list[dict], Optional[str]]:
        """The wave's pairs, both orders each, at most llm_concurrency requests at once -> (their judgements in
        wave order, recorded; the error that ended judging for this round or None)."""
        entries, failure = [], None
        fresh = [pair for pair in wave if (iteration, frozenset(pair)) not in self.recorded]
        if fresh and self.judge is None:       # a replay asks nothing: pairs it has no verdict for stay unjudged
            wave = [pair for pair in wave if pair not in fresh]
            fresh = []
        outcomes = self._requests(iteration, fresh, by_id, encoded) if fresh else {}
        for pair in wave:
            key = (iteration, frozenset(pair))
            if key in self.recorded:
                entry = dict(self.recorded[key])
                self.record.add_judgement(entry)      # a resumed round's are on record already: kept once
                entries.append(entry)
                continue
            a_first, b_first, seconds, error = outcomes[pair]
            if error is not None:
                failure = error
                self.record.add_judgement({"iteration": iteration, "a": pair[0], "b": pair[1], "verdict": "tie",
                                           "answers": [], "model": self.judge.model, "seconds": round(seconds, 3),
                                           "error": error})
                self.record.warn(f"round {iteration}: the judge failed ({error}); the round went on by scores")
                break
            entry = {"iteration": iteration, "a": pair[0], "b": pair[1],
                     **self.judge.judgement(pair, a_first, b_first, seconds)}
            self.record.add_judgement(entry)
            entries.append(entry)
        return entries, failure

    def _requests(self, iteration: int, pairs: list[Pair], by_id: dict, encoded: dict) -> dict:
        """Both orders of each pair as separate requests -> {pair: (a_first, b_first, seconds, error)}."""
        for cid in {cid for pair in pairs for cid in pair} - set(encoded):
            encoded[cid] = self.judge.encode(self.image_of(by_id[cid]))
        tasks = [(pair, first, second) for pair in pairs for first, second in (pair, pair[::-1])]
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.config.llm_concurrency, len(tasks))),
                                  thread_name_prefix="promptbeam-judge")
        try:
            futures = [pool.submit(self._timed_ask, iteration, first, second, encoded)
                       for _, first, second in tasks]
            pending = set(futures)
            while pending:
                if self.should_stop():
                    raise StopRequested()
                _, pending = wait(pending, timeout=0.05)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        self.requests += len(tasks)
        outcomes = {}
        for index, pair in enumerate(pairs):
            (a_first, a_s, a_err), (b_first, b_s, b_err) = futures[2 * index].result(), futures[2 * index + 1].result()
            outcomes[pair] = (a_first, b_first, a_s + b_s, a_err or b_err)
        return outcomes

    def _timed_ask(self, iteration: int, first: str, second: str, encoded: dict) -> tuple:
        started = time.perf_counter()
        try:
            answer = self.judge.ask(self.user_prompt, encoded[first], encoded[second],
                                    seed=derive_seed(self.config.seed, "judge", iteration, first, second))
            return answer, time.perf_counter() - started, None
        except (StopRequested, KeyboardInterrupt):
            raise
        except Exception as exc:       # a timeout, the server gone: the round goes on by scores
            return None, time.perf_counter() - started, describe_error(exc)


def recorded_judgements(judgements: Iterable[Mapping]) -> dict:
    """{(iteration, frozenset(a, b)): entry} of the decided judgements (failed ones are asked again)."""
    return {(j["iteration"], frozenset((j["a"], j["b"]))): dict(j) for j in judgements if not j.get("error")}


def rank_images(judge, user_prompt: str, images: Sequence, names: Optional[Sequence[str]] = None,
                budget: Optional[int] = None, on_pair: Optional[Callable[[int, int], None]] = None
                ) -> tuple[list[int], list[dict]]:
    """Rank a batch of images by a pairwise judge alone (the Compare Images node; no scores): every pair in
    order (0 v 1, 0 v 2, ..., 1 v 2, ...), both orders each, skipping pairs the verdicts so far decide, at most
    `budget` pairs. -> (indices best first: net wins, then batch order; the judgements, as the run record's).
    on_pair(done, total): before each of the n(n-1)/2 pairs (asked or skipped) and once at the end, with the pairs
    done so far; it may raise to stop (an interrupt), and then no further request is made."""
    names = [str(n) for n in (names or [f"image {i}" for i in range(len(images))])]
    encoded = [judge.encode(image) for image in images]
    graph, judgements = VerdictGraph(), []
    total, done = len(images) * (len(images) - 1) // 2, 0
    report = on_pair or (lambda done, total: None)
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            report(done, total)
            done += 1
            if graph.decided(names[i], names[j]) or (budget is not None and len(judgements) >= budget):
                continue
            started = time.perf_counter()
            a_first = judge.ask(user_prompt, encoded[i], encoded[j])
            b_first = judge.ask(user_prompt, encoded[j], encoded[i])
            entry = {"a": names[i], "b": names[j],
                     **judge.judgement((names[i], names[j]), a_first, b_first, time.perf_counter() - started)}
            graph.add(entry["a"], entry["b"], entry["verdict"])
            judgements.append(entry)
    report(done, total)
    order = sorted(range(len(images)), key=lambda k: -graph.net_wins(names[k], names))
    return order, judgements
