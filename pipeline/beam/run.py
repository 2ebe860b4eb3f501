"""One execution of a beam search over a run record: the round loop, selection, stopping and the record.

A SearchRun starts from whatever the record already holds (nothing for a new run; finished rounds and the
round in flight for a resumed one), so run, resume and replay share this code.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import torch

from ..errors import GenerationFailed, Interrupted, PromptBeamError
from ..record.report import RunRecord
from ..record.storage import not_writable, raise_if_not_writable, storage_failure
from .config import BeamConfig
from .control import run_control_arm
from .early import certain_survivors, early_starts_possible, next_round_certain, still_to_score
from .judging import JudgePhase, recorded_judgements
from .planning import KnownPrompts, RoundPlan, RoundPlanner
from .render import RoundRenderer
from .selection import edit_history, lineage, rank
from .stream import recorded_stream
from .types import (STATUS_FAILED, STATUS_PENDING, Candidate, ProgressEvent, SearchCallbacks, SearchResult,
                    StopRequested, describe_error)

log = logging.getLogger(__name__)


class SearchRun:
    def __init__(self, ops, generator, scorer, config: BeamConfig, callbacks: SearchCallbacks,
                 record: RunRecord, recorded_plans=None, critic=None, judge=None, recorded_verdicts=None):
        self.ops = ops
        self.config = config
        self.callbacks = callbacks
        self.record = record
        self.user_prompt = record.report["user_prompt"]
        self.recorded_plans = recorded_plans
        self.candidates: dict[str, Candidate] = {c.id: c for c in record.candidates()}
        self.known = KnownPrompts()
        for candidate in self.candidates.values():
            if candidate.ok:
                self.known.add(candidate)
        self.iterations: list[dict] = list(record.report["iterations"])
        last = self.iterations[-1] if self.iterations else None
        self.survivors = [self.candidates[i] for i in last["survivors"]] if last else []
        self.images: dict[str, torch.Tensor] = {}      # in-memory images of the current survivors
        self.images_done = len(self.candidates) + len((record.report.get("control") or {}).get("seeds", []))
        self._timings_at_start = dict(record.report["timings"])
        self._started = time.monotonic()
        self.planner = RoundPlanner(ops, config, self.user_prompt, self.check_stop, self.should_stop,
                                    critic=critic, image_of=self.image_of)
        # The pairwise judge near the cut; a replay has only the recorded verdicts, a resumed round reuses its own.
        verdicts = recorded_verdicts if recorded_verdicts is not None else \
            recorded_judgements(record.report.get("judgements") or [])
        self.judging = JudgePhase(judge, config, self.user_prompt, record, self.image_of, self.should_stop,
                                  recorded=verdicts) if judge is not None or recorded_verdicts else None
        self.renderer = RoundRenderer(generator, scorer, config, callbacks, self.check_stop, self.should_stop,
                                      config.score_text or self.user_prompt)
        self._llm_s = 0.0                              # time the round loop waited for the LLM
        self._judge_s = 0.0                            # time the pairwise judge took (between scoring and selection)
        self._llm_work_before = record.report["timings"].get("llm_work_s", 0.0)
        self._llm_work_s = self._llm_work_before       # summed time of the LLM units (they overlap)
        self._round_position = 0
        self._batches = 0                              # generate/score calls of the round so far (Candidate.batch)
        self._unrecorded: deque = deque()             # rendered batches whose PNGs are still being written
        self._png_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="promptbeam-png")
        self._round_start = self._phase_totals()
        self._llm_at_start = dict(record.report["llm"])
        self._round_timings: list = list(record.report["timings"].get("rounds", []))
        self._beam_stopped = False     # set once the rounds are over: no further round counts in images_total
        self._compile_s = 0.0          # the generator's compile warm-up in this process
        self._round = None             # the RoundStream in flight, for images_total
        # The next round's certain parents are asked while this round still renders (early.py).
        self._early_starts = (early_starts_possible(config, judged=self.judging is not None)
                              and recorded_plans is None and self.planner.per_round_ops)

    # ---- stop checks --------------------------------------------------------------------------------------------
    def should_stop(self) -> bool:
        return bool(self.callbacks.should_stop and self.callbacks.should_stop())

    def check_stop(self) -> None:
        if self.should_stop():
            raise StopRequested()

    # ---- the whole run ------------------------------------------------------------------------------------------
    def execute(self) -> SearchResult:
        try:
            return self._execute()
        finally:
            self.planner.cancel_early()      # a search that ends or stops takes no early answer

    def _execute(self) -> SearchResult:
        stop_reason, status = None, "finished"
        try:
            control = self.record.report.get("control")
            self._warm_up()
            if control and control.get("beam_stop_reason"):
                stop_reason = control["beam_stop_reason"]     # resumed inside the control arm: the beam is done
            else:
                stop_reason = self._rounds()
            if self.config.control_arm and self.survivors:
                run_control_arm(self, beam_stop_reason=stop_reason)
        except (StopRequested, Interrupted, KeyboardInterrupt):
            stop_reason, status = "interrupted", "interrupted"
            control = self.record.report.get("control")
            if control and control.get("status") == "running":
                control["status"] = "interrupted"
        except PromptBeamError as exc:
            # A collaborator failed in a way the run cannot absorb (e.g. Ollama down before round 0 could
            # expand): keep the record, say why, and let the caller see the exception.
            self._close("failures", "failed", describe_error(exc))
            raise
        except BaseException as exc:
            failure = storage_failure(exc, self.record.run_dir)
            if failure is not None:
                # The disk is full or the folder read-only: the record on disk is valid up to its last save. Close
                # it if the small final save still fits, and say what happened rather than report a crash.
                self._save_timings()
                with contextlib.suppress(OSError):
                    self.record.finish("error", "failed", f"the run record could not be written: "
                                                          f"{describe_error(failure)}")
                raise not_writable(self.record.run_dir, failure) from exc
            self._close("error", "failed", describe_error(exc))
            raise
        if self.survivors:
            self._close(stop_reason, status, None)
            return self.result()
        if stop_reason == "interrupted":
            self._close(stop_reason, status, None)
            raise Interrupted(f"interrupted before any candidate finished; the record is in {self.record.run_dir}")
        errors = [c.error for c in self.candidates.values() if c.error]
        failure = GenerationFailed(
            f"no candidate could be rendered and scored (first error: {errors[0] if errors else 'none recorded'}); "
            f"the record is in {self.record.run_dir}")
        self._close(stop_reason, "failed", str(failure))
        raise failure

    def _warm_up(self) -> None:
        """A generator that compiles (diffusers --compile) does so before round 0, at the search's size, so no round
        waits on a compile. Its seconds go to timings.compile_s; a compile that fell back to eager is a warning."""
        if getattr(self.renderer.generator, "warm_up_needed", False):
            self.report_progress(len(self.iterations), "compile", 0, 0)
        done = self.renderer.warm_up()
        self._compile_s += done["seconds"]
        if done["seconds"] or done.get("warning"):     # what it compiled (or why not) belongs in the config
            self.record.update(config={**self.record.report["config"],
                                       "generator": self.renderer.generator.describe()})
        if done.get("warning"):
            self.record.warn(done["warning"])
        self._save_timings()

    def _record_generator_warnings(self) -> None:
        for line in self.renderer.new_warnings():
            self.record.warn(line)

    def _rounds(self) -> str:
        while True:
            iteration = len(self.iterations)
            if iteration >= self.config.iterations:
                return self._beam_over("max_iterations")
            if self.recorded_plans is not None and iteration >= self.recorded_plans.rounds:
                return self._beam_over(self.recorded_plans.stop_reason)
            stream = self._start_round(iteration)
            finished = self._run_stream(stream)
            if self._nudge_wanted(stream.plan, finished):
                # Every child repeated an earlier prompt: ask each parent once more, warmer, showing what to avoid.
                stream = self.planner.start_round(iteration, self.survivors, self._pool(iteration - 1),
                                                  self.candidates, self.known, resumed=stream.plan, nudge=True)
                finished = self._run_stream(stream)
            reason = self._select(stream.plan, finished)
            if reason:
                return reason

    def _run_stream(self, stream) -> list[Candidate]:
        self._round = stream
        try:
            return self._stream(stream)
        finally:
            stream.close()
            self._llm_work_before += stream.llm_work_s
            self._flush_after_failure()
            self._round = None

    def _nudge_wanted(self, plan: RoundPlan, finished: list) -> bool:
        """A refinement round that brought nothing new, not asked again yet, with an LLM that can be nudged."""
        return (not finished and bool(plan.duplicates) and plan.iteration > 0 and not plan.nudged
                and self.recorded_plans is None and self.ops is not None and self.planner.per_round_ops)

    def _beam_over(self, reason: str) -> str:
        """The rounds end without a round deciding it (a resumed run already at its iterations, a replay at the
        end of its recorded rounds): tell the progress display no more rounds come."""
        if not self._beam_stopped:
            self._beam_stopped = True
            if self.iterations:
                last = self.iterations[-1]
                self.report_progress(last["iteration"], "select", len(last["candidates"]), len(last["candidates"]))
        return reason

    # ---- phases -------------------------------------------------------------------------------------------------
    def _start_round(self, iteration: int):
        """The round's plan as a stream: recorded (replay, or a resumed round whose LLM work is done) or from
        the LLM, whose units are already running when this returns."""
        pending = self.record.report.get("pending")
        self._round_start = self._phase_totals()
        # batch numbers go on after those of the round's candidates already recorded (a resumed round)
        self._batches = 1 + max((c.batch for c in self.candidates.values()
                                 if c.iteration == iteration and c.batch is not None), default=-1)
        self.report_progress(iteration, "llm", 0, 0)
        resumed, planned = None, ()
        if pending and pending.get("iteration") == iteration:
            # Resuming the round in flight: its LLM work is on record, finished candidates are kept.
            resumed = RoundPlan(iteration, pending.get("dimension"),
                                [Candidate.from_dict(c) for c in pending["candidates"]], list(pending["duplicates"]))
            planned = pending.get("planned_parents")
            if planned is None:       # the whole round was planned
                return recorded_stream(resumed)
        if self.recorded_plans is not None:
            return recorded_stream(self.recorded_plans.plan(iteration))
        if iteration == 0:
            return self.planner.start_round(0, [], [], self.candidates, self.known)
        return self.planner.start_round(iteration, self.survivors, self._pool(iteration - 1), self.candidates,
                                        self.known, resumed=resumed, planned_parents=planned)

    def _stream(self, stream) -> list[Candidate]:
        """Take the round's units in order, rendering each one's candidates while the later ones are still with
        the LLM. With low_vram every unit is taken first and Ollama is unloaded before anything renders."""
        plan = stream.plan
        ready = list(plan.candidates)                 # a resumed round: candidates planned before the interrupt
        if self.config.low_vram and self.ops is not None:
            while stream:                             # phase-ordered: the whole round renders as one batch
                ready += self._take(stream)
            self._unload_llm()
        for batch in _recorded_batches(ready) if self.recorded_plans is not None else [ready] if ready else []:
            self._render(plan, batch, stream)         # a replay renders and scores in the source's batches
        if self.renderer.concurrency > 1:
            self._render_concurrently(plan, stream)
        while stream:
            self._render(plan, self._take(stream), stream)
        self._flush()
        return [self.candidates[c.id] for c in plan.candidates]

    def _flush_after_failure(self) -> None:
        """An interrupt or a failure mid-round still records every candidate that was rendered and scored."""
        try:
            self._flush()
        except Exception as exc:    # the original exception is the one to report
            log.warning("could not record the last rendered batch: %s", exc)

    def _render_concurrently(self, plan: RoundPlan, stream) -> None:
        """A generator that takes several generate() calls at once (e.g. one per remote server): keep up to that
        many units' batches rendering, and score and record them in plan order on this thread."""
        in_flight: deque = deque()
        pool = ThreadPoolExecutor(max_workers=self.renderer.concurrency, thread_name_prefix="promptbeam-render")
        try:
            while stream or in_flight:
                if stream and len(in_flight) < self.renderer.concurrency:
                    batch = self._take(stream)
                    todo = self._todo(batch)
                    in_flight.append((batch, todo, pool.submit(self.renderer.generate, todo)))
                    continue
                batch, todo, future = in_flight.popleft()
                self._render(plan, batch, stream, todo=todo, images=future.result())
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _take(self, stream) -> list[Candidate]:
        """The next unit's candidates, recorded as the round's plan so far before any of them renders."""
        if not stream.ready():
            self._flush()          # the GPU waits for the LLM anyway: record what is rendered (previews, progress)
        started = time.perf_counter()
        try:
            made = stream.next()
        finally:
            self._llm_s += time.perf_counter() - started
            self._llm_work_s = self._llm_work_before + stream.llm_work_s
            self._save_timings()
        plan = stream.plan
        for parent_id, evaluation in stream.evaluations.items():
            parent = self.candidates[parent_id]
            if parent.evaluation != evaluation:
                parent.evaluation = evaluation
                self.record.add_candidate(parent)     # what the critic saw goes on the parent's own entry
        self.record.set_pending(plan.candidates, plan.iteration, plan.duplicates, plan.dimension,
                                planned_parents=None if stream.complete else stream.planned_parents)
        return made

    def _todo(self, batch: list[Candidate]) -> list[Candidate]:
        return [c for c in batch if c.status == STATUS_PENDING and not self.record.has_candidate(c.id)]

    def _render(self, plan: RoundPlan, batch: list[Candidate], stream, todo=None, images=None) -> None:
        """Render (unless `images` already holds the batch's) and score one batch of the round. Its PNGs encode on
        other threads while the next batch renders; its candidates are recorded, in order, by _flush."""
        todo = self._todo(batch) if todo is None else todo
        if self.recorded_plans is None:           # a replay keeps the source's numbers: it renders in those batches
            for candidate in todo:
                candidate.batch = self._batches
            self._batches += 1 if todo else 0
        count = max(stream.expected, len(plan.candidates))
        if images is None:
            self.report_progress(plan.iteration, "generate", self._round_position, count)
            images = self.renderer.generate(todo)
        self._record_generator_warnings()           # e.g. batches made smaller after running out of memory
        self._flush()                                 # the batch before this one: its PNGs had the GPU's time
        self.report_progress(plan.iteration, "score", self._round_position, count)
        self.renderer.score(todo, images)
        pngs = [(c, images[c.id]) for c in todo if c.ok]
        writing = self._png_pool.submit(self.record.write_pngs, pngs) if pngs else None
        self._unrecorded.append((plan, batch, images, writing, count))
        if todo and self._early_starts:
            self._start_parents_early(plan, stream)

    def _start_parents_early(self, plan: RoundPlan, stream) -> None:
        """Ask the next round's parents that are already certain, whatever the rest of this round scores, for
        their children now (early.py): their answers are written while this round's last images render."""
        if plan.nudged or not plan.candidates:
            return
        unplanned = max(0, stream.expected - len(plan.candidates) - len(plan.duplicates))
        remaining = still_to_score(plan.candidates, unplanned)
        best_before = max((it["best_total"] for it in self.iterations if it.get("best_total") is not None),
                          default=None)
        if not next_round_certain(self.config, plan.iteration, plan.candidates, remaining, best_before,
                                  self._rounds_without_gain()):
            return
        everyone = {**self.candidates, **{c.id: c for c in plan.candidates}}
        critic = self.planner.critic is not None
        for parent in certain_survivors(self.survivors, plan.candidates, remaining, self.config.keep_top):
            if critic and parent in self.survivors:
                continue     # what the critic saw in it this round is recorded when its unit is taken: wait
            self.planner.start_early(plan.iteration + 1, parent, edit_history(everyone, parent.id), self.known,
                                     image=self._image_now(parent) if critic else None)

    def _image_now(self, candidate: Candidate) -> torch.Tensor:
        """A candidate's image, also while its batch is still being recorded."""
        for _, _, images, _, _ in self._unrecorded:
            if candidate.id in images:
                return images[candidate.id]
        return self.image_of(candidate)

    def _flush(self) -> None:
        """Record the rendered batches, in plan order, once their PNGs are on disk: report entry, in-memory image,
        on_candidate and progress, candidate by candidate."""
        while self._unrecorded:
            plan, batch, images, writing, count = self._unrecorded.popleft()
            if writing is not None:
                writing.result()                      # a PNG that could not be written fails the run, as before
            for candidate in batch:
                self._round_position += 1
                if self.record.has_candidate(candidate.id):
                    continue
                image = images.get(candidate.id) if candidate.ok else None
                self.record.add_candidate(candidate)      # its PNG is written above
                self.candidates[candidate.id] = candidate
                if image is not None:
                    self.images[candidate.id] = image
                self.images_done += 1
                if self.callbacks.on_candidate:
                    self.callbacks.on_candidate(candidate, image)
                self.report_progress(plan.iteration, "score", self._round_position, count)

    def _select(self, plan: RoundPlan, finished: list[Candidate]) -> Optional[str]:
        for candidate in finished:
            if candidate.ok:     # a failed prompt may be tried again by another parent
                self.known.add(candidate)
        self._round_position = 0
        self._batches = 0
        ranked, judged = rank({c.id: c for c in [*self.survivors, *finished]}.values()), None
        if self.judging is not None:
            self.report_progress(plan.iteration, "judge", 0, 0)
            started = time.perf_counter()
            try:
                ranked, judged = self.judging.order(plan.iteration, ranked)
            finally:
                self._judge_s += time.perf_counter() - started
        survivors = ranked[:self.config.keep_top]
        failed = [c.id for c in finished if c.status == STATUS_FAILED]
        best = survivors[0] if survivors else None
        entry = {"iteration": plan.iteration, "dimension": plan.dimension,
                 "candidates": [c.id for c in finished], "survivors": [c.id for c in survivors],
                 "failed": failed, "duplicates": plan.duplicates,
                 "best": best.id if best else None, "best_total": best.total if best else None}
        if judged is not None:
            entry["judge"] = judged
        if plan.nudged:
            entry["nudged"] = True
        self.iterations.append(entry)
        self.survivors = survivors
        now = self._phase_totals()
        self._round_timings.append({"iteration": plan.iteration,
                                    **{key: now[key] - self._round_start[key] for key in now}})
        self._save_timings()
        leaves = (best.id, lineage(self.candidates, best.id), [c.id for c in survivors]) if best else None
        self.record.add_iteration(entry, best=leaves)
        keep = {c.id for c in survivors}
        self.images = {key: value for key, value in self.images.items() if key in keep}
        reason = self._stop_reason(plan.iteration, finished, failed)
        self._beam_stopped = reason is not None      # before the event, so its total already counts no more rounds
        self.report_progress(plan.iteration, "select", len(finished), len(finished))
        return reason

    def _stop_reason(self, iteration: int, finished: list, failed: list) -> Optional[str]:
        """Checked after every round, in this order: failures, target, exhausted, patience, time budget,
        iterations. Exhausted: the round brought no new candidate (every child repeated an earlier prompt, even
        when asked once more)."""
        if not self.survivors or len(failed) * 2 > len(finished):
            return "failures"
        best = self.survivors[0].total
        if self.config.target_score is not None and best >= self.config.target_score:
            return "target"
        if not finished:
            return "exhausted"
        if self.config.patience is not None and self._rounds_without_gain() >= self.config.patience:
            return "patience"
        if self.config.time_budget_s is not None and time.monotonic() - self._started >= self.config.time_budget_s:
            return "time_budget"
        if iteration + 1 >= self.config.iterations:
            return "max_iterations"
        return None

    def _rounds_without_gain(self) -> int:
        """Rounds since the best total last strictly improved (round 0 sets the first best)."""
        totals = [it["best_total"] for it in self.iterations if it.get("best_total") is not None]
        since, best = 0, None
        for total in totals:
            if best is None or total > best:
                best, since = total, 0
            else:
                since += 1
        return since

    def _pool(self, iteration: int) -> list[Candidate]:
        """The candidates that competed in a round's selection: its parents and its new candidates."""
        entry = self.iterations[iteration]
        parents = self.iterations[iteration - 1]["survivors"] if iteration > 0 else []
        return [self.candidates[i] for i in list(parents) + list(entry["candidates"]) if self.candidates[i].ok]

    def _unload_llm(self) -> None:
        """Low-VRAM mode: free the LLM's memory before Flux needs it (Ollama keep_alive=0)."""
        client = getattr(self.ops, "client", None)
        if client is None or not hasattr(client, "unload"):
            return
        try:
            client.unload()
        except Exception as exc:   # an unload that fails must not stop the search; say so in the record
            log.warning("could not unload the Ollama model: %s", exc)
            self.record.warn(f"could not unload the LLM before generation: {describe_error(exc)}")

    # ---- progress, timings, result ------------------------------------------------------------------------------
    def image_budget(self) -> int:
        """report["images"]["budget"]: the most images the configured run can render (exact once the control arm
        has its budget)."""
        control = self.record.report.get("control")
        if control:
            return len(self.candidates) + control["budget"]
        return max(self.config.planned_images, self.images_done)

    def images_total(self) -> int:
        """The images this run will render as planned now, for progress displays. It shrinks as the plan is
        revised: a round's dropped near-duplicates are not rendered, and once the beam stops (target, patience,
        time budget, failures) no further round is. So a finished search ends with images_done == images_total."""
        control = self.record.report.get("control")
        if control:
            return len(self.candidates) + control["budget"]
        config = self.config
        current, current_round0 = self._round_remaining()
        rounds_started = len(self.iterations) + (1 if self._round is not None else 0)
        per_round = [config.beam_width if r == 0 else config.keep_top * config.children_per_parent
                     for r in range(rounds_started, config.iterations)] if not self._beam_stopped else []
        beam = len(self.candidates) + current + sum(per_round)
        if not config.control_arm:
            return beam
        # The control arm spends what the beam renders after round 0 (estimated until it starts, exact after).
        if rounds_started == 0:
            round0 = config.beam_width
        else:
            round0 = sum(1 for c in self.candidates.values() if c.iteration == 0) + current_round0
        return beam + beam - round0

    def _round_remaining(self) -> tuple[int, int]:
        """(images of the round in flight not recorded yet, of which in round 0): its planned candidates still to
        finish, plus what its units still to answer will plan (their dropped near-duplicates never count)."""
        if self._round is None:
            return 0, 0
        plan = self._round.plan
        unrecorded = sum(1 for c in plan.candidates if c.id not in self.candidates)
        unplanned = max(0, self._round.expected - len(plan.candidates) - len(plan.duplicates))
        remaining = unrecorded + unplanned
        return remaining, remaining if plan.iteration == 0 else 0

    def report_progress(self, iteration: int, phase: str, position: int, count: int) -> None:
        if self.callbacks.on_progress is None:
            return
        best = self.survivors[0].total if self.survivors else None
        self.callbacks.on_progress(ProgressEvent(iteration, self.config.iterations, position, count,
                                                 self.images_done, self.images_total(), best, phase))

    def _phase_totals(self) -> dict:
        return {"llm_s": self._llm_s, "generate_s": self.renderer.generate_s, "score_s": self.renderer.score_s}

    def _save_timings(self) -> None:
        base = self._timings_at_start
        timings = self.record.report["timings"]
        timings["llm_s"] = base["llm_s"] + self._llm_s
        timings["generate_s"] = base["generate_s"] + self.renderer.generate_s
        timings["score_s"] = base["score_s"] + self.renderer.score_s
        timings["llm_work_s"] = self._llm_work_s
        if self.judging is not None:
            timings["judge_s"] = base.get("judge_s", 0.0) + self._judge_s
        timings["wall_s"] = base["wall_s"] + (time.monotonic() - self._started)
        timings["compile_s"] = base.get("compile_s", 0.0) + self._compile_s
        timings["rounds"] = list(self._round_timings)
        start = self._llm_at_start
        self.record.report["llm"] = {
            "calls": start["calls"] + self.planner.calls, "fallbacks": start["fallbacks"] + self.planner.fallbacks,
            "critic_calls": start.get("critic_calls", 0) + self.planner.critic_calls,
            "judge_calls": start.get("judge_calls", 0) + (self.judging.requests if self.judging else 0)}
        self.record.report["images"]["budget"] = self.image_budget()

    def _close(self, stop_reason: Optional[str], status: str, error: Optional[str]) -> None:
        self._png_pool.shutdown(wait=True)
        self._save_timings()
        try:
            self.record.finish(stop_reason, status, error)
        except OSError as exc:
            raise_if_not_writable(exc, self.record.run_dir)
            raise

    def image_of(self, candidate: Candidate) -> torch.Tensor:
        if candidate.id in self.images:
            return self.images[candidate.id]
        return self.record.load_image(candidate.image)

    def result(self) -> SearchResult:
        report = self.record.report
        finalists = list(self.survivors)
        images = [self.image_of(c) for c in finalists]
        return SearchResult(run_dir=self.record.run_dir, report=report, stop_reason=report["stop_reason"],
                            best=finalists[0], best_image=images[0], finalists=finalists,
                            finalist_images=torch.stack(images), control=report.get("control"))


def _recorded_batches(candidates: list) -> list[list]:
    """A recorded round's candidates in the batches they were rendered and scored in (Candidate.batch), in plan
    order: the same images batched alike score alike to the last float32 bit. Records from before batches were
    recorded render as one batch."""
    groups: dict = {}
    for candidate in candidates:
        groups.setdefault(candidate.batch, []).append(candidate)
    return list(groups.values())
