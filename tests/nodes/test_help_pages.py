"""Every node has a help page, web/docs/<node id>.md, that the editor shows in its node help panel (ComfyUI's
frontend fetches /extensions/<pack>/docs/<node id>.md). The page lists exactly the node's inputs and outputs, so a
new input without a line in its help page fails here. The real editor showing the pages: tests/integration."""
import re
from pathlib import Path

import pytest

from tests.fixtures.comfy import REPO, load_pack

SECTIONS = ["## Inputs", "## Outputs", "## Example", "## Common errors"]
ROW_NAME = re.compile(r"^\|\s*\*\*(\w+)\*\*( \(optional\))?\s*\|\s*([^|]+?)\s*\|")


def docs_folder() -> Path:
    return Path(REPO) / load_pack().WEB_DIRECTORY / "docs"


def table_rows(page: str, section: str) -> list:
    """(name, optional, type column) of each row of the table under `section`."""
    body = page.split(section, 1)[1].split("\n## ", 1)[0]
    return [(m[1], bool(m[2]), m[3]) for m in map(ROW_NAME.match, body.splitlines()) if m]


def node_infos():
    return {name: node.GET_NODE_INFO_V1() for name, node in load_pack().NODE_CLASS_MAPPINGS.items()}


def test_one_page_per_node_and_no_stray_pages(comfy_base):
    assert sorted(p.stem for p in docs_folder().glob("*.md")) == sorted(node_infos())


@pytest.mark.parametrize("name", sorted(load_pack().NODE_CLASS_MAPPINGS))
def test_page_documents_every_input_and_output(name, comfy_base):
    info = node_infos()[name]
    page = (docs_folder() / f"{name}.md").read_text(encoding="utf-8")
    # The panel shows the node's display name as its title; the page starts with what the node does.
    assert not page.startswith("#") and len(page.split("\n\n", 1)[0]) > 80, "start with a paragraph on what it does"
    assert [line for line in page.splitlines() if line.startswith("## ")] == SECTIONS
    expected_inputs = [(n, section == "optional") for section in ("required", "optional")
                       for n in info["input_order"].get(section, [])]
    assert [(n, optional) for n, optional, _ in table_rows(page, "## Inputs")] == expected_inputs
    outputs = table_rows(page, "## Outputs")
    assert [n for n, _, _ in outputs] == info["output_name"]
    for (_, _, kind), io_type, is_list in zip(outputs, info["output"], info["output_is_list"]):
        assert kind == f"`{io_type}`" + (" (list)" if is_list else ""), (name, kind)


def test_the_checker_notices_an_undocumented_input(comfy_base):
    page = (docs_folder() / "PromptBeamSearch.md").read_text(encoding="utf-8")
    rows = table_rows(page.replace("| **run_name** (optional)", "| run name"), "## Inputs")
    assert "run_name" not in [n for n, _, _ in rows] and len(rows) == len(table_rows(page, "## Inputs")) - 1
