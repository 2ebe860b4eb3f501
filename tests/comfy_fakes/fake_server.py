"""Fake of ComfyUI's server.PromptServer: records what nodes send to the browser and the routes packs add."""
from collections import namedtuple

RouteDef = namedtuple("RouteDef", "method path handler kwargs")


class RouteTable:
    """Like the aiohttp RouteTableDef at PromptServer.instance.routes: decorators that record handlers; iterable."""

    def __init__(self):
        self._items = []

    def route(self, method, path, **kwargs):
        def record(handler):
            self._items.append(RouteDef(method, path, handler, kwargs))
            return handler
        return record

    def get(self, path, **kwargs):
        return self.route("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.route("POST", path, **kwargs)

    def __iter__(self):
        return iter(list(self._items))

    def handler(self, method, path):
        """The one handler registered for method + path (fails if none or several)."""
        (found,) = [r.handler for r in self._items if (r.method, r.path) == (method, path)]
        return found


class PromptServer:
    instance = None

    def __init__(self):
        self.client_id = "fake-client"
        self.last_node_id = None
        self.sent = []            # (event, data, sid)
        self.progress_texts = []  # (text, node_id)
        self.routes = RouteTable()

    def send_sync(self, event, data, sid=None):
        self.sent.append((event, data, sid))

    def send_progress_text(self, text, node_id, sid=None):
        self.progress_texts.append((text, node_id))


PromptServer.instance = PromptServer()
