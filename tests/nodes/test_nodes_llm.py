"""The LLM nodes as ComfyUI loads them (pack imported by path, fake ComfyUI modules), run against the fake Ollama."""
import importlib
import json

import pytest

from tests.fixtures.comfy import PACK_MODULE, run_node
from tests.fixtures.ollama import free_port

MODEL = "qwen2.5:7b-instruct"
REQUEST = "a lighthouse on a cliff at dusk"

# CONTRACTS.md: node id -> (required inputs that must exist, outputs in order)
CONTRACT = {
    "PromptBeamOllama": ({"base_url", "model", "temperature", "seed", "keep_alive"}, ("PROMPTBEAM_LLM",)),
    "PromptBeamExpand": ({"llm", "prompt", "dimension", "variants", "seed"}, ("STRING",)),
    "PromptBeamRefine": ({"llm", "prompt", "dimension", "critique", "user_prompt", "seed"}, ("STRING",)),
    "PromptBeamCombine": ({"llm", "what", "how", "descriptiveness", "style", "seed"}, ("STRING",)),
    "PromptBeamCritique": ({"llm", "user_prompt", "prompt", "scores", "dimension"}, ("STRING",)),
}


def pack_module(name):
    """A module of the pack as ComfyUI imported it (its classes differ from the test's own `pipeline.*`)."""
    return importlib.import_module(f"{PACK_MODULE}.{name}")


def node(pack, node_id):
    """The node class and a function that runs it as ComfyUI does (keyword inputs), returning its outputs."""
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    return cls, lambda **inputs: run_node(cls, **inputs).result


def make_llm(pack, url, model=MODEL, **optional):
    _, create = node(pack, "PromptBeamOllama")
    args = dict(base_url=url, model=model, temperature=-1.0, seed=7, keep_alive="5m")
    args.update(optional)
    (llm,) = create(**args)
    return llm


def test_contract_ids_inputs_outputs(pack, comfy_base):
    for node_id, (required, outputs) in CONTRACT.items():
        info = pack.NODE_CLASS_MAPPINGS[node_id].GET_NODE_INFO_V1()
        spec = info["input"]
        assert required <= set(spec["required"]), node_id
        assert tuple(info["output"]) == outputs, node_id
        assert info["category"] == "Prompt Beam/LLM" and info["description"]
        assert node_id in pack.NODE_DISPLAY_NAME_MAPPINGS
        if "dimension" in spec["required"]:
            assert spec["required"]["dimension"][0] == ["what", "how"]
    assert pack.NODE_CLASS_MAPPINGS["PromptBeamExpand"].GET_NODE_INFO_V1()["output_is_list"] == [True]
    combine = pack.NODE_CLASS_MAPPINGS["PromptBeamCombine"].INPUT_TYPES()
    assert combine["required"]["style"][0] == ["natural", "booru"]
    levels = combine["required"]["descriptiveness"][1]
    assert (levels["min"], levels["max"], levels["default"]) == (1, 3, 2)
    assert combine["optional"]["mode"][0] == ["llm", "template"]


def test_model_and_url_are_strings_with_env_defaults(pack, monkeypatch):
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://gpu-box:11434")
    monkeypatch.setenv("OLLAMA_MODEL", "llama3.1:8b")
    required = pack.NODE_CLASS_MAPPINGS["PromptBeamOllama"].INPUT_TYPES()["required"]
    # STRING, never a dropdown: an API workflow must not fail validation on another machine's model list
    assert required["model"] == ("STRING", required["model"][1]) and required["model"][1]["default"] == "llama3.1:8b"
    assert required["base_url"][0] == "STRING" and required["base_url"][1]["default"] == "http://gpu-box:11434"
    assert required["keep_alive"][0] == "STRING" and required["keep_alive"][1]["default"] == "5m"


def test_node_defaults_survive_a_bad_unrelated_env_var(pack, monkeypatch):
    monkeypatch.setenv("FLUX_LORAS", "not json")
    monkeypatch.setenv("OLLAMA_MODEL", "ignored-too")
    required = pack.NODE_CLASS_MAPPINGS["PromptBeamOllama"].INPUT_TYPES()["required"]
    assert required["model"][1]["default"] == "qwen2.5:7b-instruct"


