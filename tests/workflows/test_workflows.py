"""The shipped workflows (workflows/*.json, UI format, and their API twins in workflows/api/) are structurally valid
against the pack's own INPUT_TYPES and the core nodes they use, and UI and API files describe the same graph.
No ComfyUI needed; tests/integration/ repeats the important parts against a real ComfyUI and its graph editor."""
import copy
import json
import re
from pathlib import Path

import pytest

from tests.workflows import workflow_check as wc
from tests.fixtures.comfy import load_pack

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
NAMES = ["beam_search_flux", "beam_search_judged", "beam_then_upscale", "refine_loop_manual", "score_and_select"]

# The model files the workflows name, by ComfyUI folder (docs/workflows.md tells users where to put them).
MODEL_FILES = {
    "diffusion_models": ["flux1-schnell.safetensors"],
    "text_encoders": ["clip_l.safetensors", "t5xxl_fp16.safetensors"],
    "vae": ["ae.safetensors"],
    "input": ["example.png"],   # ships with ComfyUI (input/example.png)
}
LORA_PLACEHOLDER = "my_flux_lora.safetensors"   # the bypassed LoRA Stack's value until a user picks a file


def ui(name):
    return wc.load(WORKFLOWS / f"{name}.json")


def api(name):
    return wc.load(WORKFLOWS / "api" / f"{name}.json")


@pytest.fixture
def definitions(comfy_base):
    """Pack nodes as ComfyUI would list them on a machine that has the placeholder LoRA file, plus core nodes."""
    loras = comfy_base / "models" / "loras"
    loras.mkdir(parents=True)
    (loras / LORA_PLACEHOLDER).write_bytes(b"")
    return wc.node_definitions(load_pack().NODE_CLASS_MAPPINGS)


@pytest.fixture
def mappings(comfy_base):
    return load_pack().NODE_CLASS_MAPPINGS


def node_of(workflow, type_, title=None):
    return next(n for n in workflow["nodes"] if n["type"] == type_ and (title is None or n.get("title") == title))


def api_node(prompt, class_type):
    return next(n for n in prompt.values() if n["class_type"] == class_type)


# --- the files ---------------------------------------------------------------------------------------------------

def test_every_workflow_has_an_api_twin_and_a_thumbnail():
    assert sorted(p.stem for p in WORKFLOWS.glob("*.json")) == NAMES
    # render_flux_worker is what the worker pool queues per candidate (API format only; nothing for the editor).
    assert sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json")) == sorted(NAMES + ["render_flux_worker"])
    for name in NAMES:
        thumbnail = WORKFLOWS / f"{name}.jpg"   # the template browser asks for <name>.jpg beside the JSON
        assert thumbnail.read_bytes()[:3] == b"\xff\xd8\xff", f"{thumbnail} is not a JPEG"


def test_workflow_folder_is_one_comfyui_lists_as_templates():
    # app/custom_node_manager.py (0.3.64) globs custom_nodes/*/{example_workflows,example,examples,workflow,
    # workflows}/*.json for the template browser; the API twins sit one level deeper, so they are not listed.
    assert WORKFLOWS.name in ("example_workflows", "example", "examples", "workflow", "workflows")


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_is_structurally_valid(name, definitions):
    assert wc.check_ui(ui(name), definitions, MODEL_FILES) == []


@pytest.mark.parametrize("name", NAMES)
def test_api_twin_satisfies_the_pack_input_types(name, definitions, mappings):
    assert wc.check_api(api(name), definitions, mappings, MODEL_FILES) == []


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_twins_describe_the_same_graph(name, definitions):
    assert wc.compare_ui_api(ui(name), api(name), definitions) == []


