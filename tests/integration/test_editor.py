"""The shipped UI workflows in ComfyUI's own graph editor (the frontend the real server serves), in headless
Chromium: each loads with every node type known and no schema warning, converts (app.graphToPrompt) to exactly its
API twin, and exports back to exactly the shipped file. Also what a user does with the Flux workflow's LoRA note.

Skipped unless Playwright is importable and a Chromium binary exists (PROMPTBEAM_CHROMIUM, default
/usr/bin/chromium); no browser is downloaded."""
import json
import time
from pathlib import Path

import pytest
import requests

from tests.fixtures.browser import chromium, require_browser
from tests.workflows import workflow_check as wc

sync_api = require_browser()

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
NAMES = ["beam_search_flux", "beam_search_judged", "beam_then_upscale", "refine_loop_manual", "score_and_select"]
EDITOR_READY = """() => window.app && window.app.graph && window.LiteGraph &&
    Object.keys(LiteGraph.registered_node_types).length > 100"""


class Editor:
    """One editor page on the test server."""

    def __init__(self, context, url):
        self.page = context.new_page()
        self.errors = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(url + "/")
        self.page.wait_for_function(EDITOR_READY, timeout=60_000)
        # Frontend 1.27.10 itself throws once while it registers its settings at start-up ("reading 'id'" in a
        # setting's onChange), before any workflow is opened: only errors from here on concern the workflows.
        self.errors.clear()

    def load(self, workflow: dict) -> list:
        """Open a workflow as the editor does; returns the node types it does not know (before loading)."""
        return self.page.evaluate("""async (text) => {
            const wf = JSON.parse(text);
            const missing = wf.nodes.map(n => n.type).filter(t => !(t in LiteGraph.registered_node_types));
            await app.loadGraphData(wf, true, true, null,
                {showMissingNodesDialog: false, showMissingModelsDialog: false});
            return missing;
        }""", json.dumps(workflow))

    def export(self):
        """(workflow, prompt): what the Export menu writes and what the Queue button sends."""
        both = json.loads(self.page.evaluate("async () => JSON.stringify(await app.graphToPrompt())"))
        return both["workflow"], both["output"]

    def toasts(self) -> list:
        return self.page.evaluate(
            "() => Array.from(document.querySelectorAll('.p-toast-message')).map(e => e.textContent.trim())")

    def nodes_with_errors(self) -> list:
        return self.page.evaluate("() => app.graph._nodes.filter(n => n.has_errors).map(n => n.id)")


@pytest.fixture(scope="module")
def browser(comfy_server):
    # First-run dialogs off, as a returning user has them (they cover the canvas, not the checks).
    requests.post(f"{comfy_server.url}/settings/Comfy.TutorialCompleted", json=True, timeout=10)
    with chromium(sync_api) as browser:
        yield browser


@pytest.fixture
def editor(browser, comfy_server):
    """A fresh profile per test: the editor restores the last open workflows from browser storage otherwise."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = Editor(context, comfy_server.url)
    yield page
    context.close()


@pytest.mark.parametrize("name", NAMES)
def test_editor_loads_the_workflow_and_converts_it_to_its_api_twin(editor, name):
    workflow = wc.load(WORKFLOWS / f"{name}.json")
    assert editor.load(workflow) == []
    time.sleep(0.5)                 # schema warnings arrive as toasts after the load
    assert editor.toasts() == []
    assert editor.nodes_with_errors() == []
    exported, prompt = editor.export()
    assert prompt == wc.load(WORKFLOWS / "api" / f"{name}.json")
    assert exported == workflow     # the shipped file is exactly what the editor's Export writes
    assert editor.errors == []


def test_editor_widgets_follow_the_rules_the_ci_checks_use(editor, comfy_server):
    """widgets_values positions (control_after_generate, upload button, forceInput) as the editor lays them out."""
    info = comfy_server.object_info()
    used = sorted({n["type"] for name in NAMES for n in wc.load(WORKFLOWS / f"{name}.json")["nodes"]})
    serialized = editor.page.evaluate("""(types) => Object.fromEntries(types.map(t => {
        const node = LiteGraph.createNode(t); app.graph.add(node);
        return [t, node.serialize().widgets_values || []]; }))""", used)
    for node_type in used:
        definition = info.get(node_type) or wc.EDITOR_ONLY_NODES[node_type]
        slots = wc.widget_slots(definition)
        assert len(serialized[node_type]) == len(slots), (node_type, serialized[node_type], slots)
        for (input_name, kind), value in zip(slots, serialized[node_type]):
            if kind == "control":
                assert value in wc.CONTROL_VALUES, (node_type, input_name, value)
            elif kind == "upload":
                assert value == wc.UPLOAD_VALUE, (node_type, value)


def test_un_bypassing_the_lora_stack_gives_a_graph_the_server_accepts(editor, comfy_server):
    """The Flux workflow's LoRA note: pick the file, un-bypass the node (Ctrl+B). The editor's conversion then
    feeds the stack into the generator, and the server validates it (with this machine's LoRA file)."""
    workflow = wc.load(WORKFLOWS / "beam_search_flux.json")
    assert editor.load(workflow) == []
    prompt = json.loads(editor.page.evaluate("""async () => {
        const lora = app.graph._nodes.find(n => n.type === "PromptBeamLoraStack");
        lora.mode = 0;
        lora.widgets.find(w => w.name === "lora_name").value = "tiny_flux_lora.safetensors";
        return JSON.stringify((await app.graphToPrompt()).output);
    }"""))
    lora_id = str(next(n["id"] for n in workflow["nodes"] if n["type"] == "PromptBeamLoraStack"))
    generator = next(n for n in prompt.values() if n["class_type"] == "PromptBeamFluxGenerator")
    assert generator["inputs"]["loras"] == [lora_id, 0]
    assert prompt[lora_id]["inputs"] == {"lora_name": "tiny_flux_lora.safetensors", "trigger": "", "weight": 1}
    # Validation only needs the LoRA stack's own answer here; the Flux files are missing on this machine.
    result = comfy_server.post_prompt(prompt)
    assert lora_id not in result["node_errors"]
    assert {node_id for node_id in result["node_errors"]} == {
        node_id for node_id, node in prompt.items()
        if node["class_type"] in ("UNETLoader", "DualCLIPLoader", "VAELoader")}


def test_a_newcomer_without_the_flux_files_is_offered_their_downloads(editor):
    """Opened like a template (with the editor's missing-models check on), on a machine without the Flux files,
    the Flux workflow lists each file with its folder and a download button."""
    editor.page.evaluate("""async (text) => {
        await app.loadGraphData(JSON.parse(text), true, true, null,
            {showMissingNodesDialog: true, showMissingModelsDialog: true});
    }""", (WORKFLOWS / "beam_search_flux.json").read_text(encoding="utf-8"))
    dialog = editor.page.locator(".p-dialog", has_text="Missing Models")
    dialog.wait_for(timeout=10_000)
    text = dialog.inner_text()
    for entry in ("diffusion_models / flux1-schnell.safetensors", "text_encoders / clip_l.safetensors",
                  "text_encoders / t5xxl_fp16.safetensors", "vae / ae.safetensors"):
        assert entry in text
    assert text.count("Download") == 4
    assert "Some Nodes Are Missing" not in editor.page.content()
