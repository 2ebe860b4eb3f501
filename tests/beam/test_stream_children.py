"""Answers that stream into rendering: each child is rendered as soon as its part of the answer is written, while
the rest is still coming, and the record is the one a non-streamed search writes. PromptEngine talks HTTP to the
fake Ollama, which streams NDJSON and can hold an answer between two of its children (`pause_when`) or break it."""
import json
import time

from pipeline.beam import BeamSearch, SearchCallbacks
from pipeline.llm import OllamaClient
from pipeline.llm.operations import PromptEngine
from pipeline.record import RunRecord
from tests.beam.test_beam_collaborators import HashGenerator, StatsScorer
from tests.beam.test_beam_streaming import MODEL, PROMPT, comparable, config

BETWEEN_ENTRIES = "}, {"        # where one entry of a list ends and the next begins, in the fake's JSON


def engine(fake, stream=True, retries=0):
    return PromptEngine(OllamaClient(fake.url, MODEL, retries=retries, backoff_s=0.0), seed=3, stream=stream)


def search(tmp_path, fake, name, stream=True, generator=None, callbacks=None, **changes):
    return BeamSearch(engine(fake, stream), generator or HashGenerator(), StatsScorer(), config(**changes),
                      callbacks).run(PROMPT, tmp_path, name)


class Watching(HashGenerator):
    """Notes, for every image, whether its own answer was still being written when it started rendering."""

    def __init__(self, fake):
        super().__init__()
        self.fake = fake
        self.renders: list[tuple[str, int, int]] = []      # (prompt, answers finished, answers streaming)

    def generate(self, requests, on_step=None, should_stop=None):
        for request in requests:
            self.renders.append((request.prompt, len(self.fake.answered), self.fake.streaming))
        return super().generate(requests, on_step, should_stop)


def test_each_child_renders_while_the_rest_of_its_answer_is_written_and_the_report_is_unchanged(tmp_path,
                                                                                                  fake_ollama):
    whole = search(tmp_path, fake_ollama, "whole", stream=False)
    assert all(not body["stream"] for body in fake_ollama.bodies())
    fake_ollama.reset()
    # every answer stops for 0.5 s after its first entry: the first child must not wait for it
    fake_ollama.pause_when("", 0.5, at=BETWEEN_ENTRIES)
    generator = Watching(fake_ollama)
    started = time.monotonic()
    streamed = search(tmp_path, fake_ollama, "streamed", generator=generator, llm_concurrency=1)
    assert all(body["stream"] for body in fake_ollama.bodies())
    report = streamed.report
    by_id = {c["id"]: c for c in report["candidates"]}
    renders = {prompt: (answered, streaming) for prompt, answered, streaming in generator.renders}
    # one request at a time, in plan order: round 0's two requests of two pairs, then round 1's two parents
    assert report["iterations"][1]["duplicates"] == []
    for u, first in enumerate(["i0c0", "i0c2", "i1c0", "i1c2"]):
        # the first entry of the u-th answer rendered after u answers had finished, while its own still streamed
        assert renders[by_id[first]["prompt"]] == (u, 1), first
    # one draft per batch: the batches never depend on what happened to be ready
    assert [len(call) for call in generator.calls] == [1] * len(report["candidates"])
    for entry in report["iterations"]:
        assert [by_id[i]["batch"] for i in entry["candidates"]] == list(range(len(entry["candidates"])))
    # the same candidates, ids, seeds, prompts, scores and rounds as the search that waited for whole answers
    assert comparable(report, batches=False) == comparable(whole.report, batches=False)
    assert time.monotonic() - started < 30

    fake_ollama.reset()                    # no pause, four requests at once: other timing, the same report
    again = search(tmp_path, fake_ollama, "again", llm_concurrency=4)
    assert comparable(again.report) == comparable(report)


