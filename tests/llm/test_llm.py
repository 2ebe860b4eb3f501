"""OllamaClient against the fake Ollama server on loopback: faults, request contract, stats, threads."""
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from pipeline.errors import InvalidParameter, ModelNotFound, PromptBeamError
from pipeline.llm.client import (ChatStats, OllamaBadOutput, OllamaClient, OllamaError, OllamaModelNotFound,
                                 OllamaTimeout, OllamaUnreachable, extract_json, normalize_base_url, normalize_keep_alive,
                                 ollama_seed, same_model, strip_thinking)
from tests.fixtures.ollama import free_port

MODEL = "qwen2.5:7b-instruct"
HELLO = [{"role": "user", "content": "Say hello"}]


def client_for(fake, model=MODEL, **kwargs):
    kwargs.setdefault("backoff_s", 0.0)
    return OllamaClient(fake.url, model, **kwargs)


# -- faults: the exact user-facing outcome ---------------------------------------------------------------------------

def test_connection_refused_names_url_and_says_to_start_ollama():
    url = f"http://127.0.0.1:{free_port()}"
    client = OllamaClient(url, MODEL, retries=1, backoff_s=0.0)
    with pytest.raises(OllamaUnreachable) as info:
        client.chat(HELLO)
    assert str(info.value) == (
        f"Cannot reach Ollama at {url} (connection refused; tried 2 times). Start it with `ollama serve` (or open "
        f"the Ollama app), or point OLLAMA_BASE_URL / the base_url input at the address where it runs.")
    assert isinstance(info.value, PromptBeamError) and isinstance(info.value, ConnectionError)
    assert info.value.url == url


def test_unknown_model_lists_installed_models_and_says_how_to_pull(fake_ollama):
    client = client_for(fake_ollama, model="mistral-nemo:12b")
    with pytest.raises(OllamaModelNotFound) as info:
        client.chat(HELLO)
    assert str(info.value) == (
        f"Ollama model 'mistral-nemo:12b' is not installed at {fake_ollama.url} (Ollama said: model "
        f"'mistral-nemo:12b' not found). Installed models: qwen2.5:7b-instruct, llama3.1:8b. Run `ollama pull "
        f"mistral-nemo:12b`, or set OLLAMA_MODEL / the model input to an installed model.")
    assert info.value.installed == ["qwen2.5:7b-instruct", "llama3.1:8b"]
    assert isinstance(info.value, ModelNotFound)
    # one chat attempt (a 404 is not retried), then the model list for the message
    assert [r["path"] for r in fake_ollama.requests] == ["/api/chat", "/api/tags"]


def test_server_error_then_success_is_retried(fake_ollama):
    fake_ollama.script("/api/chat", {"status": 500, "json": {"error": "llama runner process has terminated"}})
    reply = client_for(fake_ollama).chat(HELLO)
    assert reply.text
    assert reply.stats.attempts == 2
    assert len(fake_ollama.bodies()) == 2


def test_server_error_every_time_gives_up_with_the_server_message(fake_ollama):
    error = {"status": 500, "json": {"error": "model requires more system memory (9.1 GiB) than is available"}}
    fake_ollama.script("/api/chat", error, error, error)
    with pytest.raises(OllamaError) as info:
        client_for(fake_ollama, retries=2).chat(HELLO)
    assert str(info.value) == (
        f"Ollama at {fake_ollama.url} failed the chat request for model '{MODEL}' 3 times (HTTP 500: model requires "
        f"more system memory (9.1 GiB) than is available). Check the Ollama server log; if the model ran out of "
        f"memory, try a smaller model or free GPU memory.")
    assert info.value.status == 500
    assert len(fake_ollama.bodies()) == 3


