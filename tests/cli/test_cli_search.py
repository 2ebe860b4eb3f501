"""`python -m pipeline search`, run as a real subprocess against the fake Ollama server and tiny local models:
a full run, Ctrl-C then --resume, a second Ctrl-C, Ollama down, and every parameter error (exit 2, flag named)."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.ollama import free_port
from tests.fixtures.tiny_clip import build_tiny_aesthetic

REPO = Path(__file__).resolve().parents[2]
# The seed's environment variables: cleared so that the machine's own settings cannot leak into a test.
SETTING_VARS = ("LLM_PROVIDER", "IMAGE_PROVIDER", "VISION_PROVIDER", "OLLAMA_BASE_URL", "OLLAMA_MODEL", "FLUX_MODEL",
                "FLUX_LORAS", "FLUX_LORAS_DIR", "CLIP_MODEL", "AESTHETIC_MODEL", "FLUX_API_URL",
                "LOCAL_VISION_API_URL")
UNLOADED = {"model": "qwen2.5:7b-instruct", "created_at": "2026-11-25T00:00:00Z", "response": "", "done": True,
            "done_reason": "unload"}


def cli_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SETTING_VARS}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def cli(*args, timeout: float = 180, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env or cli_env())


@pytest.fixture
def models(tiny_flux_dir, tiny_clip_dir, tiny_aesthetic_path) -> list:
    return ["--flux", tiny_flux_dir, "--clip", f"local-dir:{tiny_clip_dir}", "--aesthetic", tiny_aesthetic_path,
            "--width", "64", "--height", "64", "--steps", "2", "--device", "cpu"]


def only_run_dir(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def read_report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text(encoding="utf-8"))


def summary(stdout: str) -> dict:
    return {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in stdout.splitlines() if ":" in line}


# ---------------------------------------------------------------------------------------------------------------


def test_search_writes_the_record_and_prints_the_best(fake_ollama, models, tmp_path):
    out = tmp_path / "runs"
    result = cli("search", "a lighthouse at dusk", "--ollama-url", fake_ollama.url, *models, "--beam-width", 3,
                 "--keep-top", 2, "--iterations", 2, "--seed", 7, "--captions", "--caption-model", "llama3.1:8b",
                 "--out", out)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    report = read_report(run_dir)
    assert report["user_prompt"] == "a lighthouse at dusk"
    assert report["stop_reason"] == "max_iterations" and report["status"] == "finished"
    assert [c["id"] for c in report["candidates"]] == ["i0c0", "i0c1", "i0c2", "i1c0", "i1c1"]
    for candidate in report["candidates"]:
        assert candidate["status"] == "ok" and candidate["caption"]       # described by the vision model
        assert (run_dir / candidate["image"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["config"]["beam_width"] == 3 and report["config"]["seed"] == 7
    assert report["config"]["cli"]["flux"] == str(models[1])           # what --resume reloads
    best = next(c for c in report["candidates"] if c["id"] == report["best"])
    printed = summary(result.stdout)
    assert printed["run directory"] == str(run_dir)
    assert printed["prompt"] == best["prompt"]
    assert printed["best"].startswith(f"{best['id']}  total {best['scores']['total']:.2f}  alignment "
                                      f"{best['scores']['alignment']:.2f}  aesthetic {best['scores']['aesthetic']:.2f}")
    assert printed["image"] == str(run_dir / best["image"])
    assert printed["report page"] == str(run_dir / "report.html") and (run_dir / "report.html").is_file()
    # Progress goes to stderr (tqdm, one bar over all images), results to stdout.
    assert "round 2/2" in result.stderr and "5/5" in result.stderr and "Traceback" not in result.stderr
    chats = fake_ollama.bodies("/api/chat")
    assert {body["model"] for body in chats if "images" not in body["messages"][-1]} == {"qwen2.5:7b-instruct"}
    assert sum(1 for body in chats if body["model"] == "llama3.1:8b" and body["messages"][-1].get("images")) == 5


def test_ctrl_c_keeps_a_resumable_record_and_resume_finishes_it(fake_ollama, models, tmp_path):
    out = tmp_path / "runs"
    # --low-vram unloads Ollama before each round's rendering; round 1's unload answers slowly, which holds the
    # run mid-search while the test presses Ctrl-C.
    fake_ollama.script("/api/generate", {"json": UNLOADED}, {"json": UNLOADED, "delay": 2})
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "search", "a lighthouse at dusk", "--ollama-url", fake_ollama.url,
         *map(str, models), "--beam-width", "2", "--keep-top", "1", "--iterations", "3", "--low-vram",
         "--out", str(out)], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            reports = list(out.glob("*/report.json"))
            if reports and json.loads(reports[0].read_text(encoding="utf-8"))["candidates"]:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be interrupted"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    run_dir = only_run_dir(out)
    assert process.returncode == 130, stderr
    assert "stopping after the current step" in stderr
    assert f"python -m pipeline search --resume {run_dir}" in stderr
    assert "Traceback" not in stderr
    interrupted = read_report(run_dir)
    assert interrupted["stop_reason"] == "interrupted" and interrupted["status"] == "interrupted"
    done_before = [c["id"] for c in interrupted["candidates"]]
    assert done_before == ["i0c0", "i0c1"]
    assert summary(stdout)["run directory"] == str(run_dir)       # the best so far is reported too

    # No model flags: --resume reloads the models the run recorded (the default FLUX_MODEL is a hub id that
    # is not available offline, so this would fail if it did not).
    result = cli("search", "--resume", run_dir, "--ollama-url", fake_ollama.url, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    report = read_report(run_dir)
    assert report["stop_reason"] == "max_iterations" and report["status"] == "finished"
    ids = [c["id"] for c in report["candidates"]]
    assert ids[:2] == done_before and len(ids) == len(set(ids)) == 2 + 2 + 2
    assert [c["prompt"] for c in report["candidates"][:2]] == [c["prompt"] for c in interrupted["candidates"]]
    assert [entry["iteration"] for entry in report["iterations"]] == [0, 1, 2]
    assert all((run_dir / c["image"]).is_file() for c in report["candidates"])
    assert summary(result.stdout)["run directory"] == str(run_dir)

    # A resumed run keeps its search settings; only how far and how long it goes may change.
    result = cli("search", "--resume", run_dir, "--beam-width", 3)
    assert result.returncode == 2
    assert "error: --beam-width: cannot be changed when resuming" in result.stderr
    assert "--iterations, --patience" in result.stderr
    result = cli("search", "--resume", run_dir, "--iterations", 4, "--ollama-url", fake_ollama.url, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    report = read_report(run_dir)
    assert report["config"]["iterations"] == 4 and [e["iteration"] for e in report["iterations"]] == [0, 1, 2, 3]
    assert len(report["candidates"]) == 8 and report["stop_reason"] == "max_iterations"


def test_second_ctrl_c_aborts_at_once(fake_ollama, models, tmp_path):
    out = tmp_path / "runs"
    fake_ollama.script("/api/generate", {"json": UNLOADED, "delay": 20})
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "search", "a lighthouse", "--ollama-url", fake_ollama.url,
         *map(str, models), "--beam-width", "2", "--keep-top", "1", "--low-vram", "--out", str(out)],
        cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not fake_ollama.bodies("/api/generate") and time.monotonic() < deadline:
            time.sleep(0.05)                           # until the (slow) unload is in flight
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        pressed = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
        waited = time.monotonic() - pressed
        stderr = process.stderr.read()
    finally:
        process.kill()
    assert process.returncode == -signal.SIGINT          # ended by the signal itself, as shells expect
    assert waited < 5                                    # did not wait for the 20 s unload
    assert "Ctrl-C again to abort now" in stderr
    assert read_report(only_run_dir(out))["user_prompt"] == "a lighthouse"   # the record is still valid JSON


def test_ollama_down_exits_1_with_the_fix(models, tmp_path):
    out = tmp_path / "runs"
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("search", "a lighthouse", "--ollama-url", url, *models, "--out", out)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: Cannot reach Ollama at {url} (connection refused; tried 2 times)")
    assert "`ollama serve`" in line
    assert not out.exists()                              # checked before any model load or run directory


def test_debug_shows_the_traceback_of_a_failure(models, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("search", "a lighthouse", "--ollama-url", url, *models, "--out", tmp_path / "runs", "--debug")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "OllamaUnreachable" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: Cannot reach Ollama at {url}")


def test_unexpected_errors_are_one_line_unless_debug(capsys, monkeypatch):
    """A bug (not a user error) says "internal" and how to see more; the exit code is 1."""
    from pipeline.cli import doctor as cli_doctor, main as cli_module

    def broken(args):
        raise KeyError("boom")
    monkeypatch.setattr(cli_doctor, "run", broken)       # inject the fault; main() builds its parser per call
    assert cli_module.main(["doctor"]) == 1
    assert capsys.readouterr().err == "error: internal: KeyError: 'boom' (rerun with --debug for the traceback)\n"
    assert cli_module.main(["doctor", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.endswith("error: internal: KeyError: 'boom'\n")


def test_model_not_pulled_exits_1_with_the_pull_command(fake_ollama, models, tmp_path):
    result = cli("search", "a lighthouse", "--ollama-url", fake_ollama.url, "--llm-model", "nosuch:1b", *models,
                 "--out", tmp_path / "runs")
    assert result.returncode == 1
    assert "`ollama pull nosuch:1b`" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# Parameter errors: exit 2 before anything loads, naming the flag


@pytest.fixture(scope="module")
def wide_aesthetic(tmp_path_factory) -> str:
    """A LAION-layout head for 512-d embeddings: does not fit the tiny 768-d CLIP."""
    return build_tiny_aesthetic(str(tmp_path_factory.mktemp("wide") / "vit-b-head.pth"), input_dim=512)


@pytest.fixture(scope="module")
def broken_clip(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("broken_clip")
    (folder / "open_clip_config.json").write_text("{not json")
    return str(folder)


INVALID = [
    (["--keep-top", "5", "--beam-width", "4"], "error: --keep-top: must be <= --beam-width (4)"),
    (["--beam-width", "0"], "error: --beam-width: must be >= 1"),
    (["--iterations", "0"], "error: --iterations: must be >= 1"),
    (["--alpha", "1.5"], "error: --alpha: must be in [0, 1]"),
    (["--seed", "-1"], "error: --seed: must be >= 0"),
    (["--width", "100"], "error: --width: must be a multiple of 16"),
    (["--height", "8"], "error: --height: must be >= 16"),
    (["--steps", "0"], "error: --steps: must be >= 1"),
    (["--guidance", "-1"], "error: --guidance: must be >= 0"),
    (["--patience", "0"], "error: --patience: must be >= 1"),
    (["--time-budget", "0"], "error: --time-budget: must be > 0 seconds"),
    (["--llm-concurrency", "0"], "error: --llm-concurrency: must be >= 1"),
    (["--score-text", " "], "error: --score-text: must be a non-empty string"),
    (["--beam-width", "four"], "argument --beam-width: invalid int value: 'four'"),
    (["--dimension-policy", "sideways"], "argument --dimension-policy: invalid choice: 'sideways'"),
    (["--lora", "{missing}/style.safetensors"], "error: --lora: LoRA '{missing}/style.safetensors' not found"),
    (["--lora", "style.safetensors:heavy"], "error: --lora: weight must be a number in 'style.safetensors:heavy'"),
    (["--flux", "{missing}/flux"], "error: --flux: {missing}/flux not found"),
    (["--flux-base", "black-forest-labs/FLUX.1-dev"], "error: --flux-base: only applies when --flux is a single-file"),
    (["--clip", "ViT-Q-99/openai"], "error: --clip: unknown open_clip architecture 'ViT-Q-99'"),
    (["--clip", "local-dir:{missing}"],
     "error: --clip: local-dir:{missing}: {missing}/open_clip_config.json not found"),
    (["--aesthetic", "{missing}/head.pth"], "error: --aesthetic: aesthetic checkpoint not found: {missing}/head.pth"),
    (["--aesthetic", "{wide}"], "error: --aesthetic: vit-b-head.pth expects 512-d embeddings"),
    (["--clip", "local-dir:{broken}"], "error: --clip: {broken}/open_clip_config.json is not a readable open_clip"),
    (["--out", "{file}/runs"], "error: --out: {file}/runs: {file} is a file, not a folder"),
    (["--captions"], "error: --captions: needs --caption-model NAME"),
    (["--offload"], "error: --offload: moves Flux's parts to the GPU only while they run; this run is on the CPU"),
    (["--device", "tpu"], "error: --device: 'tpu' is not a device; use cuda, cuda:N, mps or cpu"),
]


@pytest.mark.parametrize("flags, message", INVALID, ids=[" ".join(f) for f, _ in INVALID])
def test_invalid_parameter_exits_2_naming_it(flags, message, models, wide_aesthetic, broken_clip, fake_ollama,
                                            tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    fill = lambda text: text.format(missing=tmp_path / "missing", wide=wide_aesthetic, broken=broken_clip, file=a_file)
    flags = [fill(f) for f in flags]
    out = tmp_path / "runs"
    result = cli("search", "a lighthouse", "--ollama-url", fake_ollama.url, *models, "--out", out, *flags)
    assert result.returncode == 2, result.stderr
    assert fill(message) in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and fake_ollama.requests == []    # refused before any work


def test_prompt_and_resume_errors_exit_2(fake_ollama, tmp_path):
    assert "error: PROMPT: is missing" in cli("search").stderr
    not_a_run = tmp_path / "not_a_run"
    not_a_run.mkdir()
    cases = [
        (["search", "a cat", "--resume", not_a_run], "error: PROMPT: give either PROMPT or --resume RUN_DIR"),
        (["search", "--resume", tmp_path / "nothing"], "error: --resume: "),
        (["search", "--resume", not_a_run], "error: --resume: " + f"{not_a_run} has no report.json"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_flag_table_matches_the_search_api():
    from pipeline import beam
    from pipeline.cli import search as cli_search
    from pipeline.beam.config import BeamConfig

    fields = {f.name for f in dataclasses.fields(BeamConfig)}
    assert set(cli_search.CONFIG_FLAGS) <= fields
    assert set(cli_search.CONFIG_FLAGS) == fields - {"sampler", "scheduler"}   # diffusers Flux has one sampler
    assert cli_search.RESUME_OVERRIDES == beam.RESUME_OVERRIDES
