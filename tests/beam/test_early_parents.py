"""Parents asked before their round: a candidate sure to survive, whatever the rest of its round scores, is asked
for its children while the round's last images still render. The fake Ollama is a real HTTP server; the report
must be the one a search that waits for the whole round writes."""
import threading
import time

import pytest

from pipeline.beam import BeamConfig, BeamSearch, SearchCallbacks
from pipeline.beam.early import certain_survivors, early_starts_possible, next_round_certain, still_to_score
from pipeline.beam.types import STATUS_FAILED, STATUS_OK, Candidate
from pipeline.llm import OllamaClient
from pipeline.llm.operations import PromptEngine
from tests.beam.test_beam_collaborators import HashGenerator, StatsScorer
from tests.beam.test_beam_streaming import MODEL, PROMPT, comparable, config, search
from tests.fixtures.ollama import Latency

ROUND1 = "Review it"          # in the user message of every per-parent request


def refinements(fake) -> list[dict]:
    return [b for b in fake.bodies() if ROUND1 in b["messages"][-1]["content"]]


class WaitsForARequest(HashGenerator):
    """While rendering the `at`-th image, waits (up to `patience` s) for the `count`-th per-parent request to reach
    the fake, and notes whether it came."""

    def __init__(self, fake, at: int, count: int, patience: float):
        super().__init__()
        self.fake, self.at, self.count, self.patience = fake, at, count, patience
        self.came = None

    def generate(self, requests, on_step=None, should_stop=None):
        if len(self.calls) + 1 == self.at:
            deadline = time.monotonic() + self.patience
            while len(refinements(self.fake)) < self.count and time.monotonic() < deadline:
                time.sleep(0.01)
            self.came = len(refinements(self.fake)) >= self.count
        return super().generate(requests, on_step, should_stop)


def test_the_first_sure_parent_is_asked_while_the_last_image_of_its_round_renders(tmp_path, fake_ollama):
    # round 0 renders its 4 images one by one; once 3 are scored the best of them is sure to be among the 2 kept
    early = WaitsForARequest(fake_ollama, at=4, count=1, patience=10)
    result = search(tmp_path, fake_ollama, "early", early)
    assert early.came
    asked_early = refinements(fake_ollama)[0]["messages"][-1]["content"]
    report = result.report
    by_id = {c["id"]: c for c in report["candidates"]}
    first_three = sorted((by_id[i] for i in report["iterations"][0]["candidates"][:3]),
                         key=lambda c: -c["scores"]["total"])
    assert first_three[0]["id"] in report["iterations"][0]["survivors"]
    assert first_three[0]["what"] in asked_early

    # a target score may end the search after any round: nobody is asked before the round is over
    fake_ollama.reset()
    waits = WaitsForARequest(fake_ollama, at=4, count=1, patience=0.5)
    later = search(tmp_path, fake_ollama, "later", waits, target_score=1e9)
    assert waits.came is False
    # the same search either way: the same requests, only sent sooner
    assert comparable(later.report) == comparable(report)
    assert later.report["llm"] == report["llm"]