def test_an_answer_that_breaks_after_its_first_child_keeps_it_and_fills_the_rest_by_rule(fake_ollama):
    ops = engine(fake_ollama)
    content = json.dumps({"critique": "flat light", "recommendation": "add a warm rim light", "reason": "contrast",
                          "children": [{"how": "Oil paint with a warm rim light on the tower and dark sea.",
                                        "prompt": "A lighthouse at dusk in oil paint with a warm rim light."},
                                       {"how": "Ink wash in cold dawn light with a misty horizon.",
                                        "prompt": "A lighthouse at dusk in ink wash, cold misty dawn."}]})
    cut = content.index(BETWEEN_ENTRIES) + len(BETWEEN_ENTRIES) + 5
    handed = []
    args = (PROMPT, "A lighthouse on a cliff.", "Soft watercolour.", "A lighthouse, soft watercolour.",
            {"alignment": 20.0, "aesthetic": 5.0, "total": 29.0}, "how", 2)

    for fault in ({"content": content, "drop_after": cut},               # the connection dropped
                  {"content": content[:cut], "done_reason": "length"}):   # cut off by num_predict, JSON unfinished
        fake_ollama.reset()
        fake_ollama.script("/api/chat", fault)
        handed.clear()
        answer = ops.refine_children(*args, seed=1, on_item=lambda i, child, critique: handed.append((i, child)))
        children = answer.value["children"]
        assert handed == [(0, children[0])]
        assert children[0]["how"].startswith("Oil paint") and children[0]["fallbacks"] == []
        assert children[1]["fallbacks"] == ["refine", "combine"] and children[1]["how"] != children[0]["how"]
        assert answer.value["critique"]["recommendation"] == "add a warm rim light"
        assert answer.fallback_count == 1 and len(fake_ollama.bodies()) == 1         # not asked again
    assert answer.problem == "it stopped before its end (the answer hit the num_predict token limit)"

    fake_ollama.reset()
    fake_ollama.script("/api/chat", {"content": content, "drop_after": cut})
    assert ops.refine_children(*args, seed=1).problem == (
        f"the answer broke off after 1 entries (Ollama at {fake_ollama.url} dropped the connection in the middle "
        f"of the chat answer for model '{MODEL}')")


def test_an_answer_that_breaks_before_its_first_child_is_asked_again_as_a_broken_answer_is(fake_ollama):
    ops = engine(fake_ollama, retries=1)
    args = (PROMPT, "A lighthouse on a cliff.", "Soft watercolour.", "A lighthouse, soft watercolour.",
            {"alignment": 20.0, "aesthetic": 5.0, "total": 29.0}, "how", 2)
    fake_ollama.script("/api/chat", {"default": True, "drop_after": 40})
    handed = []
    answer = ops.refine_children(*args, seed=1, on_item=lambda i, child, critique: handed.append(child))
    assert len(fake_ollama.bodies()) == 2 and not answer.fallback           # the dropped answer was asked again
    assert handed == answer.value["children"] and len(handed) == 2
    fake_ollama.reset()
    fake_ollama.script("/api/chat", {"content": '{"critique": "flat", "recommendation": "warm", "reason": "x", '
                                                '"children": [{"how": tru'}, {"content": "still not json"})
    answer = ops.refine_children(*args, seed=1, on_item=lambda i, child, critique: handed.append(child))
    assert len(fake_ollama.bodies()) == 2 and answer.fallback_count == 2       # unusable twice: the rule
    assert answer.value["critique"]["reason"].startswith("Rule-based")


def test_a_stop_between_two_children_of_one_answer_resumes_with_the_rest(tmp_path, fake_ollama):
    straight = search(tmp_path, fake_ollama, "straight")
    fake_ollama.reset()
    fake_ollama.pause_when("Review it", 3.0, at=BETWEEN_ENTRIES)      # round 1 answers hold after one child
    finished = []
    cut = search(tmp_path, fake_ollama, "cut", llm_concurrency=1, callbacks=SearchCallbacks(
        on_candidate=lambda c, i: finished.append(c.id), should_stop=lambda: len(finished) >= 5))
    assert cut.stop_reason == "interrupted"
    report = RunRecord.open(cut.run_dir).report
    pending = report["pending"]
    # the first parent's first child is planned and recorded; its answer was still being written
    assert [c["id"] for c in report["candidates"]][-1] == "i1c0"
    assert pending["iteration"] == 1 and pending["planned_parents"] == []
    assert [c["id"] for c in pending["candidates"]] == ["i1c0"]

    fake_ollama.reset()
    resumed = BeamSearch(engine(fake_ollama), HashGenerator(), StatsScorer(), config()).resume(cut.run_dir)
    # the first parent is asked again and only its second child is taken: no child twice, none lost
    assert comparable(resumed.report, batches=False) == comparable(straight.report, batches=False)
