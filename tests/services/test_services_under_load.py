"""The services under load (Flux, vision and the VLM judge), served by real uvicorn (with the services' own HTTP protocol) on loopback around the
real tiny models: 200 clients at once (one answer each: 200 for the ones the line holds, 503 + Retry-After for
the rest, none lost, none answered twice, bodies in hand bounded), request heads and bodies that trickle in byte
by byte (cut off with 408), oversized bodies (413 before they are read) and uploads that are not images (400).

The model call waits on a gate the test opens, so how many requests are in the line never depends on timing."""
import base64
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from pipeline.services import flux, vision
from pipeline.services.guard import guarded_http
from tests.fixtures.servers import free_port
from tests.fixtures.tiny_flux import TINY_SIZE

CLIENTS = 200
DEPTH = 4


class Gated:
    """A real model object whose calls wait until the test opens the gate."""

    def __init__(self, model, method: str):
        self.model, self.gate, self.calls = model, threading.Event(), 0
        original = getattr(model, method)

        def gated(*args, **kwargs):
            self.calls += 1
            assert self.gate.wait(120), "the test never opened the gate"
            return original(*args, **kwargs)
        setattr(self, method, gated)

    def __getattr__(self, name):
        return getattr(self.model, name)


class Served:
    """`app` on a loopback port through uvicorn in a thread, with the services' HTTP protocol."""

    def __init__(self, app, header_timeout_s: float = 10.0):
        import uvicorn

        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    http=guarded_http(header_timeout_s)))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        self.port = port

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def flux_served(tiny_generator, tmp_path):
    gated = Gated(tiny_generator, "generate")
    served = Served(flux.create_app(gated, tmp_path / "out", queue_depth=DEPTH, keep_images=None,
                                    body_timeout_s=1.0), header_timeout_s=1.0)
    served.gated, served.out = gated, tmp_path / "out"
    yield served
    gated.gate.set()
    served.stop()


@pytest.fixture
def vision_served(tiny_scorer, tmp_path):
    gated = Gated(tiny_scorer, "score")
    served = Served(vision.create_app(gated, allow_dirs=[str(tmp_path)], queue_depth=DEPTH, max_body_mb=2.0,
                                      body_timeout_s=1.0), header_timeout_s=1.0)
    served.gated = gated
    yield served
    gated.gate.set()
    served.stop()


def health(served) -> dict:
    return requests.get(served.url + "/health", timeout=10).json()


def storm(served, path: str, bodies, gated) -> list:
    """Send every body at once; once all but the line's share are refused, open the gate; every answer."""
    answers = [None] * len(bodies)

    def send(index):
        answers[index] = requests.post(served.url + path, data=bodies[index], timeout=180,
                                       headers={"Content-Type": "application/json"})

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        futures = [pool.submit(send, i) for i in range(len(bodies))]
        deadline = time.monotonic() + 120
        while sum(a is not None and a.status_code == 503 for a in answers) < len(bodies) - (DEPTH + 1):
            assert time.monotonic() < deadline, [a.status_code for a in answers if a is not None]
            time.sleep(0.05)
        line = health(served)["queue"]
        gated.gate.set()
        for future in futures:
            future.result()
    return answers, line


def assert_one_answer_each(answers, line):
    assert all(a is not None for a in answers) and len(answers) == CLIENTS
    done = [a for a in answers if a.status_code == 200]
    busy = [a for a in answers if a.status_code == 503]
    assert len(done) == DEPTH + 1 and len(busy) == CLIENTS - DEPTH - 1, sorted({a.status_code for a in answers})
    for answer in busy:
        assert int(answer.headers["Retry-After"]) >= 1 and "the service is busy" in answer.json()["detail"]
    assert line["running"] == 1 and line["waiting"] == DEPTH and line["peak_in_hand"] <= DEPTH + 2
    return done


def test_two_hundred_clients_on_the_flux_service(flux_served):
    bodies = [json.dumps({"prompt": f"a red cat {i}", "width": TINY_SIZE, "height": TINY_SIZE, "steps": 2,
                          "seed": i}) for i in range(CLIENTS)]
    answers, line = storm(flux_served, "/generate", bodies, flux_served.gated)
    done = assert_one_answer_each(answers, line)
    seeds = sorted(a.json()["metadata"]["seed"] for a in done)
    assert len(set(seeds)) == DEPTH + 1 and len({a.json()["localPath"] for a in done}) == DEPTH + 1
    assert len(list(flux_served.out.glob("flux_*.png"))) == DEPTH + 1          # nothing rendered twice
    after = health(flux_served)["queue"]
    assert after["served"] == DEPTH + 1 and after["refused"] == CLIENTS - DEPTH - 1
    assert flux_served.gated.calls == DEPTH + 1 and after["in_hand"] == 0