@pytest.mark.parametrize("name", NAMES)
def test_workflow_is_grouped_and_explained(name):
    workflow = ui(name)
    start = node_of(workflow, "MarkdownNote", "Start here")
    assert len(start["widgets_values"][0]) > 200
    for node in workflow["nodes"]:
        x, y = node["pos"]
        inside = [g["title"] for g in workflow["groups"]
                  if g["bounding"][0] <= x and g["bounding"][1] <= y
                  and x + node["size"][0] <= g["bounding"][0] + g["bounding"][2]
                  and y + node["size"][1] <= g["bounding"][1] + g["bounding"][3]]
        assert inside or node is start, f"node {node['id']} ({node['type']}) is in no group"
    assert all(node.get("mode", 0) in (0, 4) for node in workflow["nodes"])


# --- what each workflow contains -----------------------------------------------------------------------------------

def test_beam_search_flux_wiring():
    workflow, prompt = ui("beam_search_flux"), api("beam_search_flux")
    assert node_of(workflow, "UNETLoader")["widgets_values"] == ["flux1-schnell.safetensors", "default"]
    assert node_of(workflow, "DualCLIPLoader")["widgets_values"] == [
        "clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default"]
    assert node_of(workflow, "VAELoader")["widgets_values"] == ["ae.safetensors"]
    search = api_node(prompt, "PromptBeamSearch")["inputs"]
    sources = {name: prompt[value[0]]["class_type"] for name, value in search.items() if isinstance(value, list)}
    assert sources == {"llm": "PromptBeamOllama", "generator": "PromptBeamFluxGenerator",
                       "scorer": "PromptBeamScorerLoader"}
    consumers = {(n["class_type"], n["inputs"][key][1]) for n in prompt.values()
                 for key in ("images", "source") if isinstance(n["inputs"].get(key), list)}
    # best_image -> SaveImage, finalists -> PreviewImage, best_prompt and report shown as text.
    assert consumers == {("SaveImage", 0), ("PreviewImage", 2), ("PreviewAny", 1), ("PreviewAny", 3)}
    notes = " ".join(n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "MarkdownNote")
    for needed in ("flux1-schnell.safetensors", "t5xxl_fp16.safetensors", "clip_l.safetensors", "ae.safetensors",
                   "ollama pull", "models/loras"):
        assert needed in notes


def test_beam_search_flux_ships_its_lora_stack_bypassed():
    # The graph runs with the four Flux files alone; a user with a LoRA picks it and un-bypasses the node.
    workflow, prompt = ui("beam_search_flux"), api("beam_search_flux")
    lora = node_of(workflow, "PromptBeamLoraStack")
    assert lora["mode"] == 4 and lora["widgets_values"][0] == LORA_PLACEHOLDER
    generator = node_of(workflow, "PromptBeamFluxGenerator")
    assert next(i for i in generator["inputs"] if i["name"] == "loras")["link"] is not None
    assert "loras" not in api_node(prompt, "PromptBeamFluxGenerator")["inputs"]
    assert "PromptBeamLoraStack" not in {n["class_type"] for n in prompt.values()}


