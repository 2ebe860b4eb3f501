"""Vision models in the beam search, end to end against the fake Ollama server (real HTTP, real PNGs): the critic
sees each parent's own pixels, the pairwise judge re-orders only the candidates near the cut, its budget holds,
earlier verdicts are not asked again, a position-biased judge changes nothing, replay asks no model, and faults
(an unusable answer, a timeout, an interrupt) keep the record."""
from __future__ import annotations

import json
import time
from statistics import pstdev

import numpy as np
import pytest
from PIL import Image

from pipeline.beam.judging import (JudgePhase, VerdictGraph, judged_order, near_cut, pairs_across_cut,
                                   recorded_judgements)
from pipeline.beam.search import BeamConfig, BeamSearch, SearchCallbacks
from pipeline.beam.selection import rank
from pipeline.beam.types import Candidate
from pipeline.errors import Interrupted, InvalidParameter
from pipeline.llm.client import OllamaClient
from pipeline.llm.operations import PromptEngine
from pipeline.llm.vision import PairwiseJudge
from pipeline.record.report import RunRecord

from tests.beam.test_beam_collaborators import HashGenerator, StatsScorer

PROMPT = "a lighthouse in a storm"
TEXT, VISION = "qwen2.5:7b-instruct", "qwen2.5vl:7b"


@pytest.fixture
def vision(fake_ollama):
    fake_ollama.add_vision_models()
    return fake_ollama


def engine(fake, model=VISION, **client) -> PromptEngine:
    return PromptEngine(OllamaClient(fake.url, model, **client))


def search(tmp_path, fake, critic=None, judge=None, text=TEXT, callbacks=None, **config):
    config = BeamConfig(**({"width": 32, "height": 32, "seed": 3, "beam_width": 4, "keep_top": 2,
                            "iterations": 3} | config))
    ops = critic if critic is not None and text is None else engine(fake, text)
    return BeamSearch(ops, HashGenerator(), StatsScorer(), config, callbacks, critic=critic, judge=judge).run(
        PROMPT, tmp_path / "runs")


def blue(run_dir, candidate: dict) -> float:
    with Image.open(run_dir / candidate["image"]) as image:
        return float(np.asarray(image.convert("RGB"), dtype=np.float32)[..., 2].mean() / 255.0)


def timeless(judgements) -> list:
    """Judgements without their seconds (the only field that differs between two identical runs)."""
    return [{k: v for k, v in j.items() if k != "seconds"} for j in judgements]


def by_id(report) -> dict:
    return {c["id"]: c for c in report["candidates"]}


def score_order(report, iteration: int) -> list[str]:
    """The selection pool of a round (its parents and new candidates) ranked by score, recomputed from the record."""
    entries = report["iterations"]
    parents = entries[iteration - 1]["survivors"] if iteration else []
    cands = by_id(report)
    pool = [Candidate.from_dict(cands[i]) for i in list(parents) + entries[iteration]["candidates"]]
    return [c.id for c in rank(pool)]


# ---- the critic ------------------------------------------------------------------------------------------------------
def test_a_separate_critic_sees_each_parents_own_pixels_and_the_children_fix_what_it_saw(tmp_path, vision):
    result = search(tmp_path, vision, critic=engine(vision))
    report, run_dir = result.report, result.run_dir
    parents = [p for entry in report["iterations"][:-1] for p in entry["survivors"]]
    critiqued = [c for c in report["candidates"] if c["evaluation"]]
    assert sorted(c["id"] for c in critiqued) == sorted(set(parents))   # each parent once: a survivor is not re-asked
    critic_requests = [r for r in vision.vision_requests if r["kind"] == "critic"]
    assert len(critic_requests) == len(critiqued) == report["llm"]["critic_calls"]
    seen = [np.asarray(r["images"][0], dtype=np.int16) for r in critic_requests]
    for candidate in critiqued:
        with Image.open(run_dir / candidate["image"]) as png:
            own = np.asarray(png.convert("RGB"), dtype=np.int16)
        assert any(np.array_equal(own, image) for image in seen), candidate["id"]
        evaluation = candidate["evaluation"]
        assert evaluation["model"] == VISION and evaluation["analysis"].startswith("Image 1 is 32x32")
        assert evaluation["weaknesses"] and "error" not in evaluation
    # the text model wrote the children from what the critic saw, without the image
    refine_bodies = [b for b in vision.bodies() if b["model"] == TEXT and "children" in json.dumps(b["format"])]
    for body in refine_bodies:
        assert "images" not in body["messages"][-1]
        assert "What a vision model saw in the rendered image: Image 1 is 32x32" in body["messages"][-1]["content"]
    assert report["config"]["critic"]["model"] == VISION
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert page.count("What the critic saw (qwen2.5vl:7b)") == len(critiqued)


