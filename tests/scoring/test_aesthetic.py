"""LAION aesthetic head: checkpoint layouts, shape checks, finding and downloading the file (real loopback HTTP)."""
import hashlib
import http.server
import importlib.util
import os
import threading

import pytest
import torch

from pipeline.scoring import aesthetic
from pipeline.scoring.aesthetic import (LAION_FILENAME, LAION_SHA256, LAION_URL, download_checkpoint, load_laion_head,
                                        resolve_aesthetic_path)
from pipeline.errors import InvalidParameter, ModelNotFound
from pipeline.scoring.scorer import load_scorer
from tests.fixtures.servers import free_port
from tests.fixtures.tiny_clip import build_tiny_aesthetic, reference_laion_head


def embeddings(n=6, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(n, 768)
    return x / x.norm(dim=-1, keepdim=True)


def test_head_equals_reference_forward(tiny_aesthetic_path):
    head = load_laion_head(tiny_aesthetic_path)
    x = embeddings()
    with torch.no_grad():
        assert torch.allclose(head(x), reference_laion_head(tiny_aesthetic_path)(x).squeeze(-1), atol=1e-6)
    assert not head.training and head.input_dim == 768


@pytest.mark.parametrize("name, wrapper", [("wrapped_sd.pth", "state_dict"), ("wrapped_model.pth", "model"),
                                           ("plain.safetensors", None)])
def test_wrapped_and_safetensors_checkpoints_load_the_same(tmp_path, tiny_aesthetic_path, name, wrapper):
    path = build_tiny_aesthetic(str(tmp_path / name), wrapper=wrapper)  # same seed as the fixture: same weights
    x = embeddings()
    with torch.no_grad():
        assert torch.allclose(load_laion_head(path)(x), load_laion_head(tiny_aesthetic_path)(x))


def test_module_prefixed_keys_load(tmp_path, tiny_aesthetic_path):
    state = torch.load(tiny_aesthetic_path, weights_only=True)
    path = str(tmp_path / "dataparallel.pth")
    torch.save({"module." + key: value for key, value in state.items()}, path)
    x = embeddings()
    with torch.no_grad():
        assert torch.allclose(load_laion_head(path)(x), load_laion_head(tiny_aesthetic_path)(x))


def test_head_for_another_clip_says_which_model_it_fits(tmp_path, tiny_clip_dir):
    path = build_tiny_aesthetic(str(tmp_path / "vit-h-head.pth"), input_dim=1024)
    with pytest.raises(InvalidParameter) as caught:
        load_scorer(f"local-dir:{tiny_clip_dir}", aesthetic_model=path, device="cpu")
    message = str(caught.value)
    assert caught.value.name == "aesthetic_model"
    assert "expects 1024-d embeddings (ViT-H-14)" in message
    assert "gives 768-d embeddings (ViT-L-14)" in message


def test_not_a_laion_head(tmp_path):
    path = str(tmp_path / "other.pth")
    torch.save({"fc.weight": torch.zeros(1, 768), "fc.bias": torch.zeros(1)}, path)
    with pytest.raises(ModelNotFound, match=r"not a LAION improved-aesthetic-predictor head: missing layers\.0"):
        load_laion_head(path)
    bad_hidden = str(tmp_path / "bad_hidden.pth")
    state = torch.load(build_tiny_aesthetic(str(tmp_path / "ok.pth")), weights_only=True)
    state["layers.2.weight"] = torch.zeros(256, 1024)
    torch.save(state, bad_hidden)
    with pytest.raises(ModelNotFound, match=r"layers\.2\.weight has shape \[256, 1024\], expected \[128, 1024\]"):
        load_laion_head(bad_hidden)


def test_html_instead_of_weights(tmp_path):
    path = tmp_path / LAION_FILENAME
    path.write_text("<!DOCTYPE html><html><body>GitHub</body></html>")
    with pytest.raises(ModelNotFound, match="is an HTML page, not weights: download it again from the raw URL"):
        load_laion_head(str(path))


def test_missing_checkpoint_names_path_and_folder(tmp_path, tiny_clip_dir):
    folder = tmp_path / "models" / "aesthetic"
    with pytest.raises(ModelNotFound) as caught:
        load_scorer(f"local-dir:{tiny_clip_dir}", aesthetic_model="my-head.pth", device="cpu",
                    aesthetic_dirs=[str(folder)])
    message = str(caught.value)
    assert f"aesthetic checkpoint not found: {folder / 'my-head.pth'}" in message
    assert f"Put the file in {folder}" in message
    with pytest.raises(ModelNotFound, match=f"not found: {tmp_path / 'nowhere' / 'x.pth'}"):
        resolve_aesthetic_path(str(tmp_path / "nowhere" / "x.pth"), [str(folder)])


def test_file_found_by_name_in_folders(tmp_path, tiny_aesthetic_path):
    first, second = tmp_path / "a", tmp_path / "b"
    second.mkdir()
    target = second / "sub" / "head.pth"
    target.parent.mkdir()
    target.write_bytes(open(tiny_aesthetic_path, "rb").read())
    assert resolve_aesthetic_path("sub/head.pth", [str(first), str(second)]) == str(target)


def test_known_laion_checkpoint_identity():
    assert LAION_URL.endswith("/" + LAION_FILENAME)
    assert len(LAION_SHA256) == 64 and int(LAION_SHA256, 16)


class _FileServer:
    """Serves one payload on loopback and counts the requests."""

    def __init__(self, payload: bytes):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.requests = 0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{LAION_FILENAME}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served_head(tiny_aesthetic_path):
    payload = open(tiny_aesthetic_path, "rb").read()
    server = _FileServer(payload)
    yield server, hashlib.sha256(payload).hexdigest()
    server.close()


def test_default_head_is_downloaded_once_and_verified(tmp_path, served_head, tiny_aesthetic_path):
    server, digest = served_head
    folder = tmp_path / "models" / "aesthetic"
    path = resolve_aesthetic_path(None, [str(folder)], url=server.url, sha256=digest)
    assert path == str(folder / LAION_FILENAME)
    assert resolve_aesthetic_path("laion", [str(folder)], url=server.url, sha256=digest) == path
    assert server.requests == 1
    x = embeddings()
    with torch.no_grad():
        assert torch.allclose(load_laion_head(path)(x), load_laion_head(tiny_aesthetic_path)(x))


def test_download_with_wrong_checksum_keeps_nothing(tmp_path, served_head):
    server, digest = served_head
    target = tmp_path / LAION_FILENAME
    with pytest.raises(ModelNotFound) as caught:
        download_checkpoint(server.url, str(target), sha256=LAION_SHA256)
    assert f"has sha256 {digest}, expected {LAION_SHA256}; it was not saved" in str(caught.value)
    assert os.listdir(tmp_path) == []


def test_download_without_known_checksum_records_it(tmp_path, served_head):
    server, digest = served_head
    target = tmp_path / "custom-head.pth"
    download_checkpoint(server.url, str(target), sha256=None)
    assert (tmp_path / "custom-head.pth.sha256").read_text().split()[0] == digest


def test_download_failure_says_where_to_put_the_file(tmp_path):
    folder = tmp_path / "models" / "aesthetic"
    with pytest.raises(ModelNotFound) as caught:
        resolve_aesthetic_path(None, [str(folder)], url=f"http://127.0.0.1:{free_port()}/{LAION_FILENAME}")
    assert "could not be downloaded" in str(caught.value)
    assert f"put it in {folder}" in str(caught.value)
    assert not (folder / (LAION_FILENAME + ".part")).exists()


def test_download_can_be_turned_off(tmp_path):
    with pytest.raises(ModelNotFound, match="aesthetic checkpoint not found"):
        resolve_aesthetic_path(None, [str(tmp_path)], allow_download=False)


@pytest.mark.skipif(importlib.util.find_spec("aesthetic_predictor_v2_5") is not None,
                    reason="aesthetic-predictor-v2-5 is installed")
def test_v25_without_its_package_says_how_to_install(tiny_clip_dir):
    with pytest.raises(ModelNotFound, match="pip install aesthetic-predictor-v2-5"):
        load_scorer(f"local-dir:{tiny_clip_dir}", aesthetic_model="v2.5", device="cpu")


def test_default_folder_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMPTBEAM_MODELS_DIR", str(tmp_path))
    assert aesthetic.default_aesthetic_dir() == str(tmp_path / "aesthetic")
