"""The ComfyUI worker pool against two or three loopback ComfyUI-protocol servers (tests/fixtures/comfy_worker.py):
dispatch, least-loaded choice, parallel renders, a worker killed or stalled mid-render, bounded retries, all workers
down, a refused workflow, an execution error, interrupt; and the render workflow's roles."""
from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.comfy_api.graph import find_roles, loader_files
from pipeline.generation.comfy_workers import render_graph
from pipeline.generation.comfy_workers import AllWorkersDown, ComfyWorkerPool, WorkflowRefused, parse_worker_urls
from pipeline.errors import GenerationFailed, Interrupted, InvalidParameter
from pipeline.generation import GenerationRequest
from pipeline.comfy_api.client import ComfyClient, load_workflow
from tests.fixtures.comfy_worker import expected_pixels
from tests.fixtures.servers import free_port

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "workflows" / "api" / "render_flux_worker.json"


def workflow() -> dict:
    return load_workflow(str(SHIPPED))


def requests_for(count: int, size: int = 32) -> list[GenerationRequest]:
    return [GenerationRequest(prompt=f"a lighthouse, take {i}", seed=100 + i, width=size, height=size + 16, steps=3)
            for i in range(count)]


def pixels(result) -> np.ndarray:
    return (result.image.numpy() * 255.0).round().astype(np.uint8)


def assert_rendered_as_requested(results, requests):
    assert len(results) == len(requests)
    for result, request in zip(results, requests):
        assert result.seed == request.seed and result.prompt == request.prompt
        expected = expected_pixels(request.prompt, request.seed, request.steps, request.width, request.height)
        assert np.array_equal(pixels(result), expected)


def in_thread(function, *args, **kwargs):
    """Run function in a thread; returns a callable that joins and returns its result (or raises its error)."""
    box = {}

    def target():
        try:
            box["value"] = function(*args, **kwargs)
        except BaseException as exc:      # handed to the test thread
            box["error"] = exc
    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def join(timeout: float = 30.0):
        thread.join(timeout)
        assert not thread.is_alive(), "the call did not return"
        if "error" in box:
            raise box["error"]
        return box["value"]
    return join


# ---------------------------------------------------------------------------------------------------------------
# The render workflow's roles


def test_shipped_workflow_roles_and_defaults():
    graph = workflow()
    roles = find_roles(graph)
    assert (roles.output, roles.sampler, roles.prompt, roles.latent, roles.guidance) == ("10", "8", "4", "7", "5")
    assert roles.seed == ("8", "seed") and roles.steps == ("8", "steps") and roles.negative is None
    classes = {node["class_type"] for node in graph.values()}
    assert {"UNETLoader", "DualCLIPLoader", "VAELoader", "CLIPTextEncode", "FluxGuidance", "KSampler",
            "VAEDecode"} <= classes
    pool = ComfyWorkerPool("http://127.0.0.1:1", str(SHIPPED))
    assert (pool.defaults.width, pool.defaults.height, pool.defaults.steps, pool.defaults.guidance) == \
        (1024, 1024, 4, 3.5)


def test_render_graph_sets_the_request_and_leaves_the_workflow_alone():
    graph = workflow()
    before = copy.deepcopy(graph)
    request = GenerationRequest(prompt="a red fox", seed=77, width=512, height=768, steps=9, guidance=2.5,
                                sampler="dpmpp_2m", scheduler="beta")
    out = render_graph(graph, find_roles(graph), request)
    assert graph == before
    assert out["4"]["inputs"]["text"] == "a red fox"
    assert out["8"]["inputs"]["seed"] == 77 and out["8"]["inputs"]["steps"] == 9
    assert (out["8"]["inputs"]["sampler_name"], out["8"]["inputs"]["scheduler"]) == ("dpmpp_2m", "beta")
    assert out["7"]["inputs"] == {"width": 512, "height": 768, "batch_size": 1}
    assert out["5"]["inputs"]["guidance"] == 2.5
    changed = {k for k in graph if graph[k] != out[k]}
    assert changed == {"4", "5", "7", "8"}


