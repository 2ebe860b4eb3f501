"""The vision service as a real uvicorn subprocess on loopback, with the tiny models, answering real PNGs."""
import base64
import http.server
import os
import subprocess
import sys
import threading

import pytest
import requests
from PIL import Image

from pipeline.services.vision import parse_args
from tests.fixtures.servers import free_port, stop_process, wait_until_ready

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED_KEYS = {"alignmentScore", "aestheticScore", "analysis", "strengths", "weaknesses"}


def run_service(args, env_extra=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "pipeline.services.vision", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def allowed(tmp_path_factory):
    """The folder the service may read images from (--allow-dir)."""
    return tmp_path_factory.mktemp("allowed")


@pytest.fixture(scope="module")
def service(tiny_clip_dir, tiny_aesthetic_path, allowed):
    """Scorer settings from the environment (CLIP_MODEL, AESTHETIC_MODEL), device from a flag."""
    port = free_port()
    process = run_service(["--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--allow-dir",
                           str(allowed)],
                          {"CLIP_MODEL": f"local-dir:{tiny_clip_dir}", "AESTHETIC_MODEL": tiny_aesthetic_path,
                           "VISION_PROVIDER": "local"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url + "/health", timeout=120, name="the vision service",
                         output=process.stderr.read)
        yield url
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def png(allowed):
    path = allowed / "fox.png"
    Image.new("RGB", (96, 64), (255, 128, 0)).save(path)
    return path


def test_health(service, tiny_clip_dir, tiny_aesthetic_path):
    body = requests.get(service + "/health", timeout=10).json()
    assert body["status"] == "healthy" and body["model_loaded"] is True
    assert body["device"] == "cpu"
    assert body["models"] == [f"local-dir:{tiny_clip_dir}", tiny_aesthetic_path]


def test_analyze_image_path_matches_in_process_scorer(service, png, tiny_scorer):
    response = requests.post(service + "/analyze", json={"imagePath": str(png), "prompt": "a red fox"}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= SEED_KEYS
    expected = tiny_scorer.analyze(Image.open(png), "a red fox")
    assert body["alignmentScore"] == pytest.approx(expected["alignmentScore"], abs=1e-3)
    assert body["aestheticScore"] == pytest.approx(expected["aestheticScore"], abs=1e-3)
    assert body["weaknesses"] == expected["weaknesses"]


def test_file_data_and_http_urls_give_the_same_answer(service, png):
    by_path = requests.post(service + "/analyze", json={"imagePath": str(png), "prompt": "a red fox"},
                            timeout=30).json()
    data_url = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    handler = type("Handler", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(png.parent)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        for url in (data_url, f"http://127.0.0.1:{httpd.server_address[1]}/{png.name}"):
            response = requests.post(service + "/analyze", json={"imageUrl": url, "prompt": "a red fox",
                                                                 "options": {}}, timeout=30)
            assert response.status_code == 200, (url[:40], response.text)
            assert response.json() == by_path
        missing = requests.post(service + "/analyze", json={
            "imageUrl": f"http://127.0.0.1:{httpd.server_address[1]}/nope.png", "prompt": "x"}, timeout=30)
        assert missing.status_code == 400
        assert "answered HTTP 404" in missing.json()["detail"]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("body, status, words", [
    ({"imagePath": "/no/such/image.png", "prompt": "a fox"}, 403, "imagePath: /no/such/image.png is outside"),
    ({"imageUrl": "file:///no/such/image.png", "prompt": "a fox"}, 403, "file:// URLs are not read"),
    ({"imageUrl": "ftp://example.com/a.png", "prompt": "a fox"}, 400, "unsupported URL"),
    ({"imageUrl": "data:image/png;base64,@@@", "prompt": "a fox"}, 400, "not valid base64"),
    ({"imageUrl": "data:image/png;base64,aGVsbG8=", "prompt": "a fox"}, 400, "not an image"),
    ({"prompt": "a fox"}, 422, "give imagePath"),
    ({"imagePath": "/x.png"}, 422, "prompt: is empty"),
])
def test_bad_requests_are_clear_4xx(service, body, status, words):
    response = requests.post(service + "/analyze", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_missing_file_inside_the_allowed_folder_is_400(service, allowed):
    missing = allowed / "gone.png"
    response = requests.post(service + "/analyze", json={"imagePath": str(missing), "prompt": "a fox"}, timeout=30)
    assert response.status_code == 400
    assert response.json()["detail"] == f"imagePath: file not found: {missing}"


def test_not_an_image_file(service, allowed):
    text = allowed / "notes.png"
    text.write_text("not a png")
    response = requests.post(service + "/analyze", json={"imagePath": str(text), "prompt": "a fox"}, timeout=30)
    assert response.status_code == 400
    assert f"imagePath: {text} is not an image" in response.json()["detail"]


def test_unload_then_analyze_reloads(service, png):
    assert requests.post(service + "/unload", timeout=30).json()["model_loaded"] is False
    response = requests.post(service + "/analyze", json={"imagePath": str(png), "prompt": "a red fox"}, timeout=60)
    assert response.status_code == 200
    assert requests.get(service + "/health", timeout=10).json()["model_loaded"] is True


def test_bad_clip_flag_fails_at_startup_with_exit_2(tiny_aesthetic_path):
    process = run_service(["--port", str(free_port()), "--clip", "ViT-L-14", "--aesthetic", tiny_aesthetic_path,
                           "--device", "cpu"])
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "clip_model: 'ViT-L-14' names an architecture without weights" in err


def test_flags_override_environment():
    env = {"CLIP_MODEL": "local-dir:/from/env", "AESTHETIC_MODEL": "env-head.pth"}
    args = parse_args(["--clip", "ViT-B-32/openai", "--device", "cpu"], env=env)
    assert (args.clip, args.aesthetic, args.device) == ("ViT-B-32/openai", "env-head.pth", "cpu")
    assert parse_args([], env=env).clip == "local-dir:/from/env"
    assert parse_args([], env={}).clip == "ViT-L-14/openai"
