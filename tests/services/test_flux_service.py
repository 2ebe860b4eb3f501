"""The seed's Flux HTTP service (`python -m pipeline.services.flux`) as a real subprocess on loopback."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.fixtures.tiny_flux import TINY_SIZE


def post(service, **body):
    body.setdefault("prompt", "a red cat on a wooden table")
    body.setdefault("width", TINY_SIZE)
    body.setdefault("height", TINY_SIZE)
    body.setdefault("steps", 2)
    return requests.post(service.url + "/generate", json=body, timeout=60)


def pixels(answer: dict) -> np.ndarray:
    with Image.open(answer["localPath"]) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def health(service) -> dict:
    return requests.get(service.url + "/health", timeout=10).json()


def test_health_names_model_device_and_loras(flux_service):
    info = health(flux_service)
    assert info["status"] == "ok" and info["model"] == str(flux_service.model_dir) and info["model_loaded"] is True
    assert info["device"] == "cpu" and isinstance(info["loras"], list)


def test_generate_saves_a_png_of_the_requested_size(flux_service):
    response = post(flux_service, width=80, height=48, seed=11, guidance=3.5)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) >= {"localPath", "metadata", "revisedPrompt"}
    path = Path(answer["localPath"])
    assert path.is_file() and path.parent == flux_service.out_dir.absolute()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (80, 48)
        assert image.text["prompt"] == "a red cat on a wooden table" and image.text["seed"] == "11"
    meta = answer["metadata"]
    assert (meta["width"], meta["height"], meta["steps"], meta["seed"]) == (80, 48, 2, 11)
    assert answer["revisedPrompt"] == "a red cat on a wooden table"


def test_seeds_are_honoured_and_a_missing_seed_is_reported(flux_service):
    first, second, other = post(flux_service, seed=5).json(), post(flux_service, seed=5).json(), post(flux_service, seed=6).json()
    assert first["localPath"] != second["localPath"]
    assert np.array_equal(pixels(first), pixels(second))
    assert not np.array_equal(pixels(first), pixels(other))
    drawn = post(flux_service).json()                      # no seed: the service draws one and says which
    assert isinstance(drawn["metadata"]["seed"], int)
    replay = post(flux_service, seed=drawn["metadata"]["seed"]).json()
    assert np.array_equal(pixels(drawn), pixels(replay))


def test_request_loras_are_loaded_once_and_switched(flux_service):
    plain = pixels(post(flux_service, seed=3, loras=[], useDefaultLoras=False).json())
    styled = post(flux_service, seed=3, loras=[{"path": "tiny_style", "trigger": "tnystyle", "weight": 1.0}]).json()
    assert styled["revisedPrompt"] == "tnystyle, a red cat on a wooden table"
    assert np.abs(pixels(styled) - plain).max() > 0
    again = post(flux_service, seed=3, loras=[{"path": "tiny_style", "trigger": "tnystyle", "weight": 1.0}]).json()
    assert np.array_equal(pixels(again), pixels(styled))
    # The seed's own form {path, scale}: same file, weight 0 -> the plain image, still no reload.
    zero = post(flux_service, seed=3, loras=[{"path": "tiny_style", "scale": 0.0}]).json()
    assert np.array_equal(pixels(zero), plain)
    assert np.array_equal(pixels(post(flux_service, seed=3).json()), plain)   # omitted: service default (none)
    info = health(flux_service)
    assert info["lora_loads"] == 1 and len(info["loras"]) == 1
    assert info["loras"][0]["file"].endswith("tiny_style.safetensors")


@pytest.mark.parametrize("body, field, words", [
    ({"width": 100}, "width", "multiple of 16"),
    ({"height": 0}, "height", "multiple of 16"),
    ({"steps": 0}, "steps", "greater than or equal to 1"),
    ({"prompt": ""}, "prompt", "at least 1 character"),
    ({"seed": -1}, "seed", "greater than or equal to 0"),
    ({"loras": [{"path": "no_such_style"}]}, "loras", "LoRA folders searched"),
])
def test_invalid_requests_answer_422_naming_the_field(flux_service, body, field, words):
    response = post(flux_service, **body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["loc"][:2] == ["body", field]
    assert words in detail[0]["msg"]


def test_missing_lora_lists_the_folders_searched(flux_service):
    detail = post(flux_service, loras=[{"path": "no_such_style"}]).json()["detail"][0]["msg"]
    assert str(flux_service.lora_dir / "no_such_style.safetensors") in detail


def test_lora_for_another_architecture_is_a_422(flux_service, foreign_lora_path):
    import shutil

    inside = shutil.copy(foreign_lora_path, flux_service.lora_dir / "sdxl_style.safetensors")
    response = post(flux_service, loras=[{"path": str(inside)}])
    assert response.status_code == 422
    assert "another architecture" in response.json()["detail"][0]["msg"]
    assert post(flux_service, seed=1).status_code == 200                # the service carries on


def start_service(*args):
    return subprocess.run([sys.executable, "-m", "pipeline.services.flux", "--port", "1", "--device", "cpu", *args],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FLUX_LORAS": "", "FLUX_LORAS_DIR": ""})


def test_startup_with_a_missing_model_fails_with_its_name(tmp_path):
    missing = tmp_path / "no_model_here"
    done = start_service("--model", str(missing))
    assert done.returncode == 1
    assert f"error: model {str(missing)!r} not found" in done.stderr


def test_startup_with_a_missing_default_lora_fails_before_serving(tiny_flux_dir):
    done = start_service("--model", str(tiny_flux_dir), "--lora", "absent_style:0.8:abs")
    assert done.returncode == 1
    assert "error: LoRA 'absent_style' not found" in done.stderr


def test_png_carries_the_full_metadata(flux_service):
    answer = post(flux_service, seed=9, negativePrompt="blurry").json()
    with Image.open(answer["localPath"]) as image:
        stored = json.loads(image.text["promptbeam"])
    assert stored["seed"] == 9 and stored["negativePrompt"] == "blurry" and stored["negative_ignored"] is True


def test_compile_at_start_that_fails_serves_eagerly_with_one_warning(tiny_flux_dir, tiny_lora_path, tmp_path,
                                                                     monkeypatch):
    from tests.fixtures.servers import free_port
    from tests.fixtures.tiny_flux import FluxServiceProcess, TINY_SIZE

    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))        # no C++ compiler: inductor cannot build
    service = FluxServiceProcess(tiny_flux_dir, tmp_path / "out", tiny_lora_path.parent, free_port(),
                                 extra_args=["--compile", "--compile-size", f"{TINY_SIZE}x{TINY_SIZE}",
                                             "--compile-cache", tmp_path / "cache"])
    try:
        service.wait_ready(timeout=600)
        log = service.log.read_text()
        assert log.count("warning: --compile failed (") == 1 and "Traceback" not in log
        speed = requests.get(service.url + "/health", timeout=10).json()["speed"]
        assert speed["compile"] is True and speed["status"] == "failed"
        answer = requests.post(service.url + "/generate", timeout=300,
                               json={"prompt": "a red cat", "width": TINY_SIZE, "height": TINY_SIZE, "steps": 2})
        assert answer.status_code == 200
    finally:
        service.stop()
