"""A Generator that renders on several ComfyUI servers ("workers") through their HTTP API queue.

Each request becomes one prompt: the render workflow with the request's text, seed, steps and size set
(render_graph, from the roles comfy_api.graph finds), queued with POST /prompt on the least-loaded live worker (GET /queue), followed over
the worker's websocket (polling /history when the socket fails; generation/comfy_follow.py) and its image
fetched with /view as soon as the output node names it. A generate() call renders its requests on all workers in parallel, and several
calls may run at once (`concurrency` = workers x queue_depth); results come back in request order whatever finished
first, and a worker renders a request exactly as the same workflow does in ComfyUI's editor for that seed.

Each worker is kept `queue_depth` prompts deep (default 2): while one renders, the next is already queued, so the
GPU does not wait for the pool to fetch an image, decode it and queue the next prompt.

Faults:
  * a worker that refuses the workflow (node_errors)       -> WorkflowRefused at once, with ComfyUI's message
  * a worker that stops answering, loses the prompt or stalls -> the request moves to another worker (at most
    `retries` times); the worker is left out until it answers again; the result's metadata says where it moved from
  * every worker down                                      -> AllWorkersDown naming each worker and why
  * should_stop() / interrupt()                            -> queued prompts are deleted, running ones interrupted
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Optional, Sequence

from ..comfy_api.client import ComfyClient, ComfyError, WorkflowRejected, load_workflow
from ..comfy_api.graph import TEXT_ENCODERS, RenderRoles, defaults_of, find_roles, loader_files
from ..errors import GenerationFailed, Interrupted, InvalidParameter
from .comfy_follow import Cancelled as _Cancelled
from .comfy_follow import PromptWatch, SocketFailed, WorkerLost as _WorkerLost, follow_socket, poll
from .protocol import GenerationRequest, GenerationResult, StepCallback, StopCheck

POLL_S = 0.2                   # polling interval when a worker's websocket cannot be used
QUEUE_TIMEOUT_S = 5.0          # a worker that cannot list its queue in this time is treated as down
REVIVE_AFTER_S = 30.0          # a worker marked down is asked again after this long
QUEUE_DEPTH = 2                # prompts kept queued on each worker: one renders, the next waits on the worker


class WorkflowRefused(GenerationFailed):
    """A worker refused the render workflow at validation (its node_errors are in the message)."""


class AllWorkersDown(GenerationFailed):
    """No worker answers."""


def parse_worker_urls(text: str | Sequence[str], name: str = "comfy_workers") -> list[str]:
    """"URL[,URL...]" (commas, spaces or new lines) -> normalised, distinct http(s) URLs."""
    items = text if isinstance(text, (list, tuple)) else str(text or "").replace("\n", ",").replace(" ", ",").split(",")
    urls: list[str] = []
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        try:
            url = ComfyClient(item).url
        except InvalidParameter as exc:
            raise InvalidParameter(name, f"{item!r} is not a ComfyUI address ({exc})") from None
        if url in urls:
            raise InvalidParameter(name, f"{url} is listed twice; give each ComfyUI server once")
        urls.append(url)
    if not urls:
        raise InvalidParameter(name, "give at least one ComfyUI server, e.g. http://127.0.0.1:8188,http://127.0.0.1:8189")
    return urls


@dataclass
class _Worker:
    url: str
    index: int
    down_since: Optional[float] = None
    reason: str = ""

    @property
    def alive(self) -> bool:
        return self.down_since is None


@dataclass(eq=False)
class _Job:
    """One request's prompt on one worker (what interrupt() must cancel)."""
    worker: _Worker
    client: ComfyClient
    prompt_id: str
    moved_from: list = field(default_factory=list)
    socket: object = None          # the worker's websocket for this client id, opened before the prompt was queued
    followed: str = "polling"      # how the prompt was followed: "websocket", or "polling" (and why)