def test_beam_then_upscale_is_the_search_then_the_winner_rendered_at_twice_its_size():
    """The search graph of beam_search_flux unchanged, then core nodes only: best_image upscaled 2x, encoded, and
    sampled again with the winner's prompt and seed (img2img), decoded and saved."""
    search_only, prompt = api("beam_search_flux"), api("beam_then_upscale")
    assert {k: v for k, v in prompt.items() if k in search_only} == search_only
    added = {k: v for k, v in prompt.items() if k not in search_only}
    assert {n["class_type"] for n in added.values()} == {
        "ImageScaleBy", "VAEEncode", "CLIPTextEncode", "FluxGuidance", "ConditioningZeroOut", "KSampler", "VAEDecode",
        "SaveImage"}
    search = next(k for k, n in prompt.items() if n["class_type"] == "PromptBeamSearch")
    sampler = api_node(prompt, "KSampler")["inputs"]
    scale = prompt[prompt[sampler["latent_image"][0]]["inputs"]["pixels"][0]]["inputs"]
    assert scale["image"] == [search, 0] and scale["scale_by"] == 2.0               # best_image at 2x
    assert sampler["seed"] == [search, 4]                                            # best_seed
    text = prompt[prompt[sampler["positive"][0]]["inputs"]["conditioning"][0]]["inputs"]
    assert text["text"] == [search, 1]                                               # best_prompt
    assert prompt[sampler["negative"][0]]["class_type"] == "ConditioningZeroOut"
    assert sampler["model"] == api_node(search_only, "PromptBeamFluxGenerator")["inputs"]["model"]
    # the same sampling as the generator's (schnell: 4 steps, euler/simple, cfg 1), half the noise
    generator = api_node(prompt, "PromptBeamFluxGenerator")["inputs"]
    assert (sampler["steps"], sampler["sampler_name"], sampler["scheduler"], sampler["cfg"]) == (
        generator["steps"], generator["sampler_name"], generator["scheduler"], generator["cfg"])
    assert 0 < sampler["denoise"] < 1
    saves = sorted(n["inputs"]["filename_prefix"] for n in prompt.values() if n["class_type"] == "SaveImage")
    assert saves == ["promptbeam/best", "promptbeam/best_2x"]


def test_refine_loop_unrolls_three_rounds():
    prompt = api("refine_loop_manual")
    count = {}
    for node in prompt.values():
        count[node["class_type"]] = count.get(node["class_type"], 0) + 1
    assert count["PromptBeamExpand"] == 2          # WHAT and HOW
    assert count["PromptBeamCombine"] == 3 and count["PromptBeamGenerate"] == 3
    assert count["PromptBeamScore"] == 4           # one per round + the final comparison
    assert count["PromptBeamCritique"] == 2 and count["PromptBeamRefine"] == 2
    refines = sorted((n["inputs"]["dimension"] for n in prompt.values() if n["class_type"] == "PromptBeamRefine"))
    assert refines == ["how", "what"]
    # One image seed for every round, so a score change comes from the prompt edit.
    assert len({n["inputs"]["seed"] for n in prompt.values() if n["class_type"] == "PromptBeamGenerate"}) == 1
    # Round 2 renders the refined WHAT: its Combine takes "what" from the round-1 Refine node.
    refine_what = next(i for i, n in prompt.items() if n["class_type"] == "PromptBeamRefine"
                       and n["inputs"]["dimension"] == "what")
    assert any(n["class_type"] == "PromptBeamCombine" and n["inputs"]["what"] == [refine_what, 0]
               for n in prompt.values())


def test_score_and_select_wiring():
    prompt = api("score_and_select")
    select = api_node(prompt, "PromptBeamSelectBest")["inputs"]
    assert prompt[select["scores"][0]]["class_type"] == "PromptBeamScore"
    assert prompt[select["images"][0]]["class_type"] == "ImageBatch"
    save = api_node(prompt, "SaveImage")["inputs"]
    assert prompt[save["images"][0]]["class_type"] == "PromptBeamSelectBest"


def test_docs_name_every_model_file():
    docs = (REPO / "docs" / "workflows.md").read_text(encoding="utf-8")
    for folder, names in MODEL_FILES.items():
        for file_name in names:
            assert file_name in docs
    for name in NAMES:
        assert f"workflows/{name}.json" in docs and f"workflows/api/{name}.json" in docs


# --- the checks themselves catch what they are for -----------------------------------------------------------------

def problems_after(mutate, name="beam_search_flux", kind="ui", definitions=None, mappings=None):
    data = copy.deepcopy(ui(name) if kind == "ui" else api(name))
    mutate(data)
    if kind == "ui":
        return wc.check_ui(data, definitions, MODEL_FILES)
    return wc.check_api(data, definitions, mappings, MODEL_FILES)


