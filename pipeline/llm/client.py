"""A thin Ollama HTTP client: chat with a JSON-schema `format`, model listing and details, running models, unload.

Only the native Ollama API is used (`/api/chat`, `/api/tags`, `/api/show`, `/api/ps`, `/api/generate`), over
`requests`.
Failures become typed exceptions whose messages say what to do. The client is safe to share between threads:
each thread gets its own `requests.Session` (a Session is not documented as thread-safe).

Every request has one deadline, `timeout` seconds from its start, that covers retries, waits and the whole answer
(a server that drips a byte every few seconds never resets it), and every answer is read in blocks up to
`max_answer_bytes`, never into memory whole. `chat(..., sink=...)` streams the answer (`"stream": true`) and hands
each piece of text to the sink as it arrives (see AnswerSink).
"""
from __future__ import annotations

import email.utils
import json
import re
import threading
import time
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional, Protocol, Sequence, Union

import requests
import urllib3

from ..errors import InvalidParameter, ModelNotFound, PromptBeamError

DEFAULT_TIMEOUT_S = 180.0     # a cold 8B model can take a minute to load before its first token
DEFAULT_RETRIES = 2           # extra attempts after the first, for connection errors and 5xx
DEFAULT_KEEP_ALIVE = "5m"     # Ollama's own default
CONNECT_TIMEOUT_S = 5.0       # a local server either accepts at once or is not there
# A long answer of thousands of tokens is ~100 kB (streamed: ~1 MB of NDJSON); far past that the server or a proxy
# misbehaves, and reading on would only fill memory.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
BUSY_STATUSES = (429, 503)    # "too many requests" / "server busy": wait (Retry-After) and ask again
MAX_BACKOFF_S = 8.0
_READ_BLOCK = 65536
# Go's time.ParseDuration syntax, which Ollama uses for string keep_alive values ("5m", "1h30m", "-1s").
_GO_DURATION = re.compile(r"^-?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+$")
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


class OllamaError(PromptBeamError, RuntimeError):
    """Ollama answered with an error, or could not be used. Carries the URL and HTTP status when known."""

    def __init__(self, message: str, url: str = "", status: Optional[int] = None):
        self.url = url
        self.status = status
        super().__init__(message)


class OllamaUnreachable(OllamaError, ConnectionError):
    """No Ollama server answers at the configured URL."""


class OllamaTimeout(OllamaUnreachable, TimeoutError):
    """Ollama accepted the request but did not answer in time."""


class OllamaModelNotFound(OllamaError, ModelNotFound):
    """The requested model is not installed on that Ollama server."""

    def __init__(self, message: str, url: str = "", status: Optional[int] = 404, installed: Sequence[str] = ()):
        self.installed = list(installed)
        super().__init__(message, url=url, status=status)


class OllamaBadOutput(OllamaError):
    """The model's reply could not be used (not JSON, wrong shape, empty), even after a retry."""


class OllamaBusy(OllamaError):
    """Ollama (or a proxy in front of it) kept answering 429 / 503 for longer than the timeout allows."""


class AnswerSink(Protocol):
    """Where a streamed answer goes, piece by piece, while the model is still writing it."""

    def feed(self, text: str) -> None:
        """The next piece of the answer's text."""

    def restart(self) -> bool:
        """The answer broke off (connection dropped, an error line): may it be asked for again from the start?
        True when nothing of it has been used yet (the sink forgets what it had); False makes the request fail
        with the typed error, and the sink keeps what it has."""


@dataclass(frozen=True)
class ChatStats:
    """Timing and token counts of one or more chat calls (Ollama reports durations in nanoseconds)."""
    calls: int = 0
    attempts: int = 0                # HTTP attempts, retries included
    prompt_eval_count: int = 0       # prompt tokens
    eval_count: int = 0              # generated tokens
    eval_duration_s: float = 0.0
    load_duration_s: float = 0.0     # time Ollama spent loading the model (cold start)
    total_duration_s: float = 0.0    # server-side total
    wall_s: float = 0.0              # client-side, including network and retries

    def __add__(self, other: "ChatStats") -> "ChatStats":
        return ChatStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @property
    def tokens_per_s(self) -> float:
        return self.eval_count / self.eval_duration_s if self.eval_duration_s > 0 else 0.0

    def as_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["tokens_per_s"] = round(self.tokens_per_s, 2)
        return data

    @classmethod
    def from_reply(cls, reply: Mapping[str, Any], attempts: int, wall_s: float) -> "ChatStats":
        def seconds(key: str) -> float:
            return float(reply.get(key) or 0) / 1e9
        return cls(calls=1, attempts=attempts, prompt_eval_count=int(reply.get("prompt_eval_count") or 0),
                   eval_count=int(reply.get("eval_count") or 0), eval_duration_s=seconds("eval_duration"),
                   load_duration_s=seconds("load_duration"), total_duration_s=seconds("total_duration"),
                   wall_s=wall_s)


