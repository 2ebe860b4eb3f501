"""HTTP routes the pack adds to ComfyUI's server, for its editor extension (web/promptbeam.js).

GET /promptbeam/ollama/models?base_url=URL lists the models installed on an Ollama server, so the editor can offer
a picker for the PromptBeamOllama node's `model` input. The input itself stays a STRING: the list only helps fill
it in, and a workflow queued through the API never depends on it.

The answer is always HTTP 200 JSON: {"models": [...], "base_url": URL} or, when the list cannot be had,
{"models": [], "base_url": URL, "error": "<what to do>"} -- the editor shows the message to the user.
"""
import asyncio
import logging

from ..pipeline.errors import PromptBeamError
from ..pipeline.llm.client import OllamaClient
from .llm_nodes import ollama_defaults

try:
    from server import PromptServer
except ImportError:        # not running inside ComfyUI: there is no server to add routes to
    PromptServer = None

log = logging.getLogger(__name__)
MODELS_ROUTE = "/promptbeam/ollama/models"
# The picker is interactive: a server that does not answer within a few seconds is reported, not waited for.
LIST_TIMEOUT_S = 5.0


def list_models_payload(base_url=None, timeout=None):
    """The route's JSON body for one Ollama address (blocking; empty or None = OLLAMA_BASE_URL)."""
    timeout = LIST_TIMEOUT_S if timeout is None else timeout
    default_url, default_model = ollama_defaults()
    base_url = (base_url or "").strip() or default_url
    try:
        # The model name is not used for listing, but the client needs one; retries=0: the user clicked and waits.
        client = OllamaClient(base_url, default_model, timeout=timeout, retries=0)
        return {"models": client.list_models(), "base_url": client.base_url}
    except PromptBeamError as exc:   # unreachable, timeout, HTTP error, not an Ollama server, malformed URL
        return {"models": [], "base_url": base_url, "error": str(exc)}


async def list_ollama_models(request):
    """aiohttp handler. The blocking HTTP call runs in a worker thread so the server's event loop stays free."""
    from aiohttp import web

    base_url = request.query.get("base_url")
    try:
        payload = await asyncio.wait_for(asyncio.to_thread(list_models_payload, base_url),
                                         timeout=LIST_TIMEOUT_S * 2)   # the client's own timeouts fire first
    except asyncio.TimeoutError:
        payload = {"models": [], "base_url": base_url or "",
                   "error": f"Ollama at {base_url or 'OLLAMA_BASE_URL'} did not list its models within "
                            f"{LIST_TIMEOUT_S * 2:g} s; check that the server is running and not overloaded."}
    if "error" in payload:
        log.info("Prompt Beam: model list unavailable: %s", payload["error"])
    return web.json_response(payload)


def register(prompt_server) -> bool:
    """Add the routes to a ComfyUI PromptServer (None: nothing to do). Adding them twice is a no-op, since the pack
    may be imported twice and aiohttp refuses a second GET handler for the same resource."""
    if prompt_server is None:
        return False
    routes = prompt_server.routes
    if any(getattr(route, "method", None) == "GET" and getattr(route, "path", None) == MODELS_ROUTE
           for route in routes):
        return False
    routes.get(MODELS_ROUTE)(list_ollama_models)
    return True


register(getattr(PromptServer, "instance", None))
