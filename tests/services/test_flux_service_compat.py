"""The Flux service as a drop-in for the seed's clients, LoRA confinement, the bounded queue and retention,
against real service subprocesses on loopback serving the tiny model.

The request bodies are the ones the seed's Node.js code sends: `flux-image-provider.js` builds
{model, prompt, height, width, steps, guidance, seed: null, negativePrompt: '', loras: [], lora_scale: null,
scheduler} (plus `sampler` from the UI's settings), and the orchestrator's LoRA path sends `loras: ["path"]` with
`loraScale`.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from tests.fixtures.servers import free_port
from tests.fixtures.tiny_flux import TINY_SIZE, FluxServiceProcess

PROMPT = "a red cat on a wooden table"


def seed_client_body(**overrides) -> dict:
    """flux-image-provider.js generateImage(prompt, {}) with the seed's generation defaults, at the tiny size."""
    body = {"model": "flux-dev", "prompt": PROMPT, "height": TINY_SIZE, "width": TINY_SIZE, "steps": 2,
            "guidance": 3.5, "seed": None, "negativePrompt": "", "loras": [], "lora_scale": None, "scheduler": None}
    body.update(overrides)
    return body


def pixels(answer: dict) -> np.ndarray:
    with Image.open(answer["localPath"]) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def styled_service(tmp_path_factory, tiny_flux_dir, tiny_lora_path):
    """A service started with a default LoRA (as FLUX_LORA_PATH does for the seed's service), a queue of 1 and a
    retention of 3 images."""
    root = tmp_path_factory.mktemp("styled_service")
    service = FluxServiceProcess(tiny_flux_dir, root / "out", tiny_lora_path.parent, free_port(),
                                 extra_args=["--lora", "tiny_style:1.0:tnystyle", "--queue-depth", "1",
                                             "--keep-images", "3"])
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


def post(service, body: dict, timeout: float = 120) -> requests.Response:
    return requests.post(service.url + "/generate", json=body, timeout=timeout)


def test_health_and_download_status_answer_the_seed_client(styled_service):
    health = requests.get(styled_service.url + "/health", timeout=10).json()
    assert health["model_loaded"] is True and health["status"] == "ok"
    assert health["queue"] == {**health["queue"], "running": 0, "waiting": 0, "depth": 1}
    assert health["default_loras"] == [{"path": "tiny_style", "trigger": "tnystyle", "weight": 1.0}]
    status = requests.get(styled_service.url + "/download/status", timeout=10).json()
    assert status["status"] != "not_downloaded" and status["model_loaded"] is True


def test_seed_client_body_with_empty_loras_gets_the_default_lora(styled_service, flux_service):
    answer = post(styled_service, seed_client_body(seed=3))
    assert answer.status_code == 200, answer.text
    styled = answer.json()
    assert styled["revisedPrompt"] == f"tnystyle, {PROMPT}"
    assert [l["weight"] for l in styled["metadata"]["loras"]] == [1.0]
    # The same render on the plain service with the LoRA named explicitly: identical pixels.
    named = post(flux_service, seed_client_body(seed=3, loras=[{"path": "tiny_style", "trigger": "tnystyle"}]))
    assert np.array_equal(pixels(named.json()), pixels(styled))
    # loras absent and lora_scale set: the default LoRA re-weighted, as the seed's service does.
    body = seed_client_body(seed=3, lora_scale=0.0)
    del body["loras"]
    zero = post(styled_service, body).json()
    assert [l["weight"] for l in zero["metadata"]["loras"]] == [0.0]
    # Weight 0 leaves the pixels of the plain model (the trigger word stays in the prompt).
    plain = post(flux_service, seed_client_body(seed=3, prompt=zero["revisedPrompt"])).json()
    assert zero["revisedPrompt"] == f"tnystyle, {PROMPT}" and np.array_equal(pixels(zero), pixels(plain))


def test_use_default_loras_false_renders_without_any(styled_service, flux_service):
    none = post(styled_service, seed_client_body(seed=4, useDefaultLoras=False)).json()
    assert none["revisedPrompt"] == PROMPT and none["metadata"]["loras"] == []
    plain = post(flux_service, seed_client_body(seed=4)).json()
    assert np.array_equal(pixels(none), pixels(plain))


