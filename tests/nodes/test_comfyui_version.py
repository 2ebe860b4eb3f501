"""The oldest ComfyUI the pack supports is stated once in the code (nodes.MIN_COMFYUI) and the same in pyproject and
the README; on a ComfyUI without comfy_api.v0_0_2 the pack registers nothing and logs one line, with no traceback.
(On real ComfyUI 0.3.47 / 0.3.48: tests/integration/test_v3_registration.py, with COMFYUI_TOO_OLD_DIR /
COMFYUI_OLDEST_DIR.)"""
import asyncio
import builtins
import importlib.util
import logging
import os
import re
import sys
import types

import pytest

from tests.fixtures.comfy import PACK_MODULE, REPO, load_pack

tomllib = pytest.importorskip("tomllib")


def test_the_oldest_comfyui_is_the_same_in_code_pyproject_and_readme():
    load_pack()
    minimum = sys.modules[f"{PACK_MODULE}.nodes"].MIN_COMFYUI
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        comfy = tomllib.load(f)["tool"]["comfy"]
    assert comfy["requires-comfyui"] == f">={minimum}"          # what ComfyUI's comfy_config reads
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        assert f"**ComfyUI {minimum} or newer**" in f.read()


@pytest.fixture
def comfyui_without_v3(monkeypatch):
    """The fake ComfyUI as a release before 0.3.48: no comfy_api.v0_0_2 (importing it fails as it would there)."""
    load_pack()
    monkeypatch.setitem(sys.modules, "comfy_api.v0_0_2", None)      # None in sys.modules: ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "comfyui_version", types.SimpleNamespace(__version__="0.3.47"))


def load_as(name):
    """The pack imported once more under another name, as ComfyUI imports it (by path, as a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "__init__.py"),
                                                  submodule_search_locations=[REPO])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded]
    return module


def test_an_older_comfyui_gets_one_line_and_no_nodes(comfyui_without_v3, caplog):
    with caplog.at_level(logging.DEBUG):
        pack = load_as("promptbeam_on_old_comfyui")
    assert pack.NODE_CLASS_MAPPINGS is None and pack.NODE_DISPLAY_NAME_MAPPINGS is None
    assert not hasattr(pack, "comfy_entrypoint") and pack.WEB_DIRECTORY is None
    ours = [r for r in caplog.records if "Prompt Beam" in r.getMessage()]
    assert len(ours) == 1 and ours[0].levelno == logging.ERROR and ours[0].exc_info is None
    assert re.fullmatch(r"Prompt Beam needs ComfyUI 0\.3\.48 or newer \(its V3 node API, comfy_api\.v0_0_2\); "
                        r"this ComfyUI is 0\.3\.47: update ComfyUI and restart\. No Prompt Beam nodes are loaded\.",
                        ours[0].getMessage())


def test_a_broken_comfy_api_is_not_mistaken_for_an_old_comfyui(monkeypatch):
    """Only a missing comfy_api / comfy_api.v0_0_2 means "too old"; another missing module inside it propagates, so
    ComfyUI shows its traceback (updating ComfyUI would not fix a broken install)."""
    load_pack()
    real_import = builtins.__import__

    def import_(name, *args, **kwargs):
        if name == "comfy_api.v0_0_2":
            raise ModuleNotFoundError("No module named 'av'", name="av")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", import_)
    with pytest.raises(ModuleNotFoundError, match="'av'"):
        load_as("promptbeam_on_broken_comfyui")


def test_the_current_pack_registers_through_both_entry_points(pack, comfy_base):
    extension = asyncio.run(pack.comfy_entrypoint())
    nodes = asyncio.run(extension.get_node_list())
    assert {node.define_schema().node_id: node for node in nodes} == pack.NODE_CLASS_MAPPINGS
    assert {node.define_schema().node_id: node.define_schema().display_name for node in nodes} == \
        pack.NODE_DISPLAY_NAME_MAPPINGS
