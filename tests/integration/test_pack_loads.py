"""The pack loads in a real ComfyUI and declares the node ids and sockets of CONTRACTS.md."""
import re

import pytest

PACK = "comfyui-promptbeam"
ANY = None   # the contract names the input but not its type
COMBO = "COMBO"

# id -> (required inputs {name: type or tuple of accepted types}, outputs [(type, name or None)]), from CONTRACTS.md
CONTRACT = {
    "PromptBeamOllama": (
        {"base_url": "STRING", "model": "STRING", "temperature": "FLOAT", "seed": "INT", "keep_alive": ("STRING", "INT")},
        [("PROMPTBEAM_LLM", None)]),
    "PromptBeamExpand": (
        {"llm": "PROMPTBEAM_LLM", "prompt": "STRING", "dimension": COMBO, "variants": "INT", "seed": "INT"},
        [("STRING", None)]),
    "PromptBeamRefine": (
        {"llm": "PROMPTBEAM_LLM", "prompt": "STRING", "dimension": COMBO, "critique": "STRING",
         "user_prompt": "STRING", "seed": "INT"},
        [("STRING", None)]),
    "PromptBeamCombine": (
        {"llm": "PROMPTBEAM_LLM", "what": "STRING", "how": "STRING", "descriptiveness": "INT", "style": COMBO,
         "seed": "INT"},
        [("STRING", None)]),
    "PromptBeamCritique": (
        {"llm": "PROMPTBEAM_LLM", "user_prompt": "STRING", "prompt": "STRING", "scores": "STRING",
         "dimension": COMBO},
        [("STRING", None)]),
    "PromptBeamLoraStack": (
        {"lora_name": COMBO, "trigger": "STRING", "weight": "FLOAT"},
        [("PROMPTBEAM_LORAS", None)]),
    "PromptBeamFluxGenerator": (
        {"model": "MODEL", "clip": "CLIP", "vae": "VAE", "width": "INT", "height": "INT", "steps": "INT",
         "guidance": "FLOAT", "sampler_name": COMBO, "scheduler": COMBO},
        [("PROMPTBEAM_GENERATOR", None)]),
    "PromptBeamGenerate": (
        {"generator": "PROMPTBEAM_GENERATOR", "prompt": "STRING", "seed": "INT"},
        [("IMAGE", None)]),
    "PromptBeamComfyWorkers": (
        {"worker_urls": "STRING", "workflow": "STRING"},
        [("PROMPTBEAM_GENERATOR", None)]),
    "PromptBeamScorerLoader": (
        {"clip_model": "STRING", "aesthetic_model": (COMBO, "STRING"), "device": ANY},
        [("PROMPTBEAM_SCORER", None)]),
    "PromptBeamScore": (
        {"scorer": "PROMPTBEAM_SCORER", "images": "IMAGE", "prompt": "STRING"},
        [("FLOAT", "alignment"), ("FLOAT", "aesthetic"), ("STRING", "scores")]),
    "PromptBeamSelectBest": (
        {"images": "IMAGE", "scores": "STRING", "top_k": "INT"},
        [("IMAGE", None), ("STRING", "indices")]),
    "PromptBeamSearch": (
        {"prompt": "STRING", "llm": "PROMPTBEAM_LLM", "generator": "PROMPTBEAM_GENERATOR",
         "scorer": "PROMPTBEAM_SCORER", "beam_width": "INT", "keep_top": "INT", "iterations": "INT",
         "alpha": "FLOAT", "seed": "INT"},
        [("IMAGE", "best_image"), ("STRING", "best_prompt"), ("IMAGE", "finalists"), ("STRING", "report"),
         ("INT", "best_seed")]),
    "PromptBeamRemoteFlux": (
        {"url": "STRING", "width": "INT", "height": "INT", "steps": "INT", "guidance": "FLOAT", "scheduler": COMBO},
        [("PROMPTBEAM_GENERATOR", "generator")]),
    "PromptBeamRemoteScorer": (
        {"url": "STRING"},
        [("PROMPTBEAM_SCORER", "scorer")]),
}
DISPLAY_NAMES = {"PromptBeamRemoteFlux": "Prompt Beam Remote Flux",
                 "PromptBeamRemoteScorer": "Prompt Beam Remote Scorer"}
