"""`python -m pipeline queue` against a real ComfyUI with the pack installed: a search workflow queued from the
command line, ComfyUI's own validation errors, and Ctrl-C interrupting the prompt on the server."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.integration.test_search_node import SEARCH, SIZE, search_graph

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workflow(fake_ollama, tiny_clip_dir, tiny_aesthetic_path, tmp_path):
    def write(**changes) -> Path:
        path = tmp_path / "search_api.json"
        path.write_text(json.dumps(search_graph(fake_ollama.url, tiny_clip_dir, tiny_aesthetic_path, **changes)))
        return path
    return write


def queue(*args, **kwargs):
    return [sys.executable, "-m", "pipeline", "queue", *map(str, args)]


def test_queue_runs_a_search_and_saves_its_outputs(comfy_server, workflow, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(queue(workflow(iterations=1, run_name="cli"), "--server", comfy_server.url,
                                  "--prompt", "a heron by a misty lake", "--set", f"{SEARCH}.iterations=2",
                                  "--out", out), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "show_report_text.json").read_text())
    assert report["user_prompt"] == "a heron by a misty lake"
    assert report["config"]["iterations"] == 2 and len(report["iterations"]) == 2
    best, = out.glob("pb_best_*.png")
    assert Image.open(best).size == (SIZE, SIZE)
    assert (out / "show_prompt_text.txt").read_text() == next(
        c["prompt"] for c in report["candidates"] if c["id"] == report["best"])
    saved = [line.split(" ", 1)[1] for line in result.stdout.splitlines()]
    assert str(best) in saved and str(out / "show_report_text.json") in saved
    assert "node search PromptBeamSearch" in result.stderr and "round 2/2" in result.stderr


def test_comfyui_validation_errors_are_shown_per_input(comfy_server, workflow):
    result = subprocess.run(queue(workflow(), "--server", comfy_server.url, "--set", f"{SEARCH}.beam_width=0",
                                  "--set", f"{SEARCH}.seed=notanint"),
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "ComfyUI rejected the workflow: Prompt outputs failed validation" in result.stderr
    assert f"node {SEARCH} (PromptBeamSearch):" in result.stderr
    assert "input 'beam_width': Value 0 smaller than min of 1" in result.stderr
    assert "input 'seed': Failed to convert an input value to a INT value" in result.stderr


def test_ctrl_c_interrupts_the_prompt_on_the_server(comfy_server, workflow):
    runs = comfy_server.base / "output" / "promptbeam"
    process = subprocess.Popen(queue(workflow(beam_width=4, keep_top=2, iterations=30, run_name="cliint"),
                                     "--server", comfy_server.url),
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            reports = list(runs.glob("cliint-*/report.json")) if runs.is_dir() else []
            if reports and json.loads(reports[0].read_text())["candidates"]:
                break
            time.sleep(0.1)
        assert process.poll() is None, process.stderr.read()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    prompt_id = stderr.split("interrupted: sent /interrupt for prompt ")[1].split()[0]
    entry = comfy_server.wait_history(prompt_id, timeout=60)
    assert entry["status"]["status_str"] == "error"
    assert any(event == "execution_interrupted" for event, _ in entry["status"]["messages"])
    report = json.loads(next(runs.glob("cliint-*/report.json")).read_text())
    assert report["stop_reason"] == "interrupted"