class CountingClient(OllamaClient):
    """The real client, counting the chats it has open at once."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._count_lock = threading.Lock()
        self.open = self.most_open = 0

    def chat(self, *args, **kwargs):
        with self._count_lock:
            self.open += 1
            self.most_open = max(self.most_open, self.open)
        try:
            return super().chat(*args, **kwargs)
        finally:
            with self._count_lock:
                self.open -= 1


@pytest.mark.parametrize("llm_concurrency", [1, 2])
def test_early_requests_keep_to_llm_concurrency_and_change_no_report(tmp_path, fake_ollama, llm_concurrency):
    straight = search(tmp_path, fake_ollama, "straight", llm_concurrency=4)
    fake_ollama.reset()
    fake_ollama.set_latency(Latency(decode_tps=3000, prefill_tps=200000, slots=4))
    client = CountingClient(fake_ollama.url, MODEL, retries=0)
    result = BeamSearch(PromptEngine(client, seed=3), HashGenerator(), StatsScorer(),
                        config(llm_concurrency=llm_concurrency)).run(PROMPT, tmp_path, "counted")
    assert client.most_open == llm_concurrency
    assert comparable(result.report) == comparable(straight.report)


def test_a_stop_while_an_early_request_is_with_the_llm_does_not_wait_for_it(tmp_path, fake_ollama):
    probe = search(tmp_path, fake_ollama, "probe", iterations=2)
    by_id = {c["id"]: c for c in probe.report["candidates"]}
    first_three = sorted((by_id[i] for i in probe.report["iterations"][0]["candidates"][:3]),
                         key=lambda c: -c["scores"]["total"])
    fake_ollama.reset()
    fake_ollama.delay_when(first_three[0]["what"], 30)     # the early request never comes back in time
    rendered = []
    started = time.monotonic()
    result = search(tmp_path, fake_ollama, "cut", iterations=2, callbacks=SearchCallbacks(
        on_candidate=lambda c, i: rendered.append(c.id), should_stop=lambda: len(rendered) >= 4))
    assert time.monotonic() - started < 10
    assert result.stop_reason == "interrupted" and len(result.report["candidates"]) == 4


# ---- the decisions, one by one ----------------------------------------------------------------------------------
def scored(index: int, total: float, iteration: int = 1, status: str = STATUS_OK) -> Candidate:
    candidate = Candidate(id=f"i{iteration}c{index}", iteration=iteration, index=index, parent=None,
                          dimension=None, what="w", how="h", prompt="p", seed=index, negative=None)
    candidate.status = status
    if status == STATUS_OK and total is not None:
        candidate.scores = {"alignment": total, "aesthetic": 5.0, "total": total}
    return candidate


def pending(index: int) -> Candidate:
    return Candidate(id=f"i1c{index}", iteration=1, index=index, parent=None, dimension=None, what="w", how="h",
                     prompt="p", seed=index, negative=None)


def test_a_candidate_is_sure_to_survive_only_when_the_rest_cannot_push_it_out():
    parents = [scored(0, 50.0, iteration=0), scored(1, 40.0, iteration=0)]
    planned = [scored(0, 60.0), scored(1, 45.0), pending(2)]
    remaining = still_to_score(planned, unplanned=1)
    assert remaining == 2
    assert certain_survivors(parents, planned, remaining, keep_top=2) == []      # two could beat them all
    assert [c.id for c in certain_survivors(parents, planned, 1, keep_top=2)] == ["i1c0"]
    assert [c.id for c in certain_survivors(parents, planned, 0, keep_top=2)] == ["i1c0", "i0c0"]
    assert [c.id for c in certain_survivors(parents, planned, 1, keep_top=3)] == ["i1c0", "i0c0"]
    failed = [scored(3, None, status=STATUS_FAILED)]
    assert still_to_score(failed, unplanned=0) == 0          # a failed candidate never ranks: not to score


@pytest.mark.parametrize("changes, before, without_gain, expected", [
    ({}, 70.0, 0, True),
    ({"iterations": 2}, 70.0, 0, False),                      # the next round would be past the last
    ({"target_score": 99.0}, 70.0, 0, False),                 # the rest may reach the target
    ({"time_budget_s": 60.0}, 70.0, 0, False),
    ({"patience": 1}, 50.0, 0, True),                         # 60 beats 50: a gain already
    ({"patience": 1}, 70.0, 0, False),                        # no gain yet: patience may run out
    ({"patience": 3}, 70.0, 1, True),                         # two rounds without gain at most: 2 < 3
])
def test_the_next_round_is_certain_only_when_no_stop_rule_can_end_the_search(changes, before, without_gain,
                                                                              expected):
    config = BeamConfig(**({"iterations": 3} | changes))
    planned = [scored(0, 60.0), scored(1, 45.0), pending(2)]
    assert next_round_certain(config, 1, planned, 1, before, without_gain) is expected


def test_a_round_that_could_still_fail_by_half_is_not_certain():
    config = BeamConfig(iterations=3)
    planned = [scored(0, 60.0), scored(1, None, status=STATUS_FAILED), pending(2)]
    assert next_round_certain(config, 1, planned, 1, 70.0, 0) is False        # 2 failed of 3 at worst
    assert next_round_certain(config, 1, planned[:2] + [scored(2, 40.0)], 0, 70.0, 0) is True


@pytest.mark.parametrize("changes", [{"target_score": 80.0}, {"time_budget_s": 60.0}, {"dimension_policy": "adaptive"},
                                     {"use_negative": True}, {"low_vram": True}])
def test_settings_that_may_change_the_parents_or_the_requests_ask_nobody_early(changes):
    assert early_starts_possible(BeamConfig(), judged=False)
    assert not early_starts_possible(BeamConfig(), judged=True)
    assert not early_starts_possible(BeamConfig(**changes), judged=False)


def test_a_stream_whose_answers_all_ended_after_their_last_draft_was_taken_is_ready():
    """Every draft taken while the units were still running: ready() must not look for more drafts forever."""
    import threading as _threading

    from pipeline.beam.planning import KnownPrompts, RoundPlan
    from pipeline.beam.stream import PlanBuilder, RoundStream

    release = _threading.Event()

    class Draft:
        def __init__(self, what):
            self.parent, self.dimension, self.what, self.how, self.prompt = None, None, what, "how", f"{what} how"
            self.negative, self.critique, self.error, self.fallbacks, self.duplicate_of = None, None, None, [], None

    def unit(what):
        def run(emit):
            draft = Draft(what)
            emit(draft)
            release.wait(5)            # the answer's last bytes come after its only draft was handed over
            return [draft]
        return run
    stream = RoundStream(PlanBuilder(RoundPlan(0, None), KnownPrompts(), lambda draft, index: index),
                         [unit("amber"), unit("cobalt")], 2, lambda: False, streaming=True, interleave=True)
    taken = [stream.next(), stream.next()]
    assert [c[0].what for c in taken] == ["amber", "cobalt"]
    assert stream.ready() is False          # the answers are still being written
    release.set()
    deadline = time.monotonic() + 5
    while not stream.ready() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.ready() is True and stream.next() == [] and not stream
