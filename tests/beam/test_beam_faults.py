"""Faults: failing renders, a dying Ollama, interrupts, crashes in callbacks; then resume. Every case ends with
its stop_reason and a valid record on disk."""
import json

import pytest

from pipeline.beam.search import BeamConfig, BeamSearch, SearchCallbacks
from pipeline.beam.selection import derive_seed
from pipeline.errors import GenerationFailed, Interrupted
from pipeline.llm.client import OllamaClient, OllamaUnreachable
from pipeline.llm.operations import PromptEngine
from pipeline.record.report import RunRecord

from tests.fixtures.ollama import FakeOllama, free_port
from tests.beam.test_beam_collaborators import FastOps, HashGenerator, StatsScorer

PROMPT = "a lighthouse in a storm"
MODEL = "qwen2.5:7b-instruct"


def config(**changes):
    return BeamConfig(**({"width": 32, "height": 32, "seed": 3, "iterations": 3} | changes))


def on_disk(result_or_dir):
    run_dir = getattr(result_or_dir, "run_dir", result_or_dir)
    return json.loads((run_dir / "report.json").read_text())


def only_run(root):
    (run_dir,) = list(root.iterdir())
    return run_dir


def assert_valid_record(report, run_dir):
    """Every candidate has an image file or a recorded failure; ids, lineage and best are consistent."""
    ids = {c["id"] for c in report["candidates"]}
    for c in report["candidates"]:
        if c["status"] == "ok":
            assert c["image"] == f"{c['id']}.png" and (run_dir / c["image"]).is_file() and c["scores"]
        else:
            assert c["status"] == "failed" and c["error"] and c["image"] is None and c["failed_stage"]
        assert c["parent"] is None or c["parent"] in ids
    for entry in report["iterations"]:
        assert set(entry["candidates"]) <= ids and set(entry["survivors"]) <= ids
    if report["best"]:
        assert report["lineage"][-1] == report["best"] and report["lineage"][0].startswith("i0c")


def test_a_failing_candidate_is_isolated_and_recorded(tmp_path):
    doomed_seed = derive_seed(3, "image", 0, 2)          # round 0's third candidate
    generator = HashGenerator(fail_when=lambda prompt, seed: seed == doomed_seed)
    ops = FastOps()
    result = BeamSearch(ops, generator, StatsScorer(), config(iterations=1)).run(PROMPT, tmp_path)
    report = on_disk(result)
    statuses = [(c["id"], c["status"]) for c in report["candidates"]]
    assert statuses == [("i0c0", "ok"), ("i0c1", "ok"), ("i0c2", "failed"), ("i0c3", "ok")]
    failed = report["candidates"][2]
    assert failed["failed_stage"] == "generate" and failed["error"].startswith("GenerationFailed: backend error")
    # the batch failed at its third request; the two images it had rendered are kept, the rest rendered alone
    assert [len(call) for call in generator.calls] == [4, 1, 1]
    assert result.stop_reason == "max_iterations" and report["images"]["failed"] == 1
    assert_valid_record(report, result.run_dir)


def test_every_candidate_failing_in_round_zero_raises_with_the_record_kept(tmp_path):
    generator = HashGenerator(fail_when=lambda prompt, seed: True)
    with pytest.raises(GenerationFailed, match="no candidate could be rendered.*backend error"):
        BeamSearch(FastOps(), generator, StatsScorer(), config()).run(PROMPT, tmp_path)
    run_dir = only_run(tmp_path)
    report = on_disk(run_dir)
    assert report["stop_reason"] == "failures" and report["status"] == "failed"
    assert "no candidate could be rendered" in report["error"]
    assert len(report["candidates"]) == 4 and all(c["status"] == "failed" for c in report["candidates"])
    assert_valid_record(report, run_dir)


def test_most_of_a_later_round_failing_stops_gracefully_with_the_best_so_far(tmp_path):
    generator = HashGenerator()
    generator.fail_when = lambda prompt, seed: len(generator.calls) >= 3   # round 2 onward
    result = BeamSearch(FastOps(), generator, StatsScorer(), config(iterations=4)).run(PROMPT, tmp_path)
    report = on_disk(result)
    assert result.stop_reason == "failures" and report["status"] == "finished"
    assert len(report["iterations"]) == 3 and report["iterations"][2]["failed"] == report["iterations"][2]["candidates"]
    assert result.best.iteration <= 1 and result.best_image.shape == (32, 32, 3)
    assert_valid_record(report, result.run_dir)


