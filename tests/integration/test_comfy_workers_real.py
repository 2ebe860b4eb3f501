"""The worker pool on two real ComfyUI servers (CPU, tiny models from the test pack): images equal a direct run of
the workflow with the same seed, a whole search renders on both, and one server killed mid-run moves its request.

The shipped render workflow is used with its model loaders swapped for this machine's tiny ones (UNETLoader cannot
load a tiny Flux and T5-XXL has no tiny form): the test pack's tiny Flux, a CLIPLoader on a tiny CLIP-L, a tiny
TAESD; every other node and link stays as shipped."""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from pipeline.comfy_api.graph import find_roles
from pipeline.generation.comfy_workers import render_graph
from pipeline.generation.comfy_workers import ComfyWorkerPool
from pipeline.generation import GenerationRequest
from pipeline.comfy_api.client import load_workflow
from tests.fixtures.servers import stop_process
from tests.integration.conftest import launch_comfy

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "workflows" / "api" / "render_flux_worker.json"
SIZE, STEPS = 64, 4


def on_this_machine(graph: dict) -> dict:
    for node_id, node in list(graph.items()):
        if node["class_type"] == "UNETLoader":
            graph[node_id] = {"class_type": "PromptBeamTestTinyFlux", "inputs": {"seed": 0}}
        elif node["class_type"] == "DualCLIPLoader":
            graph[node_id] = {"class_type": "CLIPLoader",
                              "inputs": {"clip_name": "tiny_clip_l.safetensors", "type": "stable_diffusion"}}
        elif node["class_type"] == "VAELoader":
            node["inputs"]["vae_name"] = "tiny_taef1.safetensors"
    graph["7"]["inputs"].update(width=SIZE, height=SIZE)
    graph["8"]["inputs"]["steps"] = STEPS
    return graph


@pytest.fixture(scope="module")
def render_workflow(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("render") / "render_tiny_api.json"
    path.write_text(json.dumps(on_this_machine(load_workflow(str(SHIPPED)))))
    return str(path)


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory, tiny_model_dir, comfy_server):
    """The session's ComfyUI and a second one started here (stopped at the end of this module)."""
    second = launch_comfy(tmp_path_factory.mktemp("comfy_worker_b"), tiny_model_dir)
    yield [comfy_server, second]
    if second.process.poll() is None:
        stop_process(second.process, timeout=20)


def png_pixels(path_or_bytes) -> np.ndarray:
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    return np.asarray(Image.open(source).convert("RGB"))


def tensor_pixels(image) -> np.ndarray:
    return (image.numpy() * 255.0).round().astype(np.uint8)


def test_images_equal_a_direct_run_of_the_workflow(two_servers, render_workflow):
    first, second = two_servers
    pool = ComfyWorkerPool([first.url, second.url], render_workflow)
    requests_ = [GenerationRequest(prompt=f"a lighthouse at dusk, variant {i}", seed=11 + i, width=SIZE,
                                   height=SIZE, steps=STEPS) for i in range(4)]
    results = pool.generate(requests_)
    assert {r.metadata["render"]["worker"] for r in results} == {first.url, second.url}
    assert {r.metadata["followed"] for r in results} == {"websocket"}     # ComfyUI named each image over its socket
    graph = load_workflow(render_workflow)
    roles = find_roles(graph)
    for result, request in zip(results, requests_):
        direct = first.run(render_graph(graph, roles, request))       # what the editor would run for this seed
        (path,) = first.images(direct, roles.output)
        assert np.array_equal(tensor_pixels(result.image), png_pixels(path)), result.metadata
    assert not np.array_equal(tensor_pixels(results[0].image), tensor_pixels(results[1].image))


def cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OLLAMA_BASE_URL", "OLLAMA_MODEL", "CLIP_MODEL",
                                                             "AESTHETIC_MODEL", "FLUX_MODEL", "FLUX_LORAS")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def search_command(fake_ollama, tiny_clip_dir, tiny_aesthetic_path, out, urls, render_workflow, iterations):
    return [sys.executable, "-m", "pipeline", "search", "a lighthouse at dusk", "--ollama-url", fake_ollama.url,
            "--clip", f"local-dir:{tiny_clip_dir}", "--aesthetic", tiny_aesthetic_path, "--device", "cpu",
            "--beam-width", "3", "--keep-top", "2", "--iterations", str(iterations), "--seed", "4",
            "--comfy-workers", ",".join(urls), "--render-workflow", render_workflow, "--out", str(out)]


def read_run(out: Path) -> tuple[Path, dict]:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir, json.loads((run_dir / "report.json").read_text())