def test_the_text_model_as_critic_looks_inside_the_children_request(tmp_path, vision):
    vision_ops = engine(vision)
    result = search(tmp_path, vision, critic=vision_ops, text=None)
    report = result.report
    assert {r["kind"] for r in vision.vision_requests} == {"refine"}
    critiqued = {c["id"] for c in report["candidates"] if c["evaluation"]}
    with_image = [b for b in vision.bodies() if b["messages"][-1].get("images")]
    assert len(with_image) == len(critiqued) == report["llm"]["critic_calls"]
    # A survivor critiqued in round 1 and parent again in round 2 is not shown again: its evaluation is reused.
    again = set(report["iterations"][0]["survivors"]) & set(report["iterations"][1]["survivors"])
    refines = [b for b in vision.bodies() if "children" in json.dumps(b.get("format"))]
    assert len(refines) == 4 and len(with_image) == 4 - len(again)
    for body in refines:
        if not body["messages"][-1].get("images"):
            assert "What a vision model saw in the rendered image" in body["messages"][-1]["content"]


def test_a_critic_that_times_out_leaves_the_children_to_the_scores_and_says_so(tmp_path, vision):
    vision.delay_when("Review the image.", 1.5)
    result = search(tmp_path, vision, critic=engine(vision, timeout=0.4, retries=0), iterations=2)
    report = result.report
    parents = report["iterations"][0]["survivors"]
    for pid in parents:
        evaluation = by_id(report)[pid]["evaluation"]
        assert evaluation["error"].startswith("no usable evaluation: OllamaTimeout: Ollama at")
    children = [c for c in report["candidates"] if c["iteration"] == 1]
    assert len(children) == 4 and all(c["status"] == "ok" and "critic" in c["fallbacks"] for c in children)
    assert result.stop_reason == "max_iterations"


def test_an_unusable_critique_falls_back_as_today_and_is_recorded(tmp_path, vision):
    bad = {"content": "not json at all"}

    renders = []

    def answer_round_one_badly(event):
        # round 0 is written normally; both parents' answers are bad twice. Set before round 0's third image:
        # the first parent sure to survive is asked as soon as that image is scored.
        if event.phase == "generate" and event.iteration == 0:
            renders.append(event)
            if len(renders) == 3:
                vision.script("/api/chat", bad, bad, bad, bad)
    ops = engine(vision)
    result = search(tmp_path, vision, critic=ops, text=None, iterations=2,
                    callbacks=SearchCallbacks(on_progress=answer_round_one_badly))
    report = result.report
    children = [c for c in report["candidates"] if c["iteration"] == 1]
    assert len(children) == 4 and all({"critique", "refine"} <= set(c["fallbacks"]) for c in children)
    for pid in report["iterations"][0]["survivors"]:
        assert by_id(report)[pid]["evaluation"]["error"].startswith("no usable evaluation: no JSON found")
    assert report["llm"]["critic_calls"] == 2


def test_a_critic_without_evaluate_image_or_ops_without_refine_children_is_refused():
    with pytest.raises(InvalidParameter, match="cannot look at images"):
        BeamSearch(object(), HashGenerator(), StatsScorer(), BeamConfig(), critic=object())
    from tests.beam.test_beam_collaborators import FastOps
    with pytest.raises(InvalidParameter, match="refine_children"):
        BeamSearch(FastOps(), HashGenerator(), StatsScorer(), BeamConfig(), critic=PromptEngine(
            OllamaClient("http://127.0.0.1:9", VISION)))