def test_a_broken_scorer_fails_the_candidates_not_the_process(tmp_path):
    with pytest.raises(GenerationFailed):
        BeamSearch(FastOps(), HashGenerator(), StatsScorer(fail_all=True), config()).run(PROMPT, tmp_path)
    report = on_disk(only_run(tmp_path))
    assert {c["failed_stage"] for c in report["candidates"]} == {"score"}
    assert report["candidates"][0]["error"] == "ScoringFailed: scorer is broken"


def test_ollama_down_at_the_start_raises_and_keeps_a_record(tmp_path):
    engine = PromptEngine(OllamaClient(f"http://127.0.0.1:{free_port()}", MODEL, retries=0, timeout=5))
    with pytest.raises(OllamaUnreachable):
        BeamSearch(engine, HashGenerator(), StatsScorer(), config()).run(PROMPT, tmp_path)
    report = on_disk(only_run(tmp_path))
    assert report["stop_reason"] == "failures" and report["status"] == "failed"
    assert report["error"].startswith("OllamaUnreachable: ") and report["candidates"] == []


@pytest.mark.parametrize("how", ["stopped", "http_500"])
def test_ollama_dying_mid_run_stops_with_failures(tmp_path, how):
    server = FakeOllama().start()
    engine = PromptEngine(OllamaClient(server.url, MODEL, retries=0, timeout=5))

    class OllamaDiesAtTheThirdImage(HashGenerator):
        """Round 0's answers are all in, its third image renders: Ollama goes away before any round-1 request
        (the first parent sure to survive is asked as soon as that image is scored)."""

        def generate(self, requests, on_step=None, should_stop=None):
            if len(self.calls) == 2:
                if how == "stopped":
                    server.stop()
                else:
                    server.script("/api/chat", *[{"status": 500, "json": {
                        "error": "llama runner process has terminated"}}] * 50)
            return super().generate(requests, on_step, should_stop)
    try:
        result = BeamSearch(engine, OllamaDiesAtTheThirdImage(), StatsScorer(), config()).run(PROMPT, tmp_path)
    finally:
        if how != "stopped":
            server.stop()
    report = on_disk(result)
    assert result.stop_reason == "failures" and result.best.iteration == 0
    round1 = [c for c in report["candidates"] if c["iteration"] == 1]
    assert round1 and all(c["status"] == "failed" and c["failed_stage"] == "llm" for c in round1)
    assert all(c["error"].startswith("critique failed: Ollama") for c in round1)
    assert report["images"]["rendered"] == 4     # nothing was sent to the generator for them
    assert_valid_record(report, result.run_dir)


class InterruptAt:
    """should_stop() turns True once the generator has started its n-th call (n = 1 is round 0)."""

    def __init__(self, generator, call):
        self.generator, self.call = generator, call

    def __call__(self):
        return len(self.generator.calls) >= self.call


def test_interrupt_in_round_two_then_resume_matches_an_uninterrupted_run(tmp_path):
    generator = HashGenerator()
    ops = FastOps()
    result = BeamSearch(ops, generator, StatsScorer(), config(),
                        SearchCallbacks(should_stop=InterruptAt(generator, 3))).run(PROMPT, tmp_path / "a", "run")
    report = on_disk(result)
    assert result.stop_reason == "interrupted" and report["status"] == "interrupted"
    assert len(report["iterations"]) == 2 and len(report["candidates"]) == 8     # rounds 0 and 1, complete
    assert report["pending"]["iteration"] == 2 and len(report["pending"]["candidates"]) == 4
    assert_valid_record(report, result.run_dir)

    resume_ops, resume_generator = FastOps(), HashGenerator()
    resumed = BeamSearch(resume_ops, resume_generator, StatsScorer(), config()).resume(result.run_dir)
    assert resumed.stop_reason == "max_iterations"
    assert [len(call) for call in resume_generator.calls] == [4]       # only round 2, nothing re-rendered
    assert resume_ops.calls == []                                        # round 2's prompts were on record

    straight = BeamSearch(FastOps(), HashGenerator(), StatsScorer(), config()).run(PROMPT, tmp_path / "b", "run")
    strip = lambda r: {k: v for k, v in r.items() if k not in ("timings", "llm")}
    assert strip(on_disk(resumed)) == strip(on_disk(straight))
    assert_valid_record(on_disk(resumed), resumed.run_dir)


