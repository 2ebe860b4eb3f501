"""Judges: held-out scorers on tiny real models (the verdict follows the scores, identical winners tie), the
vision-model judge (pipeline.llm.vision, asked in both orders, against the fake Ollama server), the specs, and the
refusal of a judge the search optimised."""
from __future__ import annotations

import pytest
import torch

from pipeline.errors import InvalidParameter
from pipeline.evaluation import judges

RED, BLUE = torch.zeros(48, 64, 3), torch.zeros(48, 64, 3)
RED[..., 0], BLUE[..., 2] = 0.9, 0.8


@pytest.fixture(scope="module")
def hps_judge(tiny_hps, tiny_clip_dir, tiny_aesthetic_path):
    weights, arch = tiny_hps
    spec = judges.parse_judge_spec(f"hpsv2={weights}")
    return judges.build_judges([spec], {"device": "cpu", "hps_arch": arch}, alpha=0.7)[0]


def test_a_scorer_judge_follows_its_scores(hps_judge, tiny_hps):
    from pipeline.scoring.hps import load_hpsv2

    weights, arch = tiny_hps
    model = load_hpsv2(weights, torch.device("cpu"), torch.float32, arch=arch)
    direct = model.score([RED, BLUE], "a red square").tolist()
    verdict = hps_judge.verdict("a red square", RED, BLUE)
    assert (verdict.beam, verdict.control) == pytest.approx(direct, abs=1e-6)
    assert verdict.winner == ("beam" if direct[0] > direct[1] else "control")
    assert verdict.gain == pytest.approx(direct[0] - direct[1])
    swapped = hps_judge.verdict("a red square", BLUE, RED)
    assert swapped.winner == {"beam": "control", "control": "beam"}[verdict.winner]
    same = hps_judge.verdict("a red square", RED, RED.clone())
    assert same.winner == "tie" and same.gain == 0.0 and "same image" in same.note
    assert hps_judge.describe()["kind"] == "scorer" and hps_judge.describe()["arch"] == arch


def test_the_clip_judge_reuses_the_search_scorer_and_ranks_by_the_seed_total(tiny_scorer):
    (clip,) = judges.build_judges([judges.parse_judge_spec("clip")], {"device": "cpu"}, alpha=0.4,
                                  clip_scorer=tiny_scorer)
    verdict = clip.verdict("a blue square", RED, BLUE)
    expected = [s.total(0.4) for s in tiny_scorer.score([RED, BLUE], "a blue square")]
    assert [verdict.beam, verdict.control] == pytest.approx(expected)
    assert clip.describe()["alpha"] == 0.4


@pytest.fixture
def vision(fake_ollama):
    """The fake Ollama with its vision models: its judge prefers the image with more blue."""
    fake_ollama.add_vision_models()
    return fake_ollama


def test_a_vision_judge_is_asked_both_orders_and_maps_a_to_the_beam(vision):
    likes_blue = judges.PairwiseJudge("vlm:qwen2.5vl:7b", judges.vision_judge("qwen2.5vl:7b", {"ollama_url":
                                                                                              vision.url}), "test")
    verdict = likes_blue.verdict("a blue square", BLUE, RED)
    assert verdict.winner == "beam" and verdict.gain == 1.0
    assert verdict.note.startswith("beam shown first: first (The first image has more blue (0.800 against 0.000).)"
                                   " | control shown first: second")
    assert [r["kind"] for r in vision.vision_requests] == ["judge", "judge"]
    assert likes_blue.verdict("a blue square", RED, BLUE).winner == "control"
    asked = len(vision.vision_requests)
    assert likes_blue.verdict("x", RED, RED.clone()).winner == "tie"
    assert len(vision.vision_requests) == asked            # the same image twice: no question asked
    vision.judge_mode = "position"
    assert likes_blue.verdict("a blue square", BLUE, RED).winner == "tie"
    with pytest.raises(InvalidParameter, match="cannot compare two images"):
        judges.PairwiseJudge("vlm:x", object(), "x")


def test_specs():
    assert judges.parse_judge_spec("vlm:qwen2.5vl:7b") == judges.JudgeSpec("vlm:qwen2.5vl:7b", "vlm",
                                                                          model="qwen2.5vl:7b")
    hps = judges.parse_judge_spec("HPS=/m/h.pt")
    assert (hps.name, hps.kind, str(hps)) == ("hpsv2", "scorer", "hpsv2=/m/h.pt")
    for texts, words in ((None, "is missing: name at least one judge"), (["vlm:"], "vlm: needs an Ollama vision model"),
                         (["hpsv2", "hps"], "hpsv2 is named twice"), (["aesthetic"], "unknown scorer")):
        with pytest.raises(InvalidParameter, match=f"^judge: {words}"):
            judges.parse_judge_specs(texts)


@pytest.mark.parametrize("scorers, judge_model, judge", [
    (["clip"], None, "clip"), (["pickscore=/m/ps"], None, "pickscore"), (["clip", "hpsv2"], None, "hpsv2=/x.pt"),
    (["clip"], "qwen2.5vl:7b", "vlm:qwen2.5vl:7b")])
def test_a_judge_the_search_optimised_is_refused(scorers, judge_model, judge):
    settings = {"scorers": scorers, "judge_model": judge_model}
    with pytest.raises(InvalidParameter, match=r"^judge: .* is what this search optimises \(it ranks by"):
        judges.check_held_out(judges.parse_judge_specs([judge]), settings)


def test_held_out_judges_pass_and_a_vlm_judge_must_see_two_images(vision):
    settings = {"scorers": ["clip"], "ollama_url": vision.url, "device": "cpu"}
    judges.check_held_out(judges.parse_judge_specs(["hpsv2", "pickscore", "vlm:qwen2.5vl:7b"]), settings)
    judges.check_held_out(judges.parse_judge_specs(["clip"]), {"scorers": ["pickscore"]})
    specs = judges.parse_judge_specs(["vlm:qwen2.5vl:7b"])
    (vlm,) = judges.build_judges(specs, settings, alpha=0.7, vision=judges.connect_vision_judges(specs, settings))
    assert vlm.name == "vlm:qwen2.5vl:7b" and vlm.verdict("blue", BLUE, RED).winner == "beam"
    assert vlm.describe()["kind"] == "pairwise" and vlm.describe()["model"] == "qwen2.5vl:7b"
    for model, words in (("qwen2.5:7b-instruct", "cannot see images"), ("llama3.2-vision:11b", "takes one image")):
        with pytest.raises(InvalidParameter, match=f"^judge: '{model}'.* {words}"):
            judges.connect_vision_judges(judges.parse_judge_specs([f"vlm:{model}"]), settings)