def test_timeout_is_reported_once_without_retrying(fake_ollama):
    fake_ollama.script("/api/chat", {"delay": 3.0, "content": "late"})
    client = client_for(fake_ollama, timeout=0.3, retries=2)
    started = time.perf_counter()
    with pytest.raises(OllamaTimeout) as info:
        client.chat(HELLO)
    # retried, it would take three timeouts and two backoffs (2.4 s); the bound leaves room for a slow machine
    assert time.perf_counter() - started < 2.0 and len(fake_ollama.bodies()) == 1
    assert str(info.value) == (
        f"Ollama at {fake_ollama.url} did not answer the chat request for model '{MODEL}' within 0.3 s. The model "
        f"may still be loading or be too large for this machine: raise the timeout, or use a smaller model.")
    assert isinstance(info.value, OllamaUnreachable) and isinstance(info.value, TimeoutError)
    assert len(fake_ollama.bodies()) == 1


def test_dropped_connection_is_retried(fake_ollama):
    fake_ollama.script("/api/chat", {"close": True})
    reply = client_for(fake_ollama).chat(HELLO)
    assert reply.stats.attempts == 2 and reply.text


def test_body_that_is_not_json_is_bad_output(fake_ollama):
    fake_ollama.script("/api/chat", {"raw": "<html>proxy login</html>"})
    with pytest.raises(OllamaBadOutput) as info:
        client_for(fake_ollama).chat(HELLO)
    assert str(info.value) == (f"Ollama at {fake_ollama.url} answered the chat request with something that is not "
                               f"JSON ('<html>proxy login</html>'); is this URL an Ollama server?")


def test_other_client_errors_carry_the_server_message(fake_ollama):
    fake_ollama.script("/api/chat", {"status": 400, "json": {"error": "invalid options: num_ctx"}})
    with pytest.raises(OllamaError) as info:
        client_for(fake_ollama).chat(HELLO)
    assert str(info.value) == (f"Ollama at {fake_ollama.url} rejected the chat request for model '{MODEL}' "
                               f"(HTTP 400): invalid options: num_ctx")
    assert len(fake_ollama.bodies()) == 1


def test_think_blocks_are_stripped_from_the_text(fake_ollama):
    fake_ollama.script("/api/chat", {"content": "<think>The user wants a fox.</think>\n\nA red fox in snow."},
                       {"content": "A fox.", "thinking": "separate field"})
    client = client_for(fake_ollama)
    first = client.chat(HELLO)
    assert (first.text, first.thinking) == ("A red fox in snow.", "The user wants a fox.")
    second = client.chat(HELLO)
    assert (second.text, second.thinking) == ("A fox.", "separate field")


@pytest.mark.parametrize("raw, text, thinking", [
    ("<think>a</think>B", "B", "a"),
    ("<THINK>\nx\n</THINK>\n\nY <think>z</think>", "Y", "x\nz"),
    ("reasoning only, template opened the tag</think>Answer", "Answer", "reasoning only, template opened the tag"),
    ("Answer <think>cut off mid-thought", "Answer", "cut off mid-thought"),
    ("<think>never closed", "", "never closed"),
    ("plain", "plain", ""),
])
def test_strip_thinking_shapes(raw, text, thinking):
    assert strip_thinking(raw) == (text, thinking)


def test_empty_reply_is_empty_text(fake_ollama):
    fake_ollama.script("/api/chat", {"content": ""})
    assert client_for(fake_ollama).chat(HELLO).text == ""


