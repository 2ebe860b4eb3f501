"""`python -m pipeline queue`: workflow editing, ComfyUI's error answers, and the whole submit / follow / save
cycle against a loopback server that speaks ComfyUI 0.3.64's protocol.

The server below is a real HTTP + websocket server (stdlib sockets, RFC 6455 framing) whose answers have the
shapes verified against a real ComfyUI in docs/comfyui-notes.md §2: the 400 validation body, 200 with
node_errors, the websocket event order, binary TEXT frames, /history entries, /view and /interrupt.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from pipeline.errors import InvalidParameter
from pipeline.comfy_api.client import (apply_prompt, apply_sets, decode_text_frame, format_rejection, load_workflow,
                                       parse_set)
from tests.fixtures.ollama import free_port

REPO = Path(__file__).resolve().parents[2]
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

API_WORKFLOW = {
    "1": {"class_type": "PromptBeamOllama",
          "inputs": {"base_url": "http://127.0.0.1:11434", "model": "qwen2.5:7b-instruct", "temperature": 0.7,
                     "seed": 0, "keep_alive": "5m"}},
    "4": {"class_type": "PromptBeamSearch",
          "inputs": {"prompt": "a lighthouse", "llm": ["1", 0], "generator": ["2", 0], "scorer": ["3", 0],
                     "beam_width": 4, "keep_top": 2, "iterations": 3, "alpha": 0.7, "seed": 0},
          "_meta": {"title": "Beam search"}},
    "5": {"class_type": "PromptBeamCritique",
          "inputs": {"llm": ["1", 0], "user_prompt": "a lighthouse", "prompt": ["4", 1], "scores": "{}",
                     "dimension": "what"}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "promptbeam"}},
    "10": {"class_type": "PreviewAny", "inputs": {"source": ["4", 3]}},
}

# POST /prompt answer for a workflow whose outputs all failed validation (shape and wording of ComfyUI 0.3.64,
# execution.py:760-892 and comfyui-notes.md §2).
RECORDED_400 = {
    "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
              "details": "", "extra_info": {}},
    "node_errors": {
        "4": {"errors": [
            {"type": "invalid_input_type", "message": "Failed to convert an input value to a INT value",
             "details": "seed, notanint, invalid literal for int() with base 10: 'notanint'",
             "extra_info": {"input_name": "seed", "input_config": ["INT", {"default": 0}],
                            "received_value": "notanint",
                            "exception_message": "invalid literal for int() with base 10: 'notanint'"}},
            {"type": "value_bigger_than_max", "message": "Value 99 bigger than max of 16",
             "details": "beam_width",
             "extra_info": {"input_name": "beam_width", "input_config": ["INT", {"max": 16}],
                            "received_value": 99}}],
            "dependent_outputs": ["9", "10"], "class_type": "PromptBeamSearch"}},
}
PNG_BYTES = base64.b64decode(  # a valid 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")


# ---------------------------------------------------------------------------------------------------------------
# A loopback ComfyUI


class _Socket:
    """Server side of one websocket: unmasked frames out, under a lock (the run thread and the handler write)."""

    def __init__(self, connection):
        self.connection = connection
        self.lock = threading.Lock()
        self.open = True

    def send(self, payload, opcode: int = 1) -> None:
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        header = bytes([0x80 | opcode])
        if len(data) < 126:
            header += bytes([len(data)])
        elif len(data) < 1 << 16:
            header += bytes([126]) + struct.pack(">H", len(data))
        else:
            header += bytes([127]) + struct.pack(">Q", len(data))
        with self.lock:
            if self.open:
                try:
                    self.connection.sendall(header + data)
                except OSError:
                    self.open = False

    def event(self, kind: str, data: dict) -> None:
        self.send(json.dumps({"type": kind, "data": data}))


class FakeComfy:
    """behaviour: "success" | "reject" (HTTP 400) | "partial" (200 + node_errors) | "error" (execution_error)
    | "slow" (progress until /interrupt)."""

    def __init__(self, root: Path, behaviour: str = "success"):
        self.behaviour = behaviour
        self.output_dir = root / "comfy_output"
        self.requests: list[dict] = []
        self.sockets: dict[str, _Socket] = {}
        self.history: dict[str, dict] = {}
        self.running: set[str] = set()
        self.started = threading.Event()
        self.interrupt = threading.Event()
        fake = self

        class Handler(_Handler):
            server_state = fake
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def posted(self, path: str) -> list:
        return [r["body"] for r in self.requests if r["method"] == "POST" and r["path"] == path]

    def execute(self, prompt_id: str, prompt: dict, client_id: str) -> None:
        ws = self.sockets[client_id]
        ws.event("execution_start", {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000)})
        ws.event("execution_cached", {"nodes": [], "prompt_id": prompt_id, "timestamp": 0})
        self.running.add(prompt_id)
        self.started.set()
        messages = [["execution_start", {"prompt_id": prompt_id}]]
        for node_id in sorted(prompt, key=int):
            ws.event("executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id})
            if prompt[node_id]["class_type"] != "PromptBeamSearch":
                continue
            if self.behaviour == "error":
                error = {"prompt_id": prompt_id, "node_id": node_id, "node_type": "PromptBeamSearch",
                         "executed": ["1"], "exception_message": "Cannot reach Ollama at http://127.0.0.1:9\n",
                         "exception_type": "OllamaUnreachable", "traceback": ["..."], "current_inputs": {},
                         "current_outputs": []}
                ws.event("execution_error", error)
                self._finish(prompt_id, prompt, "error", messages + [["execution_error", error]], {})
                return
            steps = 10_000 if self.behaviour == "slow" else 3
            for value in range(1, steps + 1):
                if self.interrupt.wait(0.05 if self.behaviour == "slow" else 0):
                    data = {"prompt_id": prompt_id, "node_id": node_id, "node_type": "PromptBeamSearch",
                            "executed": ["1"]}
                    for socket_ in self.sockets.values():        # broadcast, as execution.py:633 does
                        socket_.event("execution_interrupted", data)
                    self._finish(prompt_id, prompt, "error", messages + [["execution_interrupted", data]], {})
                    return
                text = f"round {value}/{steps} · best {40 + value:.1f}".encode()
                ws.send(struct.pack(">I", 3) + struct.pack(">I", len(node_id)) + node_id.encode() + text, opcode=2)
                ws.event("progress", {"value": value, "max": steps, "prompt_id": prompt_id, "node": node_id})
        self.output_dir.joinpath("promptbeam").mkdir(parents=True, exist_ok=True)
        self.output_dir.joinpath("promptbeam", "promptbeam_00001_.png").write_bytes(PNG_BYTES)
        outputs = {"9": {"images": [{"filename": "promptbeam_00001_.png", "subfolder": "promptbeam",
                                     "type": "output"}]},
                   "10": {"text": [json.dumps({"best": "i2c1", "stop_reason": "max_iterations"})]}}
        for node_id, output in outputs.items():
            ws.event("executed", {"node": node_id, "display_node": node_id, "output": output,
                                  "prompt_id": prompt_id})
        ws.event("execution_success", {"prompt_id": prompt_id, "timestamp": 0})
        self._finish(prompt_id, prompt, "success", messages + [["execution_success", {"prompt_id": prompt_id}]],
                     outputs)

    def _finish(self, prompt_id, prompt, status, messages, outputs) -> None:
        self.running.discard(prompt_id)
        self.history[prompt_id] = {"prompt": [0, prompt_id, prompt, {}, ["9", "10"]], "outputs": outputs,
                                   "status": {"status_str": status, "completed": status == "success",
                                              "messages": messages}, "meta": {}}
        for socket_ in self.sockets.values():
            socket_.event("executing", {"node": None, "prompt_id": prompt_id})


class _Handler(BaseHTTPRequestHandler):
    server_state: FakeComfy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _json(self, status: int, payload) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _empty(self, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        fake, url = self.server_state, urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        fake.requests.append({"method": "GET", "path": url.path, "query": query})
        if url.path == "/ws":
            return self._websocket(query.get("clientId") or uuid.uuid4().hex)
        if url.path.startswith("/history/"):
            prompt_id = url.path[len("/history/"):]
            return self._json(200, {prompt_id: fake.history[prompt_id]} if prompt_id in fake.history else {})
        if url.path == "/view":
            file = fake.output_dir / query.get("subfolder", "") / query["filename"]
            if query.get("type") != "output" or not file.is_file():
                return self._empty(404)
            data = file.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self._empty(404)

    def do_POST(self) -> None:
        fake = self.server_state
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        fake.requests.append({"method": "POST", "path": self.path, "body": body})
        if self.path == "/interrupt":
            if body.get("prompt_id") in fake.running:
                fake.interrupt.set()
            return self._empty()
        if self.path == "/queue":
            return self._empty()
        if self.path != "/prompt":
            return self._empty(404)
        if fake.behaviour == "reject":
            return self._json(400, RECORDED_400)
        prompt_id = str(uuid.uuid4())
        node_errors = RECORDED_400["node_errors"] if fake.behaviour == "partial" else {}
        self._json(200, {"prompt_id": prompt_id, "number": 0, "node_errors": node_errors})
        if fake.behaviour != "partial":
            threading.Thread(target=fake.execute, args=(prompt_id, body["prompt"], body["client_id"]),
                             daemon=True).start()

    def _websocket(self, client_id: str) -> None:
        accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + WS_GUID).encode()).digest())
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.end_headers()
        self.wfile.flush()
        socket_ = _Socket(self.connection)
        self.server_state.sockets[client_id] = socket_
        socket_.event("status", {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id})
        try:
            while True:                                   # read client frames until it closes
                head = self.rfile.read(2)
                if len(head) < 2:
                    break
                opcode, length = head[0] & 0x0F, head[1] & 0x7F
                if length == 126:
                    length = struct.unpack(">H", self.rfile.read(2))[0]
                elif length == 127:
                    length = struct.unpack(">Q", self.rfile.read(8))[0]
                mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
                if opcode == 8:
                    socket_.send(payload[:2], opcode=8)
                    break
                if opcode == 9:
                    socket_.send(payload, opcode=10)
        except OSError:
            pass
        socket_.open = False
        self.close_connection = True


@pytest.fixture
def comfy(tmp_path):
    servers = []

    def start(behaviour: str = "success") -> FakeComfy:
        server = FakeComfy(tmp_path, behaviour)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.interrupt.set()
        server.stop()


@pytest.fixture
def workflow_file(tmp_path) -> Path:
    path = tmp_path / "search_api.json"
    path.write_text(json.dumps(API_WORKFLOW), encoding="utf-8")
    return path


def queue_cli(*args, timeout: float = 60, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", "queue", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, **popen)


# ---------------------------------------------------------------------------------------------------------------
# Workflow editing (pure functions)


def test_ui_format_workflow_is_refused_with_the_way_out(tmp_path):
    ui = {"id": "x", "revision": 0, "last_node_id": 2, "last_link_id": 1, "version": 0.4,
          "nodes": [{"id": 1, "type": "PromptBeamSearch", "widgets_values": ["a lighthouse", 42, "randomize"]}],
          "links": [[1, 1, 0, 2, 0, "IMAGE"]]}
    path = tmp_path / "search.json"
    path.write_text(json.dumps(ui))
    with pytest.raises(InvalidParameter) as info:
        load_workflow(str(path))
    assert info.value.name == "workflow"
    assert "UI-format" in str(info.value) and "workflows/api/" in str(info.value) and "Save (API)" in str(info.value)
    (tmp_path / "api").mkdir()                            # the pack's layout: workflows/X.json + workflows/api/X.json
    (tmp_path / "api" / "search.json").write_text(json.dumps(API_WORKFLOW))
    with pytest.raises(InvalidParameter, match="use its API twin " + str(tmp_path / "api" / "search.json")):
        load_workflow(str(path))


def test_api_workflow_loads_and_a_saved_prompt_body_is_unwrapped(tmp_path):
    path = tmp_path / "body.json"
    path.write_text(json.dumps({"prompt": API_WORKFLOW, "client_id": "abc"}))
    assert load_workflow(str(path)) == API_WORKFLOW
    path.write_text(json.dumps({"4": {"inputs": {}}}))
    with pytest.raises(InvalidParameter, match="node '4' has no class_type"):
        load_workflow(str(path))


def test_prompt_goes_to_text_prompts_of_prompt_beam_nodes_only():
    workflow = json.loads(json.dumps(API_WORKFLOW))
    assert apply_prompt(workflow, "a red fox in snow") == ["4"]
    assert workflow["4"]["inputs"]["prompt"] == "a red fox in snow"
    assert workflow["5"]["inputs"]["prompt"] == ["4", 1]                 # a linked prompt stays linked
    assert workflow["5"]["inputs"]["user_prompt"] == "a lighthouse"       # only inputs named `prompt`
    del workflow["4"]
    with pytest.raises(InvalidParameter) as info:
        apply_prompt(workflow, "x")
    assert info.value.name == "prompt" and "--set NODE_ID.INPUT" in str(info.value)


@pytest.mark.parametrize("item, expected", [
    ("4.seed=42", ("4", "seed", 42)),
    ("4.alpha=0.5", ("4", "alpha", 0.5)),
    ("4.captions=true", ("4", "captions", True)),
    ('4.llm=["1", 0]', ("4", "llm", ["1", 0])),
    ("4.prompt=a lighthouse at dusk", ("4", "prompt", "a lighthouse at dusk")),
    ('4.prompt="42"', ("4", "prompt", "42")),
    ("4.prompt=x=y", ("4", "prompt", "x=y")),
    ("12.3.seed=1", ("12.3", "seed", 1)),
])
def test_set_values_are_json_or_text(item, expected):
    assert parse_set(item) == expected


def test_set_errors_name_the_flag():
    workflow = json.loads(json.dumps(API_WORKFLOW))
    for bad in ("seed=4", "4.seed", ".seed=1"):
        with pytest.raises(InvalidParameter, match="NODE_ID.INPUT=VALUE") as info:
            apply_sets(workflow, [bad])
        assert info.value.name == "sets"
    with pytest.raises(InvalidParameter, match=r"no node '77'.*nodes: 1, 4, 5, 9, 10"):
        apply_sets(workflow, ["77.seed=1"])
    apply_sets(workflow, ["4.iterations=5", "9.filename_prefix=fox"])
    assert workflow["4"]["inputs"]["iterations"] == 5 and workflow["9"]["inputs"]["filename_prefix"] == "fox"


def test_validation_answer_reads_node_by_node():
    lines = format_rejection(RECORDED_400, API_WORKFLOW)
    assert lines[0] == "ComfyUI rejected the workflow: Prompt outputs failed validation"
    assert lines[1] == "  node 4 (PromptBeamSearch, 'Beam search'):"
    assert lines[2] == ("    - input 'seed': Failed to convert an input value to a INT value (seed, notanint, "
                        "invalid literal for int() with base 10: 'notanint'); got 'notanint'")
    assert lines[3] == "    - input 'beam_width': Value 99 bigger than max of 16 (beam_width); got 99"
    missing_node = {"error": {"type": "invalid_prompt", "message": "Cannot execute because node PromptBeamSearch "
                              "does not exist.", "details": "Node ID '#4'", "extra_info": {}}, "node_errors": {}}
    lines = format_rejection(missing_node, API_WORKFLOW)
    assert "does not exist" in lines[0] and lines[1] == "  Node ID '#4'" and "custom node pack" in lines[2]


def test_text_frames_decode_and_previews_are_skipped():
    frame = struct.pack(">I", 3) + struct.pack(">I", 2) + b"12" + "round 2/3 · best 71.3".encode()
    assert decode_text_frame(frame) == ("12", "round 2/3 · best 71.3")
    assert decode_text_frame(struct.pack(">I", 1) + struct.pack(">I", 2) + b"\x89PNG") is None


# ---------------------------------------------------------------------------------------------------------------
# The command against a loopback ComfyUI


def test_queue_runs_the_workflow_and_saves_its_outputs(comfy, workflow_file, tmp_path):
    server = comfy("success")
    out = tmp_path / "saved"
    result = queue_cli(workflow_file, "--server", server.url, "--prompt", "a red fox in snow",
                       "--set", "4.iterations=5", "--set", "9.filename_prefix=fox", "--out", out)
    assert result.returncode == 0, result.stderr
    (body,) = server.posted("/prompt")
    assert body["prompt"]["4"]["inputs"]["prompt"] == "a red fox in snow"
    assert body["prompt"]["4"]["inputs"]["iterations"] == 5
    assert body["prompt"]["9"]["inputs"]["filename_prefix"] == "fox"
    ws_request = next(r for r in server.requests if r["path"] == "/ws")
    assert ws_request["query"]["clientId"] == body["client_id"]          # events reach this client
    assert server.requests.index(ws_request) < next(i for i, r in enumerate(server.requests)
                                                    if r["path"] == "/prompt")   # socket first: nothing missed
    image = out / "promptbeam" / "promptbeam_00001_.png"
    report = out / "node10_text.json"
    assert image.read_bytes() == PNG_BYTES
    assert json.loads(report.read_text()) == {"best": "i2c1", "stop_reason": "max_iterations"}
    assert result.stdout.splitlines() == [f"saved {image}", f"saved {report}"]
    assert "prompt set on node(s) 4" in result.stderr
    assert "round 3/3 · best 43.0" in result.stderr                      # text frames shown on the bar


def test_default_output_folder_is_named_after_the_prompt_id(comfy, workflow_file, tmp_path):
    server = comfy("success")
    # Run from another folder (with the pack on PYTHONPATH) so ./comfy_outputs lands in tmp_path.
    result = subprocess.run([sys.executable, "-m", "pipeline", "queue", str(workflow_file), "--server", server.url],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    (prompt_id,) = server.history
    assert (tmp_path / "comfy_outputs" / prompt_id / "promptbeam" / "promptbeam_00001_.png").is_file()


def test_rejected_workflow_exits_2_with_every_node_error(comfy, workflow_file):
    server = comfy("reject")
    result = queue_cli(workflow_file, "--server", server.url)
    assert result.returncode == 2
    assert "ComfyUI rejected the workflow: Prompt outputs failed validation" in result.stderr
    assert "node 4 (PromptBeamSearch, 'Beam search'):" in result.stderr
    assert "input 'seed': Failed to convert an input value to a INT value" in result.stderr
    assert "input 'beam_width': Value 99 bigger than max of 16" in result.stderr
    assert "Traceback" not in result.stderr


def test_partly_valid_workflow_is_rejected_and_taken_off_the_server(comfy, workflow_file):
    server = comfy("partial")
    result = queue_cli(workflow_file, "--server", server.url)
    assert result.returncode == 2
    assert "ComfyUI rejected part of the workflow:" in result.stderr and "input 'seed'" in result.stderr
    deleted = server.posted("/queue")
    interrupted = server.posted("/interrupt")
    assert len(deleted) == 1 and len(deleted[0]["delete"]) == 1
    assert interrupted == [{"prompt_id": deleted[0]["delete"][0]}]


def test_failing_node_exits_1_naming_the_node_and_exception(comfy, workflow_file):
    server = comfy("error")
    result = queue_cli(workflow_file, "--server", server.url)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: node 4 (PromptBeamSearch) failed: OllamaUnreachable: Cannot reach Ollama at http://127.0.0.1:9")


def test_ctrl_c_interrupts_the_prompt_on_the_server_and_exits_130(comfy, workflow_file):
    server = comfy("slow")
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "queue", str(workflow_file), "--server",
                                server.url], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.started.wait(30), "the prompt never started"
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    (prompt_id,) = [body["prompt_id"] for body in server.posted("/interrupt")]
    assert f"interrupted: sent /interrupt for prompt {prompt_id}" in stderr
    assert server.posted("/queue") == [{"delete": [prompt_id]}]


def test_timeout_interrupts_and_exits_1(comfy, workflow_file):
    server = comfy("slow")
    started = time.monotonic()
    result = queue_cli(workflow_file, "--server", server.url, "--timeout", "1")
    assert result.returncode == 1
    assert time.monotonic() - started < 20
    assert "did not finish within --timeout 1 s; it was interrupted on the server" in result.stderr
    assert len(server.posted("/interrupt")) == 1


def test_cli_usage_errors_exit_2_naming_the_parameter(comfy, workflow_file, tmp_path):
    server = comfy("success")
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    result = queue_cli(ui, "--server", server.url)
    assert result.returncode == 2 and result.stderr.startswith("error: WORKFLOW.json: ")
    assert "workflows/api/" in result.stderr
    result = queue_cli(workflow_file, "--server", server.url, "--set", "99.seed=1")
    assert result.returncode == 2 and result.stderr.startswith("error: --set: '99.seed=1': no node '99'")
    result = queue_cli(workflow_file, "--server", server.url, "--timeout", "-1")
    assert result.returncode == 2 and result.stderr.startswith("error: --timeout: must be >= 0")
    result = queue_cli(workflow_file)
    assert result.returncode == 2 and "--server" in result.stderr
    assert server.requests == []                    # nothing was sent for a bad command line


def test_unreachable_server_exits_1_with_a_hint(workflow_file):
    result = queue_cli(workflow_file, "--server", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "error: cannot reach ComfyUI at http://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr
