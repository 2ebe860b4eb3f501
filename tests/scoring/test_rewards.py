"""PickScore and HPSv2 on tiny random models in their published layouts, checked against a direct computation with
the libraries alone (transformers' towers and projections; open_clip's own PIL transform), plus the spec rules, the
resolution verdicts and the combined total."""
from __future__ import annotations

import math
import shutil

import pytest
import torch
from PIL import Image

from pipeline.errors import InvalidParameter, ModelNotFound
from pipeline.scoring import sources, specs
from pipeline.scoring.scorer_set import ScorerSet, load_reward_model, with_rewards
from tests.fixtures.tiny_rewards import build_tiny_hps, build_tiny_pickscore

CPU = torch.device("cpu")
COLOURS = [(230, 30, 30), (20, 40, 220), (250, 200, 0)]
LONG_PROMPT = " ".join(f"a small red fox number {i} sitting on a mossy stone" for i in range(40))   # > 300 tokens


def solid(rgb, size=(96, 64)) -> Image.Image:
    """Solid colours make the expected embedding independent of the resize filter; a non-square size makes the
    HPS padding (longest side) differ from a centre crop."""
    return Image.new("RGB", size, rgb)


def as_tensor(pictures) -> torch.Tensor:
    import numpy as np

    return torch.stack([torch.from_numpy(np.asarray(p, dtype="float32") / 255.0) for p in pictures])


@pytest.fixture(scope="module")
def pick(tiny_pickscore_dir):
    return load_reward_model(specs.parse_scorer_spec(f"pickscore={tiny_pickscore_dir}"), CPU, torch.float32)


@pytest.fixture(scope="module")
def hps(tiny_hps):
    weights, arch = tiny_hps
    return load_reward_model(specs.parse_scorer_spec(f"hpsv2={weights}"), CPU, torch.float32, hps_arch=arch)


# ---- PickScore ---------------------------------------------------------------------------------------------------

def direct_pickscore(folder, pictures, prompt) -> torch.Tensor:
    """logit_scale.exp() * cos from the towers and projections themselves (not get_*_features)."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(folder).eval()
    pixels = CLIPImageProcessor.from_pretrained(folder)(images=pictures, return_tensors="pt")["pixel_values"]
    tokens = CLIPTokenizer.from_pretrained(folder)([prompt], truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        text = model.text_projection(model.text_model(input_ids=tokens["input_ids"]).pooler_output)
    cos = torch.nn.functional.cosine_similarity(image, text, dim=-1)
    return model.logit_scale.exp() * cos


def test_pickscore_matches_the_direct_computation(pick, tiny_pickscore_dir):
    pictures = [solid(c) for c in COLOURS]
    got = pick.score(as_tensor(pictures), "three red apples on a plate")
    expected = direct_pickscore(tiny_pickscore_dir, pictures, "three red apples on a plate")
    assert torch.allclose(got, expected, atol=1e-4), (got, expected)
    assert got.shape == (3,) and len(set(got.tolist())) == 3
    # One image's score, not a softmax over the batch: the same alone as in a batch.
    assert torch.allclose(pick.score(as_tensor(pictures[1:2]), "three red apples on a plate"), got[1:2], atol=1e-5)


def test_pickscore_reads_the_pooled_output_on_transformers_5(pick):
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from pipeline.scoring.pickscore import pooled

    embedding = torch.randn(2, 16)
    assert pooled(embedding) is embedding                                                # transformers 4
    assert pooled(BaseModelOutputWithPooling(pooler_output=embedding)) is embedding      # transformers 5
    import transformers

    features = pick.model.get_image_features(pixel_values=torch.zeros(1, 3, 32, 32))
    if int(transformers.__version__.split(".")[0]) >= 5:
        assert not isinstance(features, torch.Tensor)          # the case the unwrap exists for
    assert pooled(features).shape == (1, 16)


def test_pickscore_truncates_long_prompts_to_the_text_context(pick):
    images = as_tensor([solid(c) for c in COLOURS])
    # Both prompts are cut at 77 tokens, so words past the cut change nothing, and nothing fails.
    assert torch.equal(pick.score(images, LONG_PROMPT), pick.score(images, LONG_PROMPT + " under a purple moon"))
    assert pick.context_length == 77


def test_pickscore_one_prompt_per_image(pick):
    images = as_tensor([solid(c) for c in COLOURS])
    prompts = ["a red square", "a blue square", "a yellow square"]
    each = pick.score(images, prompts)
    alone = torch.cat([pick.score(images[i:i + 1], prompts[i]) for i in range(3)])
    assert torch.allclose(each, alone, atol=1e-5)


def test_pickscore_processor_in_the_transformers_5_layout(tmp_path, tiny_pickscore_dir):
    """A folder saved with CLIPProcessor.save_pretrained (processor_config.json) reads like the hub layout."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPProcessor

    folder = tmp_path / "v5_layout"
    shutil.copytree(tiny_pickscore_dir, folder)
    processor = CLIPProcessor(image_processor=AutoImageProcessor.from_pretrained(tiny_pickscore_dir),
                              tokenizer=AutoTokenizer.from_pretrained(tiny_pickscore_dir))
    (folder / "preprocessor_config.json").unlink()
    processor.save_pretrained(folder)
    assert (folder / "processor_config.json").is_file()
    model = load_reward_model(specs.parse_scorer_spec(f"pickscore={folder}"), CPU, torch.float32)
    assert model.processor_source == str(folder)
    images = as_tensor([solid(c) for c in COLOURS])
    original = load_reward_model(specs.parse_scorer_spec(f"pickscore={tiny_pickscore_dir}"), CPU, torch.float32)
    assert torch.allclose(model.score(images, "a cat"), original.score(images, "a cat"), atol=1e-5)


# ---- HPSv2 -------------------------------------------------------------------------------------------------------

def direct_hps(weights, arch, pictures, prompt, resize_mode="longest") -> torch.Tensor:
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None, load_weights=False,
                                                                 image_resize_mode=resize_mode)
    model.load_state_dict(torch.load(weights, weights_only=True)["state_dict"])
    model.eval()
    with torch.no_grad():
        image = model.encode_image(torch.stack([preprocess(p) for p in pictures]), normalize=True)
        text = model.encode_text(open_clip.get_tokenizer(arch)([prompt]), normalize=True)
    return (image * text).sum(dim=-1)


def test_hps_matches_the_direct_computation_with_longest_side_padding(hps, tiny_hps):
    weights, arch = tiny_hps
    pictures = [solid(c) for c in COLOURS]
    got = hps.score(as_tensor(pictures), "three red apples on a plate")
    expected = direct_hps(weights, arch, pictures, "three red apples on a plate")
    assert torch.allclose(got, expected, atol=1e-4), (got, expected)
    assert all(-1.0 <= value <= 1.0 for value in got.tolist())        # a cosine, no logit scale
    # A centre crop would see no padding and score differently: the resize mode is part of the model.
    cropped = direct_hps(weights, arch, pictures, "three red apples on a plate", resize_mode="shortest")
    assert (cropped - expected).abs().max() > 1e-3


def test_hps_truncates_long_prompts(hps):
    images = as_tensor([solid(c) for c in COLOURS])
    assert torch.equal(hps.score(images, LONG_PROMPT), hps.score(images, LONG_PROMPT + " under a purple moon"))


def test_hps_reads_a_data_parallel_checkpoint(tmp_path, tiny_hps, hps):
    """A state dict saved from DistributedDataParallel ("module." keys) loads to the same model."""
    weights, arch = tiny_hps
    wrapped = build_tiny_hps(str(tmp_path / "ddp.pt"), prefix="module.")
    model = load_reward_model(specs.parse_scorer_spec(f"hpsv2={wrapped}"), CPU, torch.float32, hps_arch=arch)
    images = as_tensor([solid(c) for c in COLOURS])
    assert torch.allclose(model.score(images, "a cat"), hps.score(images, "a cat"), atol=1e-6)


def test_hps_checkpoint_of_another_architecture_is_refused(tiny_hps):
    weights, _ = tiny_hps
    with pytest.raises(ModelNotFound, match="does not fit open_clip ViT-B-32"):
        load_reward_model(specs.parse_scorer_spec(f"hpsv2={weights}"), CPU, torch.float32, hps_arch="ViT-B-32")


def test_hps_file_that_is_not_a_checkpoint(tmp_path, tiny_hps):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ModelNotFound, match="could not be read as a torch file"):
        load_reward_model(specs.parse_scorer_spec(f"hpsv2={junk}"), CPU, torch.float32, hps_arch=tiny_hps[1])


# ---- the set: one pass each, named scores, the total ------------------------------------------------------------

def test_scorer_set_adds_named_scores_and_ranks_by_them(tiny_scorer, pick, hps):
    images = as_tensor([solid(c) for c in COLOURS])
    base = tiny_scorer.score(images, "a fox")
    both = ScorerSet(tiny_scorer, {"pickscore": pick, "hpsv2": hps}, specs.parse_scorer_specs(["pickscore", "hpsv2"]))
    scores = both.score(images, "a fox")
    picks, cosines = pick.score(images, "a fox"), hps.score(images, "a fox")
    for i, score in enumerate(scores):
        entry = score.as_dict(0.7)
        assert list(entry) == ["alignment", "aesthetic", "pickscore", "hpsv2", "total"]
        assert entry["alignment"] == pytest.approx(base[i].alignment) and entry["pickscore"] == pytest.approx(
            float(picks[i]))
        expected = ((float(picks[i]) - 21.0) / 1.0 + (float(cosines[i]) - 0.28) / 0.01) / 2
        assert entry["total"] == pytest.approx(expected)
    only_pick = ScorerSet(tiny_scorer, {"pickscore": pick}, specs.parse_scorer_specs(["pickscore"])).score(images,
                                                                                                          "a fox")
    assert [s.total(0.7) for s in only_pick] == pytest.approx(picks.tolist())      # one scorer: its own score
    assert both.describe()["ranked_by"] == ["pickscore", "hpsv2"]