# Fixed contract values of some combos.
COMBO_VALUES = {("PromptBeamExpand", "dimension"): {"what", "how"},
                ("PromptBeamRefine", "dimension"): {"what", "how"},
                ("PromptBeamCritique", "dimension"): {"what", "how"},
                ("PromptBeamCombine", "style"): {"natural", "booru"}}


def socket_type(spec) -> str:
    """A /object_info input spec -> its type name; combos (a list of values, or "COMBO") -> "COMBO"."""
    kind = spec[0]
    return COMBO if isinstance(kind, list) or kind == COMBO else kind


def combo_values(spec) -> set:
    return set(spec[0]) if isinstance(spec[0], list) else set(spec[1].get("options", []))


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.object_info()


def test_pack_imports_without_errors(comfy_server):
    log = comfy_server.log()
    import_lines = [line for line in log.splitlines() if re.search(r"custom_nodes[/\\](comfyui-promptbeam|promptbeam_test_pack)\b", line)]
    assert any(PACK in line and "seconds" in line for line in import_lines), log[-3000:]
    failed = [line for line in import_lines if "IMPORT FAILED" in line]
    assert not failed, "\n".join(failed) + "\n" + log[-3000:]
    cannot_import = [line for line in log.splitlines() if "Cannot import" in line and PACK in line]
    assert not cannot_import, cannot_import


def test_every_contract_node_is_registered(object_info):
    missing = sorted(node_id for node_id in CONTRACT if node_id not in object_info)
    assert not missing, f"nodes of CONTRACTS.md not registered by the pack: {missing}"


def test_registered_nodes_have_the_contract_sockets(object_info):
    present = [node_id for node_id in CONTRACT if node_id in object_info]
    assert present, "the pack registered none of the contract's nodes"
    problems = []
    for node_id in present:
        info = object_info[node_id]
        assert info["python_module"] == f"custom_nodes.{PACK}", info["python_module"]
        assert info["category"].startswith("Prompt Beam"), (node_id, info["category"])
        inputs, outputs = CONTRACT[node_id]
        required = info["input"].get("required", {})
        for name, expected in inputs.items():
            if name not in required:
                problems.append(f"{node_id}: required input {name!r} missing (has {sorted(required)})")
                continue
            if expected is ANY:
                continue
            accepted = expected if isinstance(expected, tuple) else (expected,)
            if socket_type(required[name]) not in accepted:
                problems.append(f"{node_id}.{name}: type {socket_type(required[name])!r}, contract {accepted}")
            values = COMBO_VALUES.get((node_id, name))
            if values and combo_values(required[name]) != values:
                problems.append(f"{node_id}.{name}: values {sorted(combo_values(required[name]))}, contract {sorted(values)}")
        types = list(info["output"])
        names = [n.lower() for n in info["output_name"]]
        if types != [t for t, _ in outputs]:
            problems.append(f"{node_id}: outputs {types}, contract {[t for t, _ in outputs]}")
        for index, (_, name) in enumerate(outputs):
            if name is not None and index < len(names) and names[index] != name:
                problems.append(f"{node_id}: output {index} is named {names[index]!r}, contract {name!r}")
    assert not problems, "\n".join(problems)


def test_generation_nodes_use_comfyuis_sampler_and_lora_lists(object_info):
    ksampler = object_info["KSampler"]["input"]["required"]
    generator = object_info["PromptBeamFluxGenerator"]["input"]["required"]
    assert generator["sampler_name"][0] == ksampler["sampler_name"][0]
    assert generator["scheduler"][0] == ksampler["scheduler"][0]
    loras = object_info["PromptBeamLoraStack"]["input"]["required"]["lora_name"][0]
    assert loras == object_info["LoraLoader"]["input"]["required"]["lora_name"][0]
    assert "tiny_flux_lora.safetensors" in loras
    assert object_info["PromptBeamGenerate"]["input"]["required"]["seed"][1]["control_after_generate"] is True


def test_remote_nodes_have_their_display_names_and_plug_into_the_search(object_info):
    for node_id, name in DISPLAY_NAMES.items():
        assert object_info[node_id]["display_name"] == name
    search = object_info["PromptBeamSearch"]["input"]["required"]
    assert search["generator"][0] == object_info["PromptBeamRemoteFlux"]["output"][0]
    assert search["scorer"][0] == object_info["PromptBeamRemoteScorer"]["output"][0]
    assert object_info["PromptBeamRemoteFlux"]["input"]["optional"]["loras"][0] == "PROMPTBEAM_LORAS"
