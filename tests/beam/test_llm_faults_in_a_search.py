"""LLM faults in the middle of a search (PromptEngine over HTTP to the fake Ollama): the model deleted, unloaded, a
busy server. What the search does, what the record keeps, and that resume finishes the same search."""
import pytest

from pipeline.beam import BeamSearch
from pipeline.llm import OllamaClient
from pipeline.llm.client import OllamaModelNotFound
from pipeline.llm.operations import PromptEngine
from pipeline.record import RunRecord
from tests.beam.test_beam_collaborators import HashGenerator, StatsScorer
from tests.beam.test_beam_streaming import MODEL, PROMPT, comparable, config


def engine(fake):
    return PromptEngine(OllamaClient(fake.url, MODEL, retries=2, backoff_s=0.0), seed=3)


def search(tmp_path, fake, name, **changes):
    return BeamSearch(engine(fake), HashGenerator(), StatsScorer(), config(llm_concurrency=1, **changes)) \
        .run(PROMPT, tmp_path, name)


def test_the_model_deleted_mid_run_stops_the_search_naming_ollama_pull_and_resume_finishes_it(tmp_path,
                                                                                             fake_ollama):
    straight = search(tmp_path, fake_ollama, "straight")
    fake_ollama.reset()
    fake_ollama.after_chats(2, lambda: fake_ollama.remove_model(MODEL))      # `ollama rm` after round 0's answers
    with pytest.raises(OllamaModelNotFound) as info:
        search(tmp_path, fake_ollama, "deleted")
    assert str(info.value) == (
        f"Ollama model '{MODEL}' is not installed at {fake_ollama.url} (Ollama said: model '{MODEL}' not found). "
        f"Installed models: llama3.1:8b. Run `ollama pull {MODEL}`, or set OLLAMA_MODEL / the model input to an "
        f"installed model.")
    run_dir = tmp_path / "deleted"
    report = RunRecord.open(run_dir).report
    # the record keeps round 0 whole and says why the search stopped; no parent's children were made up
    assert report["status"] == "failed" and "ollama pull" in report["error"]
    assert [c["id"] for c in report["candidates"]] == ["i0c0", "i0c1", "i0c2", "i0c3"]
    assert all(c["status"] == "ok" and (run_dir / c["image"]).is_file() for c in report["candidates"])
    # the request that met the 404 is not retried (the other parent's may already have been on its way)
    assert len(fake_ollama.bodies()) in (3, 4)

    fake_ollama.reset()                                 # `ollama pull`: the model is back
    resumed = BeamSearch(engine(fake_ollama), HashGenerator(), StatsScorer(), config()).resume(run_dir)
    assert resumed.report["status"] == "finished"
    assert comparable(resumed.report) == comparable(straight.report)


@pytest.mark.parametrize("fault", ["unloaded", "busy"])
def test_an_unloaded_model_or_a_busy_server_mid_run_changes_nothing_in_the_record(tmp_path, fake_ollama, fault):
    straight = search(tmp_path, fake_ollama, "straight")
    fake_ollama.reset()

    def strike():
        if fault == "unloaded":     # Ollama unloaded the model (keep_alive ran out, or memory): the runner restarts
            fake_ollama.loaded.clear()
            fake_ollama.script("/api/chat", {"status": 500, "json": {"error": "llama runner process has terminated: "
                                                                             "signal: killed"}})
        else:                       # a proxy or OLLAMA_MAX_QUEUE: come back in 0.2 s
            busy = {"status": 503, "json": {"error": "server busy, please try again. maximum pending requests "
                                                     "exceeded"}, "headers": {"Retry-After": "0.2"}}
            fake_ollama.script("/api/chat", busy, busy)
    fake_ollama.after_chats(3, strike)
    struck = search(tmp_path, fake_ollama, fault)
    assert comparable(struck.report) == comparable(straight.report)
    assert struck.report["llm"] == straight.report["llm"]            # the retries are not extra operations
    assert len(fake_ollama.bodies()) == len(fake_ollama.answered) + (1 if fault == "unloaded" else 2)
