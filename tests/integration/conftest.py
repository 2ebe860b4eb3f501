"""A real ComfyUI server with this pack installed, for local integration tests.

Skipped unless COMFYUI_DIR points at a ComfyUI checkout. COMFYUI_PYTHON is the Python that has ComfyUI's
requirements (default: the one running pytest). The server runs on the CPU from a fresh temporary base directory
(custom_nodes/ with this pack and the test pack symlinked in, models/ with tiny random models), on a free
loopback port, once per test session.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.fixtures.browser import chromium, require_browser
from tests.fixtures.servers import free_port, stop_process, wait_until_ready

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PACK_FOLDER = "comfyui-promptbeam"
TEST_PACK_FOLDER = "promptbeam_test_pack"
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON") or sys.executable
STARTUP_TIMEOUT_S = 180


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="set COMFYUI_DIR to a ComfyUI checkout (and COMFYUI_PYTHON) to run")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)
            if not COMFYUI_DIR:
                item.add_marker(skip)


class WebSocketReader:
    """Collects every message ComfyUI sends to one client id: JSON events as dicts, binary frames (previews) as
    {"type": "binary", "event": int, "data": bytes}."""

    def __init__(self, url: str, client_id: str):
        import websocket

        self.client_id = client_id
        self.messages: list[dict] = []
        self._cond = threading.Condition()
        self._ws = websocket.create_connection(f"{url.replace('http', 'ws', 1)}/ws?clientId={client_id}", timeout=5)
        self._ws.settimeout(None)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        import websocket

        while True:
            try:
                opcode, data = self._ws.recv_data()
            except (websocket.WebSocketException, OSError):
                return
            if opcode == websocket.ABNF.OPCODE_TEXT:
                message = json.loads(data)
            elif opcode == websocket.ABNF.OPCODE_BINARY:
                message = {"type": "binary", "event": int.from_bytes(data[:4], "big"), "data": data[4:]}
            else:
                continue
            with self._cond:
                self.messages.append(message)
                self._cond.notify_all()

    def events(self, kind: str, prompt_id: str | None = None) -> list[dict]:
        with self._cond:
            return [m["data"] for m in self.messages if m.get("type") == kind
                    and (prompt_id is None or m["data"].get("prompt_id") == prompt_id)]

    def binary(self) -> list[dict]:
        with self._cond:
            return [m for m in self.messages if m.get("type") == "binary"]

    def wait_for(self, predicate, timeout: float = 60.0) -> dict:
        """The first message satisfying predicate(message), waiting up to `timeout` seconds for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    kinds = [m.get("type") for m in self.messages]
                    raise TimeoutError(f"no matching websocket message in {timeout}s; got {kinds}")
                self._cond.wait(remaining)

    def close(self):
        self._ws.close()
        self._thread.join(timeout=5)


