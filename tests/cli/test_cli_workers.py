"""`search --comfy-workers` and `doctor --comfy-workers` as real subprocesses: the candidates render on loopback
ComfyUI-protocol workers (tests/fixtures/comfy_worker.py) and are scored locally by tiny CLIP/aesthetic models."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.comfy_worker import expected_pixels
from tests.fixtures.servers import free_port
from tests.cli.test_cli_search import cli, cli_env, only_run_dir, read_report

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "workflows" / "api" / "render_flux_worker.json"


@pytest.fixture
def scoring(tiny_clip_dir, tiny_aesthetic_path) -> list:
    return ["--clip", f"local-dir:{tiny_clip_dir}", "--aesthetic", tiny_aesthetic_path, "--device", "cpu",
            "--width", "64", "--height", "48"]


def search(fake_ollama, scoring, out, *flags, iterations=2):
    return cli("search", "a lighthouse at dusk", "--ollama-url", fake_ollama.url, *scoring, "--beam-width", 3,
               "--keep-top", 2, "--iterations", iterations, "--seed", 3, "--out", out, *flags)


def test_a_search_renders_on_every_worker_and_records_which(workers, fake_ollama, scoring, tmp_path):
    a, b = workers(2, render_s=0.3)
    result = search(fake_ollama, scoring, tmp_path / "runs", "--comfy-workers", f"{a.url},{b.url}")
    assert result.returncode == 0, result.stderr
    assert "ComfyUI workers:" in result.stderr and "loading Flux" not in result.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    report = read_report(run_dir)
    assert report["status"] == "finished" and report["stop_reason"] == "max_iterations"
    generator = report["config"]["generator"]
    assert generator["backend"] == "comfy-workers" and generator["workers"] == [a.url, b.url]
    assert report["config"]["cli"]["comfy_workers"] == f"{a.url},{b.url}"
    assert report["config"]["steps"] == 4 and report["config"]["width"] == 64    # workflow's steps, flag's size
    used = {c["render"]["worker"] for c in report["candidates"]}
    assert used == {a.url, b.url}
    for candidate in report["candidates"]:
        assert candidate["status"] == "ok"
        saved = np.asarray(Image.open(run_dir / candidate["image"]).convert("RGB"))
        assert np.array_equal(saved, expected_pixels(candidate["prompt"], candidate["seed"], 4, 64, 48))


def test_a_worker_dying_mid_search_moves_its_request_and_the_record_says_so(workers, fake_ollama, scoring,
                                                                           tmp_path):
    dying, = workers(1, render_s=0.2, die_on_prompt=2)
    healthy, = workers(1, render_s=0.2)
    result = search(fake_ollama, scoring, tmp_path / "runs", "--comfy-workers", f"{dying.url},{healthy.url}")
    assert result.returncode == 0, result.stderr
    report = read_report(only_run_dir(tmp_path / "runs"))
    assert report["status"] == "finished" and all(c["status"] == "ok" for c in report["candidates"])
    moved = [c for c in report["candidates"] if c["render"].get("moved_from")]
    assert len(moved) == 1
    assert moved[0]["render"]["moved_from"][0]["worker"] == dying.url
    assert moved[0]["render"]["worker"] == healthy.url
    later = report["candidates"][report["candidates"].index(moved[0]) + 1:]
    assert all(c["render"]["worker"] == healthy.url for c in later)


def test_all_workers_dying_mid_search_keeps_the_best_so_far(workers, fake_ollama, scoring, tmp_path):
    a, b = workers(2, render_s=0.2, die_on_prompt=3)       # round 0 (3 images) renders, then both die
    result = search(fake_ollama, scoring, tmp_path / "runs", "--comfy-workers", f"{a.url},{b.url}",
                    iterations=3)
    assert result.returncode == 0, result.stderr
    report = read_report(only_run_dir(tmp_path / "runs"))
    assert report["stop_reason"] == "failures" and report["best"]
    failed = [c for c in report["candidates"] if c["status"] == "failed"]
    assert failed and all("ComfyUI worker(s) are down" in c["error"] or "lost this request" in c["error"]
                          for c in failed)
    assert any("AllWorkersDown" in c["error"] for c in failed)
    assert "best:" in result.stdout


def test_no_worker_answering_exits_1_before_loading_anything(fake_ollama, scoring, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    result = search(fake_ollama, scoring, tmp_path / "runs", "--comfy-workers", url)
    assert result.returncode == 1
    assert "no ComfyUI worker answers" in result.stderr and url in result.stderr
    assert "loading scorer" not in result.stderr


def test_a_render_workflow_without_a_role_exits_2(fake_ollama, scoring, tmp_path):
    graph = json.loads(SHIPPED.read_text())
    del graph["10"]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(graph))
    result = search(fake_ollama, scoring, tmp_path / "runs", "--comfy-workers", "http://127.0.0.1:1",
                    "--render-workflow", path)
    assert result.returncode == 2
    assert "--render-workflow: " in result.stderr and "it lacks" in result.stderr and "an image output (SaveImage or PreviewImage)" in result.stderr


def test_doctor_checks_each_worker(workers, tmp_path):
    good, = workers(1)
    down = f"http://127.0.0.1:{free_port()}"
    result = cli("doctor", "--comfy-workers", f"{good.url},{down}", "--ollama-url", f"http://127.0.0.1:{free_port()}")
    lines = result.stdout.splitlines()
    worker1 = next(line for line in lines if "worker 1" in line)
    worker2 = next(line for line in lines if "worker 2" in line)
    assert worker1.startswith("[ok]") and "ComfyUI 0.3.64" in worker1 and "model files present" in worker1
    assert worker2.startswith("[FAIL]") and "cannot reach ComfyUI" in worker2
    assert not any(line.split()[1] == "flux" for line in lines if len(line.split()) > 1)
    # A workflow naming a LoRA the worker does not have, and a node type it lacks.
    graph = json.loads(SHIPPED.read_text())
    graph["11"] = {"class_type": "LoraLoaderModelOnly",
                   "inputs": {"model": ["1", 0], "lora_name": "not_here.safetensors", "strength_model": 1.0}}
    graph["8"]["inputs"]["model"] = ["11", 0]
    path = tmp_path / "lora.json"
    path.write_text(json.dumps(graph))
    result = cli("doctor", "--comfy-workers", good.url, "--render-workflow", path)
    worker1 = next(line for line in result.stdout.splitlines() if "worker 1" in line)
    assert worker1.startswith("[FAIL]") and "not_here.safetensors (node 11 LoraLoaderModelOnly.lora_name)" in worker1
    graph["12"] = {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": "flux.gguf"}}
    path.write_text(json.dumps(graph))
    result = cli("doctor", "--comfy-workers", good.url, "--render-workflow", path)
    worker1 = next(line for line in result.stdout.splitlines() if "worker 1" in line)
    assert "node types missing: UnetLoaderGGUF" in worker1 and result.returncode == 1


def test_ctrl_c_interrupts_the_prompts_on_the_workers_and_resume_uses_them_again(workers, fake_ollama, scoring,
                                                                                  tmp_path):
    a, b = workers(2, render_s=60.0)
    out = tmp_path / "runs"
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "search", "a lighthouse at dusk", "--ollama-url", fake_ollama.url,
         *scoring, "--beam-width", "3", "--keep-top", "2", "--iterations", "2", "--out", str(out),
         "--comfy-workers", f"{a.url},{b.url}"], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        running = [a.wait_running(timeout=120), b.wait_running(timeout=120)]    # both busy with round 0
        process.send_signal(signal.SIGINT)
        _stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    # Stopped on the workers too: each running prompt is interrupted (rounds stream, so a worker may also hold a
    # queued prompt of the next unit: it is deleted and interrupted as well), and nothing is left queued.
    assert running[0] in a.interrupted and running[1] in b.interrupted
    assert a.load() == 0 and b.load() == 0 and not a.rendered and not b.rendered
    run_dir = only_run_dir(out)
    assert read_report(run_dir)["status"] == "interrupted"

    a.render_s = b.render_s = 0.05
    result = cli("search", "--resume", run_dir, "--ollama-url", fake_ollama.url, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    report = read_report(run_dir)
    assert report["status"] == "finished" and len(report["candidates"]) == 5
    assert {c["render"]["worker"] for c in report["candidates"]} == {a.url, b.url}   # the recorded workers


def test_workers_and_the_flux_service_together_exit_2(fake_ollama, scoring, tmp_path):
    """Two places to render given as flags: refused before anything is contacted, naming the flag. A
    FLUX_API_URL in the environment yields to --comfy-workers instead: the workers are what the search tries."""
    result = search(fake_ollama, scoring, tmp_path / "runs", "--comfy-workers", "http://127.0.0.1:1",
                    "--flux-url", "http://127.0.0.1:2")
    assert result.returncode == 2, result.stderr
    assert ("--flux-url: renders on the Flux service and --comfy-workers on ComfyUI servers: give one of them"
            in result.stderr)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

    worker = f"http://127.0.0.1:{free_port()}"
    result = cli("search", "a lighthouse at dusk", "--ollama-url", fake_ollama.url, *scoring, "--out",
                 tmp_path / "runs", "--comfy-workers", worker, env=cli_env(FLUX_API_URL="http://127.0.0.1:2"))
    assert result.returncode == 1 and "no ComfyUI worker answers" in result.stderr and worker in result.stderr
    assert "Flux service" not in result.stderr


def test_a_bad_worker_timeout_exits_2(fake_ollama, scoring, tmp_path):
    result = search(fake_ollama, scoring, tmp_path / "runs", "--comfy-workers", "http://127.0.0.1:1",
                    "--worker-timeout", "0")
    assert result.returncode == 2 and "--worker-timeout: must be > 0" in result.stderr
