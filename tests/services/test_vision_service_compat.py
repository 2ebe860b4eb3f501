"""The vision service for the seed's client and for RemoteScorer: the seed's exact /analyze bodies, file access
confined to the allowed folders, and the batch endpoint giving the local scorer's numbers. The service runs as a
real subprocess on loopback, started in a scratch working directory with the default roots (./output)."""
import os
import subprocess
import sys

import pytest
import requests
import torch
from PIL import Image

from pipeline.errors import InvalidParameter, ScoringFailed
from pipeline.scoring.remote import RemoteScorer, encode_image, is_8bit
from pipeline.scoring import Scorer
from tests.fixtures.servers import free_port, stop_process, wait_until_ready

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class VisionService:
    def __init__(self, workdir, url):
        self.workdir, self.url = workdir, url


@pytest.fixture(scope="module")
def vision(tmp_path_factory, tiny_clip_dir, tiny_aesthetic_path):
    workdir = tmp_path_factory.mktemp("vision_cwd")
    (workdir / "output" / "flux").mkdir(parents=True)
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    log = open(workdir / "service.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "pipeline.services.vision", "--port", str(port), "--device",
                                "cpu", "--clip", f"local-dir:{tiny_clip_dir}", "--aesthetic", tiny_aesthetic_path],
                               cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url + "/health", timeout=120, name="the vision service",
                         output=(workdir / "service.log").read_text)
        yield VisionService(workdir, url)
    finally:
        stop_process(process)
        log.close()


