"""A small client for a running ComfyUI: API-format workflow files, the edits `queue` makes to them, POST /prompt,
the websocket, /history, /view and /interrupt (protocol of ComfyUI's server.py; see docs/cli.md).

A prompt can be queued with HTTP 200 and still carry `node_errors` (the invalid branches are skipped): that is
treated as a rejection, and the half-valid prompt is taken off the server again.
"""
from __future__ import annotations

import json
import os
import struct
import uuid
from typing import Any, Optional, Sequence

from ..errors import InvalidParameter, PromptBeamError

BINARY_TEXT = 3                  # protocol.BinaryEventTypes.TEXT: node-id length (>I), node id, UTF-8 text
POLL_S = 0.5


class ComfyError(PromptBeamError):
    """ComfyUI could not be reached, or a prompt failed on the server."""


class WorkflowRejected(PromptBeamError):
    """ComfyUI refused the workflow at validation (POST /prompt)."""

    def __init__(self, lines: Sequence[str]):
        self.lines = list(lines)
        super().__init__(self.lines[0] if self.lines else "workflow rejected")


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
        twin = os.path.join(os.path.dirname(path), "api", os.path.basename(path))
        use = f"use its API twin {twin}" if os.path.isfile(twin) else "use its twin in workflows/api/"
        raise InvalidParameter(
            "workflow", f"{path} is a UI-format workflow (what the editor saves); queue needs the API format: {use}, "
                        "or open it in ComfyUI and export it with Workflow > Export (API) / 'Save (API)'")
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


# A node titled this (the editor's title, `_meta.title` in API format) holds the workflow's prompt: refine_loop_manual
# types it once into a String node that feeds every step. Rename a node of your own workflow to mark it the same way.
PROMPT_TITLE = "Your prompt"
_TEXT_INPUTS = ("prompt", "text", "value")     # PromptBeam nodes, CLIPTextEncode, String / String (Multiline)


def node_title(node: dict) -> str:
    meta = node.get("_meta")
    return str(meta.get("title") or "") if isinstance(meta, dict) else ""


def apply_prompt(workflow: dict, text: str) -> list[str]:
    """Put the user's prompt where the workflow takes it; returns the ids changed.

    The nodes titled PROMPT_TITLE when the workflow has any (their text input: `prompt`, `text` or `value`);
    otherwise every node whose class_type starts with "PromptBeam" and whose `prompt` input holds text. A linked
    input (["node", slot]) is computed by the graph and left alone."""
    marked = [node_id for node_id, node in workflow.items()
              if node_title(node).strip().casefold() == PROMPT_TITLE.casefold()]
    if marked:
        targets = []
        for node_id in marked:
            inputs = workflow[node_id]["inputs"]
            name = next((name for name in _TEXT_INPUTS if isinstance(inputs.get(name), str)), None)
            if name is None:
                raise InvalidParameter(
                    "prompt", f"node {node_id} is titled {PROMPT_TITLE!r} but has no text input "
                              f"({', '.join(_TEXT_INPUTS)}) to set; set the right input with --set NODE_ID.INPUT=TEXT")
            targets.append((node_id, name))
    else:
        targets = [(node_id, "prompt") for node_id, node in workflow.items()
                   if str(node["class_type"]).startswith("PromptBeam") and "prompt" in node["inputs"]
                   and not is_link(node["inputs"]["prompt"])]
    if not targets:
        raise InvalidParameter("prompt", f"this workflow has no node titled {PROMPT_TITLE!r} and no PromptBeam* "
                                         "node with a text `prompt` input; set the right input with --set "
                                         "NODE_ID.INPUT=TEXT")
    for node_id, name in targets:
        workflow[node_id]["inputs"][name] = text
    return [node_id for node_id, _ in targets]


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
                                           f"{', '.join(sorted(workflow, key=node_order))})")
        workflow[node_id]["inputs"][name] = value
        applied.append((node_id, name, value))
    return applied


def node_order(node_id: str):
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
    for node_id, entry in sorted((body.get("node_errors") or {}).items(), key=lambda kv: node_order(kv[0])):
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
            raise self._unreachable() from None
        except requests.Timeout:
            raise ComfyError(f"ComfyUI at {self.url} did not answer {method} {path} within "
                             f"{self.timeout:g} s") from None

    def _unreachable(self) -> ComfyError:
        return ComfyError(f"cannot reach ComfyUI at {self.url}: start it (python main.py --listen) or fix --server")

    def open_socket(self):
        import websocket

        ws_url = "ws" + self.url[len("http"):] + f"/ws?clientId={self.client_id}"
        try:
            ws = websocket.create_connection(ws_url, timeout=self.timeout)
        except ConnectionRefusedError:
            raise self._unreachable() from None
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

    def get_json(self, path: str, what: str) -> Any:
        """GET a JSON endpoint; ComfyError when it does not answer 200 with JSON (e.g. not a ComfyUI)."""
        response = self._call("GET", path)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not response.ok or body is None:
            raise ComfyError(f"{self.url} did not answer GET {path} with {what} (HTTP {response.status_code}): "
                             "is it a ComfyUI server?")
        return body

    def queue(self) -> dict:
        """GET /queue: {"queue_running": [[number, prompt_id, ...], ...], "queue_pending": [...]}."""
        return self.get_json("/queue", "its queue")

    def system_stats(self) -> dict:
        return self.get_json("/system_stats", "its system stats")

    def object_info(self, class_type: Optional[str] = None) -> dict:
        return self.get_json("/object_info" + (f"/{class_type}" if class_type else ""), "its node list")

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