# ---- the judge -------------------------------------------------------------------------------------------------------
def expected_order(report, iteration: int) -> tuple[list[str], list[str]]:
    """The documented rule applied to the record: (window, order of the whole pool)."""
    cands = by_id(report)
    ranked = score_order(report, iteration)
    totals = [cands[i]["scores"]["total"] for i in ranked]
    keep, margin = report["config"]["keep_top"], report["config"]["judge_margin"]
    cut = (totals[keep - 1] + totals[keep]) / 2
    window = [i for i, t in zip(ranked, totals) if abs(t - cut) <= margin * pstdev(totals)]
    graph = VerdictGraph(j for j in report["judgements"] if j["iteration"] <= iteration)
    nets = {i: graph.net_wins(i, window) for i in window}
    reordered = iter(sorted(window, key=lambda i: -nets[i]))
    return window, [next(reordered) if i in window else i for i in ranked]


def test_survivors_follow_the_judge_near_the_cut(tmp_path, vision):
    result = search(tmp_path, vision, judge=PairwiseJudge(engine(vision)), beam_width=6, keep_top=2,
                    iterations=3, judge_margin=1.0, seed=5)
    report, run_dir = result.report, result.run_dir
    cands = by_id(report)
    changed = 0
    for entry in report["iterations"]:
        window, order = expected_order(report, entry["iteration"])
        assert entry["judge"]["window"] == window
        assert entry["survivors"] == order[:2]
        changed += entry["survivors"] != score_order(report, entry["iteration"])[:2]
        # only pairs across the cut are asked: one survivor by score, one left out
        by_score = score_order(report, entry["iteration"])[:2]
        for j in (j for j in report["judgements"] if j["iteration"] == entry["iteration"]):
            assert (j["a"] in by_score) != (j["b"] in by_score)
            assert j["a"] in window and j["b"] in window
    assert changed >= 1                    # the judge decided at least one cut the scores alone would not have
    for j in report["judgements"]:         # the fake judge prefers blue: every decided pair agrees with the pixels
        blue_a, blue_b = blue(run_dir, cands[j["a"]]), blue(run_dir, cands[j["b"]])
        assert j["verdict"] == ("a" if blue_a > blue_b + 0.004 else "b" if blue_b > blue_a + 0.004 else "tie")
        assert [a["first"] for a in j["answers"]] == [j["a"], j["b"]] and j["model"] == VISION
    assert report["llm"]["judge_calls"] == 2 * len(report["judgements"])
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert page.count('class="judgement"') == len(report["judgements"]) > 0


def test_a_position_biased_judge_changes_nothing(tmp_path, vision):
    plain = search(tmp_path / "plain", vision, beam_width=6, keep_top=2, seed=5)
    vision.judge_mode = "position"
    judged = search(tmp_path / "judged", vision, judge=PairwiseJudge(engine(vision)), beam_width=6, keep_top=2,
                    seed=5)
    assert judged.report["judgements"] and all(j["verdict"] == "tie" for j in judged.report["judgements"])
    assert all(a["winner"] == "first" for j in judged.report["judgements"] for a in j["answers"])
    assert [e["survivors"] for e in judged.report["iterations"]] == [e["survivors"] for e in plain.report["iterations"]]
    assert judged.report["best"] == plain.report["best"]


def test_the_budget_holds_and_a_zero_margin_asks_nothing(tmp_path, vision):
    result = search(tmp_path / "one", vision, judge=PairwiseJudge(engine(vision)), beam_width=6, keep_top=2,
                    seed=5, judge_budget=1, judge_margin=3.0)
    for entry in result.report["iterations"]:
        assert entry["judge"]["asked"] <= 1
        assert sum(1 for j in result.report["judgements"] if j["iteration"] == entry["iteration"]) <= 1
    assert len(vision.vision_requests) == 2 * len(result.report["judgements"]) == 6   # two requests a pair
    vision.reset()
    vision.add_vision_models()
    none = search(tmp_path / "zero", vision, judge=PairwiseJudge(engine(vision)), beam_width=6, seed=5,
                  judge_margin=0.0)
    assert none.report["judgements"] == [] and not vision.vision_requests
    assert all("judge" not in entry for entry in none.report["iterations"])