def save_png(path, color=(200, 40, 90), size=(80, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def seed_client_body(reference: str, prompt: str = "a red fox") -> dict:
    """local-vision-provider.js analyzeImage(ref, prompt): imagePath for '/', '.' or no '://', else imageUrl."""
    body = {"prompt": prompt, "options": {}}
    is_local = reference.startswith("/") or reference.startswith(".") or "://" not in reference
    body["imagePath" if is_local else "imageUrl"] = reference
    return body


def analyze(vision, body) -> requests.Response:
    return requests.post(vision.url + "/analyze", json=body, timeout=60)


def test_seed_client_bodies_for_files_under_output_are_scored(vision, tiny_scorer):
    image = save_png(vision.workdir / "output" / "flux" / "flux_1.png")
    expected = tiny_scorer.analyze(Image.open(image), "a red fox")
    for reference in (str(image), "./output/flux/flux_1.png", "output/flux/flux_1.png"):
        response = analyze(vision, seed_client_body(reference))
        assert response.status_code == 200, (reference, response.text)
        body = response.json()
        assert 0 <= body["alignmentScore"] <= 100 and 0 <= body["aestheticScore"] <= 10   # the client's checks
        assert body["alignmentScore"] == pytest.approx(expected["alignmentScore"], abs=1e-4)
        assert body["aestheticScore"] == pytest.approx(expected["aestheticScore"], abs=1e-4)
    health = requests.get(vision.url + "/health", timeout=10).json()
    assert health["model_loaded"] is True and health["status"] == "healthy"
    assert health["allow_dirs"] == [str((vision.workdir / "output").resolve())]


def test_paths_outside_the_allowed_folders_are_403_naming_the_flag(vision, tmp_path):
    secret = save_png(vision.workdir / "secret.png")                  # next to output/, not in it
    elsewhere = save_png(tmp_path / "elsewhere.png")
    link = vision.workdir / "output" / "link.png"
    link.symlink_to(elsewhere)
    dir_link = vision.workdir / "output" / "escape"
    dir_link.symlink_to(tmp_path, target_is_directory=True)
    cases = {
        "dotdot": "output/../secret.png",
        "dotdot absolute": str(vision.workdir / "output" / ".." / "secret.png"),
        "absolute": str(elsewhere),
        "system file": "/etc/hostname",
        "symlink to a file": str(link),
        "symlink to a folder": "output/escape/elsewhere.png",
    }
    for case, reference in cases.items():
        response = analyze(vision, seed_client_body(reference))
        assert response.status_code == 403, (case, response.text)
        detail = response.json()["detail"]
        assert detail.startswith(f"imagePath: {reference}") and "is outside the folders this service may read" \
            in detail and "--allow-dir DIR" in detail, case
    assert "resolves to " + str(elsewhere) in analyze(vision, seed_client_body(str(link))).json()["detail"]
    response = analyze(vision, seed_client_body(secret.as_uri()))
    assert response.status_code == 403 and "file:// URLs are not read" in response.json()["detail"]
    assert "imagePath" in response.json()["detail"]


def test_batch_endpoint_matches_the_local_scorer(vision, tiny_scorer):
    generator = torch.Generator().manual_seed(0)
    smooth = torch.rand(48, 64, 3, generator=generator)                        # not 8-bit: goes as float32
    levels = torch.round(torch.rand(64, 64, 3, generator=generator) * 255) / 255   # 8-bit: goes as PNG
    assert not is_8bit(smooth) and is_8bit(levels)
    assert isinstance(encode_image(smooth), dict) and isinstance(encode_image(levels), str)
    remote = RemoteScorer(vision.url)
    got = remote.score([smooth, levels], "a red fox")
    want = tiny_scorer.score([smooth, levels], "a red fox")
    for g, w in zip(got, want):
        assert g.alignment == pytest.approx(w.alignment, abs=1e-5)
        assert g.aesthetic == pytest.approx(w.aesthetic, abs=1e-5)
    per_image = remote.score([smooth, levels], ["a red fox", "a blue whale"])
    assert per_image[1].alignment == pytest.approx(tiny_scorer.score(levels, "a blue whale")[0].alignment, abs=1e-5)
    assert remote.describe()["clip_model"] == tiny_scorer.describe()["clip_model"]
    assert remote.analyze(levels, "a red fox")["alignmentScore"] == \
        pytest.approx(tiny_scorer.analyze(levels, "a red fox")["alignmentScore"], abs=1e-3)


@pytest.mark.parametrize("body, status, words", [
    ({"images": [], "prompt": "x"}, 422, "at least 1 item"),
    ({"images": ["@@@"], "prompt": "x"}, 400, "images[0]: not valid base64"),
    ({"images": ["aGVsbG8="], "prompt": "x"}, 400, "images[0]: not an image"),
    ({"images": [{"f32": "AAAAAA==", "shape": [1, 1, 3]}], "prompt": "x"}, 400, "do not fit shape"),
    ({"images": [{"f32": "AAAAAA==", "shape": [1, 3]}], "prompt": "x"}, 422, "shape must be [H, W, 3]"),
    ({"images": [{"f32": "AACAfwAAAAAAAAAA", "shape": [1, 1, 3]}], "prompt": "x"}, 422, "within [0, 1]"),
    ({"images": [{"shape": [1, 1, 3]}], "prompt": "x"}, 422, "give a base64 PNG"),
    ({"images": [{"f32": "AAAA", "shape": [100000, 100000, 3]}], "prompt": "x"}, 400, "larger than 64 MB"),
    ({"images": ["aGVsbG8="]}, 422, "prompt: is empty"),
    ({"images": ["aGVsbG8="], "prompts": ["a", "b"]}, 422, "got 2 prompts for 1 images"),
])
def test_batch_endpoint_bad_bodies(vision, body, status, words):
    response = requests.post(vision.url + "/score", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert words in str(response.json()["detail"])


def test_remote_scorer_errors_are_clear(vision):
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ScoringFailed) as info:
        RemoteScorer(down).score(torch.zeros(16, 16, 3), "x")
    assert down in str(info.value) and "python -m pipeline.services.vision" in str(info.value)
    with pytest.raises(InvalidParameter, match="2 prompts for 1 images"):
        RemoteScorer(vision.url).score(torch.zeros(16, 16, 3), ["a", "b"])
    with pytest.raises(InvalidParameter, match="must be an http"):
        RemoteScorer("localhost:8002")
    assert not isinstance(RemoteScorer(vision.url), Scorer)        # a client, not a subclass: only the protocol