@dataclass(frozen=True)
class ChatResponse:
    text: str                        # the assistant's content, with any <think> block removed
    stats: ChatStats
    thinking: str = ""               # reasoning text, when the model produced some anyway
    done_reason: str = ""            # "stop", or "length" when num_predict cut the reply short


def strip_thinking(text: str) -> tuple[str, str]:
    """Split `<think>…</think>` reasoning off a reply. Returns (answer, thinking).

    Handles the three shapes seen in practice: complete blocks, a reply that starts inside the block (the chat
    template opened `<think>` itself, so only `</think>` appears) and a block that never closes (cut off)."""
    thinking = [m.group(0)[7:-8] for m in _THINK_BLOCK.finditer(text)]
    text = _THINK_BLOCK.sub("", text)
    lower = text.lower()
    if "</think>" in lower:
        cut = lower.rindex("</think>")
        thinking.append(text[:cut])
        text = text[cut + len("</think>"):]
    elif "<think>" in lower:
        cut = lower.index("<think>")
        thinking.append(text[cut + len("<think>"):])
        text = text[:cut]
    return text.strip(), "\n".join(t.strip() for t in thinking if t.strip())


def extract_json(text: str) -> Any:
    """Parse the JSON value in a model reply: bare, inside a ``` fence, or embedded in prose.

    Raises ValueError with a short reason when there is none."""
    text, _ = strip_thinking(text or "")
    if not text:
        raise ValueError("the reply was empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for fenced in re.findall(r"```(?:json|JSON)?\s*(.*?)```", text, re.DOTALL):
        try:
            return json.loads(fenced)
        except json.JSONDecodeError:
            continue
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[{\[]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
            return value
        except json.JSONDecodeError:
            continue
    raise ValueError(f"no JSON found in the reply (starts with {text[:60]!r})")


def normalize_base_url(base_url: str) -> str:
    """`localhost:11434`, `http://host:11434/` and `http://host:11434/api` all mean the same server."""
    url = (base_url or "").strip()
    if not url:
        raise InvalidParameter("base_url", "is empty; use the address of your Ollama server, e.g. "
                                           "http://localhost:11434")
    if "://" not in url:
        url = "http://" + url
    if not url.startswith(("http://", "https://")):
        raise InvalidParameter("base_url", f"{base_url!r} must be an http:// or https:// address")
    url = url.rstrip("/")
    if url.endswith("/api"):
        url = url[:-4]
    return url


def normalize_keep_alive(value: Union[str, int, float, None]) -> Union[str, int, float]:
    """Ollama takes a number of seconds or a Go duration string; a bare number in a string ("0") is a number."""
    if value is None or value == "":
        return DEFAULT_KEEP_ALIVE
    if isinstance(value, bool):
        raise InvalidParameter("keep_alive", "must be a duration such as '5m', '0' (unload at once) or '-1' (keep)")
    if isinstance(value, (int, float)):
        return value
    text = str(value).strip()
    try:
        number = float(text)
        return int(number) if number.is_integer() else number
    except ValueError:
        pass
    if _GO_DURATION.match(text):
        return text
    raise InvalidParameter("keep_alive", f"{value!r} is not a duration; use e.g. '5m', '30s', '1h', "
                                         "'0' (unload after each call) or '-1' (keep loaded)")


def same_model(a: str, b: str) -> bool:
    """Ollama treats a name without a tag as `:latest`."""
    def full(name: str) -> str:
        name = name.strip()
        return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"
    return full(a) == full(b)


def ollama_seed(seed: int) -> int:
    """ComfyUI seeds go up to 2**64-1; Ollama decodes `seed` into a signed int, so fold it into 31 bits."""
    return int(seed) % (2 ** 31)


class OllamaClient:
    """Talks to one Ollama server about one model.

    timeout: the most seconds one request may take from start to the end of its answer, retries and waits
    included (not only the silence between two bytes).
    retries: extra attempts after a connection error, a dropped answer or a 5xx answer, with exponential backoff
    (`backoff_s`, doubling, capped at 8 s). A timeout is not retried: the server is busy, and asking again would
    only double the wait. 429 / 503 ("busy") are asked again after the server's Retry-After (or the backoff) for
    as long as the timeout allows, without counting as retries.
    max_answer_bytes: the largest answer read; a larger one fails as bad output without being read whole.
    """

    def __init__(self, base_url: str, model: str, timeout: float = DEFAULT_TIMEOUT_S,
                 retries: int = DEFAULT_RETRIES, keep_alive: Union[str, int, float, None] = DEFAULT_KEEP_ALIVE,
                 backoff_s: float = 0.5, max_answer_bytes: int = MAX_ANSWER_BYTES):
        self.base_url = normalize_base_url(base_url)
        self.model = (model or "").strip()
        if not self.model:
            raise InvalidParameter("model", "is empty; give an Ollama model name such as qwen2.5:7b-instruct "
                                            "(see `ollama list`)")
        if not timeout or float(timeout) <= 0:
            raise InvalidParameter("timeout", f"must be a positive number of seconds, got {timeout!r}")
        if int(retries) < 0:
            raise InvalidParameter("retries", f"must be 0 or more, got {retries!r}")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.keep_alive = normalize_keep_alive(keep_alive)
        self.backoff_s = float(backoff_s)
        self.max_answer_bytes = int(max_answer_bytes)
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings=None, **overrides) -> "OllamaClient":
        """A client for OLLAMA_BASE_URL / OLLAMA_MODEL (pipeline.config.Settings); keyword arguments override."""
        if settings is None:
            from ..config import Settings
            settings = Settings.from_env()
        overrides.setdefault("base_url", settings.ollama_base_url)
        overrides.setdefault("model", settings.ollama_model)
        return cls(**overrides)

    def __repr__(self) -> str:
        return f"OllamaClient({self.base_url!r}, model={self.model!r}, keep_alive={self.keep_alive!r})"

    # -- public API ---------------------------------------------------------------------------------------------

    def chat(self, messages: Sequence[Mapping[str, str]], format: Union[str, Mapping, None] = None,
             options: Optional[Mapping[str, Any]] = None, keep_alive: Union[str, int, float, None] = None,
             think: Optional[bool] = False, stream: bool = False, sink: Optional[AnswerSink] = None
             ) -> ChatResponse:
        """One `/api/chat` call. `format` is "json" or a JSON schema; `options` are model options
        (temperature, top_p, top_k, seed, num_predict, num_ctx, ...; None values are dropped).
        `think=False` asks thinking models to answer directly; any `<think>` block is stripped regardless.
        `stream=True` (implied by a `sink`) asks Ollama to stream the answer: the sink gets each piece of text as
        it arrives; the result is the same ChatResponse as without streaming."""
        stream = stream or sink is not None
        body: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in messages], "stream": stream,
                                "keep_alive": self.keep_alive if keep_alive is None
                                else normalize_keep_alive(keep_alive)}
        if think is not None:
            body["think"] = bool(think)
        if format is not None:
            body["format"] = format
        clean_options = {k: v for k, v in (options or {}).items() if v is not None}
        if "seed" in clean_options:
            clean_options["seed"] = ollama_seed(clean_options["seed"])
        if clean_options:
            body["options"] = clean_options
        started = time.perf_counter()
        reply, attempts = self._request("POST", "/api/chat", body, what="chat", sink=sink)
        message = reply.get("message") if isinstance(reply, dict) else None
        if not isinstance(message, dict):
            raise OllamaBadOutput(f"Ollama at {self.base_url} answered /api/chat without a message "
                                  f"(got {str(reply)[:120]!r}); is this an Ollama server?", url=self.base_url)
        text, thinking = strip_thinking(str(message.get("content") or ""))
        thinking = "\n".join(t for t in (str(message.get("thinking") or "").strip(), thinking) if t)
        stats = ChatStats.from_reply(reply, attempts=attempts, wall_s=time.perf_counter() - started)
        return ChatResponse(text=text, stats=stats, thinking=thinking,
                            done_reason=str(reply.get("done_reason") or ""))

    def list_models(self) -> list[str]:
        """Names of the models installed on the server (`ollama list`)."""
        reply, _ = self._request("GET", "/api/tags", None, what="list models")
        return [str(m.get("name") or m.get("model")) for m in reply.get("models") or []]

    def running(self) -> list[dict]:
        """Models loaded in memory (`ollama ps`): name, size, size_vram, expires_at."""
        reply, _ = self._request("GET", "/api/ps", None, what="list running models")
        return [dict(m) for m in reply.get("models") or []]

    def show(self) -> dict:
        """What the server knows of the model (`ollama show`): `details` (family, families), `capabilities`
        (e.g. ["completion", "vision"]; servers since 0.6.4 report it), `model_info`, `projector_info`."""
        reply, _ = self._request("POST", "/api/show", {"model": self.model}, what="show model")
        return reply

    def is_loaded(self) -> bool:
        return any(same_model(str(m.get("name") or m.get("model") or ""), self.model) for m in self.running())

    def unload(self) -> bool:
        """Free the model's memory now (keep_alive 0), e.g. before Flux needs the VRAM. True when Ollama
        confirmed the unload."""
        reply, _ = self._request("POST", "/api/generate", {"model": self.model, "keep_alive": 0}, what="unload")
        return reply.get("done_reason") == "unload" or bool(reply.get("done"))

    def check(self) -> list[str]:
        """Verify the server answers and the model is installed; returns the installed models."""
        installed = self.list_models()
        if not any(same_model(name, self.model) for name in installed):
            raise self._model_not_found(installed)
        return installed

    # -- transport ----------------------------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _request(self, method: str, path: str, body: Optional[dict], what: str,
                 sink: Optional[AnswerSink] = None) -> tuple[dict, int]:
        """One request with its retries, all within one deadline -> (the answer as one JSON object, attempts)."""
        url = self.base_url + path
        deadline = time.monotonic() + self.timeout
        attempts = failures = busy = 0
        last_problem, last_status = "", None
        while True:
            attempts += 1
            try:
                return self._attempt(method, url, path, body, what, deadline, sink), attempts
            except _Busy as answer:
                busy += 1
                wait = answer.retry_after if answer.retry_after is not None else self._backoff(busy)
                if time.monotonic() + wait >= deadline:
                    raise OllamaBusy(
                        f"Ollama at {self.base_url} is busy (HTTP {answer.status}: {answer.problem}) and "
                        f"{_retry_advice(answer.retry_after)}, past the {self.timeout:g} s timeout for the {what} "
                        f"request. Wait and run again, send fewer requests at once "
                        f"(llm_concurrency), or raise OLLAMA_NUM_PARALLEL / OLLAMA_MAX_QUEUE on the server.",
                        url=self.base_url, status=answer.status) from None
                time.sleep(wait)
            except _Failed as failed:
                failures += 1
                last_problem, last_status = failed.problem, failed.status
                wait = self._backoff(failures)
                if failures > self.retries or time.monotonic() + wait >= deadline:
                    break
                time.sleep(wait)
        if last_status is not None:
            raise OllamaError(f"Ollama at {self.base_url} failed the {what} request for model '{self.model}' "
                              f"{failures} times ({last_problem}). Check the Ollama server log; if the model ran "
                              f"out of memory, try a smaller model or free GPU memory.", url=self.base_url,
                              status=last_status)
        if last_problem == _DROPPED:
            raise OllamaUnreachable(
                f"Ollama at {self.base_url} dropped the connection in the middle of the {what} answer for model "
                f"'{self.model}' ({failures} times). Check the Ollama server log (a crash, or a proxy that cuts "
                f"long answers) and run again.", url=self.base_url)
        raise OllamaUnreachable(
            f"Cannot reach Ollama at {self.base_url} ({last_problem}; tried {failures} times). Start it with "
            f"`ollama serve` (or open the Ollama app), or point OLLAMA_BASE_URL / the base_url input at the "
            f"address where it runs.", url=self.base_url)

    def _attempt(self, method: str, url: str, path: str, body: Optional[dict], what: str, deadline: float,
                 sink: Optional[AnswerSink]) -> dict:
        """Send once and read the whole answer before the deadline. Raises _Busy / _Failed for the retry loop,
        and the typed errors for what is not retried."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timeout(what)
        try:
            response = self._session().request(method, url, json=body, stream=True,
                                                timeout=(min(CONNECT_TIMEOUT_S, remaining), remaining))
        except requests.exceptions.ReadTimeout:
            raise self._timeout(what) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Failed(_connection_problem(exc)) from None
        try:
            status = response.status_code
            if status >= 400:
                message = _server_message(response, self._read(response, deadline, what))
                if status in BUSY_STATUSES:
                    raise _Busy(status, message, _retry_after(response.headers.get("Retry-After")))
                if status >= 500:
                    raise _Failed(f"HTTP {status}: {message}", status)
                if status == 404 and path in ("/api/chat", "/api/generate", "/api/show"):
                    raise self._model_not_found(self._installed_or_empty(), server_message=message)
                raise OllamaError(f"Ollama at {self.base_url} rejected the {what} request for model "
                                  f"'{self.model}' (HTTP {status}): {message}", url=self.base_url, status=status)
            if body is not None and body.get("stream"):
                return self._read_stream(response, deadline, what, sink)
            raw = self._read(response, deadline, what)
        except _Dropped:
            raise _Failed(_DROPPED) from None
        finally:
            if response.raw.isclosed():     # read to its end: the connection may serve the next request
                response.raw.release_conn()
            else:                           # abandoned mid-answer: never hand a half-read connection on
                response.close()
        try:
            data = json.loads(raw)
        except ValueError:
            raise OllamaBadOutput(f"Ollama at {self.base_url} answered the {what} request with something "
                                  f"that is not JSON ({raw[:80].decode('utf-8', 'replace')!r}); is this URL an "
                                  f"Ollama server?", url=self.base_url, status=response.status_code) from None
        if not isinstance(data, dict):
            raise OllamaBadOutput(f"Ollama at {self.base_url} answered the {what} request with "
                                  f"{type(data).__name__} instead of a JSON object", url=self.base_url)
        return data

    def _read_stream(self, response: requests.Response, deadline: float, what: str,
                     sink: Optional[AnswerSink]) -> dict:
        """Read Ollama's NDJSON stream, handing each piece of text to the sink -> the answer as one object, the
        shape a non-streamed answer has."""
        content, thinking, buffer, final = [], [], b"", None
        try:
            for block in self._blocks(response, deadline, what):
                buffer += block
                *lines, buffer = buffer.split(b"\n")
                for line in filter(None, (line.strip() for line in lines)):
                    chunk = _stream_chunk(line, self.base_url, what)
                    if chunk.get("error"):
                        raise _StreamError(str(chunk["error"]))
                    message = chunk.get("message") or {}
                    piece = str(message.get("content") or chunk.get("response") or "")
                    thinking.append(str(message.get("thinking") or ""))
                    if piece:
                        content.append(piece)
                        if sink is not None:
                            sink.feed(piece)
                    if chunk.get("done"):
                        final = chunk
            if final is None:
                raise _Dropped()
        except (_Dropped, _StreamError) as broken:
            problem = _DROPPED if isinstance(broken, _Dropped) else f"Ollama said: {broken}"
            if sink is None or sink.restart():
                raise _Failed(problem) from None
            if isinstance(broken, _StreamError):
                raise OllamaError(f"Ollama at {self.base_url} failed in the middle of the {what} answer for model "
                                  f"'{self.model}' ({problem}). Check the Ollama server log.",
                                  url=self.base_url) from None
            raise OllamaUnreachable(f"Ollama at {self.base_url} dropped the connection in the middle of the "
                                    f"{what} answer for model '{self.model}'. Check the Ollama server log (a "
                                    f"crash, or a proxy that cuts long answers) and run again.",
                                    url=self.base_url) from None
        final = dict(final)
        final["message"] = {"role": "assistant", "content": "".join(content), "thinking": "".join(thinking)}
        if "response" in final:
            final["response"] = "".join(content)
        return final

    def _read(self, response: requests.Response, deadline: float, what: str) -> bytes:
        """The whole body, read in blocks within the deadline and the size limit."""
        return b"".join(self._blocks(response, deadline, what))

    def _blocks(self, response: requests.Response, deadline: float, what: str):
        """The body as it arrives, block by block. Each read may wait only for what is left of the deadline, so
        a server that drips a byte now and then still ends at the deadline; past max_answer_bytes (announced or
        read) the answer is refused."""
        limit = self.max_answer_bytes
        announced = response.headers.get("Content-Length")
        if announced and announced.isdigit() and int(announced) > limit:
            raise self._too_large(what, f"{int(announced) / 2**20:.1f} MB announced")
        raw, read = response.raw, 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout(what)
            connection = getattr(raw, "connection", None)
            if connection is not None and getattr(connection, "sock", None) is not None:
                connection.sock.settimeout(remaining)
            try:
                block = raw.read1(_READ_BLOCK)
            except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
                raise self._timeout(what) from None
            except (urllib3.exceptions.ProtocolError, urllib3.exceptions.HTTPError, ConnectionError, OSError):
                raise _Dropped() from None
            if not block:
                if raw.length_remaining:        # fewer bytes than Content-Length said: the connection dropped
                    raise _Dropped()
                return
            read += len(block)
            if read > limit:
                raise self._too_large(what, f"more than {limit / 2**20:.1f} MB")
            yield block

    def _backoff(self, n: int) -> float:
        return min(self.backoff_s * 2 ** (n - 1), MAX_BACKOFF_S)

    def _timeout(self, what: str) -> OllamaTimeout:
        return OllamaTimeout(
            f"Ollama at {self.base_url} did not answer the {what} request for model '{self.model}' within "
            f"{self.timeout:g} s. The model may still be loading or be too large for this machine: raise "
            f"the timeout, or use a smaller model.", url=self.base_url)

    def _too_large(self, what: str, size: str) -> OllamaBadOutput:
        return OllamaBadOutput(
            f"Ollama at {self.base_url} sent an answer to the {what} request for model '{self.model}' larger "
            f"than this client reads ({size}; the limit is {self.max_answer_bytes / 2**20:g} MB), so it was cut "
            f"off unread. A model that does not stop writing: set num_predict, or try another model.",
            url=self.base_url)

    def _installed_or_empty(self) -> list[str]:
        try:
            return self.list_models()
        except OllamaError:
            return []

    def _model_not_found(self, installed: Sequence[str], server_message: str = "") -> OllamaModelNotFound:
        listed = ", ".join(installed) if installed else "none"
        detail = f" (Ollama said: {server_message})" if server_message else ""
        return OllamaModelNotFound(
            f"Ollama model '{self.model}' is not installed at {self.base_url}{detail}. Installed models: {listed}. "
            f"Run `ollama pull {self.model}`, or set OLLAMA_MODEL / the model input to an installed model.",
            url=self.base_url, installed=installed)


_DROPPED = "the connection dropped mid-answer"


class _Failed(Exception):
    """An attempt that may be retried (connection failure, dropped answer, 5xx)."""

    def __init__(self, problem: str, status: Optional[int] = None):
        self.problem, self.status = problem, status


class _Busy(Exception):
    """429 / 503: ask again after `retry_after` seconds (None: the server did not say)."""

    def __init__(self, status: int, problem: str, retry_after: Optional[float]):
        self.status, self.problem, self.retry_after = status, problem, retry_after


class _Dropped(Exception):
    """The answer stopped before its end."""


class _StreamError(Exception):
    """Ollama wrote {"error": ...} into a stream it had started."""


def _stream_chunk(line: bytes, base_url: str, what: str) -> dict:
    try:
        chunk = json.loads(line)
    except ValueError:
        chunk = None
    if not isinstance(chunk, dict):
        raise OllamaBadOutput(f"Ollama at {base_url} streamed a line of the {what} answer that is not a JSON "
                              f"object ({line[:80].decode('utf-8', 'replace')!r}); is this URL an Ollama server?",
                              url=base_url)
    return chunk


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Retry-After as seconds: a number, or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _retry_advice(retry_after: Optional[float]) -> str:
    if retry_after is None:
        return "stayed busy"
    return f"asked to retry in {retry_after:g} s"


def _server_message(response: requests.Response, raw: bytes) -> str:
    """Ollama errors are `{"error": "..."}`; anything else is shown raw, shortened."""
    try:
        data = json.loads(raw)
        if isinstance(data, dict) and data.get("error"):
            return str(data["error"])
    except ValueError:
        pass
    return (raw.decode("utf-8", "replace") or response.reason or "no details").strip()[:200]


def _connection_problem(exc: requests.exceptions.RequestException) -> str:
    text = str(exc)
    if "Connection refused" in text or "Errno 111" in text or "actively refused" in text:
        return "connection refused"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection dropped mid-answer"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if "Name or service not known" in text or "getaddrinfo failed" in text or "nodename nor servname" in text:
        return "host name not found"
    return "connection failed: " + text[:120]