def test_the_report_does_not_depend_on_how_many_requests_run_at_once(tmp_path, vision):
    reports = []
    for concurrency in (1, 4):
        vision.reset()
        vision.add_vision_models()
        result = search(tmp_path / str(concurrency), vision, judge=PairwiseJudge(engine(vision)),
                        critic=engine(vision), beam_width=6, seed=5, judge_margin=2.0, llm_concurrency=concurrency)
        reports.append(result.report)
    one, four = (timeless(r["judgements"]) for r in reports)
    assert one == four and one
    assert [e["survivors"] for e in reports[0]["iterations"]] == [e["survivors"] for e in reports[1]["iterations"]]
    assert [c["evaluation"] for c in reports[0]["candidates"]] == [c["evaluation"] for c in reports[1]["candidates"]]


def test_replay_uses_the_recorded_verdicts_and_asks_no_model(tmp_path, vision):
    source = search(tmp_path, vision, judge=PairwiseJudge(engine(vision)), beam_width=6, seed=5)
    vision.reset()
    replay = BeamSearch.replay(source.run_dir, HashGenerator(), StatsScorer(), tmp_path / "replays")
    assert vision.requests == []
    assert [e["survivors"] for e in replay.report["iterations"]] == \
        [e["survivors"] for e in source.report["iterations"]]
    assert timeless(replay.report["judgements"]) == timeless(source.report["judgements"])
    assert replay.report["config"]["judge"]["model"] == VISION
    assert all(c["evaluation"] is None for c in replay.report["candidates"])


def test_a_judge_that_times_out_lets_the_round_go_on_by_scores(tmp_path, vision):
    vision.delay_when("Which shows the request better", 1.5)
    judge = PairwiseJudge(engine(vision, timeout=0.4, retries=0))
    result = search(tmp_path, vision, judge=judge, beam_width=6, seed=5, iterations=2)
    report = result.report
    for entry in report["iterations"]:
        assert entry["survivors"] == score_order(report, entry["iteration"])[:2]
        assert entry["judge"]["error"].startswith("OllamaTimeout")
    failed = [j for j in report["judgements"] if j.get("error")]
    assert len(failed) == 2 and all(j["verdict"] == "tie" for j in failed)
    assert sum("the judge failed" in w for w in report["warnings"]) == 2
    assert result.stop_reason == "max_iterations"


def test_an_interrupt_while_judging_keeps_the_record(tmp_path, vision):
    vision.delay_when("Which shows the request better", 0.3)
    stop = {"now": False}

    def on_progress(event):
        if event.phase == "judge":
            stop["now"] = True
    callbacks = SearchCallbacks(on_progress=on_progress, should_stop=lambda: stop["now"])
    with pytest.raises(Interrupted):
        search(tmp_path, vision, judge=PairwiseJudge(engine(vision)), beam_width=6, seed=5, callbacks=callbacks)
    (run_dir,) = (tmp_path / "runs").iterdir()
    report = RunRecord.open(run_dir).report
    assert report["status"] == "interrupted" and len(report["candidates"]) == 6
    assert report["iterations"] == []            # the round was not closed: resume judges it again


def test_a_round_interrupted_while_judging_resumes_to_the_same_result(tmp_path, vision):
    judge = PairwiseJudge(engine(vision))
    whole = search(tmp_path / "whole", vision, judge=judge, beam_width=6, seed=5, judge_margin=2.0)
    assert len(whole.report["judgements"]) > 2
    vision.reset()
    vision.add_vision_models()

    def judged_once() -> bool:             # stop once the first verdict of round 0 is on record
        reports = list((tmp_path / "cut" / "runs").glob("*/report.json"))
        return bool(reports) and bool(json.loads(reports[0].read_text(encoding="utf-8"))["judgements"])
    try:       # Interrupted when round 0 was not closed yet; otherwise a result with stop_reason "interrupted"
        search(tmp_path / "cut", vision, judge=judge, beam_width=6, seed=5, judge_margin=2.0,
               callbacks=SearchCallbacks(should_stop=judged_once))
    except Interrupted:
        pass
    (run_dir,) = (tmp_path / "cut" / "runs").iterdir()
    decided_before = RunRecord.open(run_dir).report["judgements"]
    assert RunRecord.open(run_dir).report["stop_reason"] == "interrupted" and decided_before
    time.sleep(0.3)                        # requests abandoned by the interrupt finish on the server
    asked_before = len(vision.vision_requests)
    resumed = BeamSearch(engine(vision, TEXT), HashGenerator(), StatsScorer(), BeamConfig(),
                         judge=judge).resume(run_dir)
    assert timeless(resumed.report["judgements"]) == timeless(whole.report["judgements"])
    assert [e["survivors"] for e in resumed.report["iterations"]] == \
        [e["survivors"] for e in whole.report["iterations"]]
    asked_again = len(vision.vision_requests) - asked_before
    assert asked_again == 2 * (len(whole.report["judgements"]) - len(decided_before))   # decided pairs not re-asked


