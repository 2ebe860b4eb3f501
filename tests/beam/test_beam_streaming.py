"""Streaming rounds with the per-round prompt operations: few requests, rendering while the LLM works, and reports
that never depend on timing. PromptEngine talks HTTP to the fake Ollama server (with its latency model where the
timing matters); generation and scoring are the fast deterministic collaborators."""
import time

import pytest

from pipeline.beam import BeamConfig, BeamSearch, SearchCallbacks
from pipeline.llm import OllamaClient
from pipeline.llm.operations import PromptEngine
from pipeline.record import RunRecord
from tests.fixtures.ollama import Latency
from tests.beam.test_beam_collaborators import HashGenerator, StatsScorer

PROMPT = "a lighthouse on a cliff at dusk"
MODEL = "qwen2.5:7b-instruct"


def config(**changes):
    return BeamConfig(**({"beam_width": 4, "keep_top": 2, "iterations": 3, "seed": 5, "width": 32, "height": 32,
                          "steps": 1} | changes))


def engine(fake):
    return PromptEngine(OllamaClient(fake.url, MODEL, retries=0), seed=3)


def search(tmp_path, fake, name, generator=None, callbacks=None, **changes):
    return BeamSearch(engine(fake), generator or HashGenerator(), StatsScorer(), config(**changes),
                      callbacks).run(PROMPT, tmp_path, name)


def comparable(report, batches=True):
    """What must not depend on timing: every candidate (ids, halves, prompts, seeds, scores, the batch it was
    rendered in) and every round. batches=False compares runs that batch differently by design (low_vram renders
    a round as one batch, a resumed round renders its planned candidates together)."""
    candidates = [c if batches else {k: v for k, v in c.items() if k != "batch"} for c in report["candidates"]]
    return {"candidates": candidates, "iterations": report["iterations"], "best": report.get("best"),
            "lineage": report.get("lineage"), "stop_reason": report["stop_reason"]}


@pytest.mark.parametrize("llm_concurrency", [1, 4])
def test_a_search_of_three_rounds_makes_six_requests_and_keeps_the_record_whole(tmp_path, fake_ollama,
                                                                               llm_concurrency):
    result = search(tmp_path, fake_ollama, "run", llm_concurrency=llm_concurrency)
    report = result.report
    chats = sorted(fake_ollama.bodies("/api/chat"), key=lambda b: "pairs" not in b["format"]["properties"])
    # round 0: the four (WHAT, HOW, prompt) entries, two per request; rounds 1-2: one request per parent
    # (keep_top=2) for its critique and both children. (Before: 2 expands + 4 combines + 2 x (2 critiques +
    # 2 refines + 4 combines) = 22.)
    round0_requests = 2
    assert len(chats) == report["llm"]["calls"] == round0_requests + 2 + 2 <= 10
    round0 = chats[:round0_requests]
    assert [b["format"]["properties"]["pairs"]["minItems"] for b in round0] == [2, 2]
    # split requests cannot see each other: each takes its own direction
    assert len({b["messages"][-1]["content"] for b in round0}) == round0_requests
    assert report["llm"]["fallbacks"] == 0
    assert [len(it["candidates"]) + len(it["duplicates"]) for it in report["iterations"]] == [4, 4, 4]
    by_id = {c["id"]: c for c in report["candidates"]}
    for cand in report["candidates"]:
        assert cand["what"] and cand["how"] and cand["prompt"] and cand["status"] == "ok" and not cand["fallbacks"]
        if cand["parent"]:
            parent = by_id[cand["parent"]]
            kept = "how" if cand["dimension"] == "what" else "what"
            assert cand[kept] == parent[kept] and cand[cand["dimension"]] != parent[cand["dimension"]]
            # the child carries the critique written, in the same answer, about its own parent's scores
            assert cand["critique"]["critique"] and cand["critique"]["recommendation"]
    refine_bodies = chats[round0_requests:]
    for body in refine_bodies:
        user = body["messages"][-1]["content"]
        assert "Scores: alignment" in user and "Severity:" in user
        assert list(body["format"]["properties"]) == ["critique", "recommendation", "reason", "children"]


