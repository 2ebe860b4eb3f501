"""`python -m pipeline queue WORKFLOW.json --server URL`: run an API-format workflow on a running ComfyUI.

Open the websocket `/ws?clientId=ID` first (so no event is missed), `POST /prompt` with that client_id, show
`progress` / `executing` / progress-text frames until `executing` with `node: null` for our prompt, then read
`/history/{prompt_id}`, download each output image through `/view` and write each text output to a file.
Ctrl-C interrupts the prompt on the server (exit 130).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Optional

from ..comfy_api.client import (ComfyClient, ComfyError, WorkflowRejected, apply_prompt, apply_sets, decode_text_frame,
                                load_workflow, node_order)
from ..errors import InvalidParameter
from .checks import check_out_dir
from .exit_codes import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE


def add_parser(commands, parents) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "queue", parents=parents, help="run an API-format workflow on a running ComfyUI and save its outputs",
        description="Submit an API-format workflow (workflows/api/*.json, or ComfyUI's 'Save (API)') to a running "
                    "ComfyUI, show its progress, and save the output images and texts.")
    p.add_argument("workflow", metavar="WORKFLOW.json", help="API-format workflow file")
    p.add_argument("--server", required=True, metavar="URL", help="ComfyUI address, e.g. http://127.0.0.1:8188")
    p.add_argument("--prompt", metavar="TEXT",
                   help="the prompt: sets the node titled 'Your prompt', or else the text `prompt` input of every "
                        "PromptBeam* node")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE_ID.INPUT=VALUE",
                   help="set one input; VALUE is read as JSON (42, 0.5, true, [\"3\", 0]) or else as text; "
                        "repeatable")
    p.add_argument("--out", metavar="DIR", help="where to save outputs (default: ./comfy_outputs/PROMPT_ID)")
    p.add_argument("--timeout", type=float, default=0, metavar="S",
                   help="give up (and interrupt the prompt) after S seconds; 0 waits forever (default)")
    return p


# ---------------------------------------------------------------------------------------------------------------
# Progress and outputs


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
                raise ComfyError(node_failure(data))
            elif kind == "execution_interrupted" and data.get("prompt_id") == prompt_id:
                raise ComfyError(f"the prompt was interrupted on the server (at node {data.get('node_id')} "
                                 f"{data.get('node_type')})")
    finally:
        bar.close()


def save_outputs(client: ComfyClient, entry: dict, out_dir: Path) -> list[Path]:
    """Download every output image; write text outputs (.json when they parse as JSON) next to them."""
    saved = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for node_id, outputs in sorted((entry.get("outputs") or {}).items(), key=lambda kv: node_order(kv[0])):
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
    if args.out:
        check_out_dir(args.out, flag="out")
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


def node_failure(data: dict) -> str:
    """An execution_error event (websocket or history) as one line."""
    return (f"node {data.get('node_id')} ({data.get('node_type')}) failed: {data.get('exception_type', 'error')}: "
            f"{' '.join(str(data.get('exception_message', '')).split())}")


def history_error(entry: dict, prompt_id: str) -> str:
    for event, data in reversed((entry.get("status") or {}).get("messages") or []):
        if event == "execution_error":
            return node_failure(data)
        if event == "execution_interrupted":
            return f"prompt {prompt_id} was interrupted on the server"
    return f"prompt {prompt_id} failed on the server (see the ComfyUI console)"