def test_default_spec_keeps_the_plain_scorer(tiny_scorer):
    assert with_rewards(tiny_scorer, []) is tiny_scorer
    assert with_rewards(tiny_scorer, ["clip"]) is tiny_scorer


def test_combined_total_puts_scales_side_by_side():
    # Half a spread better on PickScore and half a spread worse on HPS cancel out, whatever their units.
    values = {"clip": 40.0, "pickscore": 21.5, "hpsv2": 0.275}
    assert specs.combined_total(values, ("pickscore", "hpsv2")) == pytest.approx(0.0)
    assert specs.combined_total(values, ("clip", "pickscore")) == pytest.approx(0.25)
    assert specs.combined_total(values, ("hpsv2",)) == 0.275
    with pytest.raises(KeyError):
        specs.combined_total({"clip": 1.0}, ("clip", "hpsv2"))


# ---- specs and their verdicts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("pickscore", specs.ScorerSpec("pickscore")), ("PickScore=/m/ps", specs.ScorerSpec("pickscore", "/m/ps")),
    ("hps", specs.ScorerSpec("hpsv2")), ("hpsv2.1=~/HPS.pt", specs.ScorerSpec("hpsv2", "~/HPS.pt")),
    ("clip", specs.ScorerSpec("clip"))])
def test_specs_that_parse(text, expected):
    assert specs.parse_scorer_spec(text) == expected


@pytest.mark.parametrize("texts, words", [
    (["pixscore"], "unknown scorer 'pixscore'"), (["imagereward"], "transformers 5 removed"),
    (["hpsv3"], "Qwen2-VL-7B"), (["pickscore="], "has '=' but no source"), (["clip=/x"], "--clip and --aesthetic"),
    (["pickscore", "pickscore=/x"], "named twice"), ([""], "is empty")])
def test_specs_that_are_refused(texts, words):
    with pytest.raises(InvalidParameter, match=words):
        specs.parse_scorer_specs(texts)


def test_resolution_verdicts(tmp_path, tiny_pickscore_dir, tiny_hps, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    weights, arch = tiny_hps
    found = sources.resolve_scorer(f"pickscore={tiny_pickscore_dir}")
    assert (found.status, found.form, found.location) == ("ok", "folder", tiny_pickscore_dir)
    assert sources.resolve_scorer(f"hpsv2={weights}", hps_arch=arch).status == "ok"
    # A folder without processor files needs LAION's processor from the hub: offline and not cached, a failure.
    bare = tmp_path / "bare"
    build_tiny_pickscore(str(bare), with_processor=False)
    verdict = sources.resolve_scorer(f"pickscore={bare}")
    assert verdict.status == "fail" and "laion/CLIP-ViT-H-14-laion2B-s32B-b79K" in verdict.message()
    assert "HF_HUB_OFFLINE" in verdict.message()
    # The default hub ids, offline and not cached.
    assert "yuvalkirstain/PickScore_v1" in sources.resolve_scorer("pickscore").message()
    assert "xswu/HPSv2" in sources.resolve_scorer("hpsv2").message()
    cases = [(f"pickscore={tmp_path}/nothing", "not found"), (f"pickscore={tmp_path}", "no config.json"),
             (f"hpsv2={tmp_path}/nothing.pt", "not found"), (f"hpsv2={tmp_path}", "is a folder"),
             ("imagereward", "transformers 5")]
    for spec, words in cases:
        verdict = sources.resolve_scorer(spec)
        assert verdict.status == "fail" and verdict.invalid and words in verdict.message(), (spec, verdict)
    assert "ViT-H-14" in sources.resolve_scorer(f"hpsv2={weights}", hps_arch="ViT-H-41").detail
    assert sources.resolve_hps_arch(f"local-dir:{tmp_path}").status == "fail"


def test_scores_are_finite_and_per_image_for_a_float_batch(pick, hps):
    images = torch.rand(2, 40, 72, 3)
    for model in (pick, hps):
        values = model.score(images, "a lighthouse")
        assert values.shape == (2,) and torch.isfinite(values).all() and not math.isclose(values[0], values[1])
