"""Prompt Beam Remote Flux and Remote Scorer on a real ComfyUI: a search graph queued over HTTP renders with the
Flux service and scores with the vision service (both real subprocesses on loopback, tiny models), and a service
that is down fails its node with the URL and how to start it."""
import json

from tests.fixtures.servers import free_port
from tests.services.test_vision_service_compat import vision  # noqa: F401  (the vision service fixture)

MODEL = "qwen2.5:7b-instruct"
SEARCH = "search"


def remote_graph(ollama_url, flux_url, vision_url):
    return {
        "llm": {"class_type": "PromptBeamOllama", "inputs": {
            "base_url": ollama_url, "model": MODEL, "temperature": 0.7, "seed": 0, "keep_alive": "5m"}},
        "gen": {"class_type": "PromptBeamRemoteFlux", "inputs": {
            "url": flux_url, "width": 64, "height": 64, "steps": 2, "guidance": 3.5, "scheduler": "beta"}},
        "scorer": {"class_type": "PromptBeamRemoteScorer", "inputs": {"url": vision_url}},
        SEARCH: {"class_type": "PromptBeamSearch", "inputs": {
            "prompt": "a red fox in the snow", "llm": ["llm", 0], "generator": ["gen", 0], "scorer": ["scorer", 0],
            "beam_width": 2, "keep_top": 1, "iterations": 2, "alpha": 0.7, "seed": 3, "run_name": "remote"}},
        "save_best": {"class_type": "SaveImage", "inputs": {"images": [SEARCH, 0], "filename_prefix": "pb_remote"}},
        "show_report": {"class_type": "PreviewAny", "inputs": {"source": [SEARCH, 3]}},
    }


def test_search_graph_on_the_remote_nodes(comfy_server, fake_ollama, flux_service, vision):  # noqa: F811
    entry = comfy_server.run(remote_graph(fake_ollama.url, flux_service.url, vision.url), timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    report = json.loads(entry["outputs"]["show_report"]["text"][0])
    assert report["status"] == "finished" and len(report["candidates"]) == 4     # N=2, then M * floor(N/M) = 2
    assert all(c["status"] == "ok" for c in report["candidates"])
    assert report["config"]["generator"]["backend"] == "remote-flux"
    assert report["config"]["generator"]["url"] == flux_service.url
    assert report["config"]["scorer"]["backend"] == "remote-vision"
    assert report["config"]["scheduler"] == "beta"        # the service replaced it and said so per image
    (saved,) = comfy_server.images(entry, "save_best")
    assert saved.is_file()


def test_a_service_that_is_down_fails_its_node(comfy_server, fake_ollama, vision):  # noqa: F811
    down = f"http://127.0.0.1:{free_port()}"
    queued = comfy_server.post_prompt(remote_graph(fake_ollama.url, down, vision.url))
    assert queued["status"] == 200, queued["body"]
    entry = comfy_server.wait_history(queued["prompt_id"], timeout=120)
    assert entry["status"]["status_str"] == "error"
    (error,) = [data for event, data in entry["status"]["messages"] if event == "execution_error"]
    assert error["node_type"] == "PromptBeamRemoteFlux"
    assert f"Flux service at {down} is not reachable" in error["exception_message"]
    assert "python -m pipeline.services.flux" in error["exception_message"]
