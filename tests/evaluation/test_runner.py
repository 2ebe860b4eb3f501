"""The evaluation loop end to end on tiny real models: both arms at the same budget, each judge's verdict on the
two winners, the win rate and its interval from the record, and --resume after an interrupt between prompts and
inside one prompt's search."""
from __future__ import annotations

import json

import pytest

from pipeline.errors import Interrupted
from pipeline.evaluation.record import EvalRecord
from pipeline.evaluation.runner import Evaluation
from tests.evaluation.conftest import PROMPTS, ScriptedJudge, new_record
from tests.evaluation.test_stats import reference_bootstrap

# Judge "split" says beam, beam, beam, control, tie for the five prompts; "always" prefers the beam every time.
SPLIT = {PROMPTS[3].prompt: "control", PROMPTS[4].prompt: "tie"}


def judges():
    return [ScriptedJudge("always", {}), ScriptedJudge("split", SPLIT)]


def check_arithmetic(record: EvalRecord) -> None:
    summary = record.data["summary"]
    # Majority of two judges: beam+beam -> beam, beam+control -> tie, beam+tie -> beam.
    assert [e["verdict"] for e in record.data["prompts"]] == ["beam", "beam", "beam", "tie", "beam"]
    assert (summary["n"], summary["beam_wins"], summary["control_wins"], summary["ties"]) == (5, 4, 0, 1)
    assert summary["win_rate"] == pytest.approx(0.9)
    assert summary["ci95"] == reference_bootstrap([1, 1, 1, 0.5, 1], 2000, 0)
    assert summary["per_judge"]["always"] == {"n": 5, "beam_wins": 5, "control_wins": 0, "ties": 0, "win_rate": 1.0,
                                              "ci95": [1.0, 1.0]}
    assert summary["per_judge"]["split"]["win_rate"] == pytest.approx(0.7)
    assert summary["per_judge"]["split"]["ci95"] == reference_bootstrap([1, 1, 1, 0, 0.5], 2000, 0)
    assert summary["mean_gain"] == pytest.approx({"always": 1.0, "split": (1 + 1 + 1 - 2 + 0) / 5})


def test_each_prompt_runs_both_arms_and_every_judge_sees_the_two_winners(tmp_path, make_search):
    record = new_record(tmp_path, judges())
    scripted = judges()
    make = make_search()
    Evaluation(record, make, scripted).run()
    assert make.count == 5 and record.data["status"] == "finished"
    check_arithmetic(EvalRecord.open(record.eval_dir))          # what is on disk, not only in memory
    for index, entry in enumerate(record.data["prompts"]):
        run_dir = record.eval_dir / entry["beam"]["run_dir"]
        report = json.loads((run_dir / "report.json").read_text())
        control = report["control"]
        assert report["user_prompt"] == PROMPTS[index].prompt and entry["category"] == PROMPTS[index].category
        # Equal budget: the control arm spent exactly the images the beam rendered after round 0.
        assert control["budget"] == sum(1 for c in report["candidates"] if c["iteration"] >= 1) == 2
        assert entry["beam"]["best"] == report["best"] and entry["control"]["best"] == control["best"]["source"]
        assert (record.eval_dir / entry["beam"]["image"]).is_file() and (record.eval_dir /
                                                                       entry["control"]["image"]).is_file()
        # Each arm's winner is its best by the search's own total: the beam over its candidates, the control over
        # round 0 and its extra seeds.
        totals = [c["scores"]["total"] for c in report["candidates"] if c["scores"]]
        assert entry["beam"]["scores"]["total"] == max(totals)
        seeds = [s["total"] for s in control["scores"] if s] + [c["scores"]["total"] for c in report["candidates"]
                                                                if c["iteration"] == 0]
        assert entry["control"]["scores"]["total"] == max(seeds)
        assert entry["images"] == 4 + 2 and entry["judge_scores"]["always"] == {"beam": 2.0, "control": 1.0}
    assert [p for p, _, _ in scripted[0].seen] == [item.prompt for item in PROMPTS]
    assert all(shape == (64, 64, 3) for _, shape, _ in scripted[0].seen)
    page = (record.eval_dir / "eval.html").read_text()
    assert page.count('<section class="prompt"') == 5 and "90 %" in page