@pytest.mark.parametrize("text, value", [
    ('{"a": 1}', {"a": 1}),
    ('```json\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
    ('Sure! Here it is:\n```\n{"a": 2}\n```\nEnjoy.', {"a": 2}),
    ('The answer is {"a": 3} as requested.', {"a": 3}),
    ('<think>{"draft": true}</think>{"a": 4}', {"a": 4}),
    ('["x", "y"]', ["x", "y"]),
])
def test_extract_json(text, value):
    assert extract_json(text) == value


@pytest.mark.parametrize("text, reason", [("", "empty"), ("no json here", "no JSON found"),
                                          ('{"prompt": "a red fox', "no JSON found")])
def test_extract_json_failures(text, reason):
    with pytest.raises(ValueError, match=reason):
        extract_json(text)


# -- request contract ------------------------------------------------------------------------------------------------

def test_chat_request_body_contract(fake_ollama):
    schema = {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}
    client = client_for(fake_ollama, keep_alive="10m")
    reply = client.chat(HELLO, format=schema, options={"temperature": 0.4, "top_p": 0.9, "top_k": 40, "seed": 7,
                                                       "num_predict": 256, "num_ctx": 4096, "min_p": None})
    body = fake_ollama.bodies()[-1]
    assert body == {"model": MODEL, "messages": HELLO, "stream": False, "think": False, "keep_alive": "10m",
                    "format": schema, "options": {"temperature": 0.4, "top_p": 0.9, "top_k": 40, "seed": 7,
                                                  "num_predict": 256, "num_ctx": 4096}}
    assert set(json.loads(reply.text)) == {"prompt"}


def test_keep_alive_per_call_and_numeric_strings(fake_ollama):
    client = client_for(fake_ollama, keep_alive="0")
    client.chat(HELLO)
    client.chat(HELLO, keep_alive="-1")
    assert [b["keep_alive"] for b in fake_ollama.bodies()] == [0, -1]
    assert fake_ollama.unloads == [MODEL]     # keep_alive 0 unloads after answering


def test_no_options_no_format_when_not_given(fake_ollama):
    client_for(fake_ollama).chat(HELLO)
    body = fake_ollama.bodies()[-1]
    assert "options" not in body and "format" not in body and body["keep_alive"] == "5m"


def test_large_comfy_seed_is_folded_into_ollama_range(fake_ollama):
    client_for(fake_ollama).chat(HELLO, options={"seed": 2 ** 64 - 1})
    seed = fake_ollama.bodies()[-1]["options"]["seed"]
    assert seed == ollama_seed(2 ** 64 - 1) and 0 <= seed < 2 ** 31


def test_stats_come_from_the_reply(fake_ollama):
    client = client_for(fake_ollama)
    cold = client.chat(HELLO).stats
    warm = client.chat(HELLO).stats
    assert cold.load_duration_s == pytest.approx(1.5) and warm.load_duration_s == pytest.approx(0.002)
    assert cold.eval_count > 0 and cold.eval_duration_s == pytest.approx(cold.eval_count * 0.02)
    assert cold.tokens_per_s == pytest.approx(50.0)
    total = cold + warm
    assert total.calls == 2 and total.eval_count == cold.eval_count + warm.eval_count
    assert ChatStats().as_dict()["tokens_per_s"] == 0.0


# -- models, ps, unload ----------------------------------------------------------------------------------------------

def test_list_running_unload(fake_ollama):
    client = client_for(fake_ollama)
    assert client.list_models() == ["qwen2.5:7b-instruct", "llama3.1:8b"]
    assert client.running() == [] and not client.is_loaded()
    client.chat(HELLO)
    assert [m["name"] for m in client.running()] == [MODEL] and client.is_loaded()
    assert client.unload() is True
    assert fake_ollama.bodies("/api/generate") == [{"model": MODEL, "keep_alive": 0}]
    assert fake_ollama.unloads == [MODEL] and client.running() == []


def test_check_reports_missing_model(fake_ollama):
    assert client_for(fake_ollama).check() == ["qwen2.5:7b-instruct", "llama3.1:8b"]
    fake_ollama.models.append("llama3.2:latest")
    client_for(fake_ollama, model="llama3.2").check()          # no tag means :latest
    with pytest.raises(OllamaModelNotFound, match="ollama pull gemma3:4b"):
        client_for(fake_ollama, model="gemma3:4b").check()


def test_same_model():
    assert same_model("llama3.1", "llama3.1:latest")
    assert same_model("user/model", "user/model:latest")
    assert not same_model("llama3.1:8b", "llama3.1:70b")


# -- parameters ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("given, url", [("localhost:11434", "http://localhost:11434"),
                                        ("http://127.0.0.1:11434/", "http://127.0.0.1:11434"),
                                        ("https://ollama.example.com/api/", "https://ollama.example.com")])
def test_base_url_normalised(given, url):
    assert normalize_base_url(given) == url