def test_a_lora_and_a_custom_sampler_graph_are_render_workflows():
    graph = workflow()
    graph["11"] = {"class_type": "LoraLoaderModelOnly",
                   "inputs": {"model": ["1", 0], "lora_name": "style.safetensors", "strength_model": 0.8}}
    graph["8"]["inputs"]["model"] = ["11", 0]
    assert find_roles(graph).sampler == "8"
    assert ("11", "LoraLoaderModelOnly", "lora_name", "style.safetensors") in loader_files(graph)
    # SamplerCustomAdvanced: seed on RandomNoise, steps on the scheduler, positive through the guider.
    custom = {k: v for k, v in workflow().items() if k != "8"}
    custom.update({
        "20": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
        "21": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "simple", "steps": 4,
                                                           "denoise": 1.0}},
        "22": {"class_type": "BasicGuider", "inputs": {"model": ["1", 0], "conditioning": ["5", 0]}},
        "23": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "8": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["20", 0], "guider": ["22", 0],
                                                                 "sampler": ["23", 0], "sigmas": ["21", 0],
                                                                 "latent_image": ["7", 0]}}})
    roles = find_roles(custom)
    assert (roles.seed, roles.steps, roles.prompt, roles.guidance) == (("20", "noise_seed"), ("21", "steps"), "4", "5")
    out = render_graph(custom, roles, GenerationRequest(prompt="x", seed=9, steps=6, width=64, height=64))
    assert out["20"]["inputs"]["noise_seed"] == 9 and out["21"]["inputs"]["steps"] == 6


def _without_output(g):
    g["10"]["class_type"] = "PreviewAny"


def _linked_text(g):
    g["30"] = {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "x"}}
    g["4"]["inputs"]["text"] = ["30", 0]


def _img2img(g):
    g["7"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["31", 0], "vae": ["3", 0]}}


def _no_sampler(g):
    g["9"]["inputs"]["samples"] = ["7", 0]


@pytest.mark.parametrize("break_it, named", [
    (_without_output, "an image output (SaveImage or PreviewImage)"),
    (_no_sampler, "a sampler (KSampler"),
    (_linked_text, "a CLIPTextEncode with a text prompt"),
    (_img2img, "an empty latent"),
])
def test_a_workflow_missing_a_role_is_refused_naming_it(break_it, named, tmp_path):
    graph = workflow()
    break_it(graph)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(graph))
    with pytest.raises(InvalidParameter) as info:
        ComfyWorkerPool("http://127.0.0.1:1", str(path))
    assert info.value.name == "render_workflow" and named in str(info.value)
    assert "render_flux_worker.json" in str(info.value)


def test_worker_urls_are_checked():
    assert parse_worker_urls("127.0.0.1:8188, http://h:8189/") == ["http://127.0.0.1:8188", "http://h:8189"]
    for bad, message in (("", "at least one"), ("ftp://x", "not a ComfyUI address"),
                         ("h:1,http://h:1", "listed twice")):
        with pytest.raises(InvalidParameter, match=message):
            parse_worker_urls(bad)


# ---------------------------------------------------------------------------------------------------------------
# Dispatch


def test_requests_render_on_every_worker_in_request_order(workers):
    a, b = workers(2, render_s=0.2)
    pool = ComfyWorkerPool([a.url, b.url], str(SHIPPED), poll_s=0.02)
    assert pool.concurrency == 4                 # two workers, two prompts deep each
    requests = requests_for(4)
    steps = []
    results = pool.generate(requests, on_step=lambda done, total: steps.append((done, total)))
    assert_rendered_as_requested(results, requests)
    assert len(a.rendered) >= 1 and len(b.rendered) >= 1 and len(a.rendered) + len(b.rendered) == 4
    by_worker = {a.url: a, b.url: b}
    for result, request in zip(results, requests):
        render = result.metadata["render"]
        assert "moved_from" not in render
        settings = (request.prompt, request.seed, request.steps, request.width, request.height, 1)
        assert settings in by_worker[render["worker"]].rendered      # the record names the worker that rendered it
    assert steps[-1] == (12, 12) and [d for d, _ in steps] == sorted(d for d, _ in steps)