def test_ui_check_counts_control_after_generate_values(definitions):
    def drop_control(workflow):
        node_of(workflow, "PromptBeamSearch")["widgets_values"].remove("fixed")
    problems = problems_after(drop_control, definitions=definitions)
    assert len(problems) == 1 and "widgets_values has 21 values, the node has 22 widgets" in problems[0]
    assert "'seed.control'" in problems[0]


def test_ui_check_rejects_bad_widget_values(definitions):
    def corrupt(workflow):
        node_of(workflow, "PromptBeamSearch")["widgets_values"][6] = "sometimes"   # seed's control value
        node_of(workflow, "PromptBeamFluxGenerator")["widgets_values"][4] = "euler_z"
        node_of(workflow, "UNETLoader")["widgets_values"][0] = "flux1-dev.safetensors"
    problems = problems_after(corrupt, definitions=definitions)
    assert any("input 'seed': control_after_generate 'sometimes'" in p for p in problems)
    assert any("input 'sampler_name': 'euler_z' not in" in p for p in problems)
    assert any("'flux1-dev.safetensors' is not a file of the 'diffusion_models' folder" in p for p in problems)


def test_ui_check_rejects_unknown_nodes_and_inconsistent_links(definitions):
    def corrupt(workflow):
        node_of(workflow, "PreviewImage")["type"] = "PromptBeamNoSuchNode"
        workflow["links"][0][5] = "IMAGE"                              # MODEL link typed as IMAGE
        node_of(workflow, "VAELoader")["outputs"][0]["links"] = []      # link no longer listed by its source
    problems = problems_after(corrupt, definitions=definitions)
    assert any("(PromptBeamNoSuchNode): unknown node type" in p for p in problems)
    assert any(p.startswith("link 1: type IMAGE != node") for p in problems)
    assert any(p.startswith("link 3: not listed by node") for p in problems)


def test_ui_check_rejects_a_link_of_the_wrong_type(definitions):
    def rewire(workflow):
        # Feed the generator output into the search node's scorer socket.
        search = node_of(workflow, "PromptBeamSearch")
        scorer_input = next(i for i in search["inputs"] if i["name"] == "scorer")
        generator_input = next(i for i in search["inputs"] if i["name"] == "generator")
        link = next(l for l in workflow["links"] if l[0] == scorer_input["link"])
        source = next(l for l in workflow["links"] if l[0] == generator_input["link"])
        link[1], link[2], link[5] = source[1], source[2], "PROMPTBEAM_SCORER"
        node_of(workflow, "PromptBeamFluxGenerator")["outputs"][0]["links"].append(link[0])
        node_of(workflow, "PromptBeamScorerLoader")["outputs"][0]["links"].remove(link[0])
    problems = problems_after(rewire, definitions=definitions)
    assert any("PROMPTBEAM_GENERATOR into node" in p and "input 'scorer' (PROMPTBEAM_SCORER)" in p
               for p in problems)


def test_api_check_reports_each_problem_by_input_name(definitions, mappings):
    def corrupt(prompt):
        search = api_node(prompt, "PromptBeamSearch")["inputs"]
        del search["iterations"]
        search["beam_width"] = 65
        search["alpha"] = "high"
        api_node(prompt, "PromptBeamOllama")["inputs"]["on_bad_output"] = "ignore"
        api_node(prompt, "PromptBeamFluxGenerator")["inputs"]["width"] = 8
        api_node(prompt, "PromptBeamFluxGenerator")["inputs"]["size"] = 512
        search["scorer"] = search["generator"]
        api_node(prompt, "SaveImage")["inputs"]["images"] = ["999", 0]
    problems = problems_after(corrupt, kind="api", definitions=definitions, mappings=mappings)
    expected = ["required input 'iterations' is missing", "input 'beam_width': 65 is bigger than max 64",
                "input 'alpha': 'high' is not a FLOAT", "input 'on_bad_output': 'ignore' not in",
                "input 'width': 8 is smaller than min 16", "'size' is not an input of PromptBeamFluxGenerator",
                "input 'scorer': PROMPTBEAM_GENERATOR from node", "input 'images': linked node 999 does not exist"]
    for text in expected:
        assert any(text in p for p in problems), (text, problems)
    assert len(problems) == len(expected)


