"""The nodes' help pages in the real editor: ComfyUI serves web/docs/<node id>.md under the pack's extension folder,
and selecting a node and pressing the selection toolbox's info button opens the node library's help panel on that
page, rendered from the pack's markdown (not the editor's fallback built from the node's description)."""
import re
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import PACK_FOLDER

DOCS = Path(__file__).resolve().parents[2] / "web" / "docs"
NODES = sorted(p.stem for p in DOCS.glob("*.md"))


def first_sentence(name: str) -> str:
    """The page's first sentence, as the panel renders it (markdown emphasis and code marks removed)."""
    paragraph = (DOCS / f"{name}.md").read_text(encoding="utf-8").split("\n\n", 1)[0]
    text = re.sub(r"[*`]", "", " ".join(paragraph.split()))
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)
    return text.split(". ")[0].split(": ")[0]


@pytest.fixture(scope="module")
def editor(browser, editor_module, comfy_server):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = editor_module.Editor(context, comfy_server.url)
    yield page
    context.close()


def test_every_page_is_served_where_the_editor_looks_for_it(comfy_server):
    info = comfy_server.object_info()
    assert NODES == sorted(name for name, node in info.items()
                           if node["python_module"] == f"custom_nodes.{PACK_FOLDER}")      # one page per node
    for name in NODES:
        # The frontend derives the folder from the node's python_module ("custom_nodes.<pack folder>").
        assert info[name]["python_module"] == f"custom_nodes.{PACK_FOLDER}"
        response = requests.get(f"{comfy_server.url}/extensions/{PACK_FOLDER}/docs/{name}.md", timeout=10)
        assert response.status_code == 200, name
        # Served without a charset; the editor's fetch().text() decodes UTF-8, whatever the header says.
        assert response.content == (DOCS / f"{name}.md").read_bytes()


@pytest.mark.parametrize("name", NODES)
def test_the_info_button_opens_the_nodes_help_page(editor, name):
    expected = first_sentence(name)
    shown = editor.page.evaluate("""async ([type, expected]) => {
        app.graph.clear();
        const node = LiteGraph.createNode(type);
        node.pos = [400, 200];
        app.graph.add(node);
        app.canvas.deselectAll();
        app.canvas.selectNode(node);
        app.canvas.setDirty(true, true);
        const wait = async (find) => { for (let i = 0; i < 100; i++) { const found = find();
            if (found) return found; await new Promise(r => setTimeout(r, 100)); } return null; };
        const button = await wait(() => document.querySelector('[data-testid="info-button"]'));
        if (!button) return {error: "no info button in the selection toolbox"};
        button.click();
        const flat = (text) => text.split(/\s+/).join(" ");
        const page = await wait(() => {
            const panel = document.querySelector('.markdown-content');
            return panel && flat(panel.innerText).includes(expected) ? panel : null; });
        const title = Array.from(document.querySelectorAll('span')).find(s => s.textContent === node.title);
        return page ? {text: page.innerText, headings: Array.from(page.querySelectorAll('h2')).map(h => h.textContent),
                       tables: page.querySelectorAll('table').length, title: !!title}
                    : {error: "no help page rendered", body: document.body.innerText.slice(0, 2000)};
    }""", [name, expected])
    assert "error" not in shown, shown
    assert shown["headings"] == ["Inputs", "Outputs", "Example", "Common errors"]
    assert shown["tables"] >= 3                      # inputs, outputs, errors: markdown tables rendered as tables
    assert "Common errors" in shown["text"]
    assert shown["title"]
    assert editor.errors == []
