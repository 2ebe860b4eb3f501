"""The VLM service under test: a real `python -m pipeline.services.vlm` subprocess on loopback, in a scratch working
directory with the default roots (./output), judging through its own fake Ollama (tests/fixtures/ollama.py, vision
mode: it decodes every image and prefers the one with more blue)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures.ollama import FakeOllama
from tests.fixtures.servers import free_port, stop_process, wait_until_ready

REPO = Path(__file__).resolve().parents[2]
VLM_MODEL = "qwen2.5vl:7b"


def start_vlm(args, cwd, env_extra=None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "pipeline.services.vlm", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class VLMService:
    def __init__(self, workdir: Path, url: str, fake: FakeOllama):
        self.workdir, self.url, self.fake = workdir, url, fake

    def png(self, name: str, rgb, size=(96, 64)) -> Path:
        """A real PNG of one colour under ./output (the mean blue decides the fake judge)."""
        path = self.workdir / "output" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, tuple(rgb)).save(path)
        return path


@pytest.fixture(scope="module")
def vlm_fake():
    fake = FakeOllama().start()
    fake.add_vision_models()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def vlm_service(tmp_path_factory, vlm_fake):
    """The service with a queue of 1 (one comparison judged, one waiting, the next refused)."""
    workdir = tmp_path_factory.mktemp("vlm_cwd")
    (workdir / "output").mkdir()
    port = free_port()
    log = open(workdir / "service.log", "w")
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO),
               OLLAMA_BASE_URL=vlm_fake.url, VLM_MODEL=VLM_MODEL)
    # URL and model from the environment, as the CLI takes them.
    process = subprocess.Popen([sys.executable, "-m", "pipeline.services.vlm", "--port", str(port),
                                "--queue-depth", "1"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url + "/health", timeout=120, name="the VLM service",
                         output=(workdir / "service.log").read_text)
        yield VLMService(workdir, url, vlm_fake)
    finally:
        stop_process(process)
        log.close()


@pytest.fixture
def vlm(vlm_service):
    """The module's service, its fake Ollama reset for this test (vision models installed, judging by content)."""
    vlm_service.fake.reset()
    vlm_service.fake.add_vision_models()
    yield vlm_service
    vlm_service.fake.reset()
    vlm_service.fake.add_vision_models()