def test_resume_after_an_interrupt_between_prompts_and_inside_a_search(tmp_path, make_search, fake_ollama):
    record = new_record(tmp_path, judges())
    finished = []

    # Stop after two judged prompts: checked before the third prompt starts.
    make = make_search()
    with pytest.raises(Interrupted, match="stopped at prompt 3 of 5"):
        Evaluation(record, make, judges(), on_prompt=lambda i, e: finished.append(i),
                   should_stop=lambda: len(finished) >= 2).run()
    on_disk = EvalRecord.open(record.eval_dir)
    assert on_disk.data["status"] == "interrupted" and on_disk.judged() == {0, 1} and make.count == 2
    first_report = (record.eval_dir / "runs" / "p000" / "report.json").stat().st_mtime_ns

    # Resume, and stop again inside the third prompt's search, once its first image is scored.
    def inside():
        report = record.eval_dir / "runs" / "p002" / "report.json"
        return report.is_file() and len(json.loads(report.read_text())["candidates"]) >= 1
    make = make_search(should_stop=inside)
    with pytest.raises(Interrupted):
        Evaluation(EvalRecord.open(record.eval_dir), make, judges(), should_stop=inside).run()
    partial = json.loads((record.eval_dir / "runs" / "p002" / "report.json").read_text())
    assert partial["status"] == "interrupted" and EvalRecord.open(record.eval_dir).judged() == {0, 1}
    kept = {c["id"]: c["seed"] for c in partial["candidates"]}

    # Resume to the end: p000 and p001 are not searched again, p002 continues from its own record.
    make = make_search()
    resumed = Evaluation(EvalRecord.open(record.eval_dir), make, judges()).run()
    assert make.count == 3 and resumed.data["status"] == "finished"
    assert (record.eval_dir / "runs" / "p000" / "report.json").stat().st_mtime_ns == first_report
    final = json.loads((record.eval_dir / "runs" / "p002" / "report.json").read_text())
    assert final["status"] == "finished" and {c["id"]: c["seed"] for c in final["candidates"]}.items() >= kept.items()
    check_arithmetic(resumed)
    assert sorted((record.eval_dir / "runs").iterdir()) == [record.eval_dir / "runs" / f"p00{i}" for i in range(5)]


def test_a_prompt_that_renders_nothing_is_recorded_and_the_others_go_on(tmp_path, make_search, tiny_scorer,
                                                                      fake_ollama):
    from pipeline.errors import GenerationFailed

    class BrokenOnApples:
        """The tiny generator, except that every request for the apples prompt's images fails."""

        def __init__(self, inner):
            self.inner = inner

        def generate(self, requests, **kwargs):
            if any("apple" in r.prompt.lower() for r in requests):
                raise GenerationFailed("out of memory (test)")
            return self.inner.generate(requests, **kwargs)

        def describe(self):
            return self.inner.describe()

    from pipeline.beam.search import BeamSearch
    from tests.evaluation.conftest import eval_config

    make = make_search()
    inner = make().generator
    record = new_record(tmp_path, judges(), items=PROMPTS[:2])
    Evaluation(record, lambda: BeamSearch(make().ops, BrokenOnApples(inner), tiny_scorer, eval_config()),
               judges()).run()
    assert record.judged() == {1} and [f["index"] for f in record.data["failed"]] == [0]
    assert "out of memory (test)" in record.data["failed"][0]["error"]
    assert record.data["summary"]["n"] == 1 and "Prompts without a result" in (record.eval_dir / "eval.html").read_text()