def test_a_whole_search_renders_on_both_servers(two_servers, render_workflow, fake_ollama, tiny_clip_dir,
                                                tiny_aesthetic_path, tmp_path):
    urls = [s.url for s in two_servers]
    result = subprocess.run(search_command(fake_ollama, tiny_clip_dir, tiny_aesthetic_path, tmp_path / "runs", urls,
                                           render_workflow, 2), cwd=REPO, capture_output=True, text=True,
                            timeout=600, env=cli_env())
    assert result.returncode == 0, result.stderr
    run_dir, report = read_run(tmp_path / "runs")
    assert report["status"] == "finished" and report["config"]["steps"] == STEPS
    assert all(c["status"] == "ok" for c in report["candidates"])
    assert {c["render"]["worker"] for c in report["candidates"]} == set(urls)
    # A candidate's saved image is the worker's PNG: equal to a direct run of the workflow with its seed.
    graph = load_workflow(render_workflow)
    roles = find_roles(graph)
    candidate = report["candidates"][-1]
    request = GenerationRequest(prompt=candidate["prompt"], seed=candidate["seed"], width=SIZE, height=SIZE,
                                steps=STEPS, guidance=report["config"]["guidance"], sampler="euler",
                                scheduler="simple")
    direct = two_servers[0].run(render_graph(graph, roles, request))
    (path,) = two_servers[0].images(direct, roles.output)
    assert np.array_equal(png_pixels(run_dir / candidate["image"]), png_pixels(path))


def generate_through_the_node(server, worker_urls: str, render_workflow: str, seed: int) -> dict:
    """Queue PromptBeamComfyWorkers -> PromptBeamGenerate -> PreviewImage on `server`; its finished history entry."""
    graph = {"1": {"class_type": "PromptBeamComfyWorkers",
                   "inputs": {"worker_urls": worker_urls, "workflow": render_workflow}},
             "2": {"class_type": "PromptBeamGenerate",
                   "inputs": {"generator": ["1", 0], "prompt": "a red fox in the snow", "seed": seed}},
             "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    queued = server.post_prompt(graph)
    assert queued["status"] == 200 and not queued["node_errors"], queued["body"]
    return server.wait_history(queued["prompt_id"], timeout=300)


def test_the_node_renders_on_another_server_and_refuses_its_own(two_servers, render_workflow):
    here, other = two_servers
    port = here.url.rsplit(":", 1)[1]
    for own in (here.url, f"http://localhost:{port}"):
        entry = generate_through_the_node(here, f"{other.url}\n{own}", render_workflow, seed=1)
        assert entry["status"]["status_str"] == "error"
        error = next(data for kind, data in entry["status"]["messages"] if kind == "execution_error")
        assert error["node_type"] == "PromptBeamComfyWorkers" and "is this ComfyUI server" in error["exception_message"]
    assert running_prompt(here.url) is None
    entry = generate_through_the_node(here, other.url, render_workflow, seed=7)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (path,) = here.images(entry, "3")
    graph = load_workflow(render_workflow)
    roles = find_roles(graph)
    request = GenerationRequest(prompt="a red fox in the snow", seed=7, width=SIZE, height=SIZE, steps=STEPS,
                                sampler="euler", scheduler="simple")
    direct = other.run(render_graph(graph, roles, request))
    (direct_path,) = other.images(direct, roles.output)
    assert np.array_equal(png_pixels(path), png_pixels(direct_path))


def running_prompt(url: str) -> str | None:
    queue = requests.get(url + "/queue", timeout=10).json()
    return queue["queue_running"][0][1] if queue["queue_running"] else None


def test_one_server_killed_mid_run_moves_its_request(two_servers, render_workflow, fake_ollama, tiny_clip_dir,
                                                     tiny_aesthetic_path, tmp_path):
    """Last in this module: it kills the second server."""
    survivor, victim = two_servers
    command = search_command(fake_ollama, tiny_clip_dir, tiny_aesthetic_path, tmp_path / "runs",
                             [survivor.url, victim.url], render_workflow, 3)
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=cli_env())
    try:
        deadline = time.monotonic() + 300
        while (prompt_id := running_prompt(victim.url)) is None:
            assert process.poll() is None and time.monotonic() < deadline, "the victim never got a prompt"
            time.sleep(0.02)
        # Freeze it first, so it cannot finish the prompt between this check and the kill.
        os.kill(victim.process.pid, signal.SIGSTOP)
        victim.process.kill()
        victim.process.wait(timeout=30)
        stdout, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    _run_dir, report = read_run(tmp_path / "runs")
    assert report["status"] == "finished" and all(c["status"] == "ok" for c in report["candidates"])
    moved = [c for c in report["candidates"] if c["render"].get("moved_from")]
    assert [c["render"]["moved_from"][0]["worker"] for c in moved] == [victim.url]
    assert moved[0]["render"]["prompt_id"] != prompt_id and moved[0]["render"]["worker"] == survivor.url
    after = report["candidates"][report["candidates"].index(moved[0]) + 1:]
    assert after and all(c["render"]["worker"] == survivor.url for c in after)
