"""The vision service with --critic-model: /analyze keeps CLIP's and the aesthetic head's numbers and takes
`analysis`, `strengths` and `weaknesses` from an Ollama vision model that was shown the image itself (the fake
Ollama describes the pixels it decoded). A real service subprocess on loopback, with the tiny models."""
import json
import os
import subprocess
import sys

import pytest
import requests
from PIL import Image

from tests.fixtures.ollama import FakeOllama, mean_rgb
from tests.fixtures.servers import free_port, stop_process, wait_until_ready

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CRITIC = "gemma3:4b"
PROMPT = "an orange fox in the snow"


def run_vision(args, cwd) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, "-m", "pipeline.services.vision", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def critic_fake():
    fake = FakeOllama().start()
    fake.add_vision_models()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_clip_dir, tiny_aesthetic_path, critic_fake):
    workdir = tmp_path_factory.mktemp("critic_cwd")
    (workdir / "output").mkdir()
    port = free_port()
    process = run_vision(["--port", str(port), "--device", "cpu", "--clip", f"local-dir:{tiny_clip_dir}",
                          "--aesthetic", tiny_aesthetic_path, "--critic-model", CRITIC, "--ollama-url",
                          critic_fake.url], workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url + "/health", timeout=120, name="the vision service",
                         output=process.stdout.read)
        yield url, workdir
    finally:
        stop_process(process)


@pytest.fixture
def fake(critic_fake):
    critic_fake.reset()
    critic_fake.add_vision_models()
    yield critic_fake


def fox(workdir):
    path = workdir / "output" / "fox.png"
    Image.new("RGB", (96, 64), (230, 120, 20)).save(path)
    return path


def analyze(url, path) -> requests.Response:
    # local-vision-provider.js analyzeImage(localPath, prompt)
    return requests.post(url + "/analyze", json={"imagePath": str(path), "prompt": PROMPT, "options": {}}, timeout=60)


def test_the_critic_writes_the_text_from_the_image_and_the_scores_stay(service, fake, tiny_scorer):
    url, workdir = service
    path = fox(workdir)
    response = analyze(url, path)
    assert response.status_code == 200, response.text
    body = response.json()
    scored = tiny_scorer.analyze(Image.open(path), PROMPT)
    assert body["alignmentScore"] == pytest.approx(scored["alignmentScore"], abs=1e-3)
    assert body["aestheticScore"] == pytest.approx(scored["aestheticScore"], abs=1e-3)
    # The fake critic names the colour of the pixels it decoded: the file's own.
    assert body["analysis"].startswith("Image 1 is 96x64, mostly red (mean red 0.902, green 0.471, blue 0.078)")
    assert body["strengths"] == ["a clear red tone"]
    assert body["weaknesses"] == ["too little blue (0.078)", "the subject is hard to make out"]
    assert body["critic"]["model"] == CRITIC and body["critic"]["fallback"] is False
    (request,) = fake.vision_requests
    assert request["kind"] == "critic" and request["model"] == CRITIC
    assert tuple(round(255 * c) for c in mean_rgb(request["images"][0])) == (230, 120, 20)
    user = fake.bodies()[0]["messages"][1]["content"]
    assert json.dumps(PROMPT) in user and "fox.png" not in user
    health = requests.get(url + "/health", timeout=10).json()
    assert health["critic"]["model"] == CRITIC and health["critic"]["ollama_url"] == fake.url


def test_an_unusable_critique_keeps_the_score_text_and_says_why(service, fake, tiny_scorer):
    url, workdir = service
    path = fox(workdir)
    fake.script("/api/chat", {"content": "a nice fox"}, {"content": "{\"analysis\": \"\"}"})
    body = analyze(url, path).json()
    scored = tiny_scorer.analyze(Image.open(path), PROMPT)
    assert (body["analysis"], body["strengths"], body["weaknesses"]) == \
        (scored["analysis"], scored["strengths"], scored["weaknesses"])
    assert body["critic"]["fallback"] is True
    assert "unusable twice" in body["critic"]["problem"] and "'analysis' was missing or empty" in \
        body["critic"]["problem"]


def test_a_failing_ollama_is_a_one_line_502_naming_the_flag(service, fake):
    url, workdir = service
    fake.models.remove(CRITIC)
    response = analyze(url, fox(workdir))
    assert response.status_code == 502
    detail = response.json()["detail"]
    assert detail.startswith(f"--critic-model: Ollama model '{CRITIC}' is not installed at {fake.url}")
    assert "\n" not in detail


@pytest.mark.parametrize("model, words", [
    ("qwen2.5:7b-instruct", "error: --critic-model: 'qwen2.5:7b-instruct' cannot see images"),
    ("nope:1b", "error: --critic-model: Ollama model 'nope:1b' is not installed at"),
])
def test_a_critic_that_cannot_see_fails_at_start_before_the_models_load(critic_fake, tmp_path, model, words):
    # --clip names weights that do not exist: reaching the CLIP load would fail differently
    process = run_vision(["--port", str(free_port()), "--clip", "local-dir:/nowhere", "--critic-model", model,
                          "--ollama-url", critic_fake.url], tmp_path)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 2, out
    assert out.startswith(words) and out.strip().count("\n") == 0, out
