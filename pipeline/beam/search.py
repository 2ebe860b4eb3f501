"""Beam search over (WHAT, HOW) prompt pairs: the controller the CLI, the ComfyUI node and the services call.

    search = BeamSearch(ops, generator, scorer, BeamConfig(beam_width=4, keep_top=2, iterations=3, seed=7))
    result = search.run("a lighthouse in a storm", out_root="runs")
    result.best.prompt, result.best_image, result.report["lineage"]

A round streams (stream.py): its LLM work runs in units (round 0: requests of two pairs; round k: one request
per surviving parent, critique and children together), at most llm_concurrency at once, and each unit's
candidates are rendered and scored as one batch, in plan order, while later units are still with the LLM. With
low_vram the round is phase-ordered instead: all LLM work -> Ollama unload -> one batch. Then elitist selection.
Round 0 expands the user prompt into N pairs; round k refines one half per surviving parent from a critique of
its scores. Everything lands in a run directory
(pipeline/record/) as it happens, so a run can be resumed after an interrupt and replayed without the LLM.
The collaborators are passed in; nothing here imports ComfyUI or constructs a model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from ..errors import InvalidParameter
from ..record.report import REPORT_NAME, RunRecord
from ..record.storage import raise_if_not_writable
from .config import REPLAY_OVERRIDES, RESUME_OVERRIDES, BeamConfig
from .judging import recorded_judgements
from .planning import RoundPlan
from .run import SearchRun
from .types import STAGE_LLM, STATUS_PENDING, Candidate, ProgressEvent, SearchCallbacks, SearchResult, candidate_id

__all__ = ["BeamConfig", "BeamSearch", "Candidate", "ProgressEvent", "SearchCallbacks", "SearchResult",
           "candidate_id", "RESUME_OVERRIDES", "REPLAY_OVERRIDES"]

PathLike = Union[str, os.PathLike]
_FINAL_STOP_REASONS = ("patience", "target")


class BeamSearch:
    """critic: prompt operations over a vision model (PromptEngine) that look at each parent's image before its
    children are written; the same model as `ops` looks inside the children request, another one first, on its
    own. judge: a pairwise vision judge (llm.vision.PairwiseJudge) that re-orders the candidates near the
    keep_top cut (beam/judging.py; BeamConfig.judge_budget, judge_margin)."""

    def __init__(self, ops, generator, scorer, config: BeamConfig, callbacks: Optional[SearchCallbacks] = None,
                 critic=None, judge=None):
        self.ops = ops
        self.generator = generator
        self.scorer = scorer
        self.config = config.validate()
        self.callbacks = callbacks or SearchCallbacks()
        if critic is not None and not hasattr(critic, "evaluate_image"):
            raise InvalidParameter("critic", f"{type(critic).__name__} cannot look at images (no evaluate_image); "
                                             f"pass a PromptEngine over an Ollama vision model")
        if critic is not None and ops is not None and not hasattr(ops, "refine_children"):
            raise InvalidParameter("critic", "needs prompt operations that write a parent's children in one request "
                                             "(PromptEngine.refine_children)")
        if judge is not None and not all(hasattr(judge, name) for name in ("ask", "encode", "judgement")):
            raise InvalidParameter("judge", f"{type(judge).__name__} is not a pairwise judge (ask, encode, "
                                            f"judgement); pass a pipeline.llm.PairwiseJudge")
        self.critic = critic
        self.judge = judge
        # Extra JSON-safe entries for report["config"] (e.g. the CLI's model choices, so --resume can reload them).
        self.extra_config: dict = {}

    def run(self, user_prompt: str, out_root: PathLike, run_id: Optional[str] = None) -> SearchResult:
        """Search from scratch. The run directory is <out_root>/<run_id>/ (a fresh id when None)."""
        if not isinstance(user_prompt, str) or not user_prompt.strip():
            raise InvalidParameter("prompt", "must be a non-empty description of the image you want")
        if self.ops is None:
            raise InvalidParameter("llm", "a new search needs the prompt operations (an LLM); replay needs none")
        record = RunRecord.create(out_root, user_prompt.strip(), self._record_config(self.config), run_id)
        return self._search_run(self.config, record).execute()

    def resume(self, run_dir: PathLike, overrides: Optional[Mapping[str, Any]] = None) -> SearchResult:
        """Continue a run from its report.json: finish the round in flight from its recorded plan (finished
        candidates are not rendered again), then go on with the recorded parameters.

        The recorded config wins over this object's config; `overrides` may change RESUME_OVERRIDES, e.g.
        {"iterations": 5} to extend a finished run. A run that stopped on patience or target is returned as it
        is unless overrides are given.
        """
        record = RunRecord.open(run_dir)
        report = record.report
        if report.get("replay_of"):
            raise InvalidParameter("run_dir", f"{run_dir} is a replay: replay its source again instead of resuming")
        config = _with_overrides(BeamConfig.from_dict(report["config"]), overrides, RESUME_OVERRIDES)
        if overrides:
            report["config"].update({k: getattr(config, k) for k in overrides})
            report.setdefault("resumed", []).append({"from_stop_reason": report["stop_reason"],
                                                     "overrides": dict(overrides)})
        run = self._search_run(config, record)
        if report["stop_reason"] in _FINAL_STOP_REASONS and not overrides and run.survivors:
            return run.result()
        report["status"] = "running"
        try:
            record.save()
        except OSError as exc:
            raise_if_not_writable(exc, record.run_dir)      # e.g. resumed while the disk is still full
            raise
        return run.execute()

    @classmethod
    def replay(cls, report_path: PathLike, generator, scorer, out_root: PathLike,
               callbacks: Optional[SearchCallbacks] = None, run_id: Optional[str] = None,
               overrides: Optional[Mapping[str, Any]] = None) -> SearchResult:
        """Render and score a recorded run's prompts again (same seeds, recorded LLM outputs, no LLM calls) into
        a new run directory. Selection is recomputed from the new scores; see docs/report-schema.md."""
        path = Path(report_path)
        if path.is_dir():
            path = path / REPORT_NAME
        source = RunRecord.open(path.parent).report
        if not source["iterations"]:
            raise InvalidParameter("report", f"{path} has no finished round to replay")
        config = _with_overrides(BeamConfig.from_dict(source["config"]), overrides, REPLAY_OVERRIDES)
        search = cls(None, generator, scorer, config, callbacks)
        record_config = search._record_config(config)
        record_config["llm"] = source["config"].get("llm")
        record_config["judge"] = source["config"].get("judge")
        record = RunRecord.create(out_root, source["user_prompt"], record_config, run_id,
                                  replay_of={"run_id": source["run_id"], "report": str(path.resolve())})
        # The source's verdicts stand in for its judge: the pairs it decided are looked up, none is asked.
        verdicts = recorded_judgements(source.get("judgements") or [])
        return SearchRun(None, generator, scorer, config, search.callbacks, record,
                         recorded_plans=RecordedPlans(source), recorded_verdicts=verdicts).execute()

    def _search_run(self, config: BeamConfig, record: RunRecord) -> SearchRun:
        return SearchRun(self.ops, self.generator, self.scorer, config, self.callbacks, record,
                         critic=self.critic, judge=self.judge)

    def _record_config(self, config: BeamConfig) -> dict:
        data = config.to_dict()
        data["generator"] = _describe(self.generator)
        data["scorer"] = _describe(self.scorer)
        data["llm"] = _describe_llm(self.ops)
        data["critic"] = _describe_llm(self.critic)
        data["judge"] = _describe(self.judge) if self.judge is not None else None
        data.update(_json_safe(self.extra_config))
        return data


class RecordedPlans:
    """Round plans read back from a report: the LLM's recorded outputs stand in for the LLM."""

    def __init__(self, report: dict):
        self._entries = list(report["iterations"])
        self._candidates = {entry["id"]: entry for entry in report["candidates"]}
        self.rounds = len(self._entries)
        reason = report.get("stop_reason")
        # A source that was interrupted or crashed replays every round it finished, then ends normally.
        self.stop_reason = reason if reason in ("max_iterations", "patience", "target", "time_budget",
                                                "failures", "exhausted") else "max_iterations"

    def plan(self, iteration: int) -> RoundPlan:
        entry = self._entries[iteration]
        candidates = []
        for cid in entry["candidates"]:
            candidate = Candidate.from_dict(self._candidates[cid])
            if candidate.failed_stage != STAGE_LLM:   # the LLM failures of the source stay failures
                candidate.status, candidate.error, candidate.failed_stage = STATUS_PENDING, None, None
                candidate.image = candidate.scores = candidate.caption = candidate.evaluation = None
            candidates.append(candidate)
        return RoundPlan(iteration, entry.get("dimension"), candidates, list(entry.get("duplicates", [])),
                         nudged=bool(entry.get("nudged")))


def _with_overrides(config: BeamConfig, overrides: Optional[Mapping[str, Any]], allowed: tuple) -> BeamConfig:
    for key, value in (overrides or {}).items():
        if key not in allowed:
            raise InvalidParameter(key, f"cannot be changed here (changeable: {', '.join(allowed)})")
        setattr(config, key, value)
    return config.validate()


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _describe(component) -> dict:
    describe = getattr(component, "describe", None)
    if describe is None:
        return {"type": type(component).__name__}
    try:
        return _json_safe(describe())
    except Exception as exc:   # a description is informative only; never let it stop a run
        return {"type": type(component).__name__, "describe_error": str(exc)}


def _describe_llm(ops) -> Optional[dict]:
    if ops is None:
        return None
    if hasattr(ops, "describe"):
        return _describe(ops)
    client = getattr(ops, "client", None)
    return _json_safe({"type": type(ops).__name__, "model": getattr(client, "model", None),
                       "base_url": getattr(client, "base_url", None),
                       "temperature": getattr(ops, "temperature", None)})
