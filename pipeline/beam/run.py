"""One execution of a beam search over a run record: the round loop, selection, stopping and the record.

A SearchRun starts from whatever the record already holds (nothing for a new run; finished rounds and the
round in flight for a resumed one), so run, resume and replay share this code.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Optional

import torch

from ..errors import GenerationFailed, Interrupted, PromptBeamError
from ..record.report import RunRecord
from ..record.storage import not_writable, raise_if_not_writable, storage_failure
from .config import BeamConfig
from .control import run_control_arm
from .planning import KnownPrompts, RoundPlan, RoundPlanner
from .render import RoundRenderer
from .selection import lineage, select_survivors
from .types import (STATUS_FAILED, STATUS_PENDING, Candidate, ProgressEvent, SearchCallbacks, SearchResult,
                    StopRequested, describe_error)

log = logging.getLogger(__name__)


class SearchRun:
    def __init__(self, ops, generator, scorer, config: BeamConfig, callbacks: SearchCallbacks,
                 record: RunRecord, recorded_plans=None):
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
        self.planner = RoundPlanner(ops, config, self.user_prompt, self.check_stop)
        self.renderer = RoundRenderer(generator, scorer, config, callbacks, self.check_stop, self.should_stop,
                                      config.score_text or self.user_prompt)
        self._llm_s = 0.0
        self._round_start = self._phase_totals()
        self._llm_at_start = dict(record.report["llm"])
        self._round_timings: list = list(record.report["timings"].get("rounds", []))
        self._beam_stopped = False     # set once the rounds are over: no further round counts in images_total

    # ---- stop checks --------------------------------------------------------------------------------------------
    def should_stop(self) -> bool:
        return bool(self.callbacks.should_stop and self.callbacks.should_stop())

    def check_stop(self) -> None:
        if self.should_stop():
            raise StopRequested()

    # ---- the whole run ------------------------------------------------------------------------------------------
    def execute(self) -> SearchResult:
        stop_reason, status = None, "finished"
        try:
            control = self.record.report.get("control")
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

    def _rounds(self) -> str:
        while True:
            iteration = len(self.iterations)
            if iteration >= self.config.iterations:
                return self._beam_over("max_iterations")
            if self.recorded_plans is not None and iteration >= self.recorded_plans.rounds:
                return self._beam_over(self.recorded_plans.stop_reason)
            plan = self._plan(iteration)
            if self.config.low_vram and self.ops is not None:
                self._unload_llm()
            finished = self._render(plan)
            reason = self._select(plan, finished)
            if reason:
                return reason

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
    def _plan(self, iteration: int) -> RoundPlan:
        pending = self.record.report.get("pending")
        self._round_start = self._phase_totals()
        if pending and pending.get("iteration") == iteration:
            # Resuming the round in flight: its LLM work is on record, finished candidates are kept.
            return RoundPlan(iteration, pending.get("dimension"),
                             [Candidate.from_dict(c) for c in pending["candidates"]], list(pending["duplicates"]))
        self.report_progress(iteration, "llm", 0, 0)
        started = time.perf_counter()
        try:
            if self.recorded_plans is not None:
                plan = self.recorded_plans.plan(iteration)
            elif iteration == 0:
                plan = self.planner.plan_initial(self.known)
            else:
                plan = self.planner.plan_refinement(iteration, self.survivors, self._pool(iteration - 1),
                                                    self.candidates, self.known)
        finally:
            self._llm_s += time.perf_counter() - started
            self._save_timings()
        self.record.set_pending(plan.candidates, iteration, plan.duplicates, plan.dimension)
        return plan

    def _render(self, plan: RoundPlan) -> list[Candidate]:
        todo = [c for c in plan.candidates if c.status == STATUS_PENDING and not self.record.has_candidate(c.id)]
        self.report_progress(plan.iteration, "generate", 0, len(plan.candidates))
        images = self.renderer.generate(todo)
        self.report_progress(plan.iteration, "score", 0, len(plan.candidates))
        self.renderer.score(todo, images)
        self.record.write_pngs([(c, images[c.id]) for c in todo if c.ok])
        finished = []
        for position, candidate in enumerate(plan.candidates, start=1):
            if self.record.has_candidate(candidate.id):
                finished.append(self.candidates[candidate.id])
                continue
            image = images.get(candidate.id) if candidate.ok else None
            self.record.add_candidate(candidate)      # its PNG is written above
            self.candidates[candidate.id] = candidate
            if candidate.ok:     # a failed prompt may be tried again by another parent
                self.known.add(candidate)
            if image is not None:
                self.images[candidate.id] = image
            self.images_done += 1
            finished.append(candidate)
            if self.callbacks.on_candidate:
                self.callbacks.on_candidate(candidate, image)
            self.report_progress(plan.iteration, "score", position, len(plan.candidates))
        return finished

    def _select(self, plan: RoundPlan, finished: list[Candidate]) -> Optional[str]:
        survivors = select_survivors(self.survivors, finished, self.config.keep_top)
        failed = [c.id for c in finished if c.status == STATUS_FAILED]
        best = survivors[0] if survivors else None
        entry = {"iteration": plan.iteration, "dimension": plan.dimension,
                 "candidates": [c.id for c in finished], "survivors": [c.id for c in survivors],
                 "failed": failed, "duplicates": plan.duplicates,
                 "best": best.id if best else None, "best_total": best.total if best else None}
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
        """Checked after every round, in this order: failures, target, patience, time budget, iterations."""
        if not self.survivors or len(failed) * 2 > len(finished):
            return "failures"
        best = self.survivors[0].total
        if self.config.target_score is not None and best >= self.config.target_score:
            return "target"
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
        pending = self.record.report.get("pending")
        in_flight = [c for c in (pending or {}).get("candidates", []) if c["id"] not in self.candidates]
        rounds_started = len(self.iterations) + (1 if pending else 0)
        per_round = [config.beam_width if r == 0 else config.keep_top * config.children_per_parent
                     for r in range(rounds_started, config.iterations)] if not self._beam_stopped else []
        beam = len(self.candidates) + len(in_flight) + sum(per_round)
        if not config.control_arm:
            return beam
        # The control arm spends what the beam renders after round 0 (estimated until it starts, exact after).
        round0 = sum(1 for c in self.candidates.values() if c.iteration == 0) + \
            sum(1 for c in in_flight if c["iteration"] == 0)
        if rounds_started == 0:
            round0 = config.beam_width
        return beam + beam - round0

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
        timings["wall_s"] = base["wall_s"] + (time.monotonic() - self._started)
        timings["rounds"] = list(self._round_timings)
        self.record.report["llm"] = {"calls": self._llm_at_start["calls"] + self.planner.calls,
                                     "fallbacks": self._llm_at_start["fallbacks"] + self.planner.fallbacks}
        self.record.report["images"]["budget"] = self.image_budget()

    def _close(self, stop_reason: Optional[str], status: str, error: Optional[str]) -> None:
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