def test_each_worker_holds_the_next_prompt_while_one_renders(workers):
    worker, = workers(1, render_s=0.2)
    pool = ComfyWorkerPool([worker.url], str(SHIPPED), poll_s=0.02)
    requests = requests_for(4)
    assert_rendered_as_requested(pool.generate(requests), requests)
    assert worker.max_load == 2                  # one rendering, the next queued behind it: never more
    assert len(worker.rendered) == 4


def test_queue_depth_one_sends_a_prompt_only_when_the_last_one_is_back(workers):
    worker, = workers(1, render_s=0.1)
    pool = ComfyWorkerPool([worker.url], str(SHIPPED), poll_s=0.02, queue_depth=1)
    assert pool.concurrency == 1
    requests = requests_for(3)
    assert_rendered_as_requested(pool.generate(requests), requests)
    assert worker.max_load == 1
    with pytest.raises(InvalidParameter, match="queue_depth"):
        ComfyWorkerPool([worker.url], str(SHIPPED), queue_depth=0)


def test_the_least_loaded_worker_gets_the_request(workers):
    busy, idle = workers(2, render_s=5.0)
    client = ComfyClient(busy.url)
    graph = render_graph(workflow(), find_roles(workflow()), requests_for(1)[0])
    for _ in range(2):
        client.submit(graph)                  # someone else's work queued on the first worker
    pool = ComfyWorkerPool([busy.url, idle.url], str(SHIPPED), poll_s=0.02)
    idle.render_s = 0.05
    (result,) = pool.generate(requests_for(1))
    assert result.metadata["render"]["worker"] == idle.url
    assert busy.load() == 2 and not busy.rendered


def test_concurrent_generate_calls_use_all_workers_and_give_the_same_images(workers):
    a, b, c = workers(3, render_s=0.3)
    pool = ComfyWorkerPool([a.url, b.url, c.url], str(SHIPPED), poll_s=0.02)
    requests = requests_for(3)
    joins = [in_thread(pool.generate, [request]) for request in requests]
    results = [join()[0] for join in joins]
    assert_rendered_as_requested(results, requests)
    assert sorted(len(w.rendered) for w in (a, b, c)) == [1, 1, 1]   # one each: they ran side by side
    assert len({r.metadata["render"]["worker"] for r in results}) == 3


# ---------------------------------------------------------------------------------------------------------------
# Faults


def test_a_worker_killed_mid_render_has_its_request_moved(workers):
    first, second = workers(2, render_s=30.0)
    second.render_s = 0.05
    pool = ComfyWorkerPool([first.url, second.url], str(SHIPPED), poll_s=0.02)
    (request,) = requests_for(1)
    join = in_thread(pool.generate, [request])
    first.wait_running()                       # both idle: the first worker took it
    first.kill()
    (result,) = join()
    assert_rendered_as_requested([result], [request])
    render = result.metadata["render"]
    assert render["worker"] == second.url
    assert [m["worker"] for m in render["moved_from"]] == [first.url]
    assert "stopped answering" in render["moved_from"][0]["error"]
    # The search goes on with the worker that answers.
    results = pool.generate(requests_for(2))
    assert {r.metadata["render"]["worker"] for r in results} == {second.url}


def test_a_stalled_worker_is_interrupted_and_its_request_moved(workers):
    stalled, = workers(1, mode="stall")
    healthy, = workers(1, render_s=0.05)
    pool = ComfyWorkerPool([stalled.url, healthy.url], str(SHIPPED), poll_s=0.02, stall_timeout_s=0.5)
    (result,) = pool.generate(requests_for(1))
    render = result.metadata["render"]
    assert render["worker"] == healthy.url and render["moved_from"][0]["worker"] == stalled.url
    assert "stalled" in render["moved_from"][0]["error"]
    assert stalled.interrupted                 # its prompt was interrupted there, not left running