def test_creating_the_llm_contacts_nothing_and_first_use_reports_unreachable(pack, comfy_base):
    url = f"http://127.0.0.1:{free_port()}"
    llm = make_llm(pack, url, retries=0)          # no server there, and no error yet
    assert llm.client.base_url == url and llm.client.model == MODEL
    _, expand = node(pack, "PromptBeamExpand")
    with pytest.raises(pack_module("pipeline.llm.client").OllamaUnreachable) as info:
        expand(llm=llm, prompt=REQUEST, dimension="what", variants=3, seed=1)
    assert str(info.value) == (f"Cannot reach Ollama at {url} (connection refused; tried 1 times). Start it with "
                               f"`ollama serve` (or open the Ollama app), or point OLLAMA_BASE_URL / the base_url "
                               f"input at the address where it runs.")


def test_creating_the_llm_sends_no_request(pack, comfy_base, fake_ollama):
    make_llm(pack, fake_ollama.url, model="not-installed:1b")
    assert fake_ollama.requests == []


def test_unknown_model_fails_with_pull_advice(pack, comfy_base, fake_ollama):
    llm = make_llm(pack, fake_ollama.url, model="phi4:14b")
    _, combine = node(pack, "PromptBeamCombine")
    with pytest.raises(pack_module("pipeline.llm.client").OllamaModelNotFound) as info:
        combine(llm=llm, what="a", how="b", descriptiveness=2, style="natural", seed=0)
    assert "Installed models: qwen2.5:7b-instruct, llama3.1:8b. Run `ollama pull phi4:14b`" in str(info.value)


def test_full_chain_of_nodes_against_fake_ollama(pack, comfy_base, fake_ollama):
    llm = make_llm(pack, fake_ollama.url, keep_alive="10m", top_k=20)
    _, expand = node(pack, "PromptBeamExpand")
    _, combine = node(pack, "PromptBeamCombine")
    _, critique = node(pack, "PromptBeamCritique")
    _, refine = node(pack, "PromptBeamRefine")

    (whats,) = expand(llm=llm, prompt=REQUEST, dimension="what", variants=4, seed=1)
    (hows,) = expand(llm=llm, prompt=REQUEST, dimension="how", variants=2, seed=2)
    assert len(whats) == 4 and len(set(whats)) == 4 and len(hows) == 2
    assert all(isinstance(t, str) and "lighthouse" in t.lower() for t in whats)
    (prompt,) = combine(llm=llm, what=whats[0], how=hows[0], descriptiveness=3, style="natural", seed=3)
    scores = json.dumps([{"alignment": 91.0, "aesthetic": 5.0, "total": 78.7},
                         {"alignment": 24.5, "aesthetic": 6.1, "total": 35.4}])
    (critique_json,) = critique(llm=llm, user_prompt=REQUEST, prompt=prompt, scores=scores, dimension="what",
                                what=whats[0], how=hows[0], index=1, seed=4)
    parsed = json.loads(critique_json)
    assert set(parsed) == {"critique", "recommendation", "reason"}
    (better,) = refine(llm=llm, prompt=whats[0], dimension="what", critique=critique_json, user_prompt=REQUEST,
                       seed=5, history=json.dumps([{"dimension": "what", "before": "x", "after": whats[0],
                                                    "score_before": 20.0, "score_after": 24.5}]))
    assert isinstance(better, str) and better and better != whats[0]

    bodies = fake_ollama.bodies()
    assert len(bodies) == 5
    assert [b["options"]["seed"] for b in bodies] == [1, 2, 3, 4, 5]
    assert all(b["keep_alive"] == "10m" and b["options"]["top_k"] == 20 and b["think"] is False for b in bodies)
    assert "Severity: significant (alignment 24.5/100 is below 26)" in bodies[3]["messages"][-1]["content"]
    assert "score 20.0 -> 24.5 (better)" in bodies[4]["messages"][-1]["content"]
    assert fake_ollama.unloads == []


def test_low_vram_unloads_after_each_operation(pack, comfy_base, fake_ollama):
    llm = make_llm(pack, fake_ollama.url, low_vram=True)
    _, expand = node(pack, "PromptBeamExpand")
    expand(llm=llm, prompt=REQUEST, dimension="how", variants=2, seed=1)
    assert [r["path"] for r in fake_ollama.requests] == ["/api/chat", "/api/generate"]
    assert fake_ollama.unloads == [MODEL] and fake_ollama.loaded == {}


def test_combine_template_mode_calls_no_llm(pack, comfy_base, fake_ollama):
    llm = make_llm(pack, fake_ollama.url)
    _, combine = node(pack, "PromptBeamCombine")
    assert combine(llm=llm, what="A lighthouse", how="Dusk light", descriptiveness=1, style="natural", seed=0,
                   mode="template") == ("A lighthouse. Dusk light.",)
    assert fake_ollama.requests == []


