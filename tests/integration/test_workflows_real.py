"""The shipped workflows on a real ComfyUI: the template browser lists them, the core-node table the CI checks use
matches /object_info, every API twin validates, and the twins run end to end once their model files are swapped for
this machine's tiny ones (tiny Flux from the test pack, tiny CLIP-L and TAESD files, the fake Ollama server, a tiny
open_clip scorer). Bad inputs come back as node_errors naming the input."""
import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from pipeline.comfy_api.client import apply_sets
from tests.workflows import workflow_check as wc
from tests.fixtures.comfy import load_pack
from tests.integration.conftest import PACK_FOLDER

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
NAMES = ["beam_search_flux", "beam_search_judged", "beam_then_upscale", "refine_loop_manual", "score_and_select"]
SIZE = 64


def twin(name):
    return wc.load(WORKFLOWS / "api" / f"{name}.json")


def ids(prompt, class_type):
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def by_title(prompt, title):
    node_id, = [node_id for node_id, node in prompt.items() if node.get("_meta", {}).get("title") == title]
    return node_id


def on_this_machine(prompt, ollama_url, clip_dir, aesthetic_path):
    """The twin with --set-like substitutions for what exists here; every other node and link stays as shipped.

    UNETLoader cannot load a tiny Flux and T5-XXL has no tiny form, so those two loaders become the test pack's
    tiny Flux and a CLIPLoader on a tiny CLIP-L; files, Ollama and the scorer are pointed at the test's own."""
    graph = copy.deepcopy(prompt)
    for node_id in ids(graph, "UNETLoader"):
        graph[node_id] = {"class_type": "PromptBeamTestTinyFlux", "inputs": {"seed": 0}}
    for node_id in ids(graph, "DualCLIPLoader"):
        graph[node_id] = {"class_type": "CLIPLoader",
                          "inputs": {"clip_name": "tiny_clip_l.safetensors", "type": "stable_diffusion"}}
    sets = [f"{n}.vae_name=tiny_taef1.safetensors" for n in ids(graph, "VAELoader")]
    sets += [f"{n}.base_url={ollama_url}" for t in ("PromptBeamOllama", "PromptBeamVLMJudge") for n in ids(graph, t)]
    sets += [s for n in ids(graph, "PromptBeamScorerLoader")
             for s in (f"{n}.clip_model=local-dir:{clip_dir}", f"{n}.aesthetic_model={aesthetic_path}",
                       f"{n}.device=cpu")]
    sets += [s for n in ids(graph, "PromptBeamFluxGenerator")
             for s in (f"{n}.width={SIZE}", f"{n}.height={SIZE}", f"{n}.steps=2")]
    sets += [s for n in ids(graph, "PromptBeamSearch")
             for s in (f"{n}.beam_width=2", f"{n}.keep_top=1", f"{n}.iterations=2", f"{n}.run_name=shipped")]
    apply_sets(graph, sets)
    return graph


@pytest.fixture
def here(fake_ollama, tiny_clip_dir, tiny_aesthetic_path):
    return lambda name: on_this_machine(twin(name), fake_ollama.url, tiny_clip_dir, tiny_aesthetic_path)


@pytest.fixture(scope="module")
def example_images(comfy_server):
    """example.png (the file ComfyUI ships in input/) plus two more distinct images, in the server's input/."""
    source = Path(os.environ["COMFYUI_DIR"]) / "input" / "example.png"
    inputs = comfy_server.base / "input"
    Image.open(source).convert("RGB").save(inputs / "example.png")
    Image.new("RGB", (96, 96), (200, 30, 30)).save(inputs / "pb_red.png")
    gradient = np.linspace(0, 255, 96 * 96 * 3).reshape(96, 96, 3).astype(np.uint8)
    Image.fromarray(gradient).save(inputs / "pb_gradient.png")
    return ["example.png", "pb_red.png", "pb_gradient.png"]


def errors_by_input(result):
    """{(node id, input name): error type} from a POST /prompt answer."""
    return {(node_id, error["extra_info"].get("input_name")): error["type"]
            for node_id, entry in result["node_errors"].items() for error in entry["errors"]}


# --- what the server says about the files and the node tables -------------------------------------------------