def test_retries_are_bounded(workers):
    stalled = workers(3, mode="stall")
    pool = ComfyWorkerPool([w.url for w in stalled], str(SHIPPED), poll_s=0.02, stall_timeout_s=0.3, retries=1)
    with pytest.raises(GenerationFailed, match="gave up after 2 workers lost this request") as info:
        pool.generate(requests_for(1))
    assert "stalled" in str(info.value)
    assert sum(bool(w.interrupted) for w in stalled) == 2       # the third was never tried


def test_all_workers_down_is_one_clear_error(workers):
    a, b = workers(2)
    a.kill()
    b.kill()
    pool = ComfyWorkerPool([a.url, b.url], str(SHIPPED), poll_s=0.02)
    with pytest.raises(AllWorkersDown) as info:
        pool.generate(requests_for(2))
    message = str(info.value)
    assert "all 2 ComfyUI worker(s) are down" in message and a.url in message and b.url in message
    assert "best so far" in message


def test_nothing_listening_counts_as_down():
    pool = ComfyWorkerPool(f"http://127.0.0.1:{free_port()}", str(SHIPPED), poll_s=0.02)
    with pytest.raises(AllWorkersDown, match="cannot reach ComfyUI"):
        pool.generate(requests_for(1))


def test_a_refused_workflow_fails_fast_with_comfyuis_message(workers, tmp_path):
    a, b = workers(2)
    graph = workflow()
    graph["1"]["inputs"]["unet_name"] = "missing.safetensors"
    path = tmp_path / "render.json"
    path.write_text(json.dumps(graph))
    pool = ComfyWorkerPool([a.url, b.url], str(path), poll_s=0.02)
    with pytest.raises(WorkflowRefused) as info:
        pool.generate(requests_for(3))
    message = str(info.value)
    assert "refused the render workflow" in message and "node 1 (UNETLoader" in message
    assert "input 'unet_name': Value not in list" in message and "missing.safetensors" in message
    posted = [p for w in (a, b) for p in w.posted if p["path"] == "/prompt"]
    assert len(posted) <= 2 and not a.rendered and not b.rendered    # not retried request after request


def test_an_execution_error_fails_the_request_with_the_workers_message(workers):
    broken, = workers(1, mode="error")
    pool = ComfyWorkerPool([broken.url], str(SHIPPED), poll_s=0.02)
    with pytest.raises(GenerationFailed, match=r"failed to render: node 8 \(KSampler\): .*out of memory"):
        pool.generate(requests_for(1))


def test_interrupt_deletes_queued_prompts_and_interrupts_the_running_one(workers):
    worker, = workers(1, render_s=30.0)
    pool = ComfyWorkerPool([worker.url], str(SHIPPED), poll_s=0.02)
    stop = threading.Event()
    first = in_thread(pool.generate, requests_for(1), should_stop=stop.is_set)
    running = worker.wait_running()
    second = in_thread(pool.generate, requests_for(2)[1:], should_stop=stop.is_set)
    deadline = time.monotonic() + 10
    while worker.load() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.load() == 2
    stop.set()
    for join in (first, second):
        with pytest.raises(Interrupted):
            join()
    # The running prompt is interrupted; the queued one is deleted, or interrupted if it had started meanwhile.
    assert running in worker.interrupted
    assert len(set(worker.interrupted) | set(worker.deleted)) == 2
    assert worker.load() == 0 and not worker.rendered


def test_a_finished_call_returns_its_images_even_if_a_later_one_is_interrupted(workers):
    worker, = workers(1, render_s=0.05)
    pool = ComfyWorkerPool([worker.url], str(SHIPPED), poll_s=0.02)
    requests = requests_for(2)
    assert_rendered_as_requested(pool.generate(requests), requests)
    with pytest.raises(Interrupted):
        pool.generate(requests, should_stop=lambda: True)
