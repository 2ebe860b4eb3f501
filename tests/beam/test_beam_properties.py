"""Invariants of the search over many configurations and fault patterns (hypothesis)."""
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from pipeline.beam.search import BeamConfig, BeamSearch
from pipeline.beam.selection import lineage, rank
from pipeline.beam.types import Candidate

from tests.beam.test_beam_collaborators import FastOps, HashGenerator, StatsScorer


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 5))
    return {
        "config": BeamConfig(
            beam_width=n, keep_top=draw(st.integers(1, n)), iterations=draw(st.integers(1, 4)),
            seed=draw(st.integers(0, 2**64 - 1)), alpha=draw(st.floats(0, 1)),
            dimension_policy=draw(st.sampled_from(["alternate", "adaptive"])),
            seed_policy=draw(st.sampled_from(["inherit", "fresh"])),
            control_arm=draw(st.booleans()), width=16, height=16),
        "fail_mod": draw(st.sampled_from([0, 2, 3, 5])),      # seeds divisible by it fail to render (0 = none)
        "duplicates": draw(st.booleans()),
    }


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_search_invariants(scenario):
    config, fail_mod = scenario["config"], scenario["fail_mod"]
    generator = HashGenerator(steps_per_image=1,
                              fail_when=(lambda p, s: s % fail_mod == 0) if fail_mod else None)
    with tempfile.TemporaryDirectory() as root:
        try:
            result = BeamSearch(FastOps(duplicate_children=scenario["duplicates"]), generator, StatsScorer(),
                                config).run("a quiet harbour at dawn", root)
        except Exception as exc:   # only a round 0 where nothing rendered may raise, with the record kept
            report = json.loads(next(Path(root).iterdir()).joinpath("report.json").read_text())
            assert type(exc).__name__ == "GenerationFailed" and report["stop_reason"] == "failures"
            assert all(c["status"] == "failed" for c in report["candidates"])
            return
        run_dir, report = result.run_dir, result.report
        assert json.loads((run_dir / "report.json").read_text()) == report
        cands = {c["id"]: Candidate.from_dict(c) for c in report["candidates"]}

        # survivors <= keep_top, drawn from parents + the round's candidates, and they are its best
        previous: list = []
        for entry in report["iterations"]:
            assert len(entry["survivors"]) <= config.keep_top
            pool = [cands[i] for i in previous + entry["candidates"]]
            assert entry["survivors"] == [c.id for c in rank(pool)[:config.keep_top]]
            previous = entry["survivors"]

        # the best total never decreases across rounds
        totals = [e["best_total"] for e in report["iterations"] if e["best_total"] is not None]
        assert totals == sorted(totals)

        # lineage is acyclic and rooted in round 0, parents come from earlier rounds
        for c in cands.values():
            chain = lineage(cands, c.id)
            assert cands[chain[0]].iteration == 0 and chain[-1] == c.id
            assert [cands[i].iteration for i in chain] == sorted({cands[i].iteration for i in chain})
        assert report["lineage"] == lineage(cands, report["best"])
        for entry in report["iterations"]:
            assert all(d["duplicate_of"] in cands for d in entry["duplicates"])

        # the image budget is respected (retries after a failed batch re-render, they do not add candidates)
        rendered = [c for c in cands.values() if c.failed_stage != "llm"]
        assert len(rendered) <= config.image_budget
        for entry in report["iterations"][1:]:
            assert len(entry["candidates"]) + len(entry["duplicates"]) <= config.keep_top * config.children_per_parent

        # every candidate has its file or a recorded failure
        for c in cands.values():
            if c.ok:
                assert (run_dir / c.image).is_file() and c.scores is not None
            else:
                assert c.error and c.image is None and not (run_dir / f"{c.id}.png").exists()

        # seeds follow the policy
        for c in cands.values():
            if c.parent and config.seed_policy == "inherit":
                assert c.seed == cands[c.parent].seed

        # the control arm spends exactly what the beam spent after round 0
        if config.control_arm:
            control = report["control"]
            assert control["budget"] == sum(1 for c in rendered if c.iteration >= 1)
            assert len(control["seeds"]) == control["budget"]
        assert report["stop_reason"] in ("max_iterations", "failures", "exhausted")
        # exhausted: the last round brought nothing new, and only then
        assert (report["stop_reason"] == "exhausted") == (len(report["iterations"]) > 1
                                                          and not report["iterations"][-1]["candidates"])