def test_children_render_while_the_next_parent_is_still_with_the_llm(tmp_path, fake_ollama):
    first = search(tmp_path, fake_ollama, "probe", iterations=2)
    parent_two = first.report["iterations"][0]["survivors"][1]
    parent_two_what = next(c["what"] for c in first.report["candidates"] if c["id"] == parent_two)
    fake_ollama.reset()
    fake_ollama.delay_when(parent_two_what, 0.6)     # the second parent's request is slow, in every round
    seen = []

    class Watching(HashGenerator):
        def generate(self, requests, on_step=None, should_stop=None):
            seen.append((len(requests), len(fake_ollama.answered)))
            return super().generate(requests, on_step, should_stop)
    result = search(tmp_path, fake_ollama, "watched", Watching(), llm_concurrency=1, iterations=2)
    # round 0's two requests (two pairs each) stream in and render one pair at a time; then round 1's first
    # parent's first child renders while the second parent's answer (the fourth of the run) has not come back yet
    assert [size for size, _ in seen] == [1] * 8
    assert seen[4][1] <= 3
    assert comparable(result.report) == comparable(first.report)
    # the parents take turns, first children first: while one parent writes its second child, the other's first
    # renders (at one request at a time that only reorders the GPU's work; with several it fills its idle time)
    by_id = {c["id"]: c for c in result.report["candidates"]}
    round1 = [by_id[i]["parent"] for i in result.report["iterations"][1]["candidates"]]
    parents = result.report["iterations"][0]["survivors"]
    assert round1 == [parents[0], parents[1], parents[0], parents[1]]


def test_the_report_does_not_depend_on_which_parent_answers_first(tmp_path, fake_ollama):
    straight = search(tmp_path, fake_ollama, "straight")
    parents = straight.report["iterations"][0]["survivors"]
    first_parent_what = next(c["what"] for c in straight.report["candidates"] if c["id"] == parents[0])
    fake_ollama.reset()
    fake_ollama.delay_when(first_parent_what, 0.5)   # the first parent answers last
    reordered = search(tmp_path, fake_ollama, "reordered", llm_concurrency=4)
    round1 = [b for b in fake_ollama.answered if "Review it" in b["messages"][-1]["content"]][:2]
    assert first_parent_what not in round1[0]["messages"][-1]["content"]     # really answered out of order
    assert first_parent_what in round1[1]["messages"][-1]["content"]
    assert comparable(reordered.report) == comparable(straight.report)


def test_timing_of_a_slow_model_changes_nothing_and_low_vram_keeps_the_phases_ordered(tmp_path, fake_ollama):
    instant = search(tmp_path, fake_ollama, "instant")
    fake_ollama.reset()
    fake_ollama.set_latency(Latency(decode_tps=4000, prefill_tps=200000, slots=2))
    slow = search(tmp_path, fake_ollama, "slow")
    assert fake_ollama.busy_s > 0.05
    assert comparable(slow.report) == comparable(instant.report)
    fake_ollama.reset()
    one_at_a_time = search(tmp_path, fake_ollama, "one-at-a-time", llm_concurrency=1)
    assert comparable(one_at_a_time.report) == comparable(instant.report)     # concurrency never changes it
    fake_ollama.reset()
    seen = []

    class Watching(HashGenerator):
        def generate(self, requests, on_step=None, should_stop=None):
            seen.append((len(fake_ollama.unloads), len(requests)))
            return super().generate(requests, on_step, should_stop)
    ordered = search(tmp_path, fake_ollama, "ordered", Watching(), low_vram=True)
    # one batch a round (its candidates, duplicates dropped), each after Ollama was unloaded
    assert seen == [(k + 1, len(it["candidates"])) for k, it in enumerate(instant.report["iterations"])]
    assert comparable(ordered.report, batches=False) == comparable(instant.report, batches=False)


