"""The evaluation loop: for each prompt of the plan, a beam search with its equal-budget seed-only control arm
(BeamConfig.control_arm: the images the beam rendered after round 0, spent on fresh seeds of round 0's best
prompt), then every judge's verdict on the two winners, each arm's winner being the best by the search's own
total. eval.json is saved after every prompt, so an interrupt loses at most the prompt in flight, and --resume
goes on from there (a prompt's interrupted search resumes from its own record).

    evaluation = Evaluation(record, make_search, judges)
    evaluation.run()            # -> the record, finished; Interrupted when should_stop() answered True
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from PIL import Image

from ..errors import GenerationFailed, Interrupted, PromptBeamError, ScoringFailed
from ..images import pil_to_tensor
from .prompt_sets import PromptItem
from .record import EvalRecord, run_id
from .stats import overall_verdict

REPORT = "report.json"


class Evaluation:
    def __init__(self, record: EvalRecord, make_search: Callable[[], object], judges: Sequence,
                 on_prompt: Optional[Callable[[int, Optional[dict]], None]] = None,
                 should_stop: Optional[Callable[[], bool]] = None):
        self.record = record
        self.make_search = make_search          # () -> a BeamSearch with the eval's config and collaborators
        self.judges = list(judges)
        self.on_prompt = on_prompt or (lambda index, entry: None)
        self.should_stop = should_stop or (lambda: False)

    def run(self) -> EvalRecord:
        judged = self.record.judged()
        for index, item in enumerate(self.record.plan):
            if index in judged:
                continue
            if self.should_stop():
                self._interrupted(index)
            try:
                report = self.search(index, item)
            except (GenerationFailed, ScoringFailed) as exc:
                # Nothing of this prompt could be rendered or scored: say so in the record and go on; the other
                # prompts still measure something, and --resume tries this one again.
                self.record.add_failure(index, item, " ".join(str(exc).split()))
                self.on_prompt(index, None)
                continue
            if report is None:
                self._interrupted(index)
            entry = self.judge(index, item, report)
            self.record.add(entry)
            self.on_prompt(index, entry)
        self.record.finish("finished")
        return self.record

    def _interrupted(self, index: int) -> None:
        self.record.finish("interrupted")
        raise Interrupted(f"stopped at prompt {index + 1} of {len(self.record.plan)}; the eval is in "
                          f"{self.record.eval_dir}")

    # ---- one prompt -----------------------------------------------------------------------------------------
    def search(self, index: int, item: PromptItem) -> Optional[dict]:
        """The prompt's finished report (its run resumed when an earlier eval left it unfinished); None when the
        search was interrupted."""
        run_dir = self.record.runs_dir / run_id(index)
        if (run_dir / REPORT).is_file():
            report = json.loads((run_dir / REPORT).read_text(encoding="utf-8"))
            if _finished(report):
                return report
            search = self.make_search()
            try:
                result = search.resume(run_dir)
            except Interrupted:
                return None
        else:
            search = self.make_search()
            try:
                result = search.run(item.prompt, self.record.runs_dir, run_id=run_id(index))
            except Interrupted:
                return None
        if result.stop_reason == "interrupted" or not _finished(result.report):
            return None
        return result.report

    def judge(self, index: int, item: PromptItem, report: dict) -> dict:
        run_dir = self.record.runs_dir / run_id(index)
        best = next(c for c in report["candidates"] if c["id"] == report["best"])
        control = report["control"]["best"]
        beam_image, control_image = _load(run_dir / best["image"]), _load(run_dir / control["image"])
        started = time.perf_counter()
        verdicts, gains, judge_scores, notes = {}, {}, {}, {}
        for judge in self.judges:
            verdict = judge.verdict(item.prompt, beam_image, control_image)
            verdicts[judge.name], gains[judge.name] = verdict.winner, verdict.gain
            if verdict.beam is not None:
                judge_scores[judge.name] = {"beam": verdict.beam, "control": verdict.control}
            if verdict.note:
                notes[judge.name] = verdict.note
        judging_s = time.perf_counter() - started
        relative = Path("runs") / run_id(index)
        control_images = [name for name in report["control"].get("images") or () if name]
        return {
            "index": index, "prompt": item.prompt, "category": item.category,
            "beam": {"run_dir": relative.as_posix(), "best": best["id"],
                     "image": (relative / best["image"]).as_posix(), "scores": best["scores"]},
            "control": {"best": control.get("source"), "image": (relative / control["image"]).as_posix(),
                        "scores": control.get("scores")},
            "verdicts": verdicts, "verdict": overall_verdict(verdicts), "gains": gains,
            "judge_scores": judge_scores, "notes": notes, "same_image": best["image"] == control["image"],
            "images": sum(1 for c in report["candidates"] if c.get("image")) + len(control_images),
            "seconds": round(float((report.get("timings") or {}).get("wall_s") or 0.0) + judging_s, 3),
        }


def _finished(report: dict) -> bool:
    control = report.get("control") or {}
    return report.get("status") == "finished" and control.get("status") == "done"


def _load(path: Path):
    if not path.is_file():
        raise PromptBeamError(f"{path} is missing: the run record lists it as a winner's image")
    with Image.open(path) as picture:
        return pil_to_tensor(picture)
