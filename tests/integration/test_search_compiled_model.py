"""A search whose MODEL comes through ComfyUI's own TorchCompileModel node (real ComfyUI, CPU, inductor): the
user's compile applies to the MODEL the search receives, and the search runs on it unchanged. The inductor cache
the server was pointed at fills up, which shows that the sampling the search asked for went through the compiled
model."""
import json

import pytest

from tests.fixtures.servers import stop_process
from tests.integration.conftest import launch_comfy
from tests.integration.test_search_node import SIZE, search_graph


@pytest.fixture
def compiling_server(tmp_path, tiny_model_dir, monkeypatch):
    cache = tmp_path / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))        # inherited by the server process
    (tmp_path / "base").mkdir()
    server = launch_comfy(tmp_path / "base", tiny_model_dir)
    try:
        yield server, cache
    finally:
        stop_process(server.process)


def test_the_search_runs_on_a_model_compiled_by_torch_compile_model(compiling_server, fake_ollama, tiny_clip_dir,
                                                                   tiny_aesthetic_path):
    server, cache = compiling_server
    graph = search_graph(fake_ollama.url, tiny_clip_dir, tiny_aesthetic_path, run_name="compiled")
    graph["compiled"] = {"class_type": "TorchCompileModel", "inputs": {"model": ["flux", 0], "backend": "inductor"}}
    graph["gen"]["inputs"]["model"] = ["compiled", 0]
    entry = server.run(graph, timeout=1500)
    assert entry["status"]["status_str"] == "success", (entry["status"], server.log()[-3000:])
    report = json.loads(entry["outputs"]["show_report"]["text"][0])
    assert report["stop_reason"] == "max_iterations" and len(report["candidates"]) == 4
    assert all(c["status"] == "ok" and c["scores"] for c in report["candidates"]), report["candidates"]
    assert (server.base / "output" / "promptbeam" / report["run_id"] / "report.json").is_file()
    compiled = [p for p in cache.rglob("*") if p.is_file()]
    assert compiled, "inductor wrote nothing: the MODEL the search sampled with was not compiled"
    assert report["config"]["width"] == SIZE
