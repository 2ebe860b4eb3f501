"""Contract tests of the judge nodes on the fake ComfyUI, against the fake Ollama server's vision models: the VLM
Judge node's socket and settings, Compare Images ranking a batch (both orders, implied pairs skipped, interrupt),
and Prompt Beam Search with a critic and a judge plugged in, models that cannot see refused before any work."""
import json
import sys

import pytest
import torch

from tests.fixtures.comfy import PACK_MODULE, load_pack, run_node

load_pack()
import comfy.model_management  # noqa: E402  (the fake modules are importable once the pack is loaded)
import comfy.utils  # noqa: E402

from tests.nodes.test_node_search import NODE_ID, inputs, search  # noqa: E402,F401  (the search's fixture)

judge_nodes = sys.modules[f"{PACK_MODULE}.nodes.judge_nodes"]
llm_nodes = sys.modules[f"{PACK_MODULE}.nodes.llm_nodes"]
errors = sys.modules[f"{PACK_MODULE}.pipeline.errors"]
VISION = "qwen2.5vl:7b"


@pytest.fixture
def vision(fake_ollama):
    fake_ollama.add_vision_models()
    return fake_ollama


def judge(fake, model=VISION, **settings):
    (made,) = run_node(judge_nodes.PromptBeamVLMJudge, base_url=fake.url, model=model,
                       **({"budget": 4, "margin": 1.0} | settings)).result
    return made


def blue_batch(*levels) -> torch.Tensor:
    batch = torch.full((len(levels), 16, 16, 3), 0.2)
    for i, level in enumerate(levels):
        batch[i, ..., 2] = level
    return batch


def test_the_judge_node_declares_its_socket_and_contacts_nothing(vision):
    info = judge_nodes.PromptBeamVLMJudge.GET_NODE_INFO_V1()
    assert info["output"] == ["PROMPTBEAM_JUDGE"] and info["display_name"] == "Prompt Beam VLM Judge"
    assert list(info["input"]["required"]) == ["base_url", "model", "budget", "margin"]
    made = judge(vision, budget=2, margin=0.5, max_side=512, timeout=30.0)
    assert (made.budget, made.margin, made.max_side, made.model) == (2, 0.5, 512, VISION)
    assert made.engine.client.timeout == 30.0
    assert vision.requests == []                         # creating it asks nothing of the server


def test_compare_images_ranks_the_batch_by_the_judge(vision):
    images = blue_batch(0.2, 0.8, 0.5, 0.1)
    bar = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, *rest, **kw: bar.append((value, total)))
    try:
        ranked, ranking = run_node(judge_nodes.PromptBeamCompareImages, judge=judge(vision), images=images,
                                   prompt="a blue square").result
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    result = json.loads(ranking)
    assert result["order"] == [1, 2, 0, 3]                 # more blue first
    assert result["wins"] == [-1, 3, 1, -3]              # net wins, chains included (1 > 2 > 0 > 3)
    assert torch.equal(ranked, images[[1, 2, 0, 3]])
    assert len(result["judgements"]) == 4 and len(vision.vision_requests) == 8    # 2 of the 6 pairs implied
    assert all(len(j["answers"]) == 2 for j in result["judgements"]) and result["model"] == VISION
    assert bar[-1] == (6, 6)


def test_compare_images_stops_on_interrupt_and_refuses_a_one_image_model(vision):
    comfy.model_management.interrupt_current_processing(True)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run_node(judge_nodes.PromptBeamCompareImages, judge=judge(vision), images=blue_batch(0.2, 0.8, 0.5),
                 prompt="a blue square")
    comfy.model_management.interrupt_current_processing(False)
    with pytest.raises(errors.InvalidParameter, match="^judge: 'llama3.2-vision:11b' .*takes one image"):
        run_node(judge_nodes.PromptBeamCompareImages, judge=judge(vision, "llama3.2-vision:11b"),
                 images=blue_batch(0.2, 0.8), prompt="a blue square")
    with pytest.raises(errors.InvalidParameter, match="^prompt: is empty"):
        run_node(judge_nodes.PromptBeamCompareImages, judge=judge(vision), images=blue_batch(0.2, 0.8), prompt=" ")
    assert not vision.vision_requests


def test_the_search_node_runs_with_a_critic_and_a_judge(vision, inputs):
    (critic,) = run_node(llm_nodes.PromptBeamOllama, base_url=vision.url, model=VISION, temperature=-1.0, seed=0,
                         keep_alive="5m").result
    _, _, _, report, _ = search(inputs | {"critic": critic, "judge": judge(vision, budget=2, margin=3.0)})
    report = json.loads(report)
    assert report["config"]["judge_budget"] == 2 and report["config"]["judge_margin"] == 3.0
    assert report["config"]["judge"]["model"] == VISION and report["config"]["critic"]["model"] == VISION
    parents = {p for entry in report["iterations"][:-1] for p in entry["survivors"]}
    assert {c["id"] for c in report["candidates"] if c["evaluation"]} == parents
    assert report["judgements"] and all(e["judge"]["asked"] <= 2 for e in report["iterations"] if "judge" in e)
    assert {r["kind"] for r in vision.vision_requests} == {"critic", "judge"}


def test_the_critic_as_the_llm_itself_looks_inside_the_children_request(vision, inputs):
    (both,) = run_node(llm_nodes.PromptBeamOllama, base_url=vision.url, model=VISION, temperature=-1.0, seed=0,
                       keep_alive="5m").result
    _, _, _, report, _ = search(inputs | {"llm": both, "critic": both})
    report = json.loads(report)
    assert {r["kind"] for r in vision.vision_requests} == {"refine"}
    assert report["llm"]["critic_calls"] == sum(1 for c in report["candidates"] if c["evaluation"]) > 0


@pytest.mark.parametrize("role, model, says", [
    ("critic", "llama3.1:8b", "^critic: 'llama3.1:8b' cannot see images"),
    ("judge", "llama3.2-vision:11b", "^judge: 'llama3.2-vision:11b' .*takes one image per request")])
def test_models_that_cannot_see_are_refused_before_any_work(vision, inputs, role, model, says):
    if role == "critic":
        (value,) = run_node(llm_nodes.PromptBeamOllama, base_url=vision.url, model=model, temperature=-1.0,
                            seed=0, keep_alive="5m").result
    else:
        value = judge(vision, model)
    with pytest.raises(errors.InvalidParameter, match=says):
        search(inputs | {role: value})
    assert not vision.bodies("/api/chat")
