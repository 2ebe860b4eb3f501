"""Scoring nodes on the fake ComfyUI: contracts, the aesthetic model folder, the scorer cache, previews, selection."""
import base64
import io
import json
import shutil
import sys

import pytest
import torch
from PIL import Image

from pipeline.llm.client import OllamaClient
from tests.fixtures.comfy import PACK_MODULE, load_pack, run_node
from tests.fixtures.ollama import DEFAULT_MODELS

load_pack()
# The pack's own classes: ComfyUI imports it as a package of its own, apart from the test's `pipeline`.
errors = sys.modules[f"{PACK_MODULE}.pipeline.errors"]
InvalidParameter, ModelNotFound = errors.InvalidParameter, errors.ModelNotFound

COLOURS = [(255, 0, 0), (0, 0, 255), (255, 128, 0)]


def load(mappings, clip_model, aesthetic_model, device, **optional):
    return run_node(mappings["PromptBeamScorerLoader"], clip_model=clip_model, aesthetic_model=aesthetic_model,
                    device=device, **optional).result


def score(mappings, scorer, images, prompt, **optional):
    """The Score node's io.NodeOutput: `.result` (alignment, aesthetic, scores) and `.ui` (previews, text)."""
    return run_node(mappings["PromptBeamScore"], scorer=scorer, images=images, prompt=prompt, **optional)


def select(mappings, images, scores, top_k):
    return run_node(mappings["PromptBeamSelectBest"], images=images, scores=scores, top_k=top_k).result


def solid_batch(colours=COLOURS, size=(64, 48)):
    return torch.stack([torch.tensor(c, dtype=torch.float32).div(255).expand(size[1], size[0], 3) for c in colours])


@pytest.fixture
def nodes(pack, comfy_base):
    module = sys.modules[pack.__name__ + ".nodes.scoring_nodes"]
    module.release_scorers()
    yield pack.NODE_CLASS_MAPPINGS, module
    module.release_scorers()


@pytest.fixture
def head_in_folder(comfy_base, tiny_aesthetic_path):
    folder = comfy_base / "models" / "aesthetic"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_aesthetic_path, folder / "tiny-head.pth")
    return "tiny-head.pth"


@pytest.fixture
def scorer(nodes, tiny_clip_dir, head_in_folder):
    mappings, _ = nodes
    return load(mappings, f"local-dir:{tiny_clip_dir}", head_in_folder, "cpu")[0]


def test_contract(pack):
    m = pack.NODE_CLASS_MAPPINGS
    loader, score, select = m["PromptBeamScorerLoader"], m["PromptBeamScore"], m["PromptBeamSelectBest"]
    required = loader.INPUT_TYPES()["required"]
    assert required["clip_model"][0] == "STRING" and required["aesthetic_model"][0] == "STRING"
    assert required["device"][0] == ["auto", "cuda", "cpu"]
    assert loader.GET_NODE_INFO_V1()["output"] == ["PROMPTBEAM_SCORER"]
    assert set(score.INPUT_TYPES()["required"]) == {"scorer", "images", "prompt"}
    assert score.INPUT_TYPES()["optional"]["alpha"][1]["default"] == 0.7
    info = score.GET_NODE_INFO_V1()
    assert (info["output"], info["output_name"]) == (["FLOAT", "FLOAT", "STRING"], ["alignment", "aesthetic", "scores"])
    assert info["output_is_list"] == [True, True, False] and info["output_node"] is True
    assert list(select.INPUT_TYPES()["required"]) == ["images", "scores", "top_k"]
    assert select.GET_NODE_INFO_V1()["output"] == ["IMAGE", "STRING"]
    for cls in (loader, score, select):
        info = cls.GET_NODE_INFO_V1()
        assert info["category"].startswith("Prompt Beam/") and info["description"]
    for name in ("PromptBeamScorerLoader", "PromptBeamScore", "PromptBeamSelectBest"):
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[name].startswith("Prompt Beam")


