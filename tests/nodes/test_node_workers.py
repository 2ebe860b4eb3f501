"""Contract tests of the PromptBeamComfyWorkers node on the fake ComfyUI (tests/comfy_fakes): its sockets, a search
rendered on two loopback ComfyUI-protocol workers, and the refusal to send work to the server it runs in."""
import asyncio
import json
import sys

import pytest

from tests.fixtures.comfy import PACK_MODULE, load_pack, run_node
from tests.fixtures.comfy_worker import FakeComfyWorker

load_pack()
from server import PromptServer  # noqa: E402  (the fake server, once the pack is loaded)

workers_node = sys.modules[f"{PACK_MODULE}.nodes.workers_node"]
search_node = sys.modules[f"{PACK_MODULE}.nodes.search_node"]
llm_nodes = sys.modules[f"{PACK_MODULE}.nodes.llm_nodes"]
scoring_nodes = sys.modules[f"{PACK_MODULE}.nodes.scoring_nodes"]
errors = sys.modules[f"{PACK_MODULE}.pipeline.errors"]
comfy_workers = sys.modules[f"{PACK_MODULE}.pipeline.generation.comfy_workers"]
Workers = workers_node.PromptBeamComfyWorkers


@pytest.fixture
def two_workers():
    started = [FakeComfyWorker(name="w0", render_s=0.1), FakeComfyWorker(name="w1", render_s=0.1)]
    yield started
    for worker in started:
        worker.kill()


@pytest.fixture
def small_workflow(tmp_path):
    graph = json.loads(open(workers_node.SHIPPED_WORKFLOW).read())
    graph["7"]["inputs"].update(width=64, height=48)
    path = tmp_path / "render_small.json"
    path.write_text(json.dumps(graph))
    return str(path)


@pytest.fixture
def own_port():
    before = getattr(PromptServer.instance, "port", None)
    yield
    PromptServer.instance.port = before


def build(worker_urls, workflow):
    return run_node(Workers, worker_urls=worker_urls, workflow=workflow).result


def test_declares_the_contract_sockets(pack):
    info = Workers.GET_NODE_INFO_V1()
    spec = info["input"]
    assert list(spec["required"]) == ["worker_urls", "workflow"]
    assert spec["required"]["worker_urls"][0] == "STRING" and spec["required"]["worker_urls"][1]["multiline"]
    assert info["output"] == ["PROMPTBEAM_GENERATOR"]
    assert pack.NODE_CLASS_MAPPINGS["PromptBeamComfyWorkers"] is Workers
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["PromptBeamComfyWorkers"] == "Prompt Beam ComfyUI Workers"


def test_a_search_node_renders_on_the_workers(comfy_base, two_workers, small_workflow, fake_ollama, tiny_clip_dir,
                                              tiny_aesthetic_path, own_port):
    (generator,) = build("\n".join(w.url for w in two_workers), small_workflow)
    assert isinstance(generator, comfy_workers.ComfyWorkerPool) and generator.concurrency == 4   # 2 deep each
    (llm,) = run_node(llm_nodes.PromptBeamOllama, base_url=fake_ollama.url, model="qwen2.5:7b-instruct",
                      temperature=-1.0, seed=0, keep_alive="5m", retries=0).result
    (scorer,) = run_node(scoring_nodes.PromptBeamScorerLoader, clip_model=f"local-dir:{tiny_clip_dir}",
                         aesthetic_model=tiny_aesthetic_path, device="cpu").result
    best_image, _prompt, _finalists, report_text, _seed = run_node(
        search_node.PromptBeamSearch, unique_id="17", prompt="a red fox in the snow", llm=llm, generator=generator,
        scorer=scorer, beam_width=4, keep_top=2, iterations=2, alpha=0.7, seed=5).result
    report = json.loads(report_text)
    assert best_image.shape == (1, 48, 64, 3)
    assert (report["config"]["width"], report["config"]["height"], report["config"]["steps"]) == (64, 48, 4)
    assert report["config"]["generator"]["backend"] == "comfy-workers"
    assert {c["render"]["worker"] for c in report["candidates"]} == {w.url for w in two_workers}


def test_refuses_the_server_it_runs_in_by_address(two_workers, own_port):
    PromptServer.instance.port = two_workers[1].port
    for alias in ("127.0.0.1", "localhost"):
        with pytest.raises(errors.InvalidParameter) as info:
            build(f"{two_workers[0].url}, http://{alias}:{two_workers[1].port}", "")
        assert info.value.name == "worker_urls" and "is this ComfyUI server" in str(info.value)
    assert not any(p["path"] == "/prompt" for w in two_workers for p in w.posted)


def test_refuses_the_server_it_runs_in_by_identity(two_workers, own_port):
    PromptServer.instance.port = None             # e.g. behind a proxy: the address does not tell
    two_workers[0].identity = workers_node.instance_token(PromptServer.instance)
    with pytest.raises(errors.InvalidParameter, match="is this ComfyUI server"):
        build(two_workers[0].url, "")
    two_workers[0].identity = "another-comfyui-with-the-pack"
    (generator,) = build(two_workers[0].url, "")
    assert [w.url for w in generator.workers] == [two_workers[0].url]


def test_the_identity_route_answers_this_servers_token():
    pytest.importorskip("aiohttp", reason="aiohttp (ComfyUI's web server) builds the response")
    handler = PromptServer.instance.routes.handler("GET", workers_node.INSTANCE_ROUTE)
    response = asyncio.run(handler(None))
    assert json.loads(response.body) == {"instance": workers_node.instance_token(PromptServer.instance)}


def test_a_workflow_without_its_roles_is_refused_by_the_node(tmp_path):
    path = tmp_path / "no_sampler.json"
    path.write_text(json.dumps({"1": {"class_type": "PreviewImage", "inputs": {}}}))
    with pytest.raises(errors.InvalidParameter, match="render_workflow: .*it lacks a sampler"):
        build("http://127.0.0.1:1", str(path))
