"""Contract tests of the PromptBeamSearch node on the fake ComfyUI (tests/comfy_fakes), fed by the pack's own nodes:
Prompt Beam Ollama (-> the fake Ollama server), Flux Generator (ComfyFluxGenerator on the fake MODEL/CLIP/VAE)
and Scorer Loader (the tiny open_clip + aesthetic head)."""
import json
import sys

import pytest
import torch
from PIL import Image

from tests.fixtures.comfy import PACK_MODULE, load_pack, run_node

load_pack()
import comfy.model_management  # noqa: E402  (the fake modules are importable once the pack is loaded)
import comfy.utils  # noqa: E402
from tests.comfy_fakes import fake_models  # noqa: E402
from tests.comfy_fakes.fake_comfy_api_io import first_real_override  # noqa: E402
from server import PromptServer  # noqa: E402

search_node = sys.modules[f"{PACK_MODULE}.nodes.search_node"]
llm_nodes = sys.modules[f"{PACK_MODULE}.nodes.llm_nodes"]
generation_nodes = sys.modules[f"{PACK_MODULE}.nodes.generation_nodes"]
scoring_nodes = sys.modules[f"{PACK_MODULE}.nodes.scoring_nodes"]
errors = sys.modules[f"{PACK_MODULE}.pipeline.errors"]
Search = search_node.PromptBeamSearch
NODE_ID = "17"
MODEL = "qwen2.5:7b-instruct"


@pytest.fixture
def inputs(comfy_base, fake_ollama, tiny_clip_dir, tiny_aesthetic_path):
    (llm,) = run_node(llm_nodes.PromptBeamOllama, base_url=fake_ollama.url, model=MODEL, temperature=-1.0, seed=0,
                      keep_alive="5m", retries=0).result
    (generator,) = run_node(
        generation_nodes.PromptBeamFluxGenerator, model=fake_models.tiny_model(), clip=fake_models.tiny_clip(),
        vae=fake_models.tiny_vae(), width=64, height=48, steps=2, guidance=3.5, sampler_name="euler",
        scheduler="simple").result
    (scorer,) = run_node(scoring_nodes.PromptBeamScorerLoader, clip_model=f"local-dir:{tiny_clip_dir}",
                         aesthetic_model=tiny_aesthetic_path, device="cpu").result
    yield dict(prompt="a red fox in the snow", llm=llm, generator=generator, scorer=scorer, beam_width=4,
               keep_top=2, iterations=3, alpha=0.7, seed=5)
    comfy.utils.set_progress_bar_global_hook(None)


def comfy_like_hook(interrupt_at=None):
    """ComfyUI's main.py hook: called on every ProgressBar update, raises if the interrupt flag is set. With
    interrupt_at, the user presses Cancel once the search's own bar reaches that many images."""
    def hook(value, total, preview, prompt_id=None, node_id=None):
        if interrupt_at is not None and node_id == NODE_ID and value >= interrupt_at:
            comfy.model_management.interrupt_current_processing(True)
        comfy.model_management.throw_exception_if_processing_interrupted()
    comfy.utils.set_progress_bar_global_hook(hook)


def search(inputs):
    """The node run as ComfyUI runs it, with its node id (the hidden UNIQUE_ID) set: the five outputs."""
    return run_node(Search, unique_id=NODE_ID, **inputs).result


def test_declares_the_contract_sockets():
    info = Search.GET_NODE_INFO_V1()
    spec = info["input"]
    required = spec["required"]
    assert list(required) == ["prompt", "llm", "generator", "scorer", "beam_width", "keep_top", "iterations",
                              "alpha", "seed"]
    assert required["prompt"][0] == "STRING" and required["prompt"][1]["multiline"] is True
    assert [required[k][0] for k in ("llm", "generator", "scorer")] == [
        "PROMPTBEAM_LLM", "PROMPTBEAM_GENERATOR", "PROMPTBEAM_SCORER"]
    assert [(required[k][0], required[k][1]["default"]) for k in ("beam_width", "keep_top", "iterations", "alpha")] \
        == [("INT", 4), ("INT", 2), ("INT", 3), ("FLOAT", 0.7)]
    assert required["seed"][1]["control_after_generate"] is True and required["seed"][1]["max"] == 2**64 - 1
    assert {"dimension_policy", "seed_policy", "patience", "target_score", "time_budget_s", "descriptiveness",
            "style", "low_vram", "control_arm", "run_name"} <= set(spec["optional"])
    assert spec["hidden"] == {"unique_id": ("UNIQUE_ID",)}
    assert info["output"] == ["IMAGE", "STRING", "IMAGE", "STRING", "INT"]
    assert info["output_name"] == ["best_image", "best_prompt", "finalists", "report", "best_seed"]
    assert info["category"].startswith("Prompt Beam/") and info["description"]
    assert info["output_node"] is False
    # Cached like any node whose inputs did not change: no fingerprint_inputs (the V1 node had no IS_CHANGED).
    assert first_real_override(Search, "fingerprint_inputs") is None


def test_registered_in_the_pack(pack):
    assert pack.NODE_CLASS_MAPPINGS["PromptBeamSearch"] is Search
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["PromptBeamSearch"] == "Prompt Beam Search"


