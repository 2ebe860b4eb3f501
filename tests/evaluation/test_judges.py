"""Judges: held-out scorers on tiny real models (the verdict follows the scores, identical winners tie), the
pairwise extension point (a judge that answers in both orders, as pipeline.llm.vision's does), the specs, and the
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


class BothOrders:
    """Answers like pipeline.llm.vision.PairwiseJudge.compare: two orders, a verdict only when both agree.
    `prefers` is the colour channel it likes; a position-biased judge (always "first") ties."""

    def __init__(self, prefers=None):
        self.prefers, self.calls = prefers, []

    def compare(self, prompt, image_a, image_b, names=("a", "b")):
        self.calls.append((prompt, names))

        def pick(first, second):
            if self.prefers is None:
                return "first"
            return "first" if first[..., self.prefers].mean() >= second[..., self.prefers].mean() else "second"

        a_first, b_first = pick(image_a, image_b), pick(image_b, image_a)
        verdict = "a" if (a_first, b_first) == ("first", "second") else \
            "b" if (a_first, b_first) == ("second", "first") else "tie"
        return {"verdict": verdict, "answers": [{"first": names[0], "second": names[1], "winner": a_first,
                                                 "reason": "redder"},
                                                {"first": names[1], "second": names[0], "winner": b_first}]}


def test_a_pairwise_judge_maps_a_to_the_beam():
    likes_red = judges.PairwiseJudge("vlm:test", BothOrders(prefers=0), "test")
    verdict = likes_red.verdict("a red square", RED, BLUE)
    assert verdict.winner == "beam" and verdict.gain == 1.0
    assert verdict.note == "beam shown first: first (redder) | control shown first: second"
    assert likes_red.verdict("a red square", BLUE, RED).winner == "control"
    assert judges.PairwiseJudge("vlm:test", BothOrders(), "t").verdict("x", RED, BLUE).winner == "tie"
    asked = BothOrders(prefers=0)
    assert judges.PairwiseJudge("vlm:t", asked, "t").verdict("x", RED, RED.clone()).winner == "tie"
    assert asked.calls == []            # the same image twice: no question asked
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


def test_held_out_judges_pass_and_vlm_needs_a_registered_builder(monkeypatch):
    settings = {"scorers": ["clip"]}
    judges.check_held_out(judges.parse_judge_specs(["hpsv2", "pickscore"]), settings)
    judges.check_held_out(judges.parse_judge_specs(["clip"]), {"scorers": ["pickscore"]})
    with pytest.raises(InvalidParameter, match="^judge: vlm:llava needs the pairwise vision-model judge"):
        judges.check_held_out(judges.parse_judge_specs(["vlm:llava"]), settings)
    built = []
    monkeypatch.setitem(judges.PAIRWISE_BUILDERS, "vlm", lambda model, s: built.append(model) or BothOrders(0))
    specs = judges.parse_judge_specs(["vlm:llava"])
    judges.check_held_out(specs, settings)
    (vlm,) = judges.build_judges(specs, {"device": "cpu"}, alpha=0.7)
    assert built == ["llava"] and vlm.name == "vlm:llava" and vlm.verdict("red", RED, BLUE).winner == "beam"
