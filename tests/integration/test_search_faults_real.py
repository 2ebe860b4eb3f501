"""Prompt Beam Search on a real ComfyUI under the conditions of a shared server: two searches queued back to back,
an interrupt while the search waits for its LLM, ComfyUI unloading the models between two rounds (its memory
management), a search re-queued after it failed, and a worker whose workflow answers with an image of the wrong size.
The fake Ollama on loopback plays the LLM (slow answers, a model deleted mid-run)."""
import json
import time

import pytest
import requests

from pipeline.beam import BeamConfig, BeamSearch
from pipeline.comfy_api.client import load_workflow
from pipeline.errors import GenerationFailed
from pipeline.generation import GenerationRequest
from pipeline.generation.comfy_workers import ComfyWorkerPool
from pipeline.record import RunRecord
from tests.beam.test_beam_collaborators import FastOps, StatsScorer
from tests.integration.test_comfy_workers_real import SHIPPED, on_this_machine
from tests.integration.test_search_node import MODEL, SIZE, graph  # noqa: F401 (graph is a fixture)

REVIEW = "Review it"          # in every round-k request (a parent's critique and children), never in round 0's


def runs_dir(server):
    return server.base / "output" / "promptbeam"


def run_of(server, prefix: str):
    (run_dir,) = [p for p in runs_dir(server).iterdir() if p.name.startswith(prefix + "-")]
    return run_dir, RunRecord.open(run_dir).report


def report_of(entry) -> dict:
    return json.loads(entry["outputs"]["show_report"]["text"][0])


def same_search(report) -> dict:
    """What two runs of the same search must share whatever the server did meanwhile: every candidate's halves,
    prompt, seed and scores, and every round."""
    keep = ("id", "parent", "what", "how", "prompt", "seed", "scores", "status")
    return {"candidates": [{k: c[k] for k in keep} for c in report["candidates"]],
            "iterations": report["iterations"], "best": report["best"], "stop_reason": report["stop_reason"]}


def wait_for_request(fake, text: str, timeout: float = 120.0) -> None:
    """Until the search has sent the LLM a request containing `text` (it is then waiting for the answer)."""
    deadline = time.monotonic() + timeout
    while not any(text in json.dumps(body) for body in fake.bodies()):
        assert time.monotonic() < deadline, f"no LLM request with {text!r} in {timeout} s"
        time.sleep(0.02)


def test_two_searches_queued_back_to_back_each_finish_as_if_alone(comfy_server, graph):
    first = comfy_server.post_prompt(graph(run_name="queued-a", seed=31))
    second = comfy_server.post_prompt(graph(run_name="queued-b", seed=32))      # waits in ComfyUI's queue
    assert first["status"] == second["status"] == 200 and not first["node_errors"] and not second["node_errors"]
    entries = [comfy_server.wait_history(q["prompt_id"], timeout=300) for q in (first, second)]
    assert [e["status"]["status_str"] for e in entries] == ["success", "success"]
    reports = [report_of(e) for e in entries]
    assert [r["config"]["seed"] for r in reports] == [31, 32]
    for prefix, report in zip(("queued-a", "queued-b"), reports):
        run_dir, on_disk = run_of(comfy_server, prefix)
        assert on_disk == report and report["status"] == "finished"
        assert all((run_dir / c["image"]).is_file() for c in report["candidates"])
    # the second search, run again alone, is the same search: nothing carried over from the one before it
    alone = report_of(comfy_server.run(graph(run_name="alone-b", seed=32), timeout=300))
    assert same_search(alone) == same_search(reports[1])


