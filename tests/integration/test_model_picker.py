"""The Ollama model picker on a real ComfyUI: the pack's route (GET /promptbeam/ollama/models) asked by HTTP, and the
editor extension (web/promptbeam.js) used in the real editor in headless Chromium, against the fake Ollama server on
loopback. The picker must leave workflows alone: the shipped ones still export to exactly themselves and their API
twins with the extension loaded. Editor tests skip like test_editor.py without Playwright / Chromium."""
import json
import os
import time
from pathlib import Path

import pytest
import requests

from tests.workflows import workflow_check as wc
from tests.fixtures.ollama import free_port

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
ROUTE = "/promptbeam/ollama/models"
PICKER_MENU = ".litecontextmenu.promptbeam-ollama-models"


# -- the route ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["", "/api"])   # the editor calls the /api twin ComfyUI adds to every route
def test_the_route_lists_the_models_of_the_ollama_at_base_url(comfy_server, fake_ollama, prefix):
    fake_ollama.models = ["qwen2.5:7b-instruct", "llama3.1:8b", "mistral-nemo:12b"]
    response = requests.get(comfy_server.url + prefix + ROUTE, params={"base_url": fake_ollama.url}, timeout=30)
    assert response.status_code == 200
    assert response.json() == {"models": ["qwen2.5:7b-instruct", "llama3.1:8b", "mistral-nemo:12b"],
                               "base_url": fake_ollama.url}


def test_the_route_answers_an_unreachable_ollama_with_what_to_do(comfy_server):
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    response = requests.get(comfy_server.url + ROUTE, params={"base_url": url}, timeout=30)
    assert time.monotonic() - started < 10          # reported at once, not after the chat timeout
    assert response.status_code == 200
    body = response.json()
    assert body["models"] == []
    assert body["error"].startswith(f"Cannot reach Ollama at {url}") and "ollama serve" in body["error"]


# -- the editor --------------------------------------------------------------------------------------------------------

@pytest.fixture
def editor(browser, editor_module, comfy_server):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = editor_module.Editor(context, comfy_server.url)
    yield page
    context.close()


def _open_with_ollama_at(editor, name: str, base_url: str) -> dict:
    """Open a shipped workflow, point its Ollama node at base_url (as a user types it) and bring the node into view."""
    workflow = wc.load(WORKFLOWS / f"{name}.json")
    assert editor.load(workflow) == []
    editor.page.evaluate("""(url) => {
        const node = app.graph._nodes.find(n => n.type === "PromptBeamOllama");
        node.widgets.find(w => w.name === "base_url").value = url;
        app.canvas.ds.scale = 1;
        app.canvas.ds.offset = [200 - node.pos[0], 150 - node.pos[1]];
        app.canvas.setDirty(true, true);
    }""", base_url)
    editor.page.wait_for_timeout(300)      # one frame draws the title button and records where it is
    return workflow


def _click_title_button(editor):
    x, y = editor.page.evaluate("""() => {
        const node = app.graph._nodes.find(n => n.type === "PromptBeamOllama");
        const button = node.title_buttons.find(b => b.name === "promptbeam_choose_ollama_model");
        const [bx, by, bw, bh] = button._last_area;
        const [x, y] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + bx + bw / 2, node.pos[1] + by + bh / 2]);
        const rect = app.canvas.canvas.getBoundingClientRect();
        return [rect.left + x, rect.top + y];
    }""")
    editor.page.mouse.click(x, y)


def _menu_entries(editor) -> list:
    editor.page.wait_for_selector(PICKER_MENU, timeout=10_000)
    return editor.page.locator(f"{PICKER_MENU} .litemenu-entry").all_inner_texts()


def _model_value(editor) -> str:
    return editor.page.evaluate("""() => app.graph._nodes.find(n => n.type === "PromptBeamOllama")
        .widgets.find(w => w.name === "model").value""")


