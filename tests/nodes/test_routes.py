"""The editor's model-list route (nodes/routes.py), registered on the fake PromptServer and called against the fake
Ollama server over real loopback HTTP. The same route on a real ComfyUI: tests/integration/test_model_picker.py."""
import asyncio
import importlib
import json
import sys

import pytest

from tests.fixtures.comfy import PACK_MODULE, load_pack
from tests.fixtures.ollama import free_port

ROUTE = "/promptbeam/ollama/models"


class Request:
    """What the handler reads of an aiohttp request."""

    def __init__(self, **query):
        self.query = query


@pytest.fixture
def routes_module():
    """The routes module whose handler the server holds. Under pytest the pack can be imported twice (by file path
    as ComfyUI does, and as the rootdir package): only the first import registers, as on a real server."""
    load_pack()
    from server import PromptServer
    return sys.modules[PromptServer.instance.routes.handler("GET", ROUTE).__module__]


def call_route(query: dict) -> dict:
    pytest.importorskip("aiohttp", reason="aiohttp (ComfyUI's web server) builds the response")
    from server import PromptServer

    handler = PromptServer.instance.routes.handler("GET", ROUTE)
    response = asyncio.run(handler(Request(**query)))
    assert response.status == 200          # errors are answered in the body, for the editor to show
    assert response.content_type == "application/json"
    return json.loads(response.body)


def test_the_pack_registers_the_route_on_comfyuis_server(routes_module):
    from server import PromptServer

    handler = PromptServer.instance.routes.handler("GET", ROUTE)    # exactly one, though the pack loaded twice
    assert (handler.__module__, handler.__name__) == (routes_module.__name__, "list_ollama_models")
    assert routes_module.__name__.endswith(".nodes.routes")
    assert f"{PACK_MODULE}.nodes.routes" in sys.modules


def test_the_route_lists_the_models_of_the_given_server(fake_ollama):
    fake_ollama.models = ["qwen2.5:7b-instruct", "llama3.1:8b", "gemma3:4b"]
    body = call_route({"base_url": fake_ollama.url + "/"})
    assert body == {"models": ["qwen2.5:7b-instruct", "llama3.1:8b", "gemma3:4b"], "base_url": fake_ollama.url}
    assert [r["path"] for r in fake_ollama.requests] == ["/api/tags"]


def test_without_base_url_the_route_asks_ollama_base_url(fake_ollama, monkeypatch):
    monkeypatch.setenv("OLLAMA_BASE_URL", fake_ollama.url)
    body = call_route({})
    assert body == {"models": list(fake_ollama.models), "base_url": fake_ollama.url}


def test_an_unreachable_server_is_an_actionable_error_not_an_http_failure():
    url = f"http://127.0.0.1:{free_port()}"
    body = call_route({"base_url": url})
    assert body["models"] == []
    assert body["error"].startswith(f"Cannot reach Ollama at {url}")
    assert "ollama serve" in body["error"] and "base_url" in body["error"]


def test_a_malformed_address_names_the_parameter():
    body = call_route({"base_url": "ftp://example.invalid"})
    assert body["models"] == []
    assert body["error"] == "base_url: 'ftp://example.invalid' must be an http:// or https:// address"


def test_a_server_that_does_not_answer_in_time_is_reported(fake_ollama, routes_module, monkeypatch):
    monkeypatch.setattr(routes_module, "LIST_TIMEOUT_S", 0.3)   # the picker's patience, shortened for the test
    fake_ollama.script("/api/tags", {"delay": 1.5})
    body = call_route({"base_url": fake_ollama.url})
    assert body["models"] == []
    assert f"Ollama at {fake_ollama.url} did not answer the list models request" in body["error"]
    assert "within 0.3 s" in body["error"]


def test_a_server_error_is_reported_with_its_message(fake_ollama):
    fake_ollama.script("/api/tags", {"status": 403, "json": {"error": "forbidden by proxy"}})
    body = call_route({"base_url": fake_ollama.url})
    assert body["models"] == []
    assert "HTTP 403" in body["error"] and "forbidden by proxy" in body["error"]


def test_importing_without_a_running_server_adds_no_route(routes_module, monkeypatch):
    """Outside a running ComfyUI (PromptServer.instance is None) the module imports and registers nothing; loading
    it again with the server back does not register the route twice."""
    from server import PromptServer

    server = PromptServer.instance
    monkeypatch.setattr(PromptServer, "instance", None)
    reloaded = importlib.reload(routes_module)
    assert reloaded.register(None) is False
    monkeypatch.setattr(PromptServer, "instance", server)
    importlib.reload(routes_module)
    assert [r.path for r in server.routes].count(ROUTE) == 1