@pytest.mark.parametrize("given, value", [("5m", "5m"), ("0", 0), ("-1", -1), ("1h30m", "1h30m"), (300, 300),
                                          ("", "5m"), (None, "5m"), ("2.5", 2.5)])
def test_keep_alive_values(given, value):
    assert normalize_keep_alive(given) == value


@pytest.mark.parametrize("kwargs, name", [({"base_url": ""}, "base_url"), ({"base_url": "ftp://x"}, "base_url"),
                                          ({"model": " "}, "model"), ({"keep_alive": "5 minutes"}, "keep_alive"),
                                          ({"timeout": 0}, "timeout"), ({"retries": -1}, "retries")])
def test_bad_parameters_fail_before_any_request(kwargs, name):
    args = {"base_url": "http://localhost:11434", "model": MODEL, **kwargs}
    with pytest.raises(InvalidParameter) as info:
        OllamaClient(**args)
    assert info.value.name == name and str(info.value).startswith(f"{name}: ")


# -- concurrency -----------------------------------------------------------------------------------------------------

def test_concurrent_calls_from_a_thread_pool(fake_ollama):
    client = client_for(fake_ollama)

    def ask(i):
        return client.chat([{"role": "user", "content": f"Describe \"object number {i}\""}],
                           options={"seed": i}).text
    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = list(pool.map(ask, range(24)))
    assert len(set(texts)) == 24 and all(f"number {i}" in text for i, text in enumerate(texts))
    assert len(fake_ollama.bodies()) == 24


# -- the fake as a standalone process --------------------------------------------------------------------------------

def test_fake_server_runs_as_a_process():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fixtures.ollama", "--port", str(port), "--models", "a:1b,b"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line == f"listening on http://127.0.0.1:{port}"
        assert [m["name"] for m in requests.get(f"http://127.0.0.1:{port}/api/tags", timeout=5).json()["models"]] \
            == ["a:1b", "b"]
        reply = OllamaClient(f"http://127.0.0.1:{port}", "b").chat(HELLO)
        assert reply.text
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_client_from_environment_settings(monkeypatch):
    monkeypatch.setenv("LLM_PROVIDER", "ollama")
    monkeypatch.setenv("OLLAMA_BASE_URL", "gpu-box:11434")
    monkeypatch.setenv("OLLAMA_MODEL", "llama3.1:8b")
    client = OllamaClient.from_settings()
    assert (client.base_url, client.model) == ("http://gpu-box:11434", "llama3.1:8b")
    assert OllamaClient.from_settings(model="qwen2.5:7b-instruct", timeout=30).model == "qwen2.5:7b-instruct"
    monkeypatch.setenv("LLM_PROVIDER", "openai")
    with pytest.raises(InvalidParameter, match="LLM_PROVIDER: 'openai' is not supported here"):
        OllamaClient.from_settings()


def test_fake_server_default_answers(fake_ollama):
    url = fake_ollama.url
    generated = requests.post(f"{url}/api/generate", json={"model": MODEL, "prompt": 'Describe "a red kite"',
                                                            "stream": False}, timeout=5).json()
    assert generated["done"] and "red kite" in generated["response"].lower()
    loaded = requests.post(f"{url}/api/generate", json={"model": MODEL}, timeout=5).json()
    assert loaded["done_reason"] == "load" and fake_ollama.loaded
    as_json = client_for(fake_ollama).chat(HELLO, format="json").text
    assert set(json.loads(as_json)) == {"response"}
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"},
                                               "kind": {"type": "string", "enum": ["x", "y"]},
                                               "items": {"type": "array", "items": {"type": "string"},
                                                         "minItems": 5}}}
    value = json.loads(client_for(fake_ollama).chat(HELLO, format=schema).text)
    assert value["n"] == 1 and value["ok"] is True and value["kind"] == "x"
    assert len(value["items"]) == 5 == len(set(value["items"]))
    assert requests.get(f"{url}/api/nothing", timeout=5).status_code == 404
    assert requests.get(url, timeout=5).text == "Ollama is running"
