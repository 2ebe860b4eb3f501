"""`search --critic-model --judge-model` as a user runs it: a real subprocess, the fake Ollama server with vision
models, tiny local Flux and CLIP; models that cannot see are refused before anything loads (exit 2, flag named)."""
from __future__ import annotations

import time

import pytest

from tests.cli.test_cli_search import cli, models, only_run_dir, read_report  # noqa: F401  (fixture)

VISION = "qwen2.5vl:7b"


@pytest.fixture
def vision(fake_ollama):
    fake_ollama.add_vision_models()
    return fake_ollama


def test_search_with_a_critic_and_a_judge_runs_end_to_end(vision, models, tmp_path):
    out = tmp_path / "runs"
    result = cli("search", "a red kite over a green hill", "--ollama-url", vision.url, *models, "--beam-width", 4,
                 "--keep-top", 2, "--iterations", 2, "--seed", 3, "--critic-model", VISION, "--judge-model", VISION,
                 "--judge-budget", 2, "--judge-margin", 3, "--out", out)
    assert result.returncode == 0, result.stderr
    report = read_report(only_run_dir(out))
    assert report["status"] == "finished" and report["config"]["judge_budget"] == 2
    assert report["config"]["cli"]["critic_model"] == VISION and report["config"]["cli"]["judge_model"] == VISION
    assert report["config"]["judge"]["model"] == VISION and report["config"]["critic"]["model"] == VISION
    parents = report["iterations"][0]["survivors"]
    evaluated = [c["id"] for c in report["candidates"] if c["evaluation"]]
    assert sorted(evaluated) == sorted(parents)
    assert report["judgements"] and all(len(j["answers"]) == 2 for j in report["judgements"])
    assert all(entry["judge"]["asked"] <= 2 for entry in report["iterations"] if "judge" in entry)
    kinds = [r["kind"] for r in vision.vision_requests]
    assert kinds.count("critic") == len(parents) and kinds.count("judge") == 2 * len(report["judgements"])
    assert "critic qwen2.5vl:7b; judge qwen2.5vl:7b" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("flag, model, says", [
    ("--critic-model", "llama3.1:8b", "--critic-model: 'llama3.1:8b' cannot see images"),
    ("--judge-model", "qwen2.5:7b-instruct", "--judge-model: 'qwen2.5:7b-instruct' cannot see images"),
    ("--judge-model", "llama3.2-vision:11b", "--judge-model: 'llama3.2-vision:11b' (mllama) takes one image per "
                                             "request"),
])
def test_a_model_that_cannot_judge_is_refused_before_any_work(vision, models, tmp_path, flag, model, says):
    started = time.monotonic()
    result = cli("search", "a red kite", "--ollama-url", vision.url, *models, flag, model, "--out", tmp_path / "r")
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
    assert not vision.bodies("/api/chat")                 # nothing was asked of any model
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
    assert time.monotonic() - started < 60


def test_bad_judge_settings_name_their_flag(vision, models, tmp_path):
    result = cli("search", "a red kite", "--ollama-url", vision.url, *models, "--judge-margin", -1)
    assert result.returncode == 2 and "--judge-margin: must be >= 0" in result.stderr
    result = cli("search", "a red kite", "--ollama-url", vision.url, *models, "--judge-budget", -2)
    assert result.returncode == 2 and "--judge-budget: must be >= 0" in result.stderr


def test_a_judge_model_that_is_not_pulled_says_ollama_pull(vision, models, tmp_path):
    result = cli("search", "a red kite", "--ollama-url", vision.url, *models, "--judge-model", "qwen3-vl:8b")
    assert result.returncode == 1 and "ollama pull qwen3-vl:8b" in result.stderr
