"""A model that keeps writing prompts it already wrote: the search asks once more with a nudge (the texts to
avoid, a warmer temperature) and, if the round still brings nothing new, stops with stop reason `exhausted`
instead of running empty rounds. PromptEngine talks to the fake Ollama, made repetitive with answer_with()."""
import json

from pipeline.beam import BeamSearch
from pipeline.llm import OllamaClient
from pipeline.llm.operations import DEFAULT_TEMPERATURES, PromptEngine
from pipeline.record import RunRecord
from tests.beam.test_beam_collaborators import HashGenerator, StatsScorer
from tests.beam.test_beam_streaming import MODEL, PROMPT, config

NUDGED = "already written in this search"


def repetitive(nudge_helps: bool):
    """Every refinement answer has the same two children, whatever the parent; a nudged request gets a fresh
    answer (the fake's usual one) when nudge_helps."""
    def write(body):
        children = body["format"]["properties"].get("children")
        if children is None or (nudge_helps and NUDGED in body["messages"][-1]["content"]):
            return None
        half = next(key for key in children["items"]["properties"] if key != "prompt")
        return json.dumps({"critique": "The sea is flat.", "recommendation": "Add waves.", "reason": "Contrast.",
                           "children": [{half: f"Tall waves break on black rocks, variant {j}, under grey cloud.",
                                         "prompt": f"A lighthouse over tall waves, variant {j}, grey cloud."}
                                        for j in range(2)]})
    return write


def search(tmp_path, fake, name, **changes):
    engine = PromptEngine(OllamaClient(fake.url, MODEL, retries=0), seed=3)
    return BeamSearch(engine, HashGenerator(), StatsScorer(), config(**changes)).run(PROMPT, tmp_path, name)


def test_a_round_of_repeats_is_asked_again_with_a_nudge_then_the_search_stops_exhausted(tmp_path, fake_ollama):
    fake_ollama.answer_with(repetitive(nudge_helps=False))
    result = search(tmp_path, fake_ollama, "repeats", iterations=10)
    report = RunRecord.open(result.run_dir).report
    assert result.stop_reason == report["stop_reason"] == "exhausted" and report["status"] == "finished"
    rounds = report["iterations"]
    # round 1 renders the two new prompts once (the second parent's are repeats of the first's); round 2 brings
    # nothing new, neither at first nor when asked again: the search stops there, not after 10 rounds
    assert [len(r["candidates"]) for r in rounds] == [4, 2, 0]
    assert rounds[2]["nudged"] is True and "nudged" not in rounds[1]
    assert len(rounds[2]["duplicates"]) == 8                   # 2 parents x 2 children, asked twice
    assert rounds[2]["survivors"] == rounds[1]["survivors"] and report["best"] == rounds[1]["best"]
    chats = fake_ollama.bodies()
    nudged = [b for b in chats if NUDGED in b["messages"][-1]["content"]]
    assert len(chats) == report["llm"]["calls"] == 2 + 2 + 2 + 2 and len(nudged) == 2
    for body in nudged:             # the nudge lists the texts to avoid and asks a little warmer
        assert "Tall waves break on black rocks, variant 0" in body["messages"][-1]["content"]
        assert body["options"]["temperature"] == DEFAULT_TEMPERATURES["refine"] + 0.3
    assert all(b["options"]["temperature"] == DEFAULT_TEMPERATURES["refine"] for b in chats[2:6])


def test_a_nudge_that_brings_new_prompts_lets_the_search_go_on(tmp_path, fake_ollama):
    fake_ollama.answer_with(repetitive(nudge_helps=True))
    result = search(tmp_path, fake_ollama, "nudged", iterations=4)
    rounds = result.report["iterations"]
    assert result.stop_reason == "max_iterations" and len(rounds) == 4
    assert rounds[2]["nudged"] and len(rounds[2]["candidates"]) == 4
    by_id = {c["id"]: c for c in result.report["candidates"]}
    assert all(by_id[i]["status"] == "ok" for i in rounds[2]["candidates"])


def test_a_replay_of_an_exhausted_run_ends_the_same_way(tmp_path, fake_ollama):
    fake_ollama.answer_with(repetitive(nudge_helps=False))
    source = search(tmp_path, fake_ollama, "source", iterations=6)
    replay = BeamSearch.replay(source.run_dir, HashGenerator(), StatsScorer(), tmp_path / "replays")
    assert replay.stop_reason == "exhausted" and replay.report["iterations"] == source.report["iterations"]
