"""PromptBeamSearch on a real ComfyUI: queued over HTTP, previews and progress text over the websocket,
POST /interrupt, caching. The graph is what a user builds: Prompt Beam Ollama (-> the fake Ollama server on
loopback), Flux Generator on the test pack's tiny Flux + real CLIPLoader/VAELoader files, Scorer Loader on a tiny
open_clip folder, then the search feeding SaveImage and PreviewAny."""
import json
import struct
import time
from io import BytesIO

import pytest
from PIL import Image

MODEL = "qwen2.5:7b-instruct"
SEARCH = "search"
SIZE = 64


def search_graph(ollama_url, clip_dir, aesthetic_path, *, beam_width=2, keep_top=1, iterations=2, seed=3,
                 run_name="it"):
    return {
        "flux": {"class_type": "PromptBeamTestTinyFlux", "inputs": {"seed": 0}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": "tiny_clip_l.safetensors",
                                                        "type": "stable_diffusion"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_taef1.safetensors"}},
        "llm": {"class_type": "PromptBeamOllama", "inputs": {
            "base_url": ollama_url, "model": MODEL, "temperature": 0.7, "seed": 0, "keep_alive": "5m"}},
        "gen": {"class_type": "PromptBeamFluxGenerator", "inputs": {
            "model": ["flux", 0], "clip": ["clip", 0], "vae": ["vae", 0], "width": SIZE, "height": SIZE,
            "steps": 2, "guidance": 3.5, "sampler_name": "euler", "scheduler": "simple"}},
        "scorer": {"class_type": "PromptBeamScorerLoader", "inputs": {
            "clip_model": f"local-dir:{clip_dir}", "aesthetic_model": str(aesthetic_path), "device": "cpu"}},
        SEARCH: {"class_type": "PromptBeamSearch", "inputs": {
            "prompt": "a red fox in the snow", "llm": ["llm", 0], "generator": ["gen", 0], "scorer": ["scorer", 0],
            "beam_width": beam_width, "keep_top": keep_top, "iterations": iterations, "alpha": 0.7, "seed": seed,
            "run_name": run_name}},
        "save_best": {"class_type": "SaveImage", "inputs": {"images": [SEARCH, 0], "filename_prefix": "pb_best"}},
        "save_finalists": {"class_type": "SaveImage", "inputs": {"images": [SEARCH, 2], "filename_prefix": "pb_fin"}},
        "show_prompt": {"class_type": "PreviewAny", "inputs": {"source": [SEARCH, 1]}},
        "show_report": {"class_type": "PreviewAny", "inputs": {"source": [SEARCH, 3]}},
    }


def png_previews(ws):
    """Our candidate previews: PREVIEW_IMAGE frames (event 1) carrying a PNG (image type 2)."""
    frames = []
    for message in ws.binary():
        if message["event"] == 1 and struct.unpack(">I", message["data"][:4])[0] == 2:
            frames.append(Image.open(BytesIO(message["data"][4:])))
    return frames


def progress_texts(ws, node_id):
    """send_progress_text frames (event 3): 4-byte node id length, the node id, then the text."""
    texts = []
    for message in ws.binary():
        if message["event"] == 3:
            data = message["data"]
            length = struct.unpack(">I", data[:4])[0]
            if data[4:4 + length].decode() == node_id:
                texts.append(data[4 + length:].decode())
    return texts


@pytest.fixture
def graph(fake_ollama, tiny_clip_dir, tiny_aesthetic_path):
    return lambda **changes: search_graph(fake_ollama.url, tiny_clip_dir, tiny_aesthetic_path, **changes)


def test_two_round_search_with_previews(comfy_server, graph, fake_ollama):
    ws = comfy_server.websocket()
    try:
        entry = comfy_server.run(graph(), timeout=300, client_id=ws.client_id)
        assert entry["status"]["status_str"] == "success", entry["status"]
        report = json.loads(entry["outputs"]["show_report"]["text"][0])
        assert report["stop_reason"] == "max_iterations" and len(report["iterations"]) == 2
        assert len(report["candidates"]) == 4                      # N=2, then M * floor(N/M) = 2
        best = next(c for c in report["candidates"] if c["id"] == report["best"])
        assert entry["outputs"]["show_prompt"]["text"][0] == best["prompt"]
        assert report["config"]["generator"]["backend"] == "comfyui"
        run_dir = comfy_server.base / "output" / "promptbeam" / report["run_id"]
        assert json.loads((run_dir / "report.json").read_text()) == report
        (best_file,) = comfy_server.images(entry, "save_best")
        assert Image.open(best_file).size == (SIZE, SIZE)
        assert len(comfy_server.images(entry, "save_finalists")) == 1
        assert len(fake_ollama.bodies("/api/chat")) == report["llm"]["calls"]

        previews = png_previews(ws)
        assert len(previews) == 4 and all(p.size == (SIZE, SIZE) for p in previews)
        texts = progress_texts(ws, SEARCH)
        assert texts[0] == "round 1/2 · writing prompts · best –"
        assert any(t.startswith("round 2/2 · candidate 2/2 · best ") for t in texts)
        ours = [p for p in ws.events("progress") if p["node"] == SEARCH and p["max"] == 4]
        assert [p["value"] for p in ours][-1] == 4
    finally:
        ws.close()


def test_interrupt_stops_within_a_second_and_keeps_the_record(comfy_server, graph):
    ws = comfy_server.websocket()
    try:
        queued = comfy_server.post_prompt(graph(beam_width=4, keep_top=2, iterations=30, seed=9, run_name="stop"),
                                          client_id=ws.client_id)
        assert queued["status"] == 200 and not queued["node_errors"], queued["body"]
        prompt_id = queued["prompt_id"]
        ws.wait_for(lambda m: m.get("type") == "binary" and m["event"] == 1
                    and struct.unpack(">I", m["data"][:4])[0] == 2, timeout=300)   # a candidate has finished
        asked = time.monotonic()
        comfy_server.interrupt()
        ws.wait_for(lambda m: m.get("type") == "execution_interrupted" and m["data"]["prompt_id"] == prompt_id,
                    timeout=30)
        elapsed = time.monotonic() - asked
        print(f"interrupt took effect in {elapsed:.3f} s")
        assert elapsed < 1.0, f"the interrupt took {elapsed:.2f} s"
        entry = comfy_server.wait_history(prompt_id)
        assert entry["status"]["status_str"] == "error" and not entry["status"]["completed"]
        (run_dir,) = [p for p in (comfy_server.base / "output" / "promptbeam").iterdir() if p.name.startswith("stop-")]
        report = json.loads((run_dir / "report.json").read_text())
        assert report["stop_reason"] == "interrupted" and report["status"] == "interrupted"
        assert report["candidates"] and all((run_dir / c["image"]).is_file()
                                            for c in report["candidates"] if c["status"] == "ok")
    finally:
        ws.close()


def test_same_inputs_are_cached_a_new_seed_reruns(comfy_server, graph):
    runs = comfy_server.base / "output" / "promptbeam"
    first = comfy_server.run(graph(run_name="cache", seed=21), timeout=300)
    count = len([p for p in runs.iterdir() if p.name.startswith("cache-")])
    ws = comfy_server.websocket()
    try:
        again = comfy_server.post_prompt(graph(run_name="cache", seed=21), client_id=ws.client_id)
        comfy_server.wait_history(again["prompt_id"], timeout=300)
        cached = ws.wait_for(lambda m: m.get("type") == "execution_cached"
                             and m["data"]["prompt_id"] == again["prompt_id"])
        assert SEARCH in cached["data"]["nodes"]
    finally:
        ws.close()
    assert len([p for p in runs.iterdir() if p.name.startswith("cache-")]) == count
    reseeded = comfy_server.run(graph(run_name="cache", seed=22), timeout=300)
    assert len([p for p in runs.iterdir() if p.name.startswith("cache-")]) == count + 1
    assert json.loads(reseeded["outputs"]["show_report"]["text"][0])["config"]["seed"] == 22
    assert json.loads(first["outputs"]["show_report"]["text"][0])["config"]["seed"] == 21
