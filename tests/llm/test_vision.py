"""The vision operations against the fake Ollama server: what a critic and a judge are sent (the pixels, the user's
prompt, nothing else), how both orders make a verdict, retries, and which models are refused for which role."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import InvalidParameter
from pipeline.images import png_base64
from pipeline.llm.client import OllamaClient
from pipeline.llm.operations import PromptEngine
from pipeline.llm.vision import PairwiseJudge, require_vision, verdict_of, vision_support

PROMPT = "three blue kites over a green hill"
SCORES = {"alignment": 24.0, "aesthetic": 5.2, "total": 32.0}


@pytest.fixture
def vision(fake_ollama):
    fake_ollama.add_vision_models()
    return fake_ollama


def engine(fake, model="qwen2.5vl:7b", **client) -> PromptEngine:
    return PromptEngine(OllamaClient(fake.url, model, **client))


def solid(blue: float, height: int = 40, width: int = 40) -> torch.Tensor:
    image = torch.full((height, width, 3), 0.2)
    image[..., 2] = blue
    return image


def gradient(height: int, width: int) -> torch.Tensor:
    ys = torch.linspace(0, 1, height).view(height, 1, 1)
    xs = torch.linspace(0, 1, width).view(1, width, 1)
    return torch.cat([ys.expand(height, width, 1), xs.expand(height, width, 1), (ys * xs).expand(height, width, 1)],
                     dim=-1)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_the_critic_is_shown_the_image_and_the_users_prompt_only(vision):
    image = gradient(48, 64)
    result = engine(vision).evaluate_image(PROMPT, image)
    (request,) = vision.vision_requests
    assert request["kind"] == "critic" and request["model"] == "qwen2.5vl:7b"
    expected = (image.numpy() * 255).round().astype(np.int16)
    assert np.array_equal(pixels(request["images"][0]), expected)          # the very pixels, losslessly
    body = vision.bodies()[0]
    user = body["messages"][-1]
    assert PROMPT in user["content"] and len(user["images"]) == 1
    assert "alignment" not in user["content"] and "i0c" not in user["content"]   # no scores, no ids
    assert list(body["format"]["properties"]) == ["analysis", "strengths", "weaknesses"]
    evaluation = result.value
    assert evaluation["analysis"].startswith("Image 1 is 64x48, mostly")
    assert evaluation["strengths"] and evaluation["weaknesses"] and not result.fallback


def test_large_images_are_sent_with_their_longer_side_at_768(vision):
    engine(vision).evaluate_image(PROMPT, gradient(500, 1000))
    assert vision.vision_requests[0]["images"][0].size == (768, 384)


def test_a_pair_is_asked_in_both_orders_and_the_verdict_follows_the_content(vision):
    judge = PairwiseJudge(engine(vision))
    result = judge.compare(PROMPT, solid(0.9), solid(0.3), names=("i1c0", "i1c2"))
    assert result["verdict"] == "a" and result["model"] == "qwen2.5vl:7b"
    assert [(a["first"], a["second"], a["winner"]) for a in result["answers"]] == [
        ("i1c0", "i1c2", "first"), ("i1c2", "i1c0", "second")]
    shown = [[round(float(pixels(img)[..., 2].mean()) / 255, 2) for img in r["images"]]
             for r in vision.vision_requests]
    assert shown == [[0.9, 0.3], [0.3, 0.9]]                              # the second request swaps the images
    assert all(body["options"]["temperature"] == 0.0 for body in vision.bodies())


def test_a_position_biased_judge_gives_only_ties(vision):
    vision.judge_mode = "position"
    result = PairwiseJudge(engine(vision)).compare(PROMPT, solid(0.9), solid(0.3))
    assert result["verdict"] == "tie"
    assert [a["winner"] for a in result["answers"]] == ["first", "first"]


def test_an_unusable_judge_answer_is_asked_once_more_then_is_a_recorded_tie(vision):
    vision.judge_mode = "garbage"
    result = PairwiseJudge(engine(vision)).compare(PROMPT, solid(0.9), solid(0.3))
    assert result["verdict"] == "tie"
    assert len(vision.bodies()) == 4                                        # two orders, one retry each
    for answer in result["answers"]:
        assert answer["winner"] == "tie" and answer["unusable"] is True
        assert answer["reason"].startswith("the answer could not be used: no JSON found")
    retry = vision.bodies()[1]["messages"]
    assert retry[-1]["role"] == "user" and "could not be used" in retry[-1]["content"]
    assert retry[1].get("images")                                          # the retry still shows both images


@pytest.mark.parametrize("a_first, b_first, verdict", [
    ("first", "second", "a"), ("second", "first", "b"), ("first", "first", "tie"), ("second", "second", "tie"),
    ("tie", "second", "tie"), ("first", "tie", "tie"), ("tie", "tie", "tie")])
def test_two_answers_that_disagree_are_a_tie(a_first, b_first, verdict):
    assert verdict_of({"winner": a_first}, {"winner": b_first}) == verdict


def test_a_text_model_is_refused_as_critic_naming_the_flag(vision):
    with pytest.raises(InvalidParameter) as info:
        require_vision(OllamaClient(vision.url, "qwen2.5:7b-instruct"), "critic_model")
    assert info.value.name == "critic_model"
    assert "'qwen2.5:7b-instruct' cannot see images (Ollama lists no 'vision' capability" in str(info.value)
    assert "qwen2.5vl:7b" in str(info.value)


def test_a_one_image_model_may_critique_but_not_judge_pairs(vision):
    client = OllamaClient(vision.url, "llama3.2-vision:11b")
    assert require_vision(client, "critic_model").images_per_request == 1
    with pytest.raises(InvalidParameter) as info:
        require_vision(client, "judge_model", images=2)
    assert info.value.name == "judge_model"
    assert "takes one image per request" in str(info.value) and "qwen2.5vl, qwen3-vl, gemma3" in str(info.value)


def test_the_fake_refuses_a_second_image_for_mllama_as_ollama_does(vision):
    judge = PairwiseJudge(engine(vision, "llama3.2-vision:11b", retries=0))
    with pytest.raises(Exception, match="only supports one image"):
        judge.ask(PROMPT, solid(0.5), solid(0.4))


def test_servers_without_capabilities_are_read_from_the_projector(vision):
    vision.reports_capabilities = False
    assert vision_support(OllamaClient(vision.url, "llava:7b")).vision
    assert not vision_support(OllamaClient(vision.url, "qwen2.5:7b-instruct")).vision
    with pytest.raises(InvalidParameter, match="it has no image projector"):
        require_vision(OllamaClient(vision.url, "llama3.1:8b"), "judge_model", images=2)


def test_a_model_that_is_not_installed_says_ollama_pull(vision):
    with pytest.raises(Exception, match="ollama pull qwen3-vl:8b"):
        require_vision(OllamaClient(vision.url, "qwen3-vl:8b"), "judge_model")


def test_a_vision_model_writing_children_evaluates_the_image_first(vision):
    image = solid(0.6)
    result = engine(vision).refine_children(PROMPT, "three blue kites", "soft morning light", "three blue kites, "
                                            "soft morning light", SCORES, "what", 2, image=image)
    body = vision.bodies()[0]
    assert list(body["format"]["properties"])[:4] == ["analysis", "strengths", "weaknesses", "critique"]
    assert body["messages"][-1]["images"] == [png_base64(image)]
    assert "judge it\nagainst the user's request alone" in body["messages"][0]["content"]
    value = result.value
    assert value["evaluation"]["analysis"].startswith("Image 1 is 40x40, mostly blue")
    assert len(value["children"]) == 2 and not result.fallback


def test_a_critics_evaluation_is_given_to_the_text_model_to_fix(vision):
    evaluation = {"analysis": "Two kites, not three.", "strengths": ["bright sky"],
                  "weaknesses": ["only two kites", "the hill is brown"]}
    engine(vision, "qwen2.5:7b-instruct").refine_children(PROMPT, "three blue kites", "soft light", "p", SCORES,
                                                           "what", 2, evaluation=evaluation)
    body = vision.bodies()[0]
    user = body["messages"][-1]["content"]
    assert "What a vision model saw in the rendered image: Two kites, not three." in user
    assert "Weaknesses: only two kites; the hill is brown" in user and "must fix these weaknesses" in user
    assert "images" not in body["messages"][-1] and "analysis" not in body["format"]["properties"]