class ComfyWorkerPool:
    """Generator over ComfyUI workers. `workflow` is an API-format graph or the path of one."""

    def __init__(self, workers: str | Sequence[str], workflow: dict | str, retries: int = 2,
                 stall_timeout_s: float = 300.0, request_timeout_s: float = 30.0, poll_s: float = POLL_S,
                 workflow_name: Optional[str] = None, use_websocket: bool = True, queue_depth: int = QUEUE_DEPTH):
        urls = parse_worker_urls(workers)
        if isinstance(workflow, str):
            workflow_name = workflow_name or workflow
            workflow = load_workflow(workflow)
        if retries < 0:
            raise InvalidParameter("retries", f"must be >= 0, got {retries}")
        if stall_timeout_s <= 0:
            raise InvalidParameter("stall_timeout_s", f"must be > 0, got {stall_timeout_s}")
        if queue_depth < 1:
            raise InvalidParameter("queue_depth", f"must be at least 1, got {queue_depth}")
        self.workflow = workflow
        self.workflow_name = workflow_name or "(graph)"
        self.roles = find_roles(workflow, name="render_workflow")
        settings = defaults_of(workflow, self.roles)
        self.defaults = GenerationRequest(prompt="defaults", seed=0, **settings)
        self.workers = [_Worker(url, index) for index, url in enumerate(urls)]
        self.queue_depth = queue_depth
        # How many prompts are in flight at once, over all workers. The least-loaded choice (GET /queue) spreads
        # them, so each worker holds about queue_depth: a second prompt waits there while the first renders.
        self.concurrency = len(self.workers) * queue_depth
        self.retries = retries
        self.stall_timeout_s = stall_timeout_s
        self.request_timeout_s = request_timeout_s
        self.poll_s = poll_s
        self.use_websocket = use_websocket       # False: poll /history only (what the pool did before)
        self._lock = threading.Lock()          # worker choice + submit: the next choice sees this prompt queued
        self._jobs: set = set()
        self._jobs_lock = threading.Lock()
        self._interrupt = threading.Event()

    # ---- Generator protocol -------------------------------------------------------------------------------------
    def request(self, prompt: str, seed: int, negative: Optional[str] = None) -> GenerationRequest:
        d = self.defaults
        return GenerationRequest(prompt=prompt, seed=seed, width=d.width, height=d.height, steps=d.steps,
                                 guidance=d.guidance, negative=negative, sampler=d.sampler,
                                 scheduler=d.scheduler).validate()

    def describe(self) -> dict:
        text = json.dumps(self.workflow, sort_keys=True).encode()
        return {"backend": "comfy-workers", "workers": [w.url for w in self.workers],
                "workflow": self.workflow_name, "workflow_sha256": hashlib.sha256(text).hexdigest(),
                "roles": self.roles.describe(),
                "models": [{"node": n, "class_type": c, "input": i, "file": f} for n, c, i, f in
                           loader_files(self.workflow)],
                **{k: getattr(self.defaults, k) for k in ("width", "height", "steps", "guidance", "sampler",
                                                          "scheduler")}}

    def generate(self, requests: Sequence[GenerationRequest], on_step: Optional[StepCallback] = None,
                 should_stop: Optional[StopCheck] = None) -> list[GenerationResult]:
        requests = [r.validate() for r in requests]
        if not requests:
            return []
        self._interrupt.clear()
        cancel = threading.Event()
        results: dict[int, GenerationResult] = {}
        errors: dict[int, BaseException] = {}
        total_steps = sum(r.steps for r in requests)
        done_steps = 0
        pool = ThreadPoolExecutor(max_workers=min(len(requests), self.concurrency),
                                  thread_name_prefix="promptbeam-worker")
        try:
            futures = {pool.submit(self._render, request, cancel): index for index, request in enumerate(requests)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=self.poll_s, return_when=FIRST_COMPLETED)
                for future in done:
                    index = futures[future]
                    try:
                        results[index] = future.result()
                        done_steps += requests[index].steps
                        if on_step is not None:
                            on_step(done_steps, total_steps)
                    except _Cancelled:
                        pass
                    except BaseException as exc:
                        errors[index] = exc
                        if isinstance(exc, (WorkflowRefused, AllWorkersDown)):
                            cancel.set()               # the others would meet the same answer: stop them
                if not cancel.is_set() and ((should_stop is not None and should_stop()) or self._interrupt.is_set()):
                    cancel.set()
        except BaseException:
            cancel.set()                           # e.g. KeyboardInterrupt here: the workers' prompts stop too
            raise
        finally:
            pool.shutdown(wait=True)               # a cancelled thread deletes/interrupts its own prompt first
        if errors:
            first = errors[min(errors)]
            if isinstance(first, GenerationFailed):
                first.completed = dict(results)
                raise first
            raise GenerationFailed(f"{type(first).__name__}: {first}", completed=results) from first
        if len(results) < len(requests):
            raise Interrupted("the ComfyUI workers were asked to stop; queued prompts were deleted and running "
                              "ones interrupted")
        return [results[index] for index in range(len(requests))]

    def interrupt(self) -> None:
        """Stop every generate() in flight: delete its queued prompts and interrupt the running ones."""
        self._interrupt.set()
        with self._jobs_lock:
            jobs = list(self._jobs)
        for job in jobs:
            _cancel_quietly(job)

    # ---- one request --------------------------------------------------------------------------------------------
    def _render(self, request: GenerationRequest, cancel: threading.Event) -> GenerationResult:
        graph = render_graph(self.workflow, self.roles, request)
        moved_from: list[dict] = []
        while True:
            if cancel.is_set():
                raise _Cancelled()
            started = time.perf_counter()
            job = self._submit(graph, moved_from, cancel)
            with self._jobs_lock:
                self._jobs.add(job)
            try:
                image = self._follow(job, request, cancel)
            except _WorkerLost as exc:
                self._mark_down(job.worker, str(exc))
                moved_from.append({"worker": job.worker.url, "error": str(exc)})
                if len(moved_from) > self.retries:
                    raise GenerationFailed(
                        f"gave up after {len(moved_from)} workers lost this request: "
                        + "; ".join(f"{m['worker']}: {m['error']}" for m in moved_from)) from None
                continue
            finally:
                with self._jobs_lock:
                    self._jobs.discard(job)
                _close_quietly(job.socket)
            render = {"worker": job.worker.url, "prompt_id": job.prompt_id}
            if moved_from:
                render["moved_from"] = moved_from
            return GenerationResult(image=image, seed=request.seed, seconds=time.perf_counter() - started,
                                    prompt=request.prompt, metadata={"render": render, "followed": job.followed})

    def _submit(self, graph: dict, moved_from: list, cancel: threading.Event) -> _Job:
        """Queue `graph` on the least-loaded live worker; a worker that does not take it is marked down and the
        next is tried. Under the lock, so that concurrent choices see each other's prompts in /queue. A refusal
        or all workers down cancels the rest of the call before the lock is released: it fails fast."""
        with self._lock:
            while True:
                if cancel.is_set():
                    raise _Cancelled()
                loads = self._loads()
                if not loads:
                    cancel.set()
                    raise AllWorkersDown(self._all_down_message())
                _load, _index, worker = min(loads, key=lambda item: item[:2])
                client = ComfyClient(worker.url, request_timeout=self.request_timeout_s)
                socket, followed = self._open_socket(client)
                try:
                    prompt_id = client.submit(graph)
                except WorkflowRejected as exc:
                    cancel.set()
                    raise WorkflowRefused(f"ComfyUI at {worker.url} refused the render workflow "
                                          f"({self.workflow_name}):\n" + "\n".join(exc.lines)) from None
                except ComfyError as exc:
                    _close_quietly(socket)
                    self._mark_down(worker, str(exc))
                    moved_from.append({"worker": worker.url, "error": f"could not queue: {exc}"})
                    continue
                except BaseException:
                    _close_quietly(socket)
                    raise
                return _Job(worker, client, prompt_id, socket=socket, followed=followed)

    def _open_socket(self, client: ComfyClient):
        """(websocket, "websocket") for the client's id, or (None, "polling (why)") when it cannot be opened."""
        if not self.use_websocket:
            return None, "polling"
        try:
            return client.open_socket(), "websocket"
        except ComfyError as exc:
            return None, f"polling (websocket: {exc})"

    def _loads(self) -> list[tuple[int, int, _Worker]]:
        """(prompts running + pending, index, worker) of every worker that answers GET /queue now; a worker down
        for REVIVE_AFTER_S is asked again, and all of them are when none is up."""
        now = time.monotonic()
        none_up = not any(w.alive for w in self.workers)
        loads = []
        for worker in self.workers:
            if not worker.alive and not none_up and now - worker.down_since < REVIVE_AFTER_S:
                continue
            try:
                queue = ComfyClient(worker.url, request_timeout=QUEUE_TIMEOUT_S).queue()
                load = len(queue.get("queue_running") or []) + len(queue.get("queue_pending") or [])
            except ComfyError as exc:
                self._mark_down(worker, str(exc))
                continue
            worker.down_since, worker.reason = None, ""
            loads.append((load, worker.index, worker))
        return loads

    def _follow(self, job: _Job, request: GenerationRequest, cancel: threading.Event):
        """Wait until the prompt's image is named and fetch it: over the websocket when it is open, else (or once
        it fails) by polling /history. Stalled = the worker's running prompts did not change for
        stall_timeout_s (a worker busy with other prompts that progress is not stalled)."""
        watch = PromptWatch(job.client, job.prompt_id, self.stall_timeout_s, lambda: _cancel_quietly(job))
        if job.socket is not None:
            try:
                kind, found = follow_socket(job.socket, watch, self.roles.output, cancel)
            except SocketFailed as exc:
                job.followed = f"polling (websocket: {exc})"
            else:
                if kind == "image":
                    return self._fetch(job, found, request)
                if kind == "error":
                    raise GenerationFailed(_render_error(job.worker.url, found))
                if kind == "history":
                    return self._image(job, found, request)
        entry = poll(watch, cancel, self.poll_s)
        return self._image(job, entry, request)

    def _image(self, job: _Job, entry: dict, request: GenerationRequest):
        """The image a finished prompt's /history entry names (or its failure)."""
        status = entry.get("status") or {}
        messages = {kind: data for kind, data in (status.get("messages") or []) if isinstance(data, dict)}
        if "execution_interrupted" in messages:
            raise _WorkerLost("the prompt was interrupted on the worker")
        if status.get("status_str") == "error" or "execution_error" in messages:
            raise GenerationFailed(_render_error(job.worker.url, messages.get("execution_error") or {}))
        items = ((entry.get("outputs") or {}).get(self.roles.output) or {}).get("images") or []
        if not items:
            raise GenerationFailed(f"ComfyUI at {job.worker.url} finished without an image from node "
                                   f"{self.roles.output} ({self.workflow[self.roles.output]['class_type']})")
        return self._fetch(job, items[0], request)

    def _fetch(self, job: _Job, item: dict, request: GenerationRequest):
        """GET /view of the named image, checked against the request's size."""
        from PIL import Image

        from ..images import pil_to_tensor

        try:
            data = job.client.view(item)
        except ComfyError as exc:
            raise _WorkerLost(f"could not send the image ({exc})") from None
        image = pil_to_tensor(Image.open(io.BytesIO(data)))
        if tuple(image.shape[:2]) != (request.height, request.width):
            raise GenerationFailed(f"ComfyUI at {job.worker.url} returned a {image.shape[1]}x{image.shape[0]} "
                                   f"image for a {request.width}x{request.height} request: does the render "
                                   "workflow resize or crop after VAEDecode?")
        return image

    def _mark_down(self, worker: _Worker, reason: str) -> None:
        if worker.alive:
            worker.down_since = time.monotonic()
        worker.reason = reason

    def _all_down_message(self) -> str:
        lines = "; ".join(f"{w.url}: {w.reason or 'not answering'}" for w in self.workers)
        return (f"all {len(self.workers)} ComfyUI worker(s) are down ({lines}). Start them again (python main.py "
                "--port N) or fix --comfy-workers; the run keeps its best so far")