def test_aesthetic_folder_is_registered(nodes, comfy_base, head_in_folder):
    import folder_paths
    _, module = nodes
    assert str(comfy_base / "models" / "aesthetic") in module.aesthetic_folders()
    assert head_in_folder in folder_paths.get_filename_list("aesthetic")


def test_loader_caches_by_settings(nodes, scorer, tiny_clip_dir, head_in_folder, comfy_base):
    mappings, module = nodes
    assert load(mappings, f"local-dir:{tiny_clip_dir}", head_in_folder, "cpu")[0] is scorer
    by_path = load(mappings, f"local-dir:{tiny_clip_dir}", str(comfy_base / "models" / "aesthetic" / head_in_folder),
                   "cpu")[0]
    assert by_path is scorer
    other = load(mappings, f"local-dir:{tiny_clip_dir}", head_in_folder, "cpu", dtype="bf16")[0]
    assert other is not scorer and len(module._SCORERS) == 2


def test_loader_missing_head_names_the_folder(nodes, tiny_clip_dir, comfy_base):
    mappings, _ = nodes
    with pytest.raises(ModelNotFound) as caught:
        load(mappings, f"local-dir:{tiny_clip_dir}", "missing-head.pth", "cpu")
    folder = comfy_base / "models" / "aesthetic"
    assert f"not found: {folder / 'missing-head.pth'}" in str(caught.value)
    assert f"Put the file in {folder}" in str(caught.value)


def test_score_node_outputs_and_previews(nodes, scorer, comfy_base):
    mappings, _ = nodes
    images = solid_batch()
    out = score(mappings, scorer, images, "a red fox", alpha=0.5)
    alignment, aesthetic, scores_json = out.result
    expected = scorer.score(images, "a red fox")
    assert alignment == pytest.approx([s.alignment for s in expected])
    assert aesthetic == pytest.approx([s.aesthetic for s in expected])
    report = json.loads(scores_json)
    totals = [s.total(0.5) for s in expected]
    assert [e["total"] for e in report["images"]] == pytest.approx(totals)
    assert report["best"] == max(range(3), key=lambda i: totals[i])
    assert report["total"] == pytest.approx(max(totals)) and report["alpha"] == 0.5
    previews = out.ui["images"]
    assert len(previews) == 3 and all(p["type"] == "temp" and p["subfolder"] == "" for p in previews)
    for preview, colour in zip(previews, COLOURS):
        with Image.open(comfy_base / "temp" / preview["filename"]) as png:
            assert png.size == (64, 48) and png.getpixel((5, 5)) == colour
    assert "(best)" in out.ui["text"][0].splitlines()[report["best"]]


def test_score_node_rejects_bad_inputs(nodes, scorer):
    mappings, _ = nodes
    with pytest.raises(InvalidParameter, match="alpha"):
        score(mappings, scorer, solid_batch(), "a fox", alpha=1.5)
    with pytest.raises(InvalidParameter, match="expects the output of a Prompt Beam Scorer Loader"):
        score(mappings, "not a scorer", solid_batch(), "a fox")
    with pytest.raises(InvalidParameter, match="the batch is empty"):
        score(mappings, scorer, torch.zeros(0, 8, 8, 3), "a fox")
    with pytest.raises(InvalidParameter, match="^prompt: is empty"):
        score(mappings, scorer, solid_batch(), "  ")


def test_select_best(nodes, scorer):
    mappings, _ = nodes
    images = solid_batch()
    scores_json = score(mappings, scorer, images, "a red fox").result[2]
    totals = [e["total"] for e in json.loads(scores_json)["images"]]
    order = sorted(range(3), key=lambda i: -totals[i])
    best, indices = select(mappings, images, scores_json, 2)
    assert json.loads(indices) == order[:2]
    assert torch.equal(best, images[order[:2]])
    everything, indices = select(mappings, images, scores_json, 10)
    assert json.loads(indices) == order and everything.shape[0] == 3
    assert json.loads(select(mappings, images, json.dumps([1.0, 3.0, 3.0]), 2)[1]) == [1, 2]   # ties: batch order