def test_the_title_button_lists_the_models_and_picking_one_sets_the_model(editor, fake_ollama, tmp_path):
    fake_ollama.models = ["qwen2.5:7b-instruct", "llama3.1:8b", "gemma3:4b"]
    workflow = _open_with_ollama_at(editor, "beam_search_flux", fake_ollama.url)
    _click_title_button(editor)
    assert _menu_entries(editor) == ["qwen2.5:7b-instruct ✓", "llama3.1:8b", "gemma3:4b"]   # ✓ = current value
    assert editor.page.locator(f"{PICKER_MENU} .litemenu-title").inner_text() == \
        f"Ollama models at {fake_ollama.url}"
    editor.page.screenshot(path=str(os.environ.get("PROMPTBEAM_SCREENSHOT") or tmp_path / "model_menu.png"))
    editor.page.locator(f"{PICKER_MENU} .litemenu-entry", has_text="gemma3:4b").click()
    assert _model_value(editor) == "gemma3:4b"
    assert editor.page.locator(PICKER_MENU).count() == 0

    exported, prompt = editor.export()
    shipped = next(n for n in workflow["nodes"] if n["type"] == "PromptBeamOllama")
    node = next(n for n in exported["nodes"] if n["id"] == shipped["id"])
    # Exactly the two values the user changed; no trace of the picker in the saved node (same size, same keys).
    # `order` is the drawing order: clicking a node brings it to the front, with or without the picker.
    assert node["widgets_values"] == [fake_ollama.url, "gemma3:4b", *shipped["widgets_values"][2:]]
    changed = ("widgets_values", "order")
    assert {k: v for k, v in node.items() if k not in changed} == \
        {k: v for k, v in shipped.items() if k not in changed}
    assert prompt[str(shipped["id"])]["inputs"]["model"] == "gemma3:4b"
    assert [r["path"] for r in fake_ollama.requests] == ["/api/tags"]
    assert editor.errors == []


def test_the_right_click_menu_offers_the_picker(editor, fake_ollama):
    _open_with_ollama_at(editor, "refine_loop_manual", fake_ollama.url)
    x, y = editor.page.evaluate("""() => {
        const node = app.graph._nodes.find(n => n.type === "PromptBeamOllama");
        const [x, y] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + 60, node.pos[1] - 15]);   // its title
        const rect = app.canvas.canvas.getBoundingClientRect();
        return [rect.left + x, rect.top + y];
    }""")
    editor.page.mouse.click(x, y, button="right")
    editor.page.locator(".litecontextmenu .litemenu-entry", has_text="choose Ollama model…").click()
    assert _menu_entries(editor) == ["qwen2.5:7b-instruct ✓", "llama3.1:8b"]
    editor.page.locator(f"{PICKER_MENU} .litemenu-entry", has_text="llama3.1:8b").click()
    assert _model_value(editor) == "llama3.1:8b"


def test_an_unreachable_ollama_is_shown_to_the_user(editor):
    url = f"http://127.0.0.1:{free_port()}"
    _open_with_ollama_at(editor, "beam_search_flux", url)
    _click_title_button(editor)
    toast = editor.page.locator(".p-toast-message", has_text="Ollama models unavailable")
    toast.wait_for(timeout=10_000)
    assert f"Cannot reach Ollama at {url}" in toast.inner_text()
    assert editor.page.locator(PICKER_MENU).count() == 0
    assert _model_value(editor) == "qwen2.5:7b-instruct"


@pytest.mark.parametrize("name", ["beam_search_flux", "beam_then_upscale", "refine_loop_manual", "score_and_select"])
def test_with_the_picker_loaded_the_shipped_workflows_are_unchanged(editor, name):
    """The equality checks of test_editor.py, here tied to the extension being there (they pass without it too)."""
    assert editor.page.evaluate("() => app.extensions.some(e => e.name === 'promptbeam.ollamaModels')")
    workflow = wc.load(WORKFLOWS / f"{name}.json")
    assert editor.load(workflow) == []
    pickers = editor.page.evaluate("""() => app.graph._nodes.filter(n => n.type === "PromptBeamOllama")
        .map(n => n.title_buttons.map(b => b.name))""")
    assert pickers == [["promptbeam_choose_ollama_model"]] * sum(n["type"] == "PromptBeamOllama"
                                                                 for n in workflow["nodes"])
    exported, prompt = editor.export()
    assert exported == workflow
    assert prompt == wc.load(WORKFLOWS / "api" / f"{name}.json")
    assert json.dumps(exported).count("promptbeam_choose_ollama_model") == 0
    assert editor.errors == []
