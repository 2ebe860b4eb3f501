"""`queue --prompt` reaches the prompt of every shipped workflow: the node titled "Your prompt" when the workflow
marks one (refine_loop_manual's String node, which feeds every step), else the text `prompt` of the PromptBeam*
nodes (the Search and Score nodes). Unit level on the API twins, then the CLI against the loopback ComfyUI."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pipeline.errors import InvalidParameter
from pipeline.comfy_api.client import PROMPT_TITLE, apply_prompt, is_link, load_workflow, node_title
from tests.comfy_api.test_queue_client import comfy, queue_cli  # noqa: F401  (comfy is a fixture)

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
TEXT = "a heron standing in a misty lake at dawn"
# workflow -> (node that takes the prompt, its input)
PROMPT_NODES = {"beam_search_flux": ("12", "prompt"), "beam_then_upscale": ("12", "prompt"),
                "score_and_select": ("9", "prompt"), "refine_loop_manual": ("9", "value")}


def reads_prompt_from(workflow: dict, node_id: str, name: str, source: str) -> bool:
    """Whether an input is the prompt node's text: the node itself, or a link to it."""
    value = workflow[node_id]["inputs"][name]
    return node_id == source if not is_link(value) else value[0] == source


@pytest.mark.parametrize("name", sorted(PROMPT_NODES))
def test_every_shipped_workflow_takes_the_prompt(name):
    workflow = load_workflow(str(WORKFLOWS / "api" / f"{name}.json"))
    shipped = copy.deepcopy(workflow)
    node_id, input_name = PROMPT_NODES[name]
    assert apply_prompt(workflow, TEXT) == [node_id]
    assert workflow[node_id]["inputs"][input_name] == TEXT
    changed = {(n, k) for n in workflow for k in workflow[n]["inputs"]
               if workflow[n]["inputs"][k] != shipped[n]["inputs"][k]}
    assert changed == {(node_id, input_name)}                 # nothing else is touched
    # Every PromptBeam* input that reads the user's prompt now reads this text (directly or through a link).
    readers = [(n, k) for n, node in workflow.items() if node["class_type"].startswith("PromptBeam")
               for k in ("prompt", "user_prompt") if k in node["inputs"]
               and reads_prompt_from(workflow, n, k, node_id)]
    assert readers
    if name == "refine_loop_manual":
        kinds = {workflow[n]["class_type"] for n, _ in readers}
        assert {"PromptBeamExpand", "PromptBeamScore", "PromptBeamCritique", "PromptBeamRefine"} <= kinds


def test_the_marker_is_the_title_both_twins_ship():
    """The UI file and its API twin name the prompt node the same (the editor copies the title to _meta.title)."""
    api = load_workflow(str(WORKFLOWS / "api" / "refine_loop_manual.json"))
    ui = json.loads((WORKFLOWS / "refine_loop_manual.json").read_text(encoding="utf-8"))
    assert node_title(api["9"]) == PROMPT_TITLE
    assert next(n for n in ui["nodes"] if n["id"] == 9).get("title") == PROMPT_TITLE
    for name in ("beam_search_flux", "beam_then_upscale", "score_and_select"):   # the prompt is on a PromptBeam node
        workflow = load_workflow(str(WORKFLOWS / "api" / f"{name}.json"))
        assert not any(node_title(node) == PROMPT_TITLE for node in workflow.values())


def test_a_marked_node_wins_and_any_text_input_of_it_is_set():
    workflow = {
        "1": {"class_type": "CLIPTextEncode", "inputs": {"text": "old", "clip": ["2", 0]},
              "_meta": {"title": " your PROMPT "}},
        "3": {"class_type": "PromptBeamScore", "inputs": {"prompt": "what the images are scored against",
                                                          "images": ["4", 0], "scorer": ["5", 0]}},
    }
    assert apply_prompt(workflow, TEXT) == ["1"]
    assert workflow["1"]["inputs"]["text"] == TEXT
    assert workflow["3"]["inputs"]["prompt"] == "what the images are scored against"   # the marker decides
    workflow["1"]["inputs"]["text"] = ["6", 0]                      # a marked node whose text is computed
    with pytest.raises(InvalidParameter) as info:
        apply_prompt(workflow, TEXT)
    assert info.value.name == "prompt" and "node 1 is titled 'Your prompt' but has no text input" in str(info.value)


def test_no_prompt_node_names_both_ways_to_mark_one():
    workflow = {"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "old", "clip": ["2", 0]},
                      "_meta": {"title": "CLIP Text Encode (Prompt)"}}}
    with pytest.raises(InvalidParameter) as info:
        apply_prompt(workflow, TEXT)
    assert "no node titled 'Your prompt'" in str(info.value) and "--set NODE_ID.INPUT" in str(info.value)


def test_queue_prompt_on_the_refine_loop(comfy, tmp_path):  # noqa: F811
    server = comfy("success")
    workflow = WORKFLOWS / "api" / "refine_loop_manual.json"
    result = queue_cli(workflow, "--server", server.url, "--prompt", TEXT, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    (body,) = server.posted("/prompt")
    assert body["prompt"]["9"]["inputs"]["value"] == TEXT
    assert "prompt set on node(s) 9" in result.stderr
    shipped = load_workflow(str(workflow))
    shipped["9"]["inputs"]["value"] = TEXT
    assert body["prompt"] == shipped