def test_a_resumed_round_reuses_its_own_verdicts_and_asks_only_the_rest(tmp_path, vision):
    import torch
    blues = {"i1c0": 0.30, "i1c1": 0.50, "i1c2": 0.70, "i1c3": 0.10}
    ranked = rank([made("i1c0", 41.0), made("i1c1", 40.5), made("i1c2", 40.0), made("i1c3", 39.8)])
    images = {cid: torch.full((16, 16, 3), level) for cid, level in blues.items()}
    config = BeamConfig(keep_top=2, judge_budget=4, judge_margin=5.0)
    whole = RunRecord.create(tmp_path, PROMPT, {}, run_id="whole")
    first = _Asking(PairwiseJudge(engine(vision)))
    order, summary = JudgePhase(first, config, PROMPT, whole, lambda c: images[c.id], lambda: False).order(1, ranked)
    assert len(first.asked) == 8
    # The same round, interrupted after its first two verdicts were recorded, then resumed from the record.
    cut = RunRecord.create(tmp_path, PROMPT, {}, run_id="cut")
    for entry in whole.report["judgements"][:2]:
        cut.add_judgement(entry)
    again = _Asking(PairwiseJudge(engine(vision)))
    phase = JudgePhase(again, config, PROMPT, cut, lambda c: images[c.id], lambda: False,
                       recorded=recorded_judgements(cut.report["judgements"]))
    resumed_order, resumed_summary = phase.order(1, ranked)
    assert len(again.asked) == 4                                  # the two recorded pairs were not asked again
    assert timeless(cut.report["judgements"]) == timeless(whole.report["judgements"])
    assert [c.id for c in resumed_order] == [c.id for c in order] and resumed_summary == summary


# ---- the rule itself, on a hand-made round -------------------------------------------------------------------------
def made(cid: str, total: float) -> Candidate:
    iteration, index = int(cid[1]), int(cid[3])
    return Candidate(id=cid, iteration=iteration, index=index, parent=None, dimension=None, what="w", how="h",
                     prompt=cid, negative=None, seed=1, scores={"alignment": total, "aesthetic": 5.0,
                                                                 "total": total}, status="ok")


def test_the_window_straddles_the_cut_within_the_margin():
    ranked = rank([made("i1c0", 50.0), made("i1c1", 41.0), made("i1c2", 40.0), made("i1c3", 39.5),
                   made("i1c4", 20.0)])
    std = pstdev([50.0, 41.0, 40.0, 39.5, 20.0])          # 9.6; cut 40.5
    assert [c.id for c in near_cut(ranked, 2, 0.1)] == ["i1c1", "i1c2"]          # within 0.96 of the cut
    assert [c.id for c in near_cut(ranked, 2, 1.0)] == ["i1c0", "i1c1", "i1c2", "i1c3"]
    assert near_cut(ranked, 2, 0.01) == []                # nobody within 0.096 of 40.5: nothing to judge
    assert near_cut(ranked, 5, 1.0) == []                 # nobody is left out
    assert std > 9
    pairs = pairs_across_cut(near_cut(ranked, 2, 1.0), {"i1c0", "i1c1"})
    assert pairs == [("i1c1", "i1c2"), ("i1c1", "i1c3"), ("i1c0", "i1c2"), ("i1c0", "i1c3")]


