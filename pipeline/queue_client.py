"""`python -m pipeline queue WORKFLOW.json --server URL`: run an API-format workflow on a running ComfyUI.

Protocol (ComfyUI server.py): open the websocket `/ws?clientId=ID` first (so no event is missed), `POST /prompt`
with that client_id, follow `progress` / `executing` / text frames until `executing` with `node: null` for our
prompt, then read `/history/{prompt_id}` and download each output image through `/view`.
A prompt can be queued with HTTP 200 and still carry `node_errors` (the invalid branches are skipped): that is
treated as a rejection, and the half-valid prompt is taken off the server again.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import struct
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Optional, Sequence

from .cli import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .errors import InvalidParameter, PromptBeamError

BINARY_TEXT = 3                  # protocol.BinaryEventTypes.TEXT: node-id length (>I), node id, UTF-8 text
POLL_S = 0.5


class ComfyError(PromptBeamError):
    """ComfyUI could not be reached, or a prompt failed on the server."""


class WorkflowRejected(PromptBeamError):
    """ComfyUI refused the workflow at validation (POST /prompt)."""

    def __init__(self, lines: Sequence[str]):
        self.lines = list(lines)
        super().__init__(self.lines[0] if self.lines else "workflow rejected")


def add_parser(commands, parents) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "queue", parents=parents, help="run an API-format workflow on a running ComfyUI and save its outputs",
        description="Submit an API-format workflow (workflows/api/*.json, or ComfyUI's 'Save (API)') to a running "
                    "ComfyUI, show its progress, and save the output images and texts.")
    p.add_argument("workflow", metavar="WORKFLOW.json", help="API-format workflow file")
    p.add_argument("--server", required=True, metavar="URL", help="ComfyUI address, e.g. http://127.0.0.1:8188")
    p.add_argument("--prompt", metavar="TEXT",
                   help="set the text `prompt` input of every PromptBeam* node that has one")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE_ID.INPUT=VALUE",
                   help="set one input; VALUE is read as JSON (42, 0.5, true, [\"3\", 0]) or else as text; "
                        "repeatable")
    p.add_argument("--out", metavar="DIR", help="where to save outputs (default: ./comfy_outputs/PROMPT_ID)")
    p.add_argument("--timeout", type=float, default=0, metavar="S",
                   help="give up (and interrupt the prompt) after S seconds; 0 waits forever (default)")
    return p


# ---------------------------------------------------------------------------------------------------------------
# The workflow file


def load_workflow(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise InvalidParameter("workflow", f"{path} not found") from None
    except (OSError, ValueError) as exc:
        raise InvalidParameter("workflow", f"{path} is not readable JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data:
        raise InvalidParameter(
            "workflow", f"{path} is a UI-format workflow (what the editor saves); queue needs the API format. Use "
                        "its twin in workflows/api/, or open it in ComfyUI and export it with Workflow > "
                        "Export (API) / 'Save (API)'")
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "client_id" in data:
        data = data["prompt"]                      # a saved POST /prompt body: take the graph inside
    if not isinstance(data, dict) or not data:
        raise InvalidParameter("workflow", f"{path} is not an API-format workflow (expected an object of nodes)")
    for node_id, node in data.items():
        if not isinstance(node, dict) or "class_type" not in node or not isinstance(node.get("inputs", {}), dict):
            raise InvalidParameter("workflow", f"{path}: node {node_id!r} has no class_type/inputs; is this an "
                                               "API-format workflow?")
        node.setdefault("inputs", {})
    return data


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def apply_prompt(workflow: dict, text: str) -> list[str]:
    """Set `prompt` on every node whose class_type starts with "PromptBeam" and whose `prompt` input holds text.

    A linked `prompt` (["node", slot]) is computed by the graph and left alone. Returns the ids changed."""
    targets = [node_id for node_id, node in workflow.items()
               if str(node["class_type"]).startswith("PromptBeam") and "prompt" in node["inputs"]
               and not is_link(node["inputs"]["prompt"])]
    if not targets:
        raise InvalidParameter("prompt", "this workflow has no PromptBeam* node with a text `prompt` input; set "
                                         "the right input with --set NODE_ID.INPUT=TEXT")
    for node_id in targets:
        workflow[node_id]["inputs"]["prompt"] = text
    return targets


def parse_set(item: str) -> tuple[str, str, Any]:
    """`NODE_ID.INPUT=VALUE` -> (node id, input, value); VALUE as JSON when it parses, else the raw text."""
    key, sep, raw = item.partition("=")
    node_id, dot, name = key.strip().rpartition(".")
    if not sep or not dot or not node_id or not name:
        raise InvalidParameter("sets", f"{item!r} is not NODE_ID.INPUT=VALUE (e.g. 3.seed=42)")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return node_id, name, value


def apply_sets(workflow: dict, items: Sequence[str]) -> list[tuple[str, str, Any]]:
    applied = []
    for item in items:
        node_id, name, value = parse_set(item)
        if node_id not in workflow:
            raise InvalidParameter("sets", f"{item!r}: no node {node_id!r} in the workflow (nodes: "
                                           f"{', '.join(sorted(workflow, key=_node_order))})")
        workflow[node_id]["inputs"][name] = value
        applied.append((node_id, name, value))
    return applied


def _node_order(node_id: str):
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def format_rejection(body: Any, workflow: dict) -> list[str]:
    """ComfyUI's validation answer as readable lines: the prompt-level error, then each node's errors."""
    if not isinstance(body, dict):
        return [f"ComfyUI rejected the workflow: {str(body)[:300]}"]
    error = body.get("error")
    lines = []
    if isinstance(error, dict):
        message = error.get("message") or error.get("type") or "rejected"
        lines.append(f"ComfyUI rejected the workflow: {message}")
        details = str(error.get("details") or "").strip()
        if details and not body.get("node_errors"):
            lines.append(f"  {details}")
        if "does not exist" in message:
            lines.append("  (is the custom node pack that provides it installed, and ComfyUI restarted since?)")
    elif error:
        lines.append(f"ComfyUI rejected the workflow: {error}")
    else:
        lines.append("ComfyUI rejected part of the workflow:")
    for node_id, entry in sorted((body.get("node_errors") or {}).items(), key=lambda kv: _node_order(kv[0])):
        class_type = entry.get("class_type") or workflow.get(node_id, {}).get("class_type", "?")
        title = (workflow.get(node_id, {}).get("_meta") or {}).get("title")
        lines.append(f"  node {node_id} ({class_type}{', ' + repr(title) if title and title != class_type else ''}):")
        for err in entry.get("errors") or []:
            extra = err.get("extra_info") or {}
            where = f"input '{extra['input_name']}': " if extra.get("input_name") else ""
            text = f"    - {where}{err.get('message', err.get('type', 'error'))}"
            details = str(err.get("details") or "").strip()
            if details:
                text += f" ({details})"
            if "received_value" in extra:
                text += f"; got {extra['received_value']!r}"
            lines.append(text)
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Talking to ComfyUI


class ComfyClient:
    def __init__(self, server: str, client_id: Optional[str] = None, request_timeout: float = 30.0):
        import requests

        url = server.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url
        if not url.startswith(("http://", "https://")):
            raise InvalidParameter("server", f"{server!r} must be an http:// or https:// address")
        self.url = url
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = request_timeout
        self.session = requests.Session()

    def _call(self, method: str, path: str, **kwargs):
        import requests

        try:
            return self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.ConnectionError:
            raise ComfyError(f"cannot reach ComfyUI at {self.url}: start it (python main.py --listen) or fix "
                             "--server") from None
        except requests.Timeout:
            raise ComfyError(f"ComfyUI at {self.url} did not answer {method} {path} within {self.timeout:g} s") from None

    def open_socket(self):
        import websocket

        ws_url = "ws" + self.url[len("http"):] + f"/ws?clientId={self.client_id}"
        try:
            ws = websocket.create_connection(ws_url, timeout=self.timeout)
        except ConnectionRefusedError:
            raise ComfyError(f"cannot reach ComfyUI at {self.url}: start it (python main.py --listen) or fix "
                             "--server") from None
        except (OSError, websocket.WebSocketException) as exc:
            raise ComfyError(f"cannot open ComfyUI's websocket at {ws_url} ({exc}): is --server a ComfyUI?") from None
        ws.settimeout(POLL_S)
        return ws

    def submit(self, workflow: dict) -> str:
        response = self._call("POST", "/prompt", json={"prompt": workflow, "client_id": self.client_id})
        try:
            body = response.json()
        except ValueError:
            raise ComfyError(f"ComfyUI at {self.url} answered POST /prompt with HTTP {response.status_code} and "
                             f"no JSON ({response.text[:120]!r})") from None
        if response.status_code == 400 or (response.ok and body.get("node_errors")):
            lines = format_rejection(body, workflow)
            if response.ok and body.get("prompt_id"):
                self.cancel(body["prompt_id"])     # queued with invalid branches skipped: don't leave it running
                lines.append(f"  (ComfyUI had queued the valid part as prompt {body['prompt_id']}; it was "
                             "cancelled so that nothing half-runs)")
            raise WorkflowRejected(lines)
        if not response.ok or "prompt_id" not in body:
            raise ComfyError(f"ComfyUI at {self.url} answered POST /prompt with HTTP {response.status_code}: "
                             f"{str(body)[:200]}")
        return str(body["prompt_id"])

    def cancel(self, prompt_id: str) -> None:
        """Take the prompt off the queue if pending, interrupt it if running (ComfyUI ignores the other case)."""
        self._call("POST", "/queue", json={"delete": [prompt_id]})
        self._call("POST", "/interrupt", json={"prompt_id": prompt_id})

    def history(self, prompt_id: str) -> Optional[dict]:
        response = self._call("GET", f"/history/{prompt_id}")
        if not response.ok:
            return None
        return (response.json() or {}).get(prompt_id)

    def view(self, item: dict) -> bytes:
        params = {"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                  "type": item.get("type", "output")}
        response = self._call("GET", "/view", params=params)
        if not response.ok:
            raise ComfyError(f"ComfyUI could not send {item['filename']} (HTTP {response.status_code})")
        return response.content


def decode_text_frame(frame: bytes) -> Optional[tuple[str, str]]:
    """A binary TEXT frame (send_progress_text) -> (node id, text); other binary frames (previews) -> None."""
    if len(frame) < 8 or struct.unpack(">I", frame[:4])[0] != BINARY_TEXT:
        return None
    (length,) = struct.unpack(">I", frame[4:8])
    return frame[8:8 + length].decode("utf-8", "replace"), frame[8 + length:].decode("utf-8", "replace")


def follow(ws, prompt_id: str, workflow: dict, deadline: Optional[float], should_stop) -> str:
    """Show progress until the prompt finishes ("done"), Ctrl-C ("stopped") or the socket closes ("lost").

    Raises ComfyError when the prompt fails, TimeoutError past `deadline` (time.monotonic())."""
    import websocket
    from tqdm import tqdm

    bar = tqdm(total=None, file=sys.stderr, dynamic_ncols=True, desc="queued", unit="step")
    try:
        while True:
            if should_stop():
                return "stopped"
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError
            try:
                frame = ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (OSError, websocket.WebSocketException):
                return "lost"                           # socket gone: the history tells the outcome
            if isinstance(frame, bytes):
                decoded = decode_text_frame(frame)
                if decoded:
                    bar.set_postfix_str(" ".join(decoded[1].split())[:80])
                continue
            message = json.loads(frame)
            kind, data = message.get("type"), message.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue                                 # another client's prompt
            if kind == "executing":
                if data.get("node") is None and data.get("prompt_id") == prompt_id:
                    return "done"
                node = str(data.get("node"))
                bar.reset()
                bar.total = None                         # reset() keeps the previous node's total
                bar.set_postfix_str("", refresh=False)
                bar.set_description_str(f"node {node} {workflow.get(node, {}).get('class_type', '')}".strip())
            elif kind == "progress":
                bar.total = data.get("max") or None
                bar.n = data.get("value") or 0
                bar.refresh()
            elif kind == "execution_error":
                raise ComfyError(f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                                 f"{data.get('exception_type', 'error')}: "
                                 f"{' '.join(str(data.get('exception_message', '')).split())}")
            elif kind == "execution_interrupted" and data.get("prompt_id") == prompt_id:
                raise ComfyError(f"the prompt was interrupted on the server (at node {data.get('node_id')} "
                                 f"{data.get('node_type')})")
    finally:
        bar.close()


def save_outputs(client: ComfyClient, entry: dict, out_dir: Path) -> list[Path]:
    """Download every output image; write text outputs (.json when they parse as JSON) next to them."""
    saved = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for node_id, outputs in sorted((entry.get("outputs") or {}).items(), key=lambda kv: _node_order(kv[0])):
        for key, values in outputs.items():
            values = values if isinstance(values, list) else [values]
            files = [v for v in values if isinstance(v, dict) and "filename" in v]
            texts = [v for v in values if isinstance(v, str)]
            for item in files:
                subfolder = str(item.get("subfolder") or "")
                if ".." in Path(subfolder).parts or os.path.isabs(subfolder):
                    subfolder = ""                       # never write outside --out
                target = out_dir / subfolder / os.path.basename(item["filename"])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(client.view(item))
                saved.append(target)
            for index, text in enumerate(texts):
                suffix = f"_{index}" if len(texts) > 1 else ""
                label = f"node{node_id}" if node_id.isdigit() else node_id
                name = re.sub(r"[^A-Za-z0-9_-]", "_", f"{label}_{key}{suffix}")      # ids name files here
                target = out_dir / f"{name}{'.json' if _is_json(text) else '.txt'}"
                target.write_text(text, encoding="utf-8")
                saved.append(target)
    return saved


def _is_json(text: str) -> bool:
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return False
    try:
        json.loads(stripped)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------------------------
# The command


def run(args: argparse.Namespace) -> int:
    if args.timeout < 0:
        raise InvalidParameter("timeout", f"must be >= 0 seconds, got {args.timeout:g}")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise InvalidParameter("out", f"{args.out} exists and is not a folder")
    workflow = load_workflow(args.workflow)
    if args.prompt is not None:
        changed = apply_prompt(workflow, args.prompt)
        print(f"prompt set on node(s) {', '.join(changed)}", file=sys.stderr)
    apply_sets(workflow, args.sets)
    client = ComfyClient(args.server)
    ws = client.open_socket()
    stop = {"requested": False}
    previous = signal.signal(signal.SIGINT, lambda *_: stop.__setitem__("requested", True))
    try:
        try:
            prompt_id = client.submit(workflow)
        except WorkflowRejected as exc:
            print("\n".join(exc.lines), file=sys.stderr)
            return EXIT_USAGE
        print(f"queued prompt {prompt_id} on {client.url}", file=sys.stderr)
        entry = wait_for_result(client, ws, prompt_id, workflow, args.timeout, lambda: stop["requested"])
        if entry is None:
            client.cancel(prompt_id)
            print(f"interrupted: sent /interrupt for prompt {prompt_id}", file=sys.stderr)
            return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, previous)
        ws.close()
    if (entry.get("status") or {}).get("status_str") == "error":
        raise ComfyError(history_error(entry, prompt_id))
    out_dir = Path(args.out) if args.out else Path("comfy_outputs") / prompt_id
    saved = save_outputs(client, entry, out_dir)
    if not saved:
        print(f"prompt {prompt_id} finished; it produced no image or text outputs", file=sys.stderr)
    for path in saved:
        print(f"saved {path}")
    return EXIT_OK


def wait_for_result(client: ComfyClient, ws, prompt_id: str, workflow: dict, timeout: float,
                    should_stop) -> Optional[dict]:
    """The prompt's history entry once it is done; None on Ctrl-C. Past `timeout` the prompt is cancelled."""
    deadline = time.monotonic() + timeout if timeout else None
    try:
        outcome = follow(ws, prompt_id, workflow, deadline, should_stop)
        if outcome == "stopped":
            return None
        # After "done" the entry is there at once; without the socket, poll until the prompt is done.
        return wait_for_history(client, prompt_id, deadline, should_stop)
    except TimeoutError:
        client.cancel(prompt_id)
        raise ComfyError(f"prompt {prompt_id} did not finish within --timeout {timeout:g} s; it was "
                         "interrupted on the server") from None


def wait_for_history(client: ComfyClient, prompt_id: str, deadline: Optional[float], should_stop) -> Optional[dict]:
    """The history entry appears once the prompt is done (just after its last websocket event).
    Returns None on Ctrl-C; raises TimeoutError past `deadline`."""
    while not should_stop():
        entry = client.history(prompt_id)
        if entry:
            return entry
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.2)
    return None


def history_error(entry: dict, prompt_id: str) -> str:
    for event, data in reversed((entry.get("status") or {}).get("messages") or []):
        if event == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}) failed: {data.get('exception_type')}: "
                    f"{' '.join(str(data.get('exception_message', '')).split())}")
        if event == "execution_interrupted":
            return f"prompt {prompt_id} was interrupted on the server"
    return f"prompt {prompt_id} failed on the server (see the ComfyUI console)"
