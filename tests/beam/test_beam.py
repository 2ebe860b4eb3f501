"""Beam search behaviour with fast deterministic collaborators (see test_beam_collaborators.py): round structure,
refinement, seeds, elitism, duplicates, batching, concurrency, stopping, control arm, replay, progress."""
import json
import re
import threading

import pytest
import torch

from pipeline.beam.search import BeamConfig, BeamSearch, SearchCallbacks
from pipeline.beam.selection import adaptive_dimension, derive_seed, edit_history, lineage, rank
from pipeline.beam.types import Candidate
from pipeline.llm.client import OllamaClient
from pipeline.record.pnginfo import read_png_text
from pipeline.llm.operations import PromptEngine

from tests.beam.test_beam_collaborators import FastOps, HashGenerator, StatsScorer

PROMPT = "a lighthouse in a storm"


def run(tmp_path, ops=None, generator=None, scorer=None, callbacks=None, run_id=None, **config):
    config = BeamConfig(**({"width": 32, "height": 32, "seed": 3} | config))
    ops = FastOps() if ops is None else ops
    search = BeamSearch(ops, generator or HashGenerator(), scorer or StatsScorer(), config, callbacks)
    return search.run(PROMPT, tmp_path / "runs", run_id=run_id)


def replayed_image(result, name):
    from pipeline.record.report import RunRecord
    return RunRecord.open(result.run_dir).load_image(name)


def by_id(report):
    return {c["id"]: Candidate.from_dict(c) for c in report["candidates"]}


def test_round_zero_expands_once_per_dimension_and_pairs_i_with_i(tmp_path):
    ops = FastOps()
    result = run(tmp_path, ops, beam_width=4, keep_top=2, iterations=1)
    expands = [kw for name, kw in ops.calls if name == "expand"]
    assert sorted((kw["dimension"], kw["n"]) for kw in expands) == [("how", 4), ("what", 4)]
    whats = ops.expand(PROMPT, "what", 4, seed=derive_seed(3, "llm", "expand", "what")).value
    hows = ops.expand(PROMPT, "how", 4, seed=derive_seed(3, "llm", "expand", "how")).value
    cands = result.report["candidates"]
    assert [c["id"] for c in cands] == ["i0c0", "i0c1", "i0c2", "i0c3"]
    assert [(c["what"], c["how"]) for c in cands] == list(zip(whats, hows))
    assert [c["prompt"] for c in cands] == [f"{w}. Rendered as {h}" for w, h in zip(whats, hows)]
    assert [c["seed"] for c in cands] == [derive_seed(3, "image", 0, i) for i in range(4)]
    assert all(c["parent"] is None and c["dimension"] is None and c["critique"] is None for c in cands)
    assert result.stop_reason == "max_iterations"


def test_refinement_alternates_halves_with_one_critique_per_parent(tmp_path):
    ops = FastOps()
    result = run(tmp_path, ops, beam_width=6, keep_top=2, iterations=3)
    report, cands = result.report, by_id(result.report)
    for entry, dimension in zip(report["iterations"][1:], ("what", "how")):
        assert entry["dimension"] == dimension
        children = [cands[i] for i in entry["candidates"]]
        assert len(children) == 6                       # M * floor(N/M) = 2 * 3
        for child in children:
            parent = cands[child.parent]
            other = "how" if dimension == "what" else "what"
            assert child.dimension == dimension
            assert getattr(child, other) == getattr(parent, other)      # the other half is inherited
            assert getattr(child, dimension) != getattr(parent, dimension)
            assert child.critique["recommendation"] == f"sharpen the {dimension}"
    critiques = [kw for name, kw in ops.calls if name == "critique"]
    refines = [kw for name, kw in ops.calls if name == "refine_variants"]
    assert len(critiques) == 4 and len(refines) == 4   # one per parent per refinement round
    assert all(kw["n"] == 3 for kw in refines)
    # refine sees the lineage edits of its parent as history
    round2_parents = report["iterations"][1]["survivors"]
    round2_refines = refines[2:]
    for parent_id, kw in zip(round2_parents, round2_refines):
        assert kw["history"] == edit_history(cands, parent_id)
        assert kw["prompt"] == cands[parent_id].how


def test_children_inherit_their_parent_seed_or_get_fresh_ones(tmp_path):
    inherit = run(tmp_path, run_id="inherit", iterations=3)
    cands = by_id(inherit.report)
    for c in cands.values():
        if c.parent:
            assert c.seed == cands[c.parent].seed
    fresh = run(tmp_path, run_id="fresh", iterations=2, seed_policy="fresh")
    for c in fresh.report["candidates"]:
        assert c["seed"] == derive_seed(3, "image", c["iteration"], c["index"])


def test_elitism_keeps_a_strong_parent_with_its_id_and_true_lineage(tmp_path):
    ops = FastOps()
    what = ops.expand(PROMPT, "what", 4, seed=derive_seed(3, "llm", "expand", "what")).value[1]
    how = ops.expand(PROMPT, "how", 4, seed=derive_seed(3, "llm", "expand", "how")).value[1]
    star = f"{what}. Rendered as {how}"

    def quality(prompt, seed):   # round 0's candidate 1 is excellent; everything else is poor
        return 0.95 if prompt == star else 0.1 + 0.001 * (seed % 100)
    result = run(tmp_path, ops, HashGenerator(quality=quality), iterations=4, keep_top=2, beam_width=4)
    report = result.report
    assert [it["best"] for it in report["iterations"]] == ["i0c1"] * 4
    assert result.best.id == "i0c1" and report["lineage"] == ["i0c1"]
    # i0c1 is a parent in every round; its round-3 children link straight back to it
    assert {c["parent"] for c in report["candidates"] if c["iteration"] == 3} >= {"i0c1"}
    cands = by_id(report)
    for c in cands.values():
        chain = lineage(cands, c.id)
        assert chain[0].startswith("i0c") and chain[-1] == c.id
    survivor = next(c for c in cands.values() if c.iteration == 3 and c.parent != "i0c1")
    assert lineage(cands, survivor.id)[0].startswith("i0")
    assert read_png_text(result.run_dir / "i0c1.png")["parameters"].startswith(star)


def test_survivors_are_the_top_m_of_parents_and_children(tmp_path):
    result = run(tmp_path, beam_width=5, keep_top=2, iterations=4)
    cands = by_id(result.report)
    previous = []
    for entry in result.report["iterations"]:
        pool = [cands[i] for i in previous + entry["candidates"]]
        assert entry["survivors"] == [c.id for c in rank(pool)[:2]]
        produced = len(entry["candidates"]) + len(entry["duplicates"])
        assert produced == (5 if entry["iteration"] == 0 else 4)      # the remainder of N/M is dropped
        previous = entry["survivors"]
    totals = [it["best_total"] for it in result.report["iterations"]]
    assert totals == sorted(totals)


def test_duplicate_children_are_dropped_and_recorded_not_rendered(tmp_path):
    ops, generator = FastOps(duplicate_children=True), HashGenerator()
    result = run(tmp_path, ops, generator, beam_width=4, keep_top=2, iterations=2)
    round1 = result.report["iterations"][1]
    assert round1["candidates"] == [] and round1["survivors"] == result.report["iterations"][0]["survivors"]
    assert len(round1["duplicates"]) == 4
    parents = round1["survivors"]
    assert [d["duplicate_of"] for d in round1["duplicates"]] == [parents[0]] * 2 + [parents[1]] * 2
    assert all(d["parent"] == d["duplicate_of"] and d["prompt"] is None for d in round1["duplicates"])
    assert len(generator.calls) == 1 and ops.count("combine") == 4     # nothing combined or rendered for them


def test_near_duplicate_siblings_by_token_jaccard(tmp_path):
    class EchoOps(FastOps):
        def refine_variants(self, prompt, dimension, critique, user_prompt, n, history=(), seed=None):
            self._log("refine_variants", prompt=prompt, n=n)
            base = " ".join(f"w{i}" for i in range(12))
            # variant 1 adds one word to variant 0 (Jaccard 12/13 = 0.92): a near duplicate
            return type(ops.expand(PROMPT, "what", 1))([base + f" {prompt[:4]}", base + f" {prompt[:4]} extra"])
    ops = EchoOps()
    result = run(tmp_path, ops, beam_width=4, keep_top=2, iterations=2)
    round1 = result.report["iterations"][1]
    assert len(round1["candidates"]) + len(round1["duplicates"]) == 4
    assert len(round1["duplicates"]) >= 2
    ids = set(result.report["iterations"][1]["candidates"]) | {c["id"] for c in result.report["candidates"]}
    assert all(d["duplicate_of"] in ids for d in round1["duplicates"])


def test_one_generate_and_one_score_call_per_round(tmp_path):
    generator, scorer = HashGenerator(), StatsScorer()
    run(tmp_path, generator=generator, scorer=scorer, beam_width=4, keep_top=2, iterations=3)
    assert [len(call) for call in generator.calls] == [4, 4, 4]
    assert scorer.calls == [4, 4, 4]


def test_llm_calls_are_concurrent_but_bounded(tmp_path):
    class SlowOps(FastOps):
        def __init__(self):
            super().__init__()
            self.in_flight = self.peak = 0
            self.guard = threading.Lock()

        def combine(self, *args, **kwargs):
            with self.guard:
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                if self.in_flight == 3:
                    self.three.set()
            # The first calls wait until three are in flight (never on the clock), so the peak is exactly the
            # bound however slowly threads start; a fourth concurrent call would make it 4.
            self.three.wait(30)
            with self.guard:
                self.in_flight -= 1
            return super().combine(*args, **kwargs)
    ops = SlowOps()
    ops.three = threading.Event()
    run(tmp_path, ops, beam_width=8, keep_top=2, iterations=1, llm_concurrency=3)
    assert ops.peak == 3


def test_low_vram_unloads_ollama_between_llm_work_and_generation(tmp_path, fake_ollama):
    engine = PromptEngine(OllamaClient(fake_ollama.url, "qwen2.5:7b-instruct", retries=0))
    seen = []

    class WatchingGenerator(HashGenerator):
        def generate(self, requests, on_step=None, should_stop=None):
            seen.append((len(fake_ollama.unloads), fake_ollama.requests[-1]["body"].get("keep_alive")))
            return super().generate(requests, on_step, should_stop)
    run(tmp_path, engine, WatchingGenerator(), iterations=3, low_vram=True)
    assert [count for count, _ in seen] == [1, 2, 3]
    assert all(keep_alive in (0, "0", "0s") for _, keep_alive in seen)   # the unload is the last request


def test_stops_on_target_patience_and_time_budget(tmp_path):
    target = run(tmp_path, run_id="target", iterations=5, target_score=1.0)
    assert target.stop_reason == "target" and len(target.report["iterations"]) == 1

    flat = HashGenerator(quality=lambda prompt, seed: 0.9 if "+" not in prompt else 0.2)   # children never win
    patience = run(tmp_path, generator=flat, run_id="patience", iterations=6, patience=2)
    assert patience.stop_reason == "patience" and len(patience.report["iterations"]) == 3

    budget = run(tmp_path, run_id="budget", iterations=5, time_budget_s=1e-6)
    assert budget.stop_reason == "time_budget" and len(budget.report["iterations"]) == 1
    full = run(tmp_path, run_id="full", iterations=2)
    assert full.stop_reason == "max_iterations" and full.report["status"] == "finished"


def test_control_arm_spends_the_same_budget_on_seeds(tmp_path):
    generator = HashGenerator()
    result = run(tmp_path, generator=generator, beam_width=4, keep_top=2, iterations=3, control_arm=True)
    control = result.report["control"]
    round0_best = rank(c for c in by_id(result.report).values() if c.iteration == 0)[0]
    assert control["source"] == round0_best.id and control["prompt"] == round0_best.prompt
    assert control["budget"] == 8 and len(control["seeds"]) == 8 and control["status"] == "done"
    assert control["seeds"] == [derive_seed(3, "control", j) for j in range(8)]
    assert [len(call) for call in generator.calls] == [4, 4, 4, 4, 4]   # 3 rounds, then 2 control batches
    assert all(c["prompt"] == round0_best.prompt for call in generator.calls[3:] for c in [r.__dict__ for r in call])
    totals = [s["total"] for s in control["scores"]] + [round0_best.total]
    assert control["best"]["scores"]["total"] == max(totals) == control["best_total"]
    assert control["beam_best"]["id"] == result.best.id
    assert control["delta_total"] == pytest.approx(result.best.total - max(totals))
    for name in control["images"]:
        assert read_png_text(result.run_dir / name)["promptbeam:arm"] == "control"
    assert result.control is control


def test_replay_reproduces_a_run_without_the_llm(tmp_path):
    original = run(tmp_path, iterations=3, use_negative=True)
    generator = HashGenerator()
    replayed = BeamSearch.replay(original.run_dir, generator, StatsScorer(), tmp_path / "replays")
    assert replayed.report["replay_of"]["run_id"] == original.report["run_id"]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("run_id", "timings", "replay_of", "llm")}
    assert strip(replayed.report) == strip(original.report)
    assert replayed.report["llm"] == {"calls": 0, "fallbacks": 0, "critic_calls": 0, "judge_calls": 0}
    assert original.report["llm"]["calls"] > 0
    assert sum(len(call) for call in generator.calls) == 12
    for name in ("i0c0.png", "i2c3.png"):
        assert torch.equal(replayed_image(replayed, name), replayed_image(original, name))

    # another renderer: same recorded prompts and seeds, selection recomputed from the new scores
    other = BeamSearch.replay(original.run_dir / "report.json", HashGenerator(quality=lambda p, s: (s % 97) / 97),
                              StatsScorer(), tmp_path / "replays", overrides={"width": 48, "height": 48})
    assert [(c["prompt"], c["seed"]) for c in other.report["candidates"]] == \
        [(c["prompt"], c["seed"]) for c in original.report["candidates"]]
    assert other.best_image.shape == (48, 48, 3)
    cands = by_id(other.report)
    assert other.report["lineage"] == lineage(cands, other.report["best"])


