"""Following one prompt on a ComfyUI worker until its image is named: over the worker's websocket, or by polling.

The websocket is the fast path: ComfyUI sends `executed` for the output node with the image's name as soon as the
node ran, so the image is fetched at once (no polling delay), and `execution_error` / `execution_interrupted` as
soon as they happen. The socket is opened with the same client id before the prompt is queued, so no message is
missed. When it cannot be opened or breaks, polling /history takes over (what the pool always did before).

Either way a quiet prompt is checked with /history and /queue (PromptWatch): lost when the worker no longer knows
it, stalled when the worker's running prompts do not change for stall_timeout_s.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Callable, Optional

from ..comfy_api.client import ComfyClient, ComfyError

LOST_AFTER_CHECKS = 3          # checks in which a prompt is neither finished nor queued before it counts as lost
SOCKET_QUIET_S = 1.0           # a websocket silent this long: check the prompt over HTTP


class WorkerLost(Exception):
    """The worker stopped answering, lost the prompt or stalled: the request can move to another worker."""


class SocketFailed(Exception):
    """The websocket could not be used: follow the prompt by polling instead."""


class Cancelled(Exception):
    pass


class PromptWatch:
    """Is a queued prompt finished, still there, moving? One check = GET /history/<id> (+ GET /queue)."""

    def __init__(self, client: ComfyClient, prompt_id: str, stall_timeout_s: float, cancel_prompt: Callable):
        self.client, self.prompt_id = client, prompt_id
        self.stall_timeout_s = stall_timeout_s
        self.cancel_prompt = cancel_prompt
        self.last_change, self.last_running, self.misses = time.monotonic(), None, 0

    def progressed(self) -> None:
        """A message about this prompt arrived: it is alive."""
        self.last_change, self.misses = time.monotonic(), 0

    def check(self) -> Optional[dict]:
        """The prompt's history entry once finished, else None; raises WorkerLost when lost or stalled."""
        try:
            entry = self.client.history(self.prompt_id)
            if entry is not None:
                return entry
            queue = self.client.queue()
        except ComfyError as exc:
            raise WorkerLost(f"stopped answering ({exc})") from None
        running = tuple(item[1] for item in queue.get("queue_running") or [])
        pending = {item[1] for item in queue.get("queue_pending") or []}
        if self.prompt_id in running or self.prompt_id in pending:
            self.misses = 0
        else:
            self.misses += 1                  # finished between the two calls, or lost: the next check tells
            if self.misses >= LOST_AFTER_CHECKS:
                raise WorkerLost("lost the prompt (was the server restarted?)")
        if running != self.last_running:
            self.last_change, self.last_running = time.monotonic(), running
        elif time.monotonic() - self.last_change > self.stall_timeout_s:
            self.cancel_prompt()
            raise WorkerLost(f"stalled: nothing progressed for {self.stall_timeout_s:g} s")
        return None


def poll(watch: PromptWatch, cancel: threading.Event, poll_s: float) -> dict:
    """Check every poll_s until the prompt is in /history; returns its entry."""
    while True:
        if cancel.is_set():
            watch.cancel_prompt()
            raise Cancelled()
        entry = watch.check()
        if entry is not None:
            return entry
        time.sleep(poll_s)


def follow_socket(ws, watch: PromptWatch, output_node: str, cancel: threading.Event,
                  quiet_s: float = SOCKET_QUIET_S) -> tuple[str, dict]:
    """Read the worker's messages about this prompt until one settles it:
    ("image", {filename, subfolder, type}) as soon as the output node names its image; ("error", data) for
    execution_error; ("history", entry) when the prompt ended without naming it in a message (then /history has
    it). Raises WorkerLost (interrupted, lost, stalled), SocketFailed, Cancelled."""
    import websocket

    ws.settimeout(quiet_s)
    while True:
        if cancel.is_set():
            watch.cancel_prompt()
            raise Cancelled()
        try:
            frame = ws.recv()
        except websocket.WebSocketTimeoutException:
            entry = watch.check()            # a quiet while: still queued behind others, or lost, or stalled
            if entry is not None:
                return "history", entry
            continue
        except (OSError, websocket.WebSocketException) as exc:
            raise SocketFailed(f"{type(exc).__name__}: {exc}") from None
        if not isinstance(frame, str):
            continue                                   # binary frames: previews, progress text
        try:
            message = json.loads(frame)
        except ValueError:
            continue
        kind, data = message.get("type"), message.get("data") or {}
        if not isinstance(data, dict) or data.get("prompt_id") != watch.prompt_id:
            continue                                   # status broadcasts, other prompts
        watch.progressed()
        if kind == "executed" and str(data.get("node")) == output_node:
            images = (data.get("output") or {}).get("images") or []
            if images:
                return "image", images[0]
        elif kind == "execution_error":
            return "error", data
        elif kind == "execution_interrupted":
            raise WorkerLost("the prompt was interrupted on the worker")
        elif kind == "executing" and data.get("node") is None:
            return "ended", {}                         # without naming the image: /history says why