def test_an_interrupt_while_the_search_waits_for_the_llm_stops_at_once_and_keeps_the_record(comfy_server, graph,
                                                                                           fake_ollama):
    fake_ollama.delay_when(REVIEW, 30)            # round 1's answers would take 30 s
    ws = comfy_server.websocket()
    try:
        queued = comfy_server.post_prompt(graph(iterations=3, seed=33, run_name="llm-wait"), client_id=ws.client_id)
        assert queued["status"] == 200 and not queued["node_errors"], queued["body"]
        wait_for_request(fake_ollama, REVIEW)      # round 0 is recorded; the search now waits for the LLM
        asked = time.monotonic()
        comfy_server.interrupt()
        ws.wait_for(lambda m: m.get("type") == "execution_interrupted"
                    and m["data"]["prompt_id"] == queued["prompt_id"], timeout=30)
        elapsed = time.monotonic() - asked
    finally:
        ws.close()
    print(f"interrupt while waiting for the LLM took effect in {elapsed:.3f} s")
    assert elapsed < 1.0, f"the interrupt took {elapsed:.2f} s"
    entry = comfy_server.wait_history(queued["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    run_dir, report = run_of(comfy_server, "llm-wait")
    assert report["stop_reason"] == "interrupted" and report["status"] == "interrupted"
    assert [c["id"] for c in report["candidates"]] == ["i0c0", "i0c1"]
    assert all(c["status"] == "ok" and (run_dir / c["image"]).is_file() for c in report["candidates"])


def test_models_unloaded_by_comfyui_between_rounds_are_loaded_again_and_change_nothing(comfy_server, graph,
                                                                                       fake_ollama):
    kept = report_of(comfy_server.run(graph(seed=34, run_name="kept"), timeout=300))
    fake_ollama.reset()
    fake_ollama.delay_when(REVIEW, 2.0)          # round 1 waits for the LLM: ComfyUI frees memory meanwhile
    queued = comfy_server.post_prompt(graph(seed=34, run_name="unloaded"))
    wait_for_request(fake_ollama, REVIEW)
    freed = requests.post(comfy_server.url + "/promptbeam_test/unload_models", timeout=30).json()
    assert freed["loaded_before"] >= 1 and freed["loaded_after"] == 0, freed      # Flux really left memory
    entry = comfy_server.wait_history(queued["prompt_id"], timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    unloaded = report_of(entry)
    assert len(unloaded["iterations"]) == 2
    assert same_search(unloaded) == same_search(kept)          # round 1 rendered alike on the reloaded models


def test_a_search_that_failed_runs_again_when_requeued_and_its_record_stays(comfy_server, graph, fake_ollama):
    fake_ollama.after_chats(1, lambda: fake_ollama.remove_model(MODEL))   # round 0 answered, then `ollama rm`
    failed = comfy_server.post_prompt(graph(seed=35, run_name="requeue"))
    entry = comfy_server.wait_history(failed["prompt_id"], timeout=300)
    assert entry["status"]["status_str"] == "error"
    error = next(data for kind, data in entry["status"]["messages"] if kind == "execution_error")
    assert error["node_type"] == "PromptBeamSearch"
    assert error["exception_message"].strip() == (
        f"Ollama model '{MODEL}' is not installed at {fake_ollama.url} (Ollama said: model '{MODEL}' not found). "
        f"Installed models: llama3.1:8b. Run `ollama pull {MODEL}`, or set OLLAMA_MODEL / the model input to an "
        f"installed model.")
    run_dir, report = run_of(comfy_server, "requeue")
    assert report["status"] == "failed" and "ollama pull" in report["error"]
    assert [c["id"] for c in report["candidates"]] == ["i0c0", "i0c1"]

    fake_ollama.reset()                                  # `ollama pull`: the model is back; queue the same graph
    again = comfy_server.run(graph(seed=35, run_name="requeue"), timeout=300)
    assert again["status"]["status_str"] == "success", again["status"]
    rerun = report_of(again)
    assert rerun["run_id"] != report["run_id"] and rerun["status"] == "finished"
    assert RunRecord.open(run_dir).report == report      # the failed run's record is untouched
    assert same_search(rerun)["candidates"][:2] == same_search(report)["candidates"]


@pytest.fixture(scope="module")
def scaling_workflow(tmp_path_factory) -> str:
    """The shipped render workflow on this machine's tiny models, with an ImageScale to half size after VAEDecode."""
    graph = on_this_machine(load_workflow(str(SHIPPED)))
    output = next(i for i, n in graph.items() if n["class_type"] in ("SaveImage", "PreviewImage"))
    decoded = graph[output]["inputs"]["images"]
    graph["scale"] = {"class_type": "ImageScale", "inputs": {"image": decoded, "upscale_method": "nearest-exact",
                                                             "width": SIZE // 2, "height": SIZE // 2,
                                                             "crop": "disabled"}}
    graph[output]["inputs"]["images"] = ["scale", 0]
    path = tmp_path_factory.mktemp("scaling") / "render_scaled_api.json"
    path.write_text(json.dumps(graph))
    return str(path)


def test_a_worker_that_answers_with_an_image_of_the_wrong_size_fails_the_candidate_saying_why(comfy_server,
                                                                                              scaling_workflow,
                                                                                              tmp_path):
    pool = ComfyWorkerPool([comfy_server.url], scaling_workflow)
    with pytest.raises(GenerationFailed) as info:
        pool.generate([GenerationRequest("a lighthouse", seed=1, width=SIZE, height=SIZE, steps=2)])
    assert str(info.value) == (f"ComfyUI at {comfy_server.url} returned a {SIZE // 2}x{SIZE // 2} image for a "
                               f"{SIZE}x{SIZE} request: does the render workflow resize or crop after VAEDecode?")
    config = BeamConfig(beam_width=2, keep_top=1, iterations=2, width=SIZE, height=SIZE, steps=2, seed=1)
    with pytest.raises(GenerationFailed, match="no candidate could be rendered and scored"):
        BeamSearch(FastOps(), pool, StatsScorer(), config).run("a lighthouse", tmp_path, "scaled")
    report = RunRecord.open(tmp_path / "scaled").report
    assert report["status"] == "failed"
    assert all(c["failed_stage"] == "generate" and "resize or crop after VAEDecode" in c["error"]
               for c in report["candidates"]) and len(report["candidates"]) == 2
