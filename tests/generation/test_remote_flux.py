"""RemoteFluxClient against the real Flux service (subprocess) and, for faults the service cannot be made to
produce on demand (5xx, hangs, non-JSON), a small HTTP server on loopback."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from pipeline.config import LoraSpec, Settings
from pipeline.errors import GenerationFailed, Interrupted, InvalidParameter
from pipeline.generation.protocol import Generator
from pipeline.generation.remote_flux import RemoteFluxClient
from tests.fixtures.ollama import free_port
from tests.fixtures.tiny_flux import tiny_request as req


def test_health(flux_service):
    client = RemoteFluxClient(flux_service.url)
    assert isinstance(client, Generator)
    assert client.health()["status"] == "ok"


def test_generate_reads_the_png_and_matches_local_rendering(flux_service, tiny_generator):
    client = RemoteFluxClient(flux_service.url, timeout=60)
    steps = []
    wide, tall = client.generate([req(width=96, height=48, seed=4), req(width=48, height=80, seed=4)],
                                 on_step=lambda done, total: steps.append((done, total)))
    assert wide.image.shape == (48, 96, 3) and tall.image.shape == (80, 48, 3)
    assert wide.seed == 4 and wide.metadata["localPath"].endswith(".png") and wide.seconds > 0
    assert steps == [(2, 4), (4, 4)]
    # Same model, same seed, rendered in another process: equal up to the PNG's 8-bit rounding.
    local = tiny_generator.generate([req(width=96, height=48, seed=4)])[0].image
    assert torch.allclose(wide.image, local, atol=1.5 / 255)


def test_loras_are_sent_with_every_request(flux_service):
    client = RemoteFluxClient(flux_service.url, loras=[LoraSpec("tiny_style", trigger="tnystyle", weight=0.5)])
    result = client.generate([req()])[0]
    assert result.prompt == "tnystyle, a red cat on a wooden table"
    assert result.metadata["loras"][0]["weight"] == 0.5
    assert client.describe()["loras"][0]["path"] == "tiny_style"


def test_service_down_names_the_url_and_how_to_start_it():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(GenerationFailed) as info:
        RemoteFluxClient(url).generate([req()])
    message = str(info.value)
    assert url in message and "not reachable" in message
    assert "python -m pipeline.services.flux" in message


def test_422_becomes_invalid_parameter_with_the_field(flux_service):
    client = RemoteFluxClient(flux_service.url)
    with pytest.raises(InvalidParameter) as info:
        client.generate([req(steps=500)])
    assert info.value.name == "steps" and flux_service.url in str(info.value) and "200" in str(info.value)
    with pytest.raises(InvalidParameter) as info:
        RemoteFluxClient(flux_service.url, loras=[LoraSpec("missing_style")]).generate([req()])
    assert info.value.name == "loras" and "missing_style" in str(info.value)


def test_bad_request_is_refused_before_sending(flux_service):
    with pytest.raises(InvalidParameter, match="width"):
        RemoteFluxClient(flux_service.url).generate([req(), req(width=30)])


def test_should_stop_between_images(flux_service):
    client = RemoteFluxClient(flux_service.url)
    done = []
    with pytest.raises(Interrupted, match="after 1/3"):
        client.generate([req(seed=1), req(seed=2), req(seed=3)], on_step=lambda d, t: done.append(d),
                        should_stop=lambda: len(done) >= 1)


def test_from_settings(flux_service):
    settings = Settings.from_env({"FLUX_API_URL": flux_service.url + "/",
                                  "FLUX_LORAS": json.dumps([{"path": "tiny_style", "weight": 0.25}])})
    client = RemoteFluxClient.from_settings(settings, timeout=30)
    assert client.base_url == flux_service.url and client.timeout == 30
    assert client.loras == [LoraSpec("tiny_style", "", 0.25)]
    with pytest.raises(InvalidParameter, match="FLUX_API_URL"):
        RemoteFluxClient("localhost:8001")


class _Faulty(BaseHTTPRequestHandler):
    """Answers /generate the way the server's `mode` says: a 500, an HTML page, or a hang."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        mode = self.server.mode
        if mode == "hang":
            self.server.released.wait(60)    # answers only after the test saw the client give up
        status, body = {"500": (500, json.dumps({"detail": "CUDA error: device-side assert triggered"})),
                        "html": (200, "<html>proxy login</html>"),
                        "hang": (200, "{}")}[mode]
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())
        except (BrokenPipeError, ConnectionResetError):   # the client gave up (the timeout test)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def faulty_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Faulty)
    server.daemon_threads = True
    server.released = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.released.set()
    server.shutdown()
    server.server_close()


def test_server_error_carries_the_service_message(faulty_server):
    faulty_server.mode = "500"
    url = f"http://127.0.0.1:{faulty_server.server_address[1]}"
    with pytest.raises(GenerationFailed) as info:
        RemoteFluxClient(url).generate([req()])
    assert "answered 500" in str(info.value) and "device-side assert" in str(info.value)


def test_non_json_answer_is_reported(faulty_server):
    faulty_server.mode = "html"
    url = f"http://127.0.0.1:{faulty_server.server_address[1]}"
    with pytest.raises(GenerationFailed, match="non-JSON"):
        RemoteFluxClient(url).generate([req()])


def test_timeout_is_reported(faulty_server):
    faulty_server.mode = "hang"
    url = f"http://127.0.0.1:{faulty_server.server_address[1]}"
    with pytest.raises(GenerationFailed, match="did not answer POST /generate within 0.5 s"):
        RemoteFluxClient(url, timeout=0.5).generate([req()])
    faulty_server.released.set()