def _render_error(url: str, error: dict) -> str:
    return (f"ComfyUI at {url} failed to render: node {error.get('node_id', '?')} ({error.get('node_type', '?')}): "
            f"{str(error.get('exception_message', 'unknown error')).strip()}")


def _close_quietly(socket) -> None:
    if socket is not None:
        try:
            socket.close()
        except Exception:                  # closing a socket the worker already dropped
            pass


def _cancel_quietly(job: _Job) -> None:
    """Delete the prompt from the worker's queue and interrupt it if it runs; a worker that is gone is fine."""
    try:
        job.client.cancel(job.prompt_id)
    except ComfyError:
        pass


def render_graph(workflow: dict, roles: RenderRoles, request: GenerationRequest) -> dict:
    """A copy of the workflow that renders `request`: text, seed, steps, size (batch 1), guidance; the sampler
    and scheduler names and the negative text when the request sets them and the workflow has a place for them."""
    graph = copy.deepcopy(workflow)
    for name in roles.prompt_inputs:
        graph[roles.prompt]["inputs"][name] = request.prompt
    graph[roles.seed[0]]["inputs"][roles.seed[1]] = int(request.seed)
    graph[roles.steps[0]]["inputs"][roles.steps[1]] = int(request.steps)
    latent = graph[roles.latent]["inputs"]
    latent.update(width=int(request.width), height=int(request.height))
    if "batch_size" in latent or graph[roles.latent]["class_type"] in ("EmptyLatentImage", "EmptySD3LatentImage"):
        latent["batch_size"] = 1
    if roles.guidance:
        graph[roles.guidance]["inputs"]["guidance"] = float(request.guidance)
    sampler = graph[roles.sampler]["inputs"]
    if request.sampler and "sampler_name" in sampler:
        sampler["sampler_name"] = request.sampler
    if request.scheduler and "scheduler" in sampler:
        sampler["scheduler"] = request.scheduler
    if request.negative and roles.negative:
        for name in TEXT_ENCODERS[graph[roles.negative]["class_type"]]:
            graph[roles.negative]["inputs"][name] = request.negative
    return graph