class ComfyServer:
    def __init__(self, url: str, base: Path, log_path: Path, process: subprocess.Popen):
        self.url, self.base, self.log_path, self.process = url, base, log_path, process

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kwargs):
        response = requests.get(self.url + path, timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def object_info(self) -> dict:
        return self.get("/object_info")

    def post_prompt(self, graph: dict, client_id: str | None = None) -> dict:
        """POST /prompt. Returns {"status", "prompt_id" (None if refused), "node_errors", "error", "body"}:
        ComfyUI may answer 200 and still report node_errors for branches it skips."""
        body = {"prompt": graph, "client_id": client_id or uuid.uuid4().hex}
        response = requests.post(self.url + "/prompt", json=body, timeout=30)
        data = response.json()
        return {"status": response.status_code, "prompt_id": data.get("prompt_id"),
                "node_errors": data.get("node_errors", {}), "error": data.get("error"), "body": data}

    def wait_history(self, prompt_id: str, timeout: float = 120.0) -> dict:
        """The /history entry of a finished prompt (it appears only once the prompt has finished)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history:
                return history[prompt_id]
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({self.process.returncode}); log tail:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")

    def run(self, graph: dict, timeout: float = 120.0, client_id: str | None = None) -> dict:
        """Queue a graph that must validate, wait for it, and return its history entry."""
        queued = self.post_prompt(graph, client_id=client_id)
        assert queued["status"] == 200 and not queued["node_errors"], queued["body"]
        return self.wait_history(queued["prompt_id"], timeout=timeout)

    def images(self, history_entry: dict, node_id: str) -> list[Path]:
        """Paths of the files an image output node (SaveImage / PreviewImage) wrote."""
        folders = {"output": "output", "temp": "temp", "input": "input"}
        return [self.base / folders[item["type"]] / item["subfolder"] / item["filename"]
                for item in history_entry["outputs"][node_id]["images"]]

    def websocket(self, client_id: str | None = None) -> WebSocketReader:
        return WebSocketReader(self.url, client_id or uuid.uuid4().hex)

    def interrupt(self, prompt_id: str | None = None):
        body = {"prompt_id": prompt_id} if prompt_id else {}
        requests.post(self.url + "/interrupt", json=body, timeout=10).raise_for_status()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """vae/, text_encoders/ and loras/ with tiny random models (~260 MB, built once per session)."""
    if not COMFYUI_DIR:
        pytest.skip("COMFYUI_DIR is not set")
    out = tmp_path_factory.mktemp("tiny_comfy_models")
    subprocess.run([COMFYUI_PYTHON, str(HERE / "build_tiny_models.py"), COMFYUI_DIR, str(out)], check=True,
                   cwd=COMFYUI_DIR, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    return out


def launch_comfy(base: Path, tiny_model_dir: Path, pack_dir: Path = REPO, comfyui_dir: str = None) -> "ComfyServer":
    """Start a ComfyUI (CPU) in the fresh base directory `base` with this pack, the test pack and the tiny models,
    on a free loopback port, and wait until it answers. Stop it with stop_process(server.process).
    pack_dir: what custom_nodes/comfyui-promptbeam is (default this checkout); comfyui_dir: default COMFYUI_DIR."""
    comfyui_dir = comfyui_dir or COMFYUI_DIR
    for folder in ("custom_nodes", "models", "user", "input", "output", "temp"):
        (base / folder).mkdir()
    (base / "custom_nodes" / PACK_FOLDER).symlink_to(pack_dir, target_is_directory=True)
    (base / "custom_nodes" / TEST_PACK_FOLDER).symlink_to(HERE / "comfy_test_pack", target_is_directory=True)
    for folder in tiny_model_dir.iterdir():
        (base / "models" / folder.name).symlink_to(folder, target_is_directory=True)
    port = free_port()
    log_path = base / "comfyui.log"
    command = [COMFYUI_PYTHON, os.path.join(comfyui_dir, "main.py"), "--cpu", "--listen", "127.0.0.1",
               "--port", str(port), "--disable-auto-launch", "--base-directory", str(base),
               "--database-url", f"sqlite:///{base}/user/comfyui.db",
               "--preview-method", "latent2rgb"]   # so sampler steps also send binary preview frames
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=comfyui_dir, stdout=log_file, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = ComfyServer(f"http://127.0.0.1:{port}", base, log_path, process)
    server.startup_s = wait_until_ready(process, server.url + "/system_stats", STARTUP_TIMEOUT_S, "ComfyUI",
                                        lambda: server.log()[-4000:])
    return server


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, tiny_model_dir):
    """A running ComfyUI (CPU) with this pack and the test pack; stopped at the end of the session."""
    base = tmp_path_factory.mktemp("comfy_base")
    server = launch_comfy(base, tiny_model_dir)
    try:
        yield server
    finally:
        stop_process(server.process, timeout=20)
        shutil.rmtree(base / "temp", ignore_errors=True)


# -- the editor in a real browser -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def editor_module():
    """test_editor.py: the editor driver and browser set-up the editor tests share (skips without Playwright or a
    Chromium binary, PROMPTBEAM_CHROMIUM)."""
    require_browser()
    import test_editor
    return test_editor


@pytest.fixture(scope="module")
def browser(comfy_server, editor_module):
    """Headless Chromium on the running ComfyUI, its first-run tutorial already dismissed."""
    requests.post(f"{comfy_server.url}/settings/Comfy.TutorialCompleted", json=True, timeout=10)
    with chromium(editor_module.sync_api) as browser:
        yield browser
