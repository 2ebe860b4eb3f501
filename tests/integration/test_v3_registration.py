"""The V3 nodes on a real ComfyUI: /object_info keeps every input and output the V1 nodes had (the fixture was
captured from this ComfyUI before the conversion), the CI fake of comfy_api describes the nodes exactly as the real
one does, and registering through comfy_entrypoint alone gives the same nodes as NODE_CLASS_MAPPINGS.

Optional, with other ComfyUI checkouts: COMFYUI_OLDEST_DIR (the oldest supported release, 0.3.48) loads the pack
with the same listing; COMFYUI_TOO_OLD_DIR (an older one) logs the one-line refusal and no traceback."""
import json
import os
import re

import pytest

from tests.fixtures import object_info as oi
from tests.fixtures.comfy import load_pack
from tests.fixtures.servers import stop_process
from tests.integration.conftest import PACK_FOLDER, REPO, launch_comfy

MODULE = f"custom_nodes.{PACK_FOLDER}"
# custom_nodes/comfyui-promptbeam/__init__.py of a pack that offers ComfyUI only the entrypoint: it imports this
# checkout as a package under another name and re-exports comfy_entrypoint (and the web folder), nothing else.
ENTRYPOINT_ONLY = '''import importlib.util, os, sys
_spec = importlib.util.spec_from_file_location(__name__ + "_pack", os.path.join({repo!r}, "__init__.py"),
                                               submodule_search_locations=[{repo!r}])
_pack = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _pack
_spec.loader.exec_module(_pack)
comfy_entrypoint = _pack.comfy_entrypoint
'''


def ours(object_info: dict) -> dict:
    return {name: info for name, info in object_info.items() if info.get("python_module") == MODULE}


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.object_info()


def test_object_info_keeps_every_v1_input_and_output(object_info):
    assert oi.compare(oi.load_v1(), ours(object_info)) == []
    search = object_info["PromptBeamSearch"]
    assert search["output"][4:] == ["INT"] and search["output_name"][4:] == ["best_seed"]
    # The server built the listing from the V3 schema: a V1 class lists its hidden inputs as bare strings.
    assert search["input"]["hidden"] == {"unique_id": ["UNIQUE_ID"]}


def test_the_ci_fake_of_comfy_api_describes_the_nodes_as_the_real_one(object_info, comfy_base):
    """tests/comfy_fakes/fake_comfy_api_io.py against comfy_api.v0_0_2: the same /object_info entry for every node,
    byte for byte, except what depends on the machine (python_module, LoRA files, ComfyUI's sampler lists)."""
    for name, node in load_pack().NODE_CLASS_MAPPINGS.items():
        fake, real = node.GET_NODE_INFO_V1(), dict(object_info[name])
        fake["python_module"] = real["python_module"]
        for (node_id, input_name) in oi.MACHINE_LISTS:
            if node_id == name:
                fake["input"]["required"][input_name] = [real["input"]["required"][input_name][0],
                                                         fake["input"]["required"][input_name][1]]
        assert json.loads(json.dumps(fake)) == real, name      # tuples become lists, as in the server's JSON


def test_the_entrypoint_alone_registers_the_same_nodes(comfy_server, object_info, tiny_model_dir, tmp_path):
    """A ComfyUI reads NODE_CLASS_MAPPINGS first (0.3.64 nodes.py, load_custom_node) and comfy_entrypoint only
    without it: a pack offering only the entrypoint must give the very same listing."""
    shim = tmp_path / "entrypoint_only"
    shim.mkdir()
    (shim / "__init__.py").write_text(ENTRYPOINT_ONLY.format(repo=str(REPO)))
    server = launch_comfy(_base(tmp_path), tiny_model_dir, pack_dir=shim)
    try:
        via_entrypoint = ours(server.object_info())
        log = server.log()
    finally:
        stop_process(server.process, timeout=20)
    assert failed_custom_nodes(log) == [] and "comfy_entrypoint" not in log, log[-3000:]
    assert via_entrypoint == ours(object_info)


def failed_custom_nodes(log: str) -> list[str]:
    """The custom node folders ComfyUI lists as not loaded ("0.1 seconds (IMPORT FAILED): PATH"). Its own
    comfy_extras modules that lack an optional dependency (torchaudio, say) are listed apart, without the
    parentheses, and say nothing about the pack."""
    return re.findall(r"\(IMPORT FAILED\): (.+)", log)


def _base(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    return base


def _other_comfyui(variable: str) -> str:
    path = os.environ.get(variable)
    if not path:
        pytest.skip(f"set {variable} to another ComfyUI checkout to run")
    return path


def test_the_oldest_supported_comfyui_lists_the_same_nodes(tiny_model_dir, tmp_path):
    server = launch_comfy(_base(tmp_path), tiny_model_dir, comfyui_dir=_other_comfyui("COMFYUI_OLDEST_DIR"))
    try:
        listed, log = ours(server.object_info()), server.log()
    finally:
        stop_process(server.process, timeout=20)
    assert failed_custom_nodes(log) == [], log[-3000:]
    # ComfyUI's own sampler list differs between releases; everything of the pack's own is the same.
    assert oi.compare(oi.load_v1(), listed, machine_lists=True) == []


def test_an_older_comfyui_is_refused_in_one_line_without_a_traceback(tiny_model_dir, tmp_path):
    server = launch_comfy(_base(tmp_path), tiny_model_dir, comfyui_dir=_other_comfyui("COMFYUI_TOO_OLD_DIR"))
    try:
        listed, log = ours(server.object_info()), server.log()
    finally:
        stop_process(server.process, timeout=20)
    assert listed == {}
    ours_lines = [line for line in log.splitlines() if "Prompt Beam" in line]
    assert len(ours_lines) == 1 and re.search(r"needs ComfyUI 0\.3\.48 or newer .* this ComfyUI is 0\.3\.\d+: "
                                              r"update ComfyUI and restart", ours_lines[0]), ours_lines
    assert "Traceback" not in log
    assert re.search(rf"\(IMPORT FAILED\): .*{PACK_FOLDER}", log)      # listed as not loaded, nothing registered