@pytest.mark.parametrize("scores, words", [
    ("not json", "is not JSON"),
    (json.dumps({"images": [{"total": 1}, {"total": 2}]}), "has 2 entries but the batch has 3 images"),
    (json.dumps({"images": [{"note": 1}, {"total": 2}, {"total": 3}]}), "entry 0 has no total"),
    (json.dumps({"best": 0}), "an object with an 'images' list"),
])
def test_select_best_bad_scores(nodes, scores, words):
    mappings, _ = nodes
    with pytest.raises(InvalidParameter) as caught:
        select(mappings, solid_batch(), scores, 1)
    assert caught.value.name == "scores" and words in str(caught.value)


def test_after_use_unload_frees_and_reloads(nodes, tiny_clip_dir, head_in_folder):
    mappings, _ = nodes
    scorer = load(mappings, f"local-dir:{tiny_clip_dir}", head_in_folder, "cpu", after_use="unload")[0]
    assert scorer.describe()["loaded"] is False
    first = score(mappings, scorer, solid_batch(), "a red fox").result[0]
    assert scorer.describe()["loaded"] is False
    again = score(mappings, scorer, solid_batch(), "a red fox").result[0]
    assert first == again
    kept = load(mappings, f"local-dir:{tiny_clip_dir}", head_in_folder, "cpu")[0]
    assert kept is scorer and kept.after_use == "keep"
    score(mappings, kept, solid_batch(), "a red fox")
    assert kept.describe()["loaded"] is True


def test_vision_llm_captions(nodes, scorer, fake_ollama):
    mappings, _ = nodes
    client = OllamaClient(fake_ollama.url, DEFAULT_MODELS[0])
    images = solid_batch(size=(1024, 600))
    out = score(mappings, scorer, images, "a red fox", vision_llm=client)
    report = json.loads(out.result[2])
    bodies = fake_ollama.bodies("/api/chat")
    assert len(bodies) == 3
    for body, entry, colour in zip(bodies, report["images"], COLOURS):
        message = body["messages"][0]
        assert "a red fox" in message["content"]
        with Image.open(io.BytesIO(base64.b64decode(message["images"][0]))) as sent:
            assert sent.format == "PNG" and max(sent.size) == 512 and sent.getpixel((3, 3)) == colour
        assert entry["caption"] and isinstance(entry["caption"], str)


def test_loader_scorers_input_ranks_the_total_by_pickscore(nodes, tiny_clip_dir, head_in_folder, tiny_pickscore_dir,
                                                           scorer):
    mappings, module = nodes
    assert mappings["PromptBeamScorerLoader"].INPUT_TYPES()["optional"]["scorers"][0] == "STRING"
    ranked = load(mappings, f"local-dir:{tiny_clip_dir}", head_in_folder, "cpu",
                  scorers=f"pickscore={tiny_pickscore_dir}")[0]
    assert ranked is not scorer and ranked.ranked_by == ("pickscore",) and len(module._SCORERS) == 2
    images = solid_batch()
    alignment, _, scores_json = score(mappings, ranked, images, "a red fox").result
    entries = json.loads(scores_json)["images"]
    assert alignment == pytest.approx([s.alignment for s in scorer.score(images, "a red fox")])
    assert [e["total"] for e in entries] == pytest.approx([e["pickscore"] for e in entries])
    # The same verdict as `search --scorer` and `doctor --scorer`, from the scoring part's resolver.
    sources = sys.modules[f"{PACK_MODULE}.pipeline.scoring.sources"]
    for spec in ("imagereward", f"pickscore={tiny_pickscore_dir}/nothing"):
        with pytest.raises(InvalidParameter) as refused:
            load(mappings, f"local-dir:{tiny_clip_dir}", head_in_folder, "cpu", scorers=spec)
        assert str(refused.value) == "scorers: " + sources.resolve_scorer(spec).message()