def test_runs_a_search_with_previews_progress_and_a_record(comfy_base, inputs):
    comfy_like_hook()
    best_image, best_prompt, finalists, report_text, best_seed = search(inputs)
    report = json.loads(report_text)
    assert best_image.shape == (1, 48, 64, 3) and finalists.shape == (2, 48, 64, 3)
    assert torch.equal(finalists[0], best_image[0])
    best = next(c for c in report["candidates"] if c["id"] == report["best"])
    assert best_prompt == best["prompt"] and report["stop_reason"] == "max_iterations"
    assert best_seed == best["seed"] and isinstance(best_seed, int)
    # image settings come from the generator node
    assert (report["config"]["width"], report["config"]["height"], report["config"]["steps"]) == (64, 48, 2)
    assert report["config"]["sampler"] == "euler" and report["config"]["generator"]["backend"] == "comfyui"

    run_dir = comfy_base / "output" / "promptbeam" / report["run_id"]
    assert json.loads((run_dir / "report.json").read_text()) == report
    assert (run_dir / best["image"]).is_file()

    ours = [u for u in comfy.utils.PROGRESS_UPDATES if u[3] == NODE_ID]
    assert {total for _, total, _, _ in ours} == {12}
    values = [value for value, _, _, _ in ours]
    assert values == sorted(values) and values[-1] == 12
    previews = [preview for _, _, preview, _ in ours if preview is not None]
    assert len(previews) == 12
    kind, image, size = previews[0]
    assert kind == "PNG" and isinstance(image, Image.Image) and image.size == (64, 48)
    assert size is None          # already smaller than ComfyUI's preview size: not enlarged

    texts = [text for text, node in PromptServer.instance.progress_texts if node == NODE_ID]
    assert texts[0] == "round 1/3 · writing prompts · best –"
    assert any(t.startswith("round 2/3 · candidate 3/4 · best ") for t in texts)
    assert any(t.startswith("round 1/3 · candidate 1/4 · best –\ni0c0: total ") and "alignment" in t for t in texts)
    events = [data for event, data, _ in PromptServer.instance.sent if event == "promptbeam.candidate"]
    assert [e["candidate"]["id"] for e in events][:4] == ["i0c0", "i0c1", "i0c2", "i0c3"] and len(events) == 12
    # the editor hears where the run's page is once, before the first candidate
    kinds = [event for event, _, _ in PromptServer.instance.sent]
    runs = [data for event, data, _ in PromptServer.instance.sent if event == "promptbeam.run"]
    assert runs == [{"node": NODE_ID, "run_id": report["run_id"], "url": f"/promptbeam/runs/{report['run_id']}/"}]
    assert kinds.index("promptbeam.run") < kinds.index("promptbeam.candidate")
    assert (run_dir / "report.html").is_file()


def test_same_inputs_same_result_and_run_name(comfy_base, inputs):
    first = search(inputs | {"run_name": "fox run"})
    second = search(inputs | {"run_name": "fox run"})
    strip = lambda text: {k: v for k, v in json.loads(text).items() if k not in ("run_id", "timings")}
    assert strip(first[3]) == strip(second[3]) and first[1] == second[1]
    assert torch.equal(first[0], second[0]) and first[4] == second[4]
    run_ids = [json.loads(r[3])["run_id"] for r in (first, second)]
    assert run_ids[0] != run_ids[1] and all(r.startswith("fox-run-") for r in run_ids)
    changed = search(inputs | {"seed": 6})
    assert strip(changed[3]) != strip(first[3])


def test_interrupt_raises_comfys_exception_and_keeps_the_record(comfy_base, inputs):
    comfy_like_hook(interrupt_at=6)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        search(inputs)
    assert comfy.model_management.processing_interrupted() is False     # ComfyUI's flag is consumed
    (run_dir,) = list((comfy_base / "output" / "promptbeam").iterdir())
    report = json.loads((run_dir / "report.json").read_text())
    assert report["stop_reason"] == "interrupted" and report["status"] == "interrupted"
    # round 1 renders parent by parent: the stop lands after its first parent's two children
    assert len(report["candidates"]) == 6 and all((run_dir / c["image"]).is_file() for c in report["candidates"])


def test_interrupt_flag_set_before_start(comfy_base, inputs):
    comfy.model_management.interrupt_current_processing(True)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        search(inputs)
    assert comfy.model_management.processing_interrupted() is False
    (run_dir,) = list((comfy_base / "output" / "promptbeam").iterdir())
    assert json.loads((run_dir / "report.json").read_text())["candidates"] == []


@pytest.mark.parametrize("changes, name", [
    ({"keep_top": 5}, "keep_top"),
    ({"prompt": "  "}, "prompt"),
    ({"alpha": 1.5}, "alpha"),
    ({"llm": "not an engine"}, "llm"),
])
def test_bad_inputs_fail_before_any_work(comfy_base, inputs, fake_ollama, changes, name):
    with pytest.raises(errors.InvalidParameter) as info:
        search(inputs | changes)
    assert info.value.name == name
    assert fake_ollama.bodies() == [] and not (comfy_base / "output" / "promptbeam").exists()


def test_large_previews_are_bounded_to_comfys_preview_size(comfy_base):
    progress = search_node._ComfyProgress(NODE_ID, 1)
    progress.on_candidate(sys.modules[f"{PACK_MODULE}.pipeline.beam.types"].Candidate(
        id="i0c0", iteration=0, index=0, parent=None, dimension=None, what="w", how="h", prompt="p",
        negative=None, seed=1, status="ok", scores={"alignment": 1.0, "aesthetic": 2.0, "total": 3.0}),
        torch.rand(600, 800, 3))
    kind, image, size = progress._preview
    assert kind == "PNG" and image.size == (800, 600) and size == 512
