"""The V3 nodes keep the /object_info contract of the V1 nodes (tests/fixtures/object_info_v1.json, from a real
ComfyUI 0.3.64): checked here on the fake ComfyUI, and against the real server in tests/integration/."""
import copy

import pytest

from tests.fixtures import object_info as oi
from tests.fixtures.comfy import load_pack


@pytest.fixture
def current(comfy_base):
    """/object_info entries of the pack's nodes as the fake V3 schema builds them (ComfyUI's server.py calls the
    same GET_NODE_INFO_V1 for a V3 node)."""
    return {name: node.GET_NODE_INFO_V1() for name, node in load_pack().NODE_CLASS_MAPPINGS.items()}


def test_every_v1_node_input_and_output_is_kept(current):
    assert oi.compare(oi.load_v1(), current, machine_lists=True, python_module=False) == []


def test_nodes_added_since_keep_the_packs_names(current):
    # compare() reports a V1 node that is gone; a new one is fine, named like the others.
    for name, info in current.items():
        assert name.startswith("PromptBeam") and info["category"].startswith("Prompt Beam/"), name
        assert info["display_name"].startswith("Prompt Beam "), name


def test_best_seed_is_appended_to_the_search_outputs(current):
    search = current["PromptBeamSearch"]
    assert search["output"] == ["IMAGE", "STRING", "IMAGE", "STRING", "INT"]
    assert search["output_name"] == ["best_image", "best_prompt", "finalists", "report", "best_seed"]
    assert search["output_is_list"] == [False] * 5


def test_dropdowns_keep_their_values_as_the_type_so_comfyui_checks_them(current):
    # ComfyUI 0.3.64 checks a value against a dropdown only when the type is the list of values.
    search = current["PromptBeamSearch"]["input"]["optional"]
    assert search["style"][0] == ["natural", "booru"] and "options" not in search["style"][1]
    assert current["PromptBeamExpand"]["input"]["required"]["dimension"][0] == ["what", "how"]


# --- the comparison itself must catch what would break a saved workflow -------------------------------------------

def _broken(change):
    after = copy.deepcopy(oi.load_v1())
    change(after)
    return oi.compare(oi.load_v1(), after)


def test_unchanged_listing_compares_clean():
    assert oi.compare(oi.load_v1(), copy.deepcopy(oi.load_v1())) == []


@pytest.mark.parametrize("change, expected", [
    (lambda a: a.pop("PromptBeamScore"), "PromptBeamScore: no longer registered"),
    (lambda a: a["PromptBeamSearch"]["output"].reverse(), "PromptBeamSearch: output"),
    (lambda a: a["PromptBeamSearch"]["output_name"].__setitem__(0, "image"), "PromptBeamSearch: output_name"),
    (lambda a: a["PromptBeamOllama"]["input_order"]["optional"].insert(0, "new_widget"),
     "PromptBeamOllama: optional inputs"),
    (lambda a: a["PromptBeamExpand"]["input_order"]["required"].append("extra"), "PromptBeamExpand: required"),
    (lambda a: a["PromptBeamSearch"]["input"]["required"]["beam_width"][1].update(default=8),
     "PromptBeamSearch.beam_width: options differ in ['default']"),
    (lambda a: a["PromptBeamCombine"]["input"]["required"]["style"].__setitem__(0, ["natural"]),
     "PromptBeamCombine.style: type"),
    (lambda a: a["PromptBeamSearch"]["input"].pop("hidden"), "PromptBeamSearch: hidden inputs"),
    (lambda a: a["PromptBeamScore"].update(output_node=False), "PromptBeamScore: output_node"),
    (lambda a: a["PromptBeamSearch"].update(display_name="Beam Search"), "PromptBeamSearch: display_name"),
])
def test_a_change_that_breaks_saved_workflows_is_reported(change, expected):
    problems = _broken(change)
    assert any(p.startswith(expected) for p in problems), problems


def test_v3_spellings_of_the_same_input_compare_equal():
    after = copy.deepcopy(oi.load_v1())
    combine = after["PromptBeamCombine"]["input"]["required"]
    values, options = combine["style"]
    combine["style"] = ["COMBO", {**options, "options": values, "multiselect": False}]
    combine["what"][1]["multiline"] = True
    after["PromptBeamSearch"]["input"]["hidden"]["unique_id"] = ["UNIQUE_ID"]
    after["PromptBeamScore"]["input"]["required"]["images"] = ["IMAGE", {}]
    after["PromptBeamRemoteFlux"]["input"]["required"]["url"][1]["multiline"] = False
    assert oi.compare(oi.load_v1(), after) == []


def test_appended_outputs_and_optional_inputs_are_allowed():
    after = copy.deepcopy(oi.load_v1())
    search = after["PromptBeamSearch"]
    for key, value in (("output", "INT"), ("output_name", "best_seed"), ("output_is_list", False)):
        search[key].append(value)
    search["input"]["optional"]["judge"] = ["PROMPTBEAM_JUDGE", {}]
    search["input_order"]["optional"].append("judge")
    after["PromptBeamNewNode"] = copy.deepcopy(after["PromptBeamScore"])
    assert oi.compare(oi.load_v1(), after) == []