def png_base64(seed: int, size: int = 256) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)   # noise: ~200 kB
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_two_hundred_clients_on_the_vision_service_with_bounded_bodies_in_hand(vision_served):
    image = png_base64(1)
    bodies = [json.dumps({"images": [image], "prompt": f"a red cat {i}"}) for i in range(CLIENTS)]
    answers, line = storm(vision_served, "/score", bodies, vision_served.gated)
    done = assert_one_answer_each(answers, line)
    assert all(len(a.json()["scores"]) == 1 for a in done)
    after = health(vision_served)["queue"]
    # 200 bodies of ~0.3 MB were sent; at most depth + 2 were ever held: memory is bounded by the line, not the crowd
    assert after["peak_in_hand"] <= DEPTH + 2 and after["served"] == DEPTH + 1
    assert after["refused"] == CLIENTS - DEPTH - 1


def trickle(served, head: bytes, body: bytes = b"", limit_s: float = 30.0):
    """Send head then body one byte every 50 ms until the server answers or closes; (answer bytes, bytes sent)."""
    connection = socket.create_connection(("127.0.0.1", served.port))
    connection.settimeout(0.05)
    sent, received = 0, b""
    deadline = time.monotonic() + limit_s
    try:
        for byte in head + body:
            assert time.monotonic() < deadline, "the server never cut the slow client off"
            try:
                connection.sendall(bytes([byte]))
                sent += 1
            except OSError:
                break
            try:
                chunk = connection.recv(4096)
                received += chunk
                if not chunk or b"\r\n\r\n" in received:
                    break
            except socket.timeout:
                continue
        connection.settimeout(5)
        try:
            while chunk := connection.recv(4096):
                received += chunk
        except OSError:
            pass
    finally:
        connection.close()
    return received, sent


SLOW_HEAD = b"POST /generate HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: " + b"a" * 200 + b"\r\n\r\n"


def test_a_request_head_sent_byte_by_byte_is_cut_off_with_408(flux_served):
    received, sent = trickle(flux_served, SLOW_HEAD)
    assert received.startswith(b"HTTP/1.1 408") and b"--header-timeout" in received
    assert sent < len(SLOW_HEAD)                                   # cut off before the head was complete
    assert requests.get(flux_served.url + "/health", timeout=10).status_code == 200


def test_a_body_sent_byte_by_byte_is_cut_off_with_408(vision_served):
    body = json.dumps({"images": [png_base64(2, 16)], "prompt": "a cat"}).encode()
    head = (b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(body))
    connection = socket.create_connection(("127.0.0.1", vision_served.port))
    connection.sendall(head)                                       # the head at once, then the body trickles
    received, sent = b"", 0
    connection.settimeout(0.05)
    deadline = time.monotonic() + 30
    while b"\r\n\r\n" not in received:
        assert time.monotonic() < deadline, "the server never cut the slow body off"
        try:
            connection.sendall(body[sent:sent + 1])
            sent += 1
            received += connection.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            break
    connection.close()
    assert received.startswith(b"HTTP/1.1 408") and b"--body-timeout" in received and sent < len(body)
    assert vision_served.gated.calls == 0                          # the scorer never saw it