@pytest.mark.parametrize("scale_field", ["loraScale", "lora_scale"])
def test_loras_as_a_list_of_paths_with_a_shared_scale(styled_service, flux_service, scale_field):
    body = seed_client_body(seed=5, loras=["tiny_style"], **{scale_field: 0.5})
    body.pop("lora_scale") if scale_field == "loraScale" else None
    answer = post(styled_service, body)
    assert answer.status_code == 200, answer.text
    meta = answer.json()["metadata"]
    assert [(os.path.basename(l["path"]), l["weight"]) for l in meta["loras"]] == [("tiny_style.safetensors", 0.5)]
    same = post(flux_service, seed_client_body(seed=5, loras=[{"path": "tiny_style", "weight": 0.5}])).json()
    assert np.array_equal(pixels(same), pixels(answer.json()))


@pytest.mark.parametrize("sampler, scheduler", [("dpmpp_2m", None), ("euler_a", "beta"), ("ddim", "karras"),
                                                ("lcm", None), (None, "beta"), ("not_a_sampler", "not_a_schedule")])
def test_the_seed_ui_sampler_and_schedule_names_are_mapped_and_reported(flux_service, sampler, scheduler):
    answer = post(flux_service, seed_client_body(seed=6, sampler=sampler, scheduler=scheduler))
    assert answer.status_code == 200, answer.text
    meta = answer.json()["metadata"]
    notes = {note["field"]: note for note in meta["adjusted"]}
    if sampler:
        assert notes["sampler"]["requested"] == sampler and notes["sampler"]["used"] == "euler"
        assert meta["sampler"] == "euler"
    if scheduler in ("beta", "not_a_schedule"):
        assert notes["scheduler"] == {**notes["scheduler"], "requested": scheduler, "used": "simple"}
        assert "available: simple, normal, karras, exponential" in notes["scheduler"]["reason"]
    used_schedule = notes.get("scheduler", {}).get("used", scheduler)
    reference = post(flux_service, seed_client_body(seed=6, sampler="euler", scheduler=used_schedule)).json()
    assert "adjusted" not in reference["metadata"]
    assert np.array_equal(pixels(reference), pixels(answer.json()))


def test_request_loras_outside_the_lora_dirs_are_403(flux_service, tmp_path, tiny_lora_path):
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(tiny_lora_path.read_bytes())
    link = flux_service.lora_dir / "link_out.safetensors"
    if not link.exists():
        link.symlink_to(outside)
    cases = {"absolute": str(outside), "dotdot": f"../{tmp_path.name}/elsewhere.safetensors",
             "dotdot_missing": "../../etc/passwd", "symlink": "link_out.safetensors"}
    for case, path in cases.items():
        for loras in ([{"path": path}], [path]):
            response = post(flux_service, seed_client_body(loras=loras))
            assert response.status_code == 403, (case, response.text)
            detail = response.json()["detail"]
            assert "is outside the folders this service may read" in detail and "--lora-dir DIR" in detail
            assert str(flux_service.lora_dir.resolve()) in detail, case
    assert post(flux_service, seed_client_body(loras=["tiny_style"])).status_code == 200


# A full line (503 + Retry-After, /health answering during a render) and the pack's client waiting out a 503 are
# tested in tests/services/test_services_under_load.py, with the model call held by the test: here, with a
# subprocess, whether the line is full when a request arrives would depend on how fast the CPU renders.


def test_retention_keeps_only_the_newest_images_and_no_other_file(styled_service):
    keep = styled_service.out_dir / "notes.png"
    keep.write_bytes(b"not ours")
    paths = [post(styled_service, seed_client_body(seed=20 + i)).json()["localPath"] for i in range(5)]
    left = sorted(p.name for p in styled_service.out_dir.glob("flux_*.png"))
    assert len(left) == 3 and [os.path.basename(p) for p in paths[-3:]] == sorted(left)[-3:]
    assert keep.read_bytes() == b"not ours"


def test_fifty_requests_eight_at_a_time_none_lost(flux_service):
    def send(seed):
        return seed, post(flux_service, seed_client_body(seed=seed, loras=None))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, range(100, 150)))
    assert [r.status_code for _, r in results] == [200] * 50
    paths = {r.json()["localPath"] for _, r in results}
    assert len(paths) == 50 and all(os.path.isfile(p) for p in paths)
    assert all(r.json()["metadata"]["seed"] == seed for seed, r in results)
