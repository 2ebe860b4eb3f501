"""What a service owes itself under load: slow clients cut off, oversized bodies refused, memory bounded.

- Headers: a connection must send a whole request head within --header-timeout seconds (from connecting, or from
  its previous answer on a kept-alive connection), or it gets 408 and is closed (`guarded_http`, a uvicorn HTTP
  protocol; uvicorn itself waits forever for headers that trickle in byte by byte).
- Bodies: a model endpoint's body is read here, before the app sees it: refused with 413 when its Content-Length
  (or, chunked, its running size) passes --max-body-mb, with 408 when it has not arrived within --body-timeout.
- Admission: at most the render queue's depth + 2 requests may hold a body at once (one running, `depth` waiting,
  one being read); any further request gets 503 + Retry-After at once, before a byte of its body is read. So 200
  clients each sending a large body cost the memory of depth + 2 bodies, not 200.
"""
from __future__ import annotations

import asyncio
import math
from typing import Iterable

from .load import RenderQueue

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 60.0


def add_guard_arguments(parser, max_body_mb: float) -> None:
    """The flags every service takes for this: --max-body-mb (its default is the service's own), --header-timeout,
    --body-timeout."""
    parser.add_argument("--max-body-mb", dest="max_body_mb", type=float, default=max_body_mb, metavar="MB",
                        help=f"larger request bodies get 413 (default {max_body_mb:g})")
    parser.add_argument("--header-timeout", dest="header_timeout", type=float, default=DEFAULT_HEADER_TIMEOUT_S,
                        metavar="S", help="a request head slower than this gets 408 and the connection is closed "
                                          f"(default {DEFAULT_HEADER_TIMEOUT_S:g})")
    parser.add_argument("--body-timeout", dest="body_timeout", type=float, default=DEFAULT_BODY_TIMEOUT_S,
                        metavar="S", help=f"a request body slower than this gets 408 (default "
                                          f"{DEFAULT_BODY_TIMEOUT_S:g})")


def guard_flag_values(args) -> tuple:
    """(flag, value) of the guard flags, for the services' check that none is negative."""
    return (("--max-body-mb", args.max_body_mb), ("--header-timeout", args.header_timeout),
            ("--body-timeout", args.body_timeout))


def guarded_http(header_timeout_s: float):
    """A uvicorn HTTP protocol class (for `uvicorn.run(..., http=...)`) that closes connections whose request head
    does not arrive within header_timeout_s, with a 408 that says so."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class SlowHeadersCutOff(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._head_timer = None
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(header_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if getattr(self, "_head_timer", None) is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()                     # a whole request head arrived: the app has it now

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()                        # the next request on this connection gets the same time

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _too_slow(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
                return
            text = (f"the request head did not arrive within {header_timeout_s:g} s; the connection is closed "
                    f"(the service's --header-timeout)").encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                 b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text))
            self.transport.close()

    return SlowHeadersCutOff


class RequestGuard:
    """ASGI middleware for the POST endpoints that use the model (see the module docstring)."""

    def __init__(self, app, queue: RenderQueue, paths: Iterable[str], max_body_bytes: int,
                 body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S):
        self.app, self.queue, self.paths = app, queue, set(paths)
        self.max_body_bytes, self.body_timeout_s = max_body_bytes, body_timeout_s
        self.holding = 0                      # requests admitted and not answered yet
        queue.in_hand = queue.peak_in_hand = 0

    @property
    def capacity(self) -> int:
        return self.queue.depth + 2

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        if self.holding >= self.capacity:
            self.queue.refused += 1
            retry = self.queue.retry_after()
            return await _answer(send, 503, f"the service is busy: {self.holding} requests in hand, the most it "
                                            f"takes ({self.queue.flag} {self.queue.depth} waiting, 1 running, 1 "
                                            f"arriving); retry in about {retry} s", {"Retry-After": str(retry)})
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            return await _answer(send, 413, self._too_large(declared))
        self.holding += 1
        self.queue.in_hand = self.holding
        self.queue.peak_in_hand = max(self.queue.peak_in_hand, self.holding)
        try:
            try:
                body = await asyncio.wait_for(self._read(receive), self.body_timeout_s)
            except asyncio.TimeoutError:
                return await _answer(send, 408, f"the request body did not arrive within {self.body_timeout_s:g} s "
                                                "(the service's --body-timeout)")
            except _TooLarge as exc:
                return await _answer(send, 413, self._too_large(exc.size))
            if body is None:                  # the client went away while sending
                return
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()        # after the body: wait for the disconnect, as the server would
            await self.app(scope, replay, send)
        finally:
            self.holding -= 1
            self.queue.in_hand = self.holding

    async def _read(self, receive):
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge(size)
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    def _too_large(self, size: int) -> str:
        return (f"the request body ({_mb(size)}) is larger than this service takes ({_mb(self.max_body_bytes)}, "
                "its --max-body-mb); send fewer or smaller images")


class _TooLarge(Exception):
    def __init__(self, size: int):
        self.size = size


def _mb(size: int) -> str:
    return f"{math.ceil(size / 2**20 * 10) / 10:g} MB"


def _content_length(scope) -> "int | None":
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _answer(send, status: int, detail: str, headers: "dict | None" = None) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
