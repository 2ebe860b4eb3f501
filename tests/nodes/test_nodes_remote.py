"""Contract tests of Prompt Beam Remote Flux / Remote Scorer on the fake ComfyUI (tests/comfy_fakes), against the
real services on loopback (tiny models): they plug into Prompt Beam Generate, Score and Search like the local
nodes."""
import json
import sys

import pytest
import torch

from tests.fixtures.comfy import PACK_MODULE, load_pack, run_node
from tests.fixtures.servers import free_port
from tests.fixtures.tiny_flux import tiny_request
from tests.services.test_vision_service_compat import vision  # noqa: F401  (the vision service fixture)

load_pack()
import comfy.utils  # noqa: E402

remote_nodes = sys.modules[f"{PACK_MODULE}.nodes.remote_nodes"]
generation_nodes = sys.modules[f"{PACK_MODULE}.nodes.generation_nodes"]
scoring_nodes = sys.modules[f"{PACK_MODULE}.nodes.scoring_nodes"]
search_node = sys.modules[f"{PACK_MODULE}.nodes.search_node"]
llm_nodes = sys.modules[f"{PACK_MODULE}.nodes.llm_nodes"]
errors = sys.modules[f"{PACK_MODULE}.pipeline.errors"]
RemoteFlux, RemoteScorer = remote_nodes.PromptBeamRemoteFlux, remote_nodes.PromptBeamRemoteScorer
SIZE = dict(width=64, height=64, steps=2, guidance=3.5, scheduler="simple")


def connect_flux(url, **settings):
    return run_node(RemoteFlux, url=url, **settings).result


def connect_scorer(url):
    return run_node(RemoteScorer, url=url).result


def generate(generator, prompt, seed):
    return run_node(generation_nodes.PromptBeamGenerate, generator=generator, prompt=prompt, seed=seed).result


def score(scorer, images, prompt):
    return run_node(scoring_nodes.PromptBeamScore, scorer=scorer, images=images, prompt=prompt).result


def test_declared_sockets_and_registration(pack):
    assert pack.NODE_CLASS_MAPPINGS["PromptBeamRemoteFlux"] is RemoteFlux
    assert pack.NODE_CLASS_MAPPINGS["PromptBeamRemoteScorer"] is RemoteScorer
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["PromptBeamRemoteFlux"] == "Prompt Beam Remote Flux"
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["PromptBeamRemoteScorer"] == "Prompt Beam Remote Scorer"
    assert RemoteFlux.GET_NODE_INFO_V1()["output"] == ["PROMPTBEAM_GENERATOR"]
    assert RemoteScorer.GET_NODE_INFO_V1()["output"] == ["PROMPTBEAM_SCORER"]
    flux = RemoteFlux.INPUT_TYPES()
    assert list(flux["required"]) == ["url", "width", "height", "steps", "guidance", "scheduler"]
    assert flux["required"]["url"] == ("STRING", {**flux["required"]["url"][1], "default": "http://localhost:8001"})
    assert flux["optional"]["loras"][0] == "PROMPTBEAM_LORAS"
    assert RemoteScorer.INPUT_TYPES()["required"]["url"][1]["default"] == "http://localhost:8002"
    for node in (RemoteFlux, RemoteScorer):
        info = node.GET_NODE_INFO_V1()
        assert info["category"].startswith("Prompt Beam/") and info["description"]


def test_url_defaults_follow_the_seed_environment(monkeypatch):
    monkeypatch.setenv("FLUX_API_URL", "http://gpu-box:8001")
    monkeypatch.setenv("LOCAL_VISION_API_URL", "http://gpu-box:8002")
    assert RemoteFlux.INPUT_TYPES()["required"]["url"][1]["default"] == "http://gpu-box:8001"
    assert RemoteScorer.INPUT_TYPES()["required"]["url"][1]["default"] == "http://gpu-box:8002"


def test_remote_flux_renders_through_the_generate_node(comfy_base, flux_service, tiny_generator):
    (generator,) = connect_flux(flux_service.url, **SIZE)
    (image,) = generate(generator, "a red cat on a wooden table", 4)
    assert image.shape == (1, 64, 64, 3)
    local = tiny_generator.generate([tiny_request(seed=4)])[0].image
    assert torch.allclose(image[0], local, atol=1e-4)            # f32 transfer: the service's tensor itself
    (png_generator,) = connect_flux(flux_service.url, **SIZE, transfer="png")
    (png_image,) = generate(png_generator, "a red cat on a wooden table", 4)
    assert torch.allclose(png_image[0], local, atol=0.6 / 255) and not torch.equal(png_image[0], image[0])


def test_remote_scorer_gives_the_scorer_loader_numbers_in_the_score_node(comfy_base, vision,  # noqa: F811
                                                                         tiny_clip_dir, tiny_aesthetic_path):
    (remote,) = connect_scorer(vision.url)
    (local,) = run_node(scoring_nodes.PromptBeamScorerLoader, clip_model=f"local-dir:{tiny_clip_dir}",
                        aesthetic_model=tiny_aesthetic_path, device="cpu").result
    images = torch.rand(2, 48, 64, 3, generator=torch.Generator().manual_seed(1))
    got = score(remote, images, "a red fox")
    want = score(local, images, "a red fox")
    assert got[0] == pytest.approx(want[0], abs=1e-5) and got[1] == pytest.approx(want[1], abs=1e-5)
    assert json.loads(got[2])["best"] == json.loads(want[2])["best"]


def test_search_node_runs_on_both_remote_nodes(comfy_base, flux_service, vision, fake_ollama):  # noqa: F811
    (llm,) = run_node(llm_nodes.PromptBeamOllama, base_url=fake_ollama.url, model="qwen2.5:7b-instruct",
                      temperature=-1.0, seed=0, keep_alive="5m", retries=0).result
    (generator,) = connect_flux(flux_service.url, **SIZE)
    (scorer,) = connect_scorer(vision.url)
    try:
        best_image, best_prompt, finalists, report_text, _seed = run_node(
            search_node.PromptBeamSearch, unique_id="9", prompt="a red fox in the snow", llm=llm,
            generator=generator, scorer=scorer, beam_width=3, keep_top=2, iterations=2, alpha=0.7, seed=5).result
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    report = json.loads(report_text)
    assert best_image.shape == (1, 64, 64, 3) and finalists.shape[0] == 2
    assert report["status"] == "finished" and all(c["status"] == "ok" for c in report["candidates"])
    assert (report["config"]["width"], report["config"]["height"], report["config"]["steps"]) == (64, 64, 2)
    assert report["config"]["generator"]["backend"] == "remote-flux"
    assert report["config"]["scorer"]["backend"] == "remote-vision"


def test_a_service_that_is_down_fails_the_node_with_its_url(comfy_base):
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(errors.GenerationFailed, match="python -m pipeline.services.flux"):
        connect_flux(down, **SIZE)
    with pytest.raises(errors.ScoringFailed, match="python -m pipeline.services.vision"):
        connect_scorer(down)
    with pytest.raises(errors.InvalidParameter, match="must be an http"):
        connect_flux("localhost:8001", **SIZE)