def test_strict_mode_raises_on_unusable_output(pack, comfy_base, fake_ollama):
    llm = make_llm(pack, fake_ollama.url, on_bad_output="error")
    fake_ollama.script("/api/chat", {"content": ""}, {"content": ""})
    _, combine = node(pack, "PromptBeamCombine")
    with pytest.raises(pack_module("pipeline.llm.client").OllamaBadOutput, match="gave unusable output for combine twice"):
        combine(llm=llm, what="a", how="b", descriptiveness=2, style="natural", seed=0)


def test_fallback_mode_returns_a_prompt_not_an_error(pack, comfy_base, fake_ollama):
    llm = make_llm(pack, fake_ollama.url)
    fake_ollama.script("/api/chat", {"content": "Error: out of memory"}, {"content": "Error: out of memory"})
    _, combine = node(pack, "PromptBeamCombine")
    assert combine(llm=llm, what="A lighthouse", how="Dusk light", descriptiveness=2, style="natural",
                   seed=0) == ("A lighthouse. Dusk light.",)


@pytest.mark.parametrize("node_id, kwargs, name, message", [
    ("PromptBeamCritique", {"user_prompt": REQUEST, "prompt": "p", "scores": "{bad", "dimension": "what"},
     "scores", "scores: is not valid JSON (Expecting property name enclosed in double quotes at char 1); "
               'expected e.g. {"alignment": 27.5, "aesthetic": 6.1}'),
    ("PromptBeamCritique", {"user_prompt": REQUEST, "prompt": "p", "scores": "[]", "dimension": "what"},
     "index", "index: 0 is out of range for 0 scores"),
    ("PromptBeamCritique", {"user_prompt": REQUEST, "prompt": "p", "scores": '{"aesthetic": 5}',
                            "dimension": "what"},
     "scores", "scores: needs a numeric 'alignment' (0-100) to critique WHAT, got {'aesthetic': 5}"),
    ("PromptBeamRefine", {"prompt": "p", "dimension": "what", "critique": '{"critique": ', "user_prompt": REQUEST,
                          "seed": 0},
     "critique", "critique: looks like JSON but does not parse (Expecting value at char 12)"),
    ("PromptBeamRefine", {"prompt": "p", "dimension": "what", "critique": "", "user_prompt": REQUEST, "seed": 0},
     "critique", "critique: is empty; connect a Critique node or type what should change"),
    ("PromptBeamRefine", {"prompt": "p", "dimension": "what", "critique": "c", "user_prompt": REQUEST, "seed": 0,
                          "history": '{"before": 1}'},
     "history", "history: must be a JSON list of {dimension, before, after, score_before, score_after} objects"),
    ("PromptBeamExpand", {"prompt": "  ", "dimension": "what", "variants": 2, "seed": 0},
     "prompt", "prompt: must be a non-empty text"),
])
def test_bad_inputs_raise_clear_errors_before_any_request(pack, comfy_base, fake_ollama, node_id, kwargs, name,
                                                         message):
    llm = make_llm(pack, fake_ollama.url)
    _, run = node(pack, node_id)
    with pytest.raises(pack_module("pipeline.errors").InvalidParameter) as info:
        run(llm=llm, **kwargs)
    assert (info.value.name, str(info.value)) == (name, message)
    assert fake_ollama.requests == []


def test_wrong_socket_and_bad_settings(pack, comfy_base):
    InvalidParameter = pack_module("pipeline.errors").InvalidParameter
    _, expand = node(pack, "PromptBeamExpand")
    with pytest.raises(InvalidParameter, match="llm: expects the output of a Prompt Beam Ollama node, got str"):
        expand(llm="http://localhost:11434", prompt=REQUEST, dimension="what", variants=2, seed=0)
    with pytest.raises(InvalidParameter, match="keep_alive: '5 min' is not a duration"):
        make_llm(pack, "http://localhost:11434", keep_alive="5 min")
    with pytest.raises(InvalidParameter, match="model: is empty"):
        make_llm(pack, "http://localhost:11434", model="")


def test_temperature_minus_one_means_operation_defaults(pack, comfy_base, fake_ollama):
    defaults = make_llm(pack, fake_ollama.url)
    fixed = make_llm(pack, fake_ollama.url, temperature=0.1)
    assert defaults.temperature is None and fixed.temperature == 0.1
    _, combine = node(pack, "PromptBeamCombine")
    combine(llm=defaults, what="a", how="b", descriptiveness=2, style="natural", seed=0)
    combine(llm=fixed, what="a", how="b", descriptiveness=2, style="natural", seed=0)
    assert [b["options"]["temperature"] for b in fake_ollama.bodies()] == [0.5, 0.1]