def test_net_wins_reorder_the_window_only_and_keep_score_order_on_ties():
    ranked = rank([made("i1c0", 50.0), made("i1c1", 41.0), made("i1c2", 40.0), made("i1c3", 39.5),
                   made("i1c4", 20.0)])
    window = ranked[1:4]
    graph = VerdictGraph([{"a": "i1c1", "b": "i1c3", "verdict": "b"}, {"a": "i1c2", "b": "i1c1", "verdict": "a"}])
    # i1c3 beats i1c1 (and, through it, nothing else); i1c2 beats i1c1: nets c3 +1, c2 +1, c1 -2
    assert [c.id for c in judged_order(ranked, window, graph)] == ["i1c0", "i1c2", "i1c3", "i1c1", "i1c4"]
    assert [c.id for c in judged_order(ranked, window, VerdictGraph())] == [c.id for c in ranked]


class _Asking:
    """A judge over the fake Ollama server that also notes which pairs it was asked (in either order)."""

    def __init__(self, judge):
        self.judge, self.asked = judge, []
        self.model = judge.model

    def ask(self, user_prompt, first, second, seed=None):
        self.asked.append((first, second))
        return self.judge.ask(user_prompt, first, second, seed=seed)

    def encode(self, image):
        return self.judge.encode(image)

    def judgement(self, *args):
        return self.judge.judgement(*args)


def test_pairs_implied_by_earlier_verdicts_are_not_asked(tmp_path, vision):
    import torch
    # blue levels: i1c2 > i1c1 > i1c0, i1c3 lowest; totals put i1c0, i1c1 in, i1c2, i1c3 out, all near the cut
    blues = {"i1c0": 0.30, "i1c1": 0.50, "i1c2": 0.70, "i1c3": 0.10}
    ranked = rank([made("i1c0", 41.0), made("i1c1", 40.5), made("i1c2", 40.0), made("i1c3", 39.8)])
    images = {cid: torch.full((16, 16, 3), level) for cid, level in blues.items()}
    record = RunRecord.create(tmp_path, PROMPT, {})
    # An earlier round decided i1c2 > i1c1 and i1c1 > i1c0: so i1c2 > i1c0 is implied, never asked.
    record.add_judgement({"iteration": 0, "a": "i1c1", "b": "i1c2", "verdict": "b", "answers": []})
    record.add_judgement({"iteration": 0, "a": "i1c0", "b": "i1c1", "verdict": "b", "answers": []})
    judge = _Asking(PairwiseJudge(engine(vision)))
    config = BeamConfig(keep_top=2, judge_budget=4, judge_margin=5.0)
    phase = JudgePhase(judge, config, PROMPT, record, lambda c: images[c.id], lambda: False)
    order, summary = phase.order(1, ranked)
    asked = {frozenset((j["a"], j["b"])) for j in record.report["judgements"] if j["iteration"] == 1}
    assert asked == {frozenset(("i1c0", "i1c3")), frozenset(("i1c1", "i1c3"))}
    assert summary["asked"] == 2 and summary["inferred"] == 2          # (i1c1, i1c2) asked before, (i1c0, i1c2) implied
    assert len(judge.asked) == 4 == phase.requests
    assert [c.id for c in order] == ["i1c2", "i1c1", "i1c0", "i1c3"]


def test_a_batch_ranked_by_the_judge_alone_skips_implied_pairs(vision):
    import torch
    from pipeline.beam.judging import rank_images
    images = [torch.full((8, 8, 3), level) for level in (0.2, 0.8, 0.5, 0.1)]
    order, judgements = rank_images(PairwiseJudge(engine(vision)), PROMPT, images)
    assert order == [1, 2, 0, 3]                                  # more blue first
    # 0v1, 0v2, 0v3 and 1v2 are asked; 1v3 and 2v3 follow from 1>0>3 and 2>0>3
    assert [(j["a"], j["b"], j["verdict"]) for j in judgements] == [
        ("image 0", "image 1", "b"), ("image 0", "image 2", "b"), ("image 0", "image 3", "a"),
        ("image 1", "image 2", "a")]
    assert len(vision.vision_requests) == 8
    order, judgements = rank_images(PairwiseJudge(engine(vision)), PROMPT, images, budget=1)
    assert len(judgements) == 1 and order == [1, 2, 3, 0]           # net wins +1, 0, 0, -1
