"""PromptBeamComfyWorkers: a generator that renders on other ComfyUI servers (pipeline.generation.comfy_workers).

The node never sends work to the ComfyUI it runs in: that server's queue is busy with the search itself, so a
prompt queued there would wait for the search that waits for it. Two checks, because an address alone can hide
the same server (localhost vs 127.0.0.1 vs the machine's name, a reverse proxy):
  1. the worker's host is this machine and its port is the port this server listens on;
  2. the worker answers GET /promptbeam/instance with this server's own random token (the route is added below;
     workers without the pack answer 404, which is fine).
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from urllib.parse import urlparse

from comfy_api.v0_0_2 import io

from ..pipeline.errors import InvalidParameter
from ..pipeline.generation.comfy_workers import ComfyWorkerPool, parse_worker_urls
from .sockets import GENERATOR

try:
    from server import PromptServer
except ImportError:        # not running inside ComfyUI
    PromptServer = None

INSTANCE_ROUTE = "/promptbeam/instance"
IDENTITY_TIMEOUT_S = 3.0
SHIPPED_WORKFLOW = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workflows", "api",
                                "render_flux_worker.json")


def instance_token(prompt_server) -> str:
    """This server's random identity, kept on the server object (the pack may be imported twice)."""
    token = getattr(prompt_server, "promptbeam_instance_token", None)
    if token is None:
        token = secrets.token_hex(16)
        setattr(prompt_server, "promptbeam_instance_token", token)
    return token


async def instance_identity(request):
    from aiohttp import web

    return web.json_response({"instance": instance_token(PromptServer.instance)})


def register(prompt_server) -> bool:
    if prompt_server is None:
        return False
    if any(getattr(r, "method", None) == "GET" and getattr(r, "path", None) == INSTANCE_ROUTE
           for r in prompt_server.routes):
        return False
    instance_token(prompt_server)
    prompt_server.routes.get(INSTANCE_ROUTE)(instance_identity)
    return True


register(getattr(PromptServer, "instance", None))


def _local_addresses() -> set:
    names = {"localhost", socket.gethostname(), socket.getfqdn()}
    found = {"0.0.0.0", "::"}
    for name in names:
        try:
            found.update(info[4][0] for info in socket.getaddrinfo(name, None))
        except OSError:
            pass
    return found


def _is_this_machine(host: str) -> bool:
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    local = _local_addresses()
    return any(a in local or ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def refuse_own_server(urls, prompt_server) -> None:
    """InvalidParameter when a worker URL is the ComfyUI server this node runs in."""
    if prompt_server is None:
        return
    own_port = getattr(prompt_server, "port", None)
    token = instance_token(prompt_server)
    import requests

    for url in urls:
        parsed = urlparse(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        same = own_port is not None and port == int(own_port) and _is_this_machine(parsed.hostname or "")
        if not same:
            try:
                answer = requests.get(url + INSTANCE_ROUTE, timeout=IDENTITY_TIMEOUT_S)
                same = answer.ok and (answer.json() or {}).get("instance") == token
            except (requests.RequestException, ValueError):
                same = False        # down or not a Prompt Beam ComfyUI: the pool deals with it
        if same:
            raise InvalidParameter("worker_urls", f"{url} is this ComfyUI server, which is busy running the search "
                                                  "itself; give other ComfyUI servers (e.g. one per GPU started with "
                                                  "--port 8189 and CUDA_VISIBLE_DEVICES=1)")


class PromptBeamComfyWorkers(io.ComfyNode):
    """Other ComfyUI servers + a render workflow -> a PROMPTBEAM_GENERATOR that renders on all of them."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PromptBeamComfyWorkers",
            display_name="Prompt Beam ComfyUI Workers",
            category="Prompt Beam/generation",
            description="Renders the search's candidates on other ComfyUI servers through their API queue, "
                        "least-loaded first, all in parallel; size, steps and guidance come from the render workflow.",
            inputs=[
                io.String.Input("worker_urls", multiline=True, default="http://127.0.0.1:8189",
                                tooltip="Other ComfyUI servers, one per line or comma-separated. Never this one: its "
                                        "queue is busy with the search."),
                io.String.Input("workflow", default="", tooltip="API-format render workflow file each worker runs per "
                                                                "candidate (Export (API)). Empty: the pack's "
                                                                "workflows/api/render_flux_worker.json."),
                io.Float.Input("stall_timeout_s", default=300.0, min=1.0, max=86400.0, step=1.0, optional=True,
                               tooltip="Move a request to another worker when its worker shows no progress for this "
                                       "long."),
            ],
            outputs=[GENERATOR.Output(display_name="generator")],
        )

    @classmethod
    def execute(cls, worker_urls, workflow, stall_timeout_s=300.0):
        urls = parse_worker_urls(worker_urls, name="worker_urls")
        path = (workflow or "").strip() or SHIPPED_WORKFLOW
        pool = ComfyWorkerPool(urls, path, stall_timeout_s=float(stall_timeout_s))
        refuse_own_server(urls, getattr(PromptServer, "instance", None))
        return io.NodeOutput(pool)


NODES = [PromptBeamComfyWorkers]