def test_interrupt_during_the_llm_phase_resumes_from_the_last_round(tmp_path):
    ops = FastOps()
    stop = {"now": False}

    class StoppingOps(FastOps):
        def critique(self, *args, **kwargs):
            stop["now"] = True
            return super().critique(*args, **kwargs)
    result = BeamSearch(StoppingOps(), HashGenerator(), StatsScorer(), config(),
                        SearchCallbacks(should_stop=lambda: stop["now"])).run(PROMPT, tmp_path, "run")
    report = on_disk(result)
    assert result.stop_reason == "interrupted" and report["pending"] is None and len(report["iterations"]) == 1
    resumed = BeamSearch(ops, HashGenerator(), StatsScorer(), config()).resume(result.run_dir)
    assert resumed.stop_reason == "max_iterations" and len(resumed.report["iterations"]) == 3
    assert ops.count("expand") == 0 and ops.count("critique") == 4


def test_interrupt_before_any_candidate_raises_interrupted(tmp_path):
    with pytest.raises(Interrupted, match="before any candidate finished"):
        BeamSearch(FastOps(), HashGenerator(), StatsScorer(), config(),
                   SearchCallbacks(should_stop=lambda: True)).run(PROMPT, tmp_path)
    report = on_disk(only_run(tmp_path))
    assert report["stop_reason"] == "interrupted" and report["candidates"] == []


def test_ctrl_c_inside_the_generator_ends_the_run_as_interrupted(tmp_path):
    generator = HashGenerator()

    def fail_when(prompt, seed):
        if len(generator.calls) >= 2:
            raise KeyboardInterrupt
        return False
    generator.fail_when = fail_when
    result = BeamSearch(FastOps(), generator, StatsScorer(), config()).run(PROMPT, tmp_path)
    assert result.stop_reason == "interrupted" and on_disk(result)["status"] == "interrupted"


def test_a_crashing_callback_is_recorded_as_an_error(tmp_path):
    def on_candidate(candidate, image):
        if candidate.id == "i0c2":
            raise RuntimeError("preview widget exploded")
    with pytest.raises(RuntimeError, match="exploded"):
        BeamSearch(FastOps(), HashGenerator(), StatsScorer(), config(),
                   SearchCallbacks(on_candidate=on_candidate)).run(PROMPT, tmp_path)
    report = on_disk(only_run(tmp_path))
    assert report["stop_reason"] == "error" and report["error"] == "RuntimeError: preview widget exploded"
    assert [c["id"] for c in report["candidates"]] == ["i0c0", "i0c1", "i0c2"]


def test_resume_extends_a_finished_run_and_leaves_final_ones_alone(tmp_path):
    first = BeamSearch(FastOps(), HashGenerator(), StatsScorer(), config(iterations=2)).run(PROMPT, tmp_path, "r")
    generator = HashGenerator()
    again = BeamSearch(FastOps(), generator, StatsScorer(), config()).resume(first.run_dir)
    assert again.stop_reason == "max_iterations" and generator.calls == []
    longer = BeamSearch(FastOps(), generator, StatsScorer(), config()).resume(first.run_dir, {"iterations": 4})
    assert len(longer.report["iterations"]) == 4 and longer.report["config"]["iterations"] == 4
    assert longer.report["resumed"] == [{"from_stop_reason": "max_iterations", "overrides": {"iterations": 4}}]
    assert [len(call) for call in generator.calls] == [4, 4]
    with pytest.raises(Exception, match="beam_width: cannot be changed"):
        BeamSearch(FastOps(), generator, StatsScorer(), config()).resume(first.run_dir, {"beam_width": 8})


def test_resume_finishes_an_interrupted_control_arm(tmp_path):
    generator = HashGenerator()
    result = BeamSearch(FastOps(), generator, StatsScorer(), config(control_arm=True),
                        SearchCallbacks(should_stop=InterruptAt(generator, 5))).run(PROMPT, tmp_path, "r")
    control = on_disk(result)["control"]
    assert result.stop_reason == "interrupted" and control["status"] == "interrupted" and len(control["seeds"]) == 4
    resume_generator = HashGenerator()
    resumed = BeamSearch(FastOps(), resume_generator, StatsScorer(), config()).resume(result.run_dir)
    assert resumed.stop_reason == "max_iterations" and resumed.report["control"]["status"] == "done"
    assert [len(call) for call in resume_generator.calls] == [4]
    assert len(resumed.report["control"]["seeds"]) == 8


def test_resume_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(Exception, match="run_dir: .*no report.json"):
        BeamSearch(FastOps(), HashGenerator(), StatsScorer(), config()).resume(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"schema_version": 2}))
    with pytest.raises(Exception, match="schema_version 2"):
        RunRecord.open(tmp_path)
