"""The install instructions a user follows: README, docs and pyproject agree on the folder name, point at no
repository that does not exist, and a clone made the way the README says is a pack ComfyUI can load."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.comfy import PACK_MODULE

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
NAME = PYPROJECT["project"]["name"]
DOCS = {path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8")
        for path in [REPO / "README.md", REPO / "pyproject.toml", *sorted((REPO / "docs").glob("*.md"))]}


def section(markdown: str, heading: str) -> str:
    """The text under a `### heading`, up to the next heading."""
    match = re.search(rf"^### {re.escape(heading)}\n(.*?)(?=^#)", markdown, re.S | re.M)
    assert match, f"README has no '### {heading}' section"
    return match.group(1)


def test_no_document_names_the_repository_that_does_not_exist():
    for name, text in DOCS.items():
        assert "github.com/promptbeam" not in text, name


def test_the_install_folder_is_the_project_name_everywhere():
    into_comfy = section(README, "Into ComfyUI")
    clones = re.findall(r"^git clone (\S+) (\S+)", into_comfy, re.M)
    assert clones and all(folder == NAME for _, folder in clones), clones
    assert f"pip install -r {NAME}/requirements.txt" in into_comfy
    standalone = section(README, "Standalone (CLI and services)")
    assert re.search(rf"^git clone (\S+) {re.escape(NAME)} && cd {re.escape(NAME)}\b", standalone, re.M)
    # The template browser lists the workflows under the pack's folder name.
    shown = re.findall(r"Custom Nodes\*?\*?\s+→\s+\*?\*?`?([\w.-]+)", README + DOCS["docs/workflows.md"])
    assert shown and set(shown) == {NAME}, shown
    # The tests load the pack under the same name ComfyUI would give it.
    assert PACK_MODULE == NAME
    integration = (REPO / "tests/integration/conftest.py").read_text(encoding="utf-8")
    assert f'PACK_FOLDER = "{NAME}"' in integration


def test_registry_fields_are_consistent_and_invent_nothing():
    comfy = PYPROJECT["tool"]["comfy"]
    assert set(comfy) >= {"PublisherId", "DisplayName", "Icon"}
    assert comfy["DisplayName"] == "Prompt Beam"
    assert comfy["DisplayName"] in README                         # the name ComfyUI-Manager would list
    urls = PYPROJECT["project"].get("urls", {})
    # Publishing needs a public repository and a registered publisher together; neither is set without the other.
    assert bool(urls.get("Repository")) == bool(comfy["PublisherId"]), (urls, comfy["PublisherId"])
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]{0,98}", NAME) and not re.search(r"[._-]{2}", NAME)


def test_a_clone_made_as_the_readme_says_loads_as_a_comfyui_pack(tmp_path):
    """`git clone <this repository> custom_nodes/comfyui-promptbeam`, then ComfyUI's way of importing a pack (by
    path, under its folder name) against the fake ComfyUI modules: every tracked file a pack needs is there."""
    if shutil.which("git") is None or subprocess.run(["git", "-C", str(REPO), "rev-parse", "--git-dir"],
                                                     capture_output=True).returncode != 0:
        pytest.skip("needs git and a git checkout of the pack")
    custom_nodes = tmp_path / "ComfyUI" / "custom_nodes"
    custom_nodes.mkdir(parents=True)
    clone = subprocess.run(["git", "clone", "--quiet", str(REPO), NAME], cwd=custom_nodes, capture_output=True,
                           text=True, timeout=120)
    assert clone.returncode == 0, clone.stderr
    pack = custom_nodes / NAME
    assert (pack / "requirements.txt").is_file() and (pack / "__init__.py").is_file()
    load = f"""
import importlib.util, json, os, sys
pack = {str(pack)!r}
sys.path.insert(0, pack)                       # only for the fake ComfyUI modules the clone ships in tests/
from tests.comfy_fakes import install
install()
spec = importlib.util.spec_from_file_location({NAME!r}, os.path.join(pack, "__init__.py"),
                                              submodule_search_locations=[pack])
module = importlib.util.module_from_spec(spec)
sys.modules[{NAME!r}] = module
spec.loader.exec_module(module)
web = os.path.join(pack, module.WEB_DIRECTORY)
print(json.dumps({{"nodes": sorted(module.NODE_CLASS_MAPPINGS), "web": sorted(os.listdir(web)),
                  "loaded_from": os.path.dirname(sys.modules[{NAME!r} + ".nodes"].__file__)}}))
"""
    result = subprocess.run([sys.executable, "-c", load], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"PromptBeamSearch", "PromptBeamOllama", "PromptBeamFluxGenerator"} <= set(loaded["nodes"])
    assert loaded["web"] and Path(loaded["loaded_from"]) == pack / "nodes"
    assert sorted(p.name for p in (pack / "workflows").glob("*.json")) == \
        sorted(p.name for p in (REPO / "workflows").glob("*.json"))