def test_each_candidate_is_on_disk_before_the_next_one(tmp_path):
    seen = []

    def on_candidate(candidate, image):
        report = json.loads(next((tmp_path / "runs").iterdir()).joinpath("report.json").read_text())
        assert report["candidates"][-1]["id"] == candidate.id
        assert len(report["candidates"]) == len(seen) + 1
        if candidate.ok:
            assert image.shape == (32, 32, 3)
        seen.append(candidate.id)
    run(tmp_path, callbacks=SearchCallbacks(on_candidate=on_candidate), iterations=2)
    assert seen == ["i0c0", "i0c1", "i0c2", "i0c3", "i1c0", "i1c1", "i1c2", "i1c3"]


def test_progress_events_count_every_image(tmp_path):
    events = []
    result = run(tmp_path, callbacks=SearchCallbacks(on_progress=events.append), iterations=3)
    done = [e.images_done for e in events]
    assert done == sorted(done) and done[-1] == 12 and {e.images_total for e in events} == {12}
    texts = [e.text() for e in events if e.phase == "score" and e.candidate]
    assert texts[0] == "round 1/3 · candidate 1/4 · best –"
    assert re.fullmatch(r"round 3/3 · candidate 4/4 · best \d+\.\d", texts[-1])
    assert texts[-1].endswith(f"{result.report['iterations'][1]['best_total']:.1f}")
    timings = result.report["timings"]
    assert timings["wall_s"] >= timings["generate_s"] > 0 and timings["llm_s"] > 0 and timings["score_s"] > 0
    assert [r["iteration"] for r in timings["rounds"]] == [0, 1, 2]


def test_adaptive_policy_refines_each_parents_weaker_half(tmp_path):
    result = run(tmp_path, iterations=3, dimension_policy="adaptive", beam_width=6, keep_top=3)
    cands = by_id(result.report)
    for k in (1, 2):
        entry = result.report["iterations"][k]
        parents = result.report["iterations"][k - 1]["survivors"]
        grand = result.report["iterations"][k - 2]["survivors"] if k >= 2 else []
        pool = [cands[i] for i in grand + result.report["iterations"][k - 1]["candidates"]]
        for child in (cands[i] for i in entry["candidates"]):
            assert child.parent in parents
            assert child.dimension == adaptive_dimension(cands[child.parent], pool, k)
        dims = {cands[i].dimension for i in entry["candidates"]}
        assert entry["dimension"] == (dims.pop() if len(dims) == 1 else "mixed")


def test_captions_feed_the_critique_and_negatives_reach_the_generator(tmp_path):
    ops, generator = FastOps(), HashGenerator()
    result = run(tmp_path, ops, generator, iterations=2, captions=True, use_negative=True)
    critiques = [kw for name, kw in ops.calls if name == "critique"]
    assert critiques and all(kw["caption"].startswith("an image, mostly") for kw in critiques)
    assert all(r.negative == "blurry, low quality" for call in generator.calls for r in call)
    assert all(c["negative"] == "blurry, low quality" for c in result.report["candidates"])
    assert all(c["caption"] for c in result.report["candidates"])


def test_template_combine_needs_no_llm_call(tmp_path):
    ops = FastOps()
    result = run(tmp_path, ops, iterations=2, combine_mode="template")
    assert ops.count("combine") == 0
    assert all(c["prompt"] == f"{c['what']}; {c['how']}" for c in result.report["candidates"])


def test_the_same_seed_gives_the_same_report(tmp_path):
    a = run(tmp_path, run_id="a", iterations=3, control_arm=True)
    b = run(tmp_path, run_id="b", iterations=3, control_arm=True)
    c = run(tmp_path, run_id="c", iterations=3, control_arm=True, seed=4)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("run_id", "timings")}
    assert strip(a.report) == strip(b.report)
    assert strip(a.report) != strip(c.report)
    assert json.loads((a.run_dir / "report.json").read_text()) == a.report


def test_identical_siblings_render_once_and_point_at_their_twin(tmp_path):
    class TwinOps(FastOps):
        def refine_variants(self, prompt, dimension, critique, user_prompt, n, history=(), seed=None):
            self._log("refine_variants", prompt=prompt, n=n)
            return type(super().refine_variants(prompt, dimension, critique, user_prompt, n))(
                [f"a brand new {dimension} for {prompt[:12]}"] * n)
    generator = HashGenerator()
    result = run(tmp_path, TwinOps(), generator, beam_width=4, keep_top=2, iterations=2)
    round1 = result.report["iterations"][1]
    assert round1["candidates"] == ["i1c0", "i1c1"]
    assert [d["duplicate_of"] for d in round1["duplicates"]] == ["i1c0", "i1c1"]
    assert [len(call) for call in generator.calls] == [4, 2]