def test_interrupt_while_a_parent_waits_for_the_llm_resumes_mid_round(tmp_path, fake_ollama):
    straight = search(tmp_path, fake_ollama, "straight")
    parent_two = straight.report["iterations"][0]["survivors"][1]
    parent_two_what = next(c["what"] for c in straight.report["candidates"] if c["id"] == parent_two)
    fake_ollama.reset()
    # the second parent's answer stops after its first child and never goes on in time: the stop must not wait
    fake_ollama.pause_when(parent_two_what, 30, at="}, {")
    finished = []
    started = time.monotonic()
    interrupted = search(tmp_path, fake_ollama, "cut", callbacks=SearchCallbacks(
        on_candidate=lambda c, i: finished.append(c.id), should_stop=lambda: len(finished) >= 7), llm_concurrency=1)
    assert time.monotonic() - started < 10
    assert interrupted.stop_reason == "interrupted"
    report = RunRecord.open(interrupted.run_dir).report
    pending = report["pending"]
    first_parent = straight.report["iterations"][0]["survivors"][0]
    # planned so far, parents taking turns: the first parent's two children and the second's first
    assert pending["iteration"] == 1 and pending["planned_parents"] == [first_parent]
    assert len(report["candidates"]) == 7
    assert [c["id"] for c in pending["candidates"]] == ["i1c0", "i1c1", "i1c2"]

    fake_ollama.reset()
    resumed = BeamSearch(engine(fake_ollama), HashGenerator(), StatsScorer(), config()).resume(interrupted.run_dir)
    # only the parent that had not finished is asked again (for its second child), then the run goes on
    round1 = [b for b in fake_ollama.bodies() if "Review it" in b["messages"][-1]["content"]][:1]
    assert parent_two_what in round1[0]["messages"][-1]["content"]
    assert comparable(resumed.report, batches=False) == comparable(straight.report, batches=False)


@pytest.mark.parametrize("broken", ["garbage", "no_children"])
def test_an_unusable_answer_falls_back_by_rule_and_says_so(tmp_path, fake_ollama, broken):
    content = "not json at all" if broken == "garbage" else \
        '{"critique": "flat light", "recommendation": "add a warm rim light", "reason": "contrast", "children": []}'
    result_probe = search(tmp_path, fake_ollama, "probe", iterations=1)
    fake_ollama.reset()
    ops = engine(fake_ollama)
    parent = result_probe.report["candidates"][0]
    fake_ollama.script("/api/chat", {"content": content}, {"content": content})
    answer = ops.refine_children(PROMPT, parent["what"], parent["how"], parent["prompt"],
                                 parent["scores"], "how", 2, seed=1)
    assert answer.fallback and answer.fallback_count == 2 and answer.problem
    children = answer.value["children"]
    assert len(children) == 2 and all(c["what"] == parent["what"] and c["how"] != parent["how"] for c in children)
    if broken == "garbage":
        assert all(c["fallbacks"] == ["critique", "refine", "combine"] for c in children)
        assert answer.value["critique"]["reason"].startswith("Rule-based")
    else:
        assert all(c["fallbacks"] == ["refine", "combine"] for c in children)
        assert answer.value["critique"]["recommendation"] == "add a warm rim light"
    assert len(fake_ollama.bodies()) == (2 if broken == "garbage" else 1)


def test_a_generator_that_takes_several_calls_renders_batches_at_once_with_the_same_report(tmp_path, fake_ollama):
    one_at_a_time = search(tmp_path, fake_ollama, "one", llm_concurrency=2, keep_top=2)
    fake_ollama.reset()

    class TwoServers(HashGenerator):
        concurrency = 2

        def __init__(self):
            super().__init__()
            self.active = self.most = 0

        def generate(self, requests, on_step=None, should_stop=None):
            with self._lock:
                self.active += 1
                self.most = max(self.most, self.active)
            time.sleep(0.2)           # a remote server's render
            try:
                return super().generate(requests, on_step, should_stop)
            finally:
                with self._lock:
                    self.active -= 1
    generator = TwoServers()
    two = search(tmp_path, fake_ollama, "two", generator, llm_concurrency=2, keep_top=2)
    assert generator.most == 2
    assert comparable(two.report) == comparable(one_at_a_time.report)


def test_template_combine_and_negatives_with_the_per_round_requests(tmp_path, fake_ollama):
    result = search(tmp_path, fake_ollama, "template", combine_mode="template", use_negative=True, iterations=2)
    report = result.report
    chats = fake_ollama.bodies("/api/chat")
    structured = [b for b in chats if "terms" not in b["format"]["properties"]]
    negatives = [b for b in chats if "terms" in b["format"]["properties"]]
    assert len(structured) == 2 + 2                   # round 0 in two requests, round 1 one per parent
    for body in structured:                           # the model is not asked for a combined prompt
        items = body["format"]["properties"].get("pairs") or body["format"]["properties"]["children"]
        assert "prompt" not in items["items"]["properties"]
    ops = engine(fake_ollama)
    for cand in report["candidates"]:
        assert cand["prompt"] == ops.combine_template(cand["what"], cand["how"])
        assert cand["negative"] and "combine" not in cand["fallbacks"]
    assert len(negatives) >= len(report["candidates"]) and report["llm"]["calls"] == len(chats)