def test_template_browser_lists_the_workflows(comfy_server):
    templates = comfy_server.get("/workflow_templates")
    assert sorted(templates[PACK_FOLDER]) == NAMES   # the API twins in workflows/api/ are not listed
    for name in NAMES:
        served = requests.get(f"{comfy_server.url}/api/workflow_templates/{PACK_FOLDER}/{name}.json", timeout=10)
        assert served.status_code == 200 and served.json() == wc.load(WORKFLOWS / f"{name}.json")
        thumbnail = requests.get(f"{comfy_server.url}/api/workflow_templates/{PACK_FOLDER}/{name}.jpg", timeout=10)
        assert thumbnail.status_code == 200 and thumbnail.headers["Content-Type"] == "image/jpeg"


def test_core_node_table_matches_object_info(comfy_server):
    info = comfy_server.object_info()
    for name, table in wc.CORE_NODES.items():
        real = info[name]
        for key in ("output", "output_name", "output_is_list"):
            assert list(real[key]) == list(table[key]), (name, key)
        assert real["output_node"] is table["output_node"], name
        for category in ("required", "optional"):
            assert list(real["input"].get(category, {})) == list(table["input"].get(category, {})), (name, category)
            for input_name, spec in table["input"].get(category, {}).items():
                actual = real["input"][category][input_name]
                if isinstance(spec[0], wc.Files):
                    assert isinstance(actual[0], list), (name, input_name)      # a folder listing
                else:
                    assert actual[0] == spec[0], (name, input_name)
                options = spec[1] if len(spec) > 1 else {}
                actual_options = actual[1] if len(actual) > 1 else {}
                for key, value in options.items():
                    assert actual_options.get(key) == value, (name, input_name, key)
        assert set(real["input"]) - {"required", "optional", "hidden"} == set()
    for name in wc.EDITOR_ONLY_NODES:
        assert name not in info      # the editor's own nodes never reach the server


def test_pack_definitions_seen_offline_match_the_server(comfy_server):
    """The CI checks read the nodes' schema under the fake ComfyUI modules; the real server must agree on every input's
    name, place and type, on ranges and widget options, and accept every combo value the fake offers."""
    info = comfy_server.object_info()
    for name, cls in load_pack().NODE_CLASS_MAPPINGS.items():
        offline, real = wc.node_info(cls), info[name]
        for key in ("output", "output_name", "output_is_list"):
            assert list(offline[key]) == list(real[key]), (name, key)
        assert offline["output_node"] is real["output_node"], name
        offline_specs = {s.name: s for s in wc.input_specs(offline)}
        real_specs = {s.name: s for s in wc.input_specs(real)}
        assert [(s.name, s.required) for s in wc.input_specs(offline)] == \
               [(s.name, s.required) for s in wc.input_specs(real)], name
        for input_name, spec in offline_specs.items():
            actual = real_specs[input_name]
            assert spec.type_name == actual.type_name, (name, input_name)
            for key in ("min", "max", "forceInput", "control_after_generate", "multiline"):
                assert spec.options.get(key) == actual.options.get(key), (name, input_name, key)
            if spec.type_name == "COMBO" and input_name != "lora_name":   # lora_name lists each machine's files
                assert set(spec.type) <= set(actual.type), (name, input_name)
        assert wc.widget_slots(offline) == wc.widget_slots(real), name


# --- the twins on the server ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["beam_search_flux", "beam_search_judged", "beam_then_upscale", "refine_loop_manual"])
def test_as_shipped_only_the_missing_model_files_are_refused(comfy_server, fake_ollama, name):
    """On a machine without the Flux files the server names exactly those four inputs, nothing else."""
    graph = twin(name)
    apply_sets(graph, [f"{n}.base_url={fake_ollama.url}" for t in ("PromptBeamOllama", "PromptBeamVLMJudge")
                       for n in ids(graph, t)])
    result = comfy_server.post_prompt(graph)
    unet, = ids(graph, "UNETLoader")
    clip, = ids(graph, "DualCLIPLoader")
    vae, = ids(graph, "VAELoader")
    assert errors_by_input(result) == {
        (unet, "unet_name"): "value_not_in_list", (clip, "clip_name1"): "value_not_in_list",
        (clip, "clip_name2"): "value_not_in_list", (vae, "vae_name"): "value_not_in_list"}
    details = {e["details"] for entry in result["node_errors"].values() for e in entry["errors"]}
    assert "unet_name: 'flux1-schnell.safetensors' not in []" in details
    if result["prompt_id"]:   # branches that do not need the files were queued: let them finish
        comfy_server.wait_history(result["prompt_id"], timeout=300)