def test_an_oversized_body_is_refused_before_it_is_read(vision_served):
    connection = socket.create_connection(("127.0.0.1", vision_served.port))
    connection.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 10737418240\r\n\r\n{")               # claims 10 GB, sends one byte
    connection.settimeout(10)
    answer = b""
    while chunk := connection.recv(65536):        # the answer says Connection: close: read until the server closes
        answer += chunk
    connection.close()
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"larger than this service takes (2 MB, its --max-body-mb)" in answer
    chunked = requests.post(vision_served.url + "/score", timeout=30,
                            data=(b"x" * 65536 for _ in range(64)))             # 4 MB, chunked, no length
    assert chunked.status_code == 413 and "--max-body-mb" in chunked.json()["detail"]


def test_uploads_that_are_not_images_are_refused_with_a_message(vision_served, tmp_path):
    text = base64.b64encode(b"just some text, not a picture").decode()
    vision_served.gated.gate.set()
    answer = requests.post(vision_served.url + "/score", json={"images": [text], "prompt": "a cat"}, timeout=30)
    assert answer.status_code == 400 and "images[0]" in answer.json()["detail"]
    assert "not an image this service can read" in answer.json()["detail"]
    answer = requests.post(vision_served.url + "/analyze", timeout=30,
                           json={"imageUrl": f"data:text/plain;base64,{text}", "prompt": "a cat"})
    assert answer.status_code == 400 and "is not an image this service can read" in answer.json()["detail"]


def test_a_full_line_names_the_flag_and_health_answers_during_a_render(flux_served):
    body = {"prompt": "a red cat", "width": TINY_SIZE, "height": TINY_SIZE, "steps": 2}
    with ThreadPoolExecutor(DEPTH + 1) as pool:
        held = [pool.submit(requests.post, flux_served.url + "/generate", json={**body, "seed": i}, timeout=120)
                for i in range(DEPTH + 1)]
        deadline = time.monotonic() + 60
        while health(flux_served)["queue"]["waiting"] < DEPTH:       # /health answers while a render runs
            assert time.monotonic() < deadline
            time.sleep(0.05)
        refused = requests.post(flux_served.url + "/generate", json={**body, "seed": 99}, timeout=30)
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
        assert "the service is busy" in refused.json()["detail"] and f"--queue-depth {DEPTH}" in refused.json()["detail"]
        flux_served.gated.gate.set()
        assert [f.result().status_code for f in held] == [200] * (DEPTH + 1)


def test_the_pack_client_waits_out_a_503_within_its_timeout(flux_served):
    from pipeline.generation import GenerationRequest
    from pipeline.generation.remote_flux import RemoteFluxClient

    body = {"prompt": "a red cat", "width": TINY_SIZE, "height": TINY_SIZE, "steps": 2}
    with ThreadPoolExecutor(DEPTH + 2) as pool:
        held = [pool.submit(requests.post, flux_served.url + "/generate", json={**body, "seed": i}, timeout=120)
                for i in range(DEPTH + 1)]
        deadline = time.monotonic() + 60
        while health(flux_served)["queue"]["waiting"] < DEPTH:       # the line is full
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client = RemoteFluxClient(flux_served.url, timeout=120, use_service_loras=False)
        waiting = pool.submit(client.generate, [GenerationRequest("a cat", seed=1, width=TINY_SIZE,
                                                                  height=TINY_SIZE, steps=2)])
        while health(flux_served)["queue"]["refused"] < 1:            # its first try was refused with a 503
            assert time.monotonic() < deadline
            time.sleep(0.05)
        flux_served.gated.gate.set()                                 # the line moves: its retry is served
        (result,) = waiting.result(timeout=120)
        assert [f.result().status_code for f in held] == [200] * (DEPTH + 1)
    assert result.image.shape == (TINY_SIZE, TINY_SIZE, 3)


@pytest.fixture
def vlm_served(fake_ollama, tmp_path):
    from pipeline.llm.client import OllamaClient
    from pipeline.llm.operations import PromptEngine
    from pipeline.llm.vision import PairwiseJudge
    from pipeline.services import vlm

    fake_ollama.add_vision_models()
    gated = Gated(PromptEngine(OllamaClient(fake_ollama.url, "qwen2.5vl:7b")), "judge_aspect")
    served = Served(vlm.create_app(PairwiseJudge(gated), allow_dirs=[str(tmp_path)], queue_depth=DEPTH,
                                   body_timeout_s=1.0), header_timeout_s=1.0)
    for name, blue in (("a.png", 200), ("b.png", 40)):
        Image.new("RGB", (32, 32), (30, 30, blue)).save(tmp_path / name)
    served.gated, served.images, served.ollama = gated, tmp_path, fake_ollama
    yield served
    gated.gate.set()
    served.stop()


def test_two_hundred_clients_on_the_vlm_service(vlm_served):
    body = json.dumps({"image_a": str(vlm_served.images / "a.png"), "image_b": str(vlm_served.images / "b.png"),
                       "prompt": "a blue square"})
    answers, line = storm(vlm_served, "/compare", [body] * CLIENTS, vlm_served.gated)
    done = assert_one_answer_each(answers, line)
    assert all(a.json()["choice"] == "A" for a in done)                  # the fake judge prefers the bluer image
    assert len(vlm_served.ollama.vision_requests) == 2 * (DEPTH + 1)     # both orders, each comparison once
    after = health(vlm_served)["queue"]
    assert after["served"] == DEPTH + 1 and after["refused"] == CLIENTS - DEPTH - 1 and after["in_hand"] == 0


def test_the_vlm_service_cuts_off_slow_heads_and_refuses_large_bodies(vlm_served):
    head = SLOW_HEAD.replace(b"/generate", b"/compare")
    received, sent = trickle(vlm_served, head)
    assert received.startswith(b"HTTP/1.1 408") and b"--header-timeout" in received and sent < len(head)
    big = json.dumps({"image_a": "x" * (2 << 20), "image_b": "y", "prompt": "p"})
    answer = requests.post(vlm_served.url + "/compare", data=big, timeout=30,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "--max-body-mb" in answer.json()["detail"]
    assert not vlm_served.ollama.vision_requests
