"""The control arm: does prompt search beat plain seed search at the same image budget?

Both arms share round 0. The beam then spent B images on refined prompts; the control spends the same B images
on fresh seeds of round 0's best prompt. report["control"] holds both bests (docs/report-schema.md).
"""
from __future__ import annotations

from typing import Protocol

from ..record.pnginfo import PREFIX
from ..record.report import RunRecord
from .config import BeamConfig
from .render import RoundRenderer
from .selection import derive_seed, rank
from .types import STAGE_LLM, Candidate


class SearchRun(Protocol):
    """What the control arm reads of the run it follows (run.SearchRun, which imports this module)."""
    record: RunRecord
    config: BeamConfig
    renderer: RoundRenderer
    candidates: dict
    survivors: list
    images_done: int
    iterations: list             # report["iterations"] so far

    def report_progress(self, iteration: int, phase: str, position: int, count: int) -> None: ...


def control_budget(run: "SearchRun") -> int:
    """Images the beam rendered after round 0 (LLM failures never reached the generator, so they don't count)."""
    return sum(1 for c in run.candidates.values() if c.iteration >= 1 and c.failed_stage != STAGE_LLM)


def run_control_arm(run: "SearchRun", beam_stop_reason: str) -> None:
    record, config = run.record, run.config
    control = record.report.get("control")
    if control is not None and control.get("status") == "done":
        return
    if control is None:
        round0 = rank(c for c in run.candidates.values() if c.iteration == 0)
        if not round0:
            return
        source = round0[0]
        control = {
            "prompt": source.prompt, "negative": source.negative, "what": source.what, "how": source.how,
            "source": source.id, "budget": control_budget(run), "status": "running",
            "beam_stop_reason": beam_stop_reason,
            "seeds": [], "images": [], "scores": [], "errors": [],
            "best": {"seed": source.seed, "scores": source.scores, "image": source.image, "source": source.id},
            "beam_best": None, "best_total": source.total, "beam_best_total": None, "delta_total": None,
        }
    record.update(control=control)
    source = run.candidates[control["source"]]
    seeds = [derive_seed(config.seed, "control", j) for j in range(control["budget"])]
    iteration = len(run.iterations) - 1

    # Same batch size as a round, so the control arm has the same memory profile as the beam.
    while len(control["seeds"]) < control["budget"]:
        start = len(control["seeds"])
        chunk = [Candidate(id=f"control_{j}", iteration=-1, index=j, parent=source.id, dimension=None,
                           what=source.what, how=source.how, prompt=source.prompt, negative=source.negative,
                           seed=seeds[j])
                 for j in range(start, min(start + config.beam_width, control["budget"]))]
        images = run.renderer.generate(chunk)
        run.renderer.score(chunk, images)
        record.write_pngs([(c, images[c.id]) for c in chunk if c.ok], extra_text={PREFIX + "arm": "control"})
        for candidate in chunk:
            name = candidate.image     # control_{j}.png, or None for a failed seed
            control["seeds"].append(candidate.seed)
            control["images"].append(name)
            control["scores"].append(candidate.scores)
            control["errors"].append(candidate.error)
            best_total = (control["best"]["scores"] or {}).get("total", float("-inf"))
            if candidate.ok and candidate.total > best_total:
                control["best"] = {"seed": candidate.seed, "scores": candidate.scores, "image": name,
                                   "source": candidate.id}
                control["best_total"] = candidate.total
            run.images_done += 1
            record.update(control=control)
            run.report_progress(iteration, "control", len(control["seeds"]), control["budget"])

    beam_best = run.survivors[0]
    control["beam_best"] = {"id": beam_best.id, "prompt": beam_best.prompt, "seed": beam_best.seed,
                            "scores": beam_best.scores, "image": beam_best.image}
    control["best_total"] = control["best"]["scores"]["total"]
    control["beam_best_total"] = beam_best.total
    control["delta_total"] = beam_best.total - control["best_total"]
    control["status"] = "done"
    record.update(control=control)