def test_beam_search_flux_twin_runs_end_to_end(comfy_server, here):
    graph = here("beam_search_flux")
    entry = comfy_server.run(graph, timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    save, = ids(graph, "SaveImage")
    finalists, = ids(graph, "PreviewImage")
    show_prompt, show_report = by_title(graph, "Best prompt"), by_title(graph, "Report (JSON)")
    report = json.loads(entry["outputs"][show_report]["text"][0])
    assert report["user_prompt"] == graph[ids(graph, "PromptBeamSearch")[0]]["inputs"]["prompt"]
    assert report["stop_reason"] == "max_iterations" and len(report["candidates"]) == 4
    best = next(c for c in report["candidates"] if c["id"] == report["best"])
    assert entry["outputs"][show_prompt]["text"][0] == best["prompt"]
    best_file, = comfy_server.images(entry, save)
    assert best_file.parent.name == "promptbeam" and best_file.name.startswith("best_")
    assert Image.open(best_file).size == (SIZE, SIZE)
    assert len(comfy_server.images(entry, finalists)) == 1     # keep_top=1


def test_beam_search_judged_twin_runs_with_a_critic_and_a_judge(comfy_server, here, fake_ollama):
    """The judged workflow as shipped (critic: a second Ollama node on a vision model; the VLM Judge), against the
    fake Ollama's vision models: the critic sees each parent, the judge decides pairs near the cut, all recorded."""
    fake_ollama.add_vision_models()
    graph = here("beam_search_judged")
    judge, = ids(graph, "PromptBeamVLMJudge")
    apply_sets(graph, [f"{judge}.margin=5.0", f"{judge}.budget=2"])     # the tiny run's few candidates: all near
    entry = comfy_server.run(graph, timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    report = json.loads(entry["outputs"][by_title(graph, "Report (JSON)")]["text"][0])
    assert report["stop_reason"] == "max_iterations" and len(report["candidates"]) == 4
    assert report["config"]["critic"]["model"] == report["config"]["judge"]["model"] == "qwen2.5vl:7b"
    parent, = report["iterations"][0]["survivors"]
    evaluation = next(c for c in report["candidates"] if c["id"] == parent)["evaluation"]
    assert evaluation["model"] == "qwen2.5vl:7b" and evaluation["analysis"].startswith(f"Image 1 is {SIZE}x{SIZE}")
    assert report["judgements"] and all(len(j["answers"]) == 2 for j in report["judgements"])
    kinds = [r["kind"] for r in fake_ollama.vision_requests]
    assert kinds.count("critic") == 1 and kinds.count("judge") == 2 * len(report["judgements"])
    best, = comfy_server.images(entry, by_title(graph, "Best image"))
    assert Image.open(best).size == (SIZE, SIZE)


def test_beam_then_upscale_twin_renders_the_winner_at_twice_the_search_size(comfy_server, here):
    graph = here("beam_then_upscale")
    entry = comfy_server.run(graph, timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    report = json.loads(entry["outputs"][by_title(graph, "Report (JSON)")]["text"][0])
    assert report["stop_reason"] == "max_iterations" and len(report["candidates"]) == 4
    best, = comfy_server.images(entry, by_title(graph, "Best image"))
    twice, = comfy_server.images(entry, by_title(graph, "Best image at 2×"))
    assert twice.name.startswith("best_2x_") and Image.open(best).size == (SIZE, SIZE)
    assert Image.open(twice).size == (2 * SIZE, 2 * SIZE)
    pixels = np.asarray(Image.open(twice).convert("RGB"), dtype=float)
    assert np.isfinite(pixels).all() and pixels.std() > 1.0        # a rendered picture, not a flat or empty one


def test_beam_then_upscale_runs_from_the_template_browser(comfy_server, here, browser, editor_module):
    """What a user does: Templates (sidebar) -> Custom Nodes -> comfyui-promptbeam -> beam_then_upscale. The editor
    opens exactly the shipped graph; Run sends exactly the API twin, which runs here once its model files are
    swapped for this machine's (as in the twin tests above)."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        editor = editor_module.Editor(context, comfy_server.url)
        page = editor.page
        # The dialog fetches the template lists and thumbnails when it opens: slow on a busy machine. Playwright's
        # own waits (not a polling loop inside the page) click each element once it is there and can take a click.
        page.get_by_role("button", name="Templates", exact=True).first.click()
        page.locator(".p-dialog li").filter(has_text=PACK_FOLDER).first.click(timeout=60_000)
        page.locator('[data-testid="template-workflow-beam_then_upscale"]').click(timeout=60_000)
        page.wait_for_function("""() => !document.querySelector(".p-dialog") &&
                                        app.graph._nodes.some(n => n.type === "PromptBeamSearch")""", timeout=60_000)
        opened = page.evaluate("() => app.graph._nodes.length")
        workflow, prompt = editor.export()
        assert editor.errors == []
    finally:
        context.close()
    assert opened == len(wc.load(WORKFLOWS / "beam_then_upscale.json")["nodes"])
    assert workflow == wc.load(WORKFLOWS / "beam_then_upscale.json")
    assert prompt == twin("beam_then_upscale")
    graph = here("beam_then_upscale")                  # the same prompt, with this machine's models
    apply_sets(graph, [f"{ids(graph, 'PromptBeamSearch')[0]}.seed=4242"])
    entry = comfy_server.run(graph, timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    twice, = comfy_server.images(entry, by_title(graph, "Best image at 2×"))
    assert Image.open(twice).size == (2 * SIZE, 2 * SIZE)


def test_best_prompt_and_best_seed_render_the_winner_again_with_core_nodes(comfy_server, here):
    """The search's two new-style outputs are enough to re-render its best image exactly: best_prompt -> CLIP Text
    Encode -> FluxGuidance and best_seed -> KSampler (the generator's size, steps and sampler, denoise 1)."""
    graph = here("beam_search_flux")
    search, = ids(graph, "PromptBeamSearch")
    generator = graph[ids(graph, "PromptBeamFluxGenerator")[0]]["inputs"]
    apply_sets(graph, [f"{search}.seed=913"])          # a search no other test ran: nothing from the cache
    graph.update({
        "90": {"class_type": "CLIPTextEncode", "inputs": {"text": [search, 1], "clip": generator["clip"]}},
        "91": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["90", 0], "guidance": generator["guidance"]}},
        "92": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["90", 0]}},
        "93": {"class_type": "EmptySD3LatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "94": {"class_type": "KSampler", "inputs": {
            "model": generator["model"], "seed": [search, 4], "steps": generator["steps"], "cfg": 1.0,
            "sampler_name": generator["sampler_name"], "scheduler": generator["scheduler"], "positive": ["91", 0],
            "negative": ["92", 0], "latent_image": ["93", 0], "denoise": 1.0}},
        "95": {"class_type": "VAEDecode", "inputs": {"samples": ["94", 0], "vae": generator["vae"]}},
        "96": {"class_type": "SaveImage", "inputs": {"images": ["95", 0], "filename_prefix": "again"}},
    })
    entry = comfy_server.run(graph, timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    best, = comfy_server.images(entry, ids(graph, "SaveImage")[0])
    again, = comfy_server.images(entry, "96")
    report = json.loads(entry["outputs"][by_title(graph, "Report (JSON)")]["text"][0])
    seeds = {c["seed"] for c in report["candidates"]}
    assert len(seeds) > 1              # the winner's seed is not just any candidate's
    assert np.array_equal(np.asarray(Image.open(best).convert("RGB")), np.asarray(Image.open(again).convert("RGB")))


def test_beam_search_flux_twin_with_the_lora_stack_in_use(comfy_server, here):
    """What the LoRA note asks a user to do: pick a file, un-bypass; the stack feeds the generator."""
    graph = here("beam_search_flux")
    generator, = ids(graph, "PromptBeamFluxGenerator")
    graph["5"] = {"class_type": "PromptBeamLoraStack",
                  "inputs": {"lora_name": "tiny_flux_lora.safetensors", "trigger": "pbstyle", "weight": 0.8}}
    graph[generator]["inputs"]["loras"] = ["5", 0]
    entry = comfy_server.run(graph, timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    report = json.loads(entry["outputs"][by_title(graph, "Report (JSON)")]["text"][0])
    assert report["config"]["generator"]["loras"] == [
        {"path": "tiny_flux_lora.safetensors", "trigger": "pbstyle", "weight": 0.8}]
    assert all(c["status"] == "ok" for c in report["candidates"])


def test_refine_loop_twin_runs_three_rounds(comfy_server, here, fake_ollama):
    graph = here("refine_loop_manual")
    # A seed no other test uses: nothing of this graph comes from ComfyUI's cache, every LLM step runs.
    apply_sets(graph, [f"{ids(graph, 'PromptBeamOllama')[0]}.seed=7301"])
    entry = comfy_server.run(graph, timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    outputs = entry["outputs"]
    # Each round's Score node shows its image and scores; the last one compares the three.
    final_score = by_title(graph, "Score all three")
    rounds = [n for n in ids(graph, "PromptBeamScore") if n != final_score]
    for node_id in rounds:
        assert len(comfy_server.images(entry, node_id)) == 1 and outputs[node_id]["text"][0].startswith("#0: ")
    assert len(comfy_server.images(entry, final_score)) == 3
    texts = {graph[n]["_meta"]["title"]: outputs[n]["text"][0] for n in ids(graph, "PreviewAny")}
    critique = json.loads(texts["Round 1 · critique"])
    assert set(critique) >= {"critique", "recommendation", "reason"}
    # The refined WHAT reached round 2's prompt: rounds 1 and 2 rendered different prompts.
    assert texts["Round 1 · prompt"] != texts["Round 2 · prompt"] != texts["Round 3 · prompt"]
    winner = json.loads(texts["Winning round (0 = round 1)"])
    assert len(winner) == 1 and winner[0] in (0, 1, 2)
    saved, = comfy_server.images(entry, ids(graph, "SaveImage")[0])
    assert Image.open(saved).size == (SIZE, SIZE)
    chats = fake_ollama.bodies("/api/chat")
    assert len(chats) == 2 + 3 + 2 + 2          # expand x2, combine x3, critique x2, refine x2


def test_score_and_select_twin_keeps_the_best_image(comfy_server, here, example_images):
    graph = here("score_and_select")
    loaders = ids(graph, "LoadImage")
    entry = comfy_server.run(graph, timeout=300)   # as shipped: three copies of example.png
    assert entry["status"]["status_str"] == "success", entry["status"]

    apply_sets(graph, [f"{node}.image={image}" for node, image in zip(loaders, example_images)]
               + [f"{ids(graph, 'PromptBeamSelectBest')[0]}.top_k=1"])
    entry = comfy_server.run(graph, timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    score, = ids(graph, "PromptBeamScore")
    select_text = by_title(graph, "Selected indices (0 = first image)")
    scores_text = by_title(graph, "Scores (JSON)")
    scores = json.loads(entry["outputs"][scores_text]["text"][0])
    totals = [image["total"] for image in scores["images"]]
    assert len(totals) == 3 and len(set(totals)) == 3
    best = max(range(3), key=lambda i: totals[i])
    assert json.loads(entry["outputs"][select_text]["text"][0]) == [best]
    saved, = comfy_server.images(entry, ids(graph, "SaveImage")[0])
    # The kept image is the winning input, pixel for pixel (inputs are batched at the first image's size).
    first = Image.open(comfy_server.base / "input" / example_images[0])
    expected = Image.open(comfy_server.base / "input" / example_images[best]).convert("RGB")
    if expected.size != first.size:
        expected = expected.resize(first.size, Image.BILINEAR)
    difference = np.abs(np.asarray(Image.open(saved).convert("RGB"), dtype=int) - np.asarray(expected, dtype=int))
    assert difference.mean() < 2.0
    assert len(comfy_server.images(entry, score)) == 3


def test_bad_inputs_come_back_naming_the_input(comfy_server, here):
    graph = here("beam_search_flux")
    search, = ids(graph, "PromptBeamSearch")
    generator, = ids(graph, "PromptBeamFluxGenerator")
    llm, = ids(graph, "PromptBeamOllama")
    apply_sets(graph, [f"{search}.beam_width=0", f"{search}.style=anime", f"{search}.seed=notanint",
                       f"{generator}.sampler_name=euler_z", f"{llm}.on_bad_output=ignore"])
    graph[search]["inputs"]["scorer"] = [generator, 0]
    graph["5"] = {"class_type": "PromptBeamLoraStack",
                  "inputs": {"lora_name": "missing_lora.safetensors", "trigger": "", "weight": 1.0}}
    graph[generator]["inputs"]["loras"] = ["5", 0]
    result = comfy_server.post_prompt(graph)
    assert result["status"] == 400 and result["prompt_id"] is None
    assert errors_by_input(result) == {
        (search, "beam_width"): "value_smaller_than_min", (search, "style"): "value_not_in_list",
        (search, "seed"): "invalid_input_type", (search, "scorer"): "return_type_mismatch",
        (generator, "sampler_name"): "value_not_in_list", (llm, "on_bad_output"): "value_not_in_list",
        ("5", "lora_name"): "custom_validation_failed"}
    lora_error, = result["node_errors"]["5"]["errors"]
    assert "LoRA 'missing_lora.safetensors' was not found" in lora_error["details"]
    assert lora_error["details"].startswith("lora_name - ")