def test_api_check_runs_the_nodes_own_validation(definitions, mappings):
    # With the LoRA Stack un-bypassed and pointing at a file that is not there, the node's validate_inputs answers
    # (as it would in ComfyUI) instead of the generic list check.
    prompt = copy.deepcopy(api("beam_search_flux"))
    prompt["5"] = {"class_type": "PromptBeamLoraStack",
                   "inputs": {"lora_name": "missing_lora.safetensors", "trigger": "", "weight": 1.0}}
    api_node(prompt, "PromptBeamFluxGenerator")["inputs"]["loras"] = ["5", 0]
    problems = wc.check_api(prompt, definitions, mappings, MODEL_FILES)
    assert len(problems) == 1
    assert re.search(r"node 5 \(PromptBeamLoraStack\): its own validation says .*LoRA 'missing_lora.safetensors' "
                     r"was not found", problems[0])
    prompt["5"]["inputs"]["lora_name"] = LORA_PLACEHOLDER
    assert wc.check_api(prompt, definitions, mappings, MODEL_FILES) == []


def test_api_check_needs_an_output_node(definitions, mappings):
    prompt = {k: v for k, v in api("score_and_select").items() if v["class_type"] in ("LoadImage", "ImageBatch")}
    assert wc.check_api(prompt, definitions, mappings, MODEL_FILES) == ["prompt: no output node"]


def test_ui_api_comparison_sees_value_link_and_node_differences(definitions):
    prompt = copy.deepcopy(api("beam_search_flux"))
    api_node(prompt, "PromptBeamSearch")["inputs"]["keep_top"] = 3
    api_node(prompt, "SaveImage")["inputs"]["images"][1] = 2
    prompt["99"] = {"class_type": "PreviewImage", "inputs": {}}
    problems = wc.compare_ui_api(ui("beam_search_flux"), prompt, definitions)
    assert any(p.startswith("node ids differ") for p in problems)
    assert any("(PromptBeamSearch): API inputs" in p and "'keep_top': 3" in p for p in problems)
    assert any("(SaveImage): API inputs" in p for p in problems)


def test_ui_api_comparison_follows_the_bypass_rule(definitions):
    # Un-bypassed, the LoRA Stack becomes a node of the API graph and feeds the generator: the shipped twin (made
    # with the node bypassed) no longer matches.
    workflow = copy.deepcopy(ui("beam_search_flux"))
    node_of(workflow, "PromptBeamLoraStack")["mode"] = 0
    problems = wc.compare_ui_api(workflow, api("beam_search_flux"), definitions)
    assert any(p.startswith("node ids differ") for p in problems)
    assert any("(PromptBeamFluxGenerator)" in p and "'loras': ['5', 0]" in p for p in problems)


def test_widget_slots_follow_the_editor_rules(definitions):
    # INT "seed" gets a control value even without control_after_generate; image_upload adds the upload button.
    assert wc.widget_slots(definitions["PromptBeamOllama"])[3:5] == [("seed", "value"), ("seed", "control")]
    assert wc.widget_slots(definitions["LoadImage"]) == [("image", "value"), ("image", "upload")]
    assert wc.widget_slots(definitions["PromptBeamSelectBest"]) == [("top_k", "value")]   # scores: forceInput
    assert wc.widget_slots(definitions["PreviewAny"]) == []


def test_api_twins_are_json_the_server_accepts():
    for name in NAMES:
        text = (WORKFLOWS / "api" / f"{name}.json").read_text(encoding="utf-8")
        prompt = json.loads(text)
        assert all(isinstance(k, str) and k.isdigit() for k in prompt)
        assert all(set(n) <= {"class_type", "inputs", "_meta"} for n in prompt.values())
