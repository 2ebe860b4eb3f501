"""PromptEngine operations against the fake Ollama server: outputs, retries, fallbacks, request contract."""
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.llm import templates as tpl
from pipeline.errors import InvalidParameter
from pipeline.llm.client import OllamaBadOutput, OllamaClient, OllamaModelNotFound, OllamaUnreachable
from pipeline.llm.operations import DEFAULT_TEMPERATURES, PromptEngine, clean_text, distinct_key, severity
from tests.fixtures.ollama import free_port

MODEL = "qwen2.5:7b-instruct"
REQUEST = "a red fox sleeping in the snow"
CRITIQUE = {"critique": "The fox is hard to see.", "recommendation": "Put the fox in the foreground.",
            "reason": "Alignment rewards a visible subject."}


@pytest.fixture
def engine(fake_ollama):
    return PromptEngine(OllamaClient(fake_ollama.url, MODEL, backoff_s=0.0))


def reply(value):
    """A scripted /api/chat reply whose content is this JSON value."""
    return {"content": json.dumps(value)}


def last_user(body):
    return body["messages"][-1]["content"]


# -- expand ----------------------------------------------------------------------------------------------------------

def test_expand_gives_n_distinct_variants_in_one_call(fake_ollama, engine):
    result = engine.expand(REQUEST, "what", 4, seed=11)
    assert not result.fallback and result.fallback_count == 0
    assert len(result.value) == 4 and len({distinct_key(v) for v in result.value}) == 4
    assert all("red fox sleeping in the snow" in v.lower() for v in result.value)
    (body,) = fake_ollama.bodies()
    assert body["format"] == tpl.variants_schema(4)
    assert body["options"]["temperature"] == DEFAULT_TEMPERATURES["expand"] == 0.85
    assert body["options"]["seed"] == 11
    assert body["stream"] is False and body["think"] is False
    system = body["messages"][0]["content"]
    assert "physically in the picture" in system and "exactly 4 strings" in system
    assert json.dumps(REQUEST) in last_user(body)
    assert result.stats.calls == 1 and result.stats.eval_count > 0


def test_expand_how_uses_the_style_prompt(fake_ollama, engine):
    engine.expand(REQUEST, "how", 2)
    system = fake_ollama.bodies()[0]["messages"][0]["content"]
    assert "HOW (style)" in system and "lighting" in system and "Never add or describe subjects" in system


def test_expand_asks_once_more_for_missing_variants(fake_ollama, engine):
    fake_ollama.script("/api/chat", reply({"variants": ["A fox asleep.", "a fox ASLEEP", "A fox curled up.",
                                                        "A fox curled up"]}))
    result = engine.expand(REQUEST, "what", 4, seed=5)
    assert not result.fallback and len({distinct_key(v) for v in result.value}) == 4
    assert result.value[:2] == ["A fox asleep.", "A fox curled up."]
    first, second = fake_ollama.bodies()
    assert second["format"] == tpl.variants_schema(2)
    assert "already exist" in last_user(second) and '"A fox asleep."' in last_user(second)
    assert second["options"]["seed"] == 6
    assert result.stats.calls == 2


def test_expand_fills_with_marked_fallback_when_still_short(fake_ollama, engine):
    fake_ollama.script("/api/chat", reply({"variants": ["A fox asleep.", "A fox asleep."]}),
                       reply({"variants": ["a fox asleep"]}))
    result = engine.expand(REQUEST, "what", 3)
    assert result.fallback and result.fallback_count == 2
    assert result.value == ["A fox asleep.", "A red fox sleeping in the snow.",
                            "A red fox sleeping in the snow. The main subject is fully visible, its shape, colours "
                            "and surface textures clearly defined."]
    assert result.problem == "the model gave 1 distinct variants of 3"
    assert len(fake_ollama.bodies()) == 2


def test_malformed_json_is_retried_once_with_the_schema_then_falls_back(fake_ollama, engine):
    fake_ollama.script("/api/chat", {"content": '{"variants": ["A fox asleep in'},
                       {"content": "Sure! Variant one: a fox."})
    result = engine.expand(REQUEST, "how", 2)
    assert result.fallback and result.fallback_count == 2
    assert result.value == list(tpl.HOW_FALLBACKS[:2])
    assert result.problem.startswith("no JSON found in the reply")
    first, second = fake_ollama.bodies()
    assert second["messages"][-2] == {"role": "assistant", "content": '{"variants": ["A fox asleep in'}
    assert last_user(second) == ("That answer could not be used: no JSON found in the reply (starts with "
                                 "'{\"variants\": [\"A fox asleep in'). Answer again with only a JSON object that "
                                 "matches this schema, nothing else: " + json.dumps(tpl.variants_schema(2)))


def test_malformed_then_valid_uses_the_retry(fake_ollama, engine):
    fake_ollama.script("/api/chat", {"content": "not json at all"})
    result = engine.combine("A red fox asleep in snow.", "Soft blue dawn light.")
    assert not result.fallback and result.value
    assert len(fake_ollama.bodies()) == 2 and result.stats.calls == 2


def test_fenced_json_is_parsed(fake_ollama, engine):
    fake_ollama.script("/api/chat", {"content": 'Here you go:\n```json\n{"prompt": "A red fox asleep in deep '
                                                'snow."}\n```'})
    result = engine.combine("A red fox asleep.", "Soft light.")
    assert (result.value, result.fallback) == ("A red fox asleep in deep snow.", False)
    assert len(fake_ollama.bodies()) == 1


def test_think_blocks_never_reach_the_prompt(fake_ollama, engine):
    fake_ollama.script("/api/chat", {"content": '<think>They want a fox; keep it short.</think>\n'
                                                '{"prompt": "<think>again</think>Here is the prompt: \\"A red fox '
                                                'asleep in snow.\\""}'})
    assert engine.combine("A red fox asleep.", "Soft light.").value == "A red fox asleep in snow."


def test_empty_reply_twice_falls_back_to_the_template(fake_ollama, engine):
    fake_ollama.script("/api/chat", {"content": ""}, {"content": "   "})
    result = engine.combine("A red fox asleep in snow", "Soft blue dawn light")
    assert result.fallback and result.problem == "the reply was empty"
    assert result.value == "A red fox asleep in snow. Soft blue dawn light."


def test_refusal_or_error_text_is_never_returned_as_a_prompt(fake_ollama, engine):
    fake_ollama.script("/api/chat", reply({"prompt": "I'm sorry, but I can't help with that."}),
                       reply({"prompt": "Error: context window exceeded"}))
    result = engine.combine("A red fox asleep in snow", "Soft blue dawn light")
    assert result.fallback and "sorry" not in result.value.lower() and "error" not in result.value.lower()
    assert result.problem.startswith("the text reads like a refusal or an error")


def test_truncated_answer_gets_more_tokens_on_retry(fake_ollama, engine):
    fake_ollama.script("/api/chat", {"content": '{"prompt": "A red fox', "done_reason": "length"})
    result = engine.combine("A red fox asleep.", "Soft light.")
    assert not result.fallback
    first, second = fake_ollama.bodies()
    assert second["options"]["num_predict"] == 2 * first["options"]["num_predict"]
    assert "num_predict token limit" in last_user(second)


def test_strict_engine_raises_instead_of_falling_back(fake_ollama):
    strict = PromptEngine(OllamaClient(fake_ollama.url, MODEL), allow_fallback=False)
    fake_ollama.script("/api/chat", {"content": "nope"}, {"content": "still nope"})
    with pytest.raises(OllamaBadOutput) as info:
        strict.negative("a red fox")
    assert str(info.value) == ("Ollama model 'qwen2.5:7b-instruct' gave unusable output for negative twice (no JSON "
                               "found in the reply (starts with 'still nope')). Try a larger instruction-tuned model "
                               "such as qwen2.5:7b-instruct, or a lower temperature.")


def test_connection_errors_are_not_hidden_by_fallbacks():
    engine = PromptEngine(OllamaClient(f"http://127.0.0.1:{free_port()}", MODEL, retries=0))
    with pytest.raises(OllamaUnreachable, match="ollama serve"):
        engine.expand(REQUEST, "what", 2)


def test_missing_model_is_not_hidden_by_fallbacks(fake_ollama):
    engine = PromptEngine(OllamaClient(fake_ollama.url, "nope:1b"))
    with pytest.raises(OllamaModelNotFound, match="ollama pull nope:1b"):
        engine.combine("a", "b")


# -- refine ----------------------------------------------------------------------------------------------------------

def test_refine_returns_a_changed_text_and_sends_the_history(fake_ollama, engine):
    current = "A fox lies in snow."
    history = [{"dimension": "what", "before": "A fox.", "after": current, "score_before": 22.0, "score_after": 25.5},
               {"dimension": "what", "before": current, "after": "A fox lies in snow near a tree.",
                "score_before": 25.5, "score_after": 21.0}]
    result = engine.refine(current, "what", CRITIQUE, REQUEST, history=history, seed=3)
    assert not result.fallback and distinct_key(result.value) != distinct_key(current)
    body = fake_ollama.bodies()[0]
    assert body["format"] == tpl.PROMPT_SCHEMA and body["options"]["temperature"] == 0.7
    user = last_user(body)
    assert "Recommendation: Put the fox in the foreground." in user
    assert '- WHAT: "A fox." -> "A fox lies in snow.": score 22.0 -> 25.5 (better)' in user
    assert '"A fox lies in snow near a tree.": score 25.5 -> 21.0 (worse)' in user
    assert "Do not repeat an edit that lowered the score" in body["messages"][0]["content"]


def test_refine_that_repeats_the_input_is_retried_then_rule_based(fake_ollama, engine):
    current = "A fox lies in snow."
    fake_ollama.script("/api/chat", reply({"prompt": current}), reply({"prompt": '"a fox lies in snow"'}))
    result = engine.refine(current, "what", CRITIQUE, "a red fox sleeping in the snow")
    assert result.fallback and result.problem == "it repeated the current text unchanged"
    # the rule-based edit restores the request's missing words ("red", "sleeping")
    assert result.value == "A fox lies in snow. The picture shows a red fox sleeping in the snow."


def test_refine_accepts_plain_text_critique(fake_ollama, engine):
    engine.refine("Soft light.", "how", "Too flat and grey.", REQUEST)
    assert "Critique: Too flat and grey.\nRecommendation: improve it" in last_user(fake_ollama.bodies()[0])


def test_refine_variants_are_distinct_and_differ_from_the_parent(fake_ollama, engine):
    parent = "A fox lies in snow."
    result = engine.refine_variants(parent, "what", CRITIQUE, REQUEST, 3, seed=9)
    assert not result.fallback and len(result.value) == 3
    keys = {distinct_key(v) for v in result.value}
    assert len(keys) == 3 and distinct_key(parent) not in keys
    body = fake_ollama.bodies()[0]
    assert body["format"] == tpl.variants_schema(3) and "Write 3 alternative improved texts" in \
        body["messages"][0]["content"]


def test_refine_variants_fallback_stays_distinct(fake_ollama, engine):
    parent = "Soft light."
    fake_ollama.script("/api/chat", {"content": "x"}, {"content": "y"})
    result = engine.refine_variants(parent, "how", CRITIQUE, REQUEST, 16)
    assert result.fallback and result.fallback_count == 16
    keys = {distinct_key(v) for v in result.value}
    assert len(keys) == 16 and distinct_key(parent) not in keys


# -- combine ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("level, words", [(1, "at most 50 words"), (2, "60 to 120 words"), (3, "120 to 200 words")])
def test_combine_descriptiveness_reaches_the_system_prompt(fake_ollama, engine, level, words):
    result = engine.combine("A red fox asleep.", "Soft dawn light.", descriptiveness=level, seed=1)
    assert result.value and not result.fallback
    body = fake_ollama.bodies()[0]
    assert words in body["messages"][0]["content"] and body["options"]["temperature"] == 0.5


def test_combine_booru_style(fake_ollama, engine):
    engine.combine("A red fox asleep.", "Soft dawn light.", style="booru")
    assert "comma-separated tags" in fake_ollama.bodies()[0]["messages"][0]["content"]


def test_combine_template_is_deterministic_and_offline(fake_ollama, engine):
    assert engine.combine_template("A red fox asleep in snow", "Soft dawn light.") == \
        "A red fox asleep in snow. Soft dawn light."
    assert engine.combine_template("1girl, solo. Red hair", "Soft light, bokeh. soft light", style="booru") == \
        "1girl, solo, red hair, soft light, bokeh"
    assert fake_ollama.requests == []


# -- critique --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dimension, scores, level", [
    ("what", {"alignment": 33.0, "aesthetic": 3.0}, "minor"), ("what", {"alignment": 32.0}, "moderate"),
    ("what", {"alignment": 26.0}, "moderate"), ("what", {"alignment": 25.9}, "significant"),
    ("how", {"aesthetic": 6.6, "alignment": 10.0}, "minor"), ("how", {"aesthetic": 5.5}, "moderate"),
    ("how", {"aesthetic": 5.4}, "significant")])
def test_severity_bands(dimension, scores, level):
    assert severity(dimension, scores)[0] == level


def test_critique_returns_the_three_keys_and_states_severity(fake_ollama, engine):
    result = engine.critique(REQUEST, "A fox lies in snow.", "Soft light.", "A fox lies in snow. Soft light.",
                             {"alignment": 27.3, "aesthetic": 6.4, "total": 38.3}, "what",
                             caption="a dog in the snow", seed=2)
    assert set(result.value) == {"critique", "recommendation", "reason"} and all(result.value.values())
    body = fake_ollama.bodies()[0]
    assert body["format"] == tpl.CRITIQUE_SCHEMA and body["options"]["temperature"] == 0.4
    user = last_user(body)
    assert "Scores: alignment 27.3/100, aesthetic 6.40/10, total 38.3" in user
    assert 'Caption of the rendered image: "a dog in the snow"' in user
    assert "Severity: moderate (alignment 27.3/100 is between 26 and 32)" in user


def test_critique_fallback_is_rule_based_on_scores_and_caption(fake_ollama, engine):
    fake_ollama.script("/api/chat", reply({"critique": ""}), {"content": "{}"})
    result = engine.critique(REQUEST, "A fox lies in snow.", "Soft light.", "p", {"alignment": 21.3}, "what",
                             caption="a dog sleeping in the snow")
    assert result.fallback and result.problem == "'critique' was missing or empty"
    assert result.value == {
        "critique": "The image does not clearly show what was requested. red, fox are missing from the image "
                    "caption.",
        "recommendation": "Name red, fox explicitly, early in the WHAT text, as visible physical details.",
        "reason": "Rule-based (significant change because alignment 21.3/100 is below 26)."}


def test_critique_needs_the_score_of_its_dimension(engine):
    with pytest.raises(InvalidParameter) as info:
        engine.critique(REQUEST, "w", "h", "p", {"alignment": 30.0}, "how")
    assert str(info.value).startswith("scores: needs a numeric 'aesthetic' (0-10) to critique HOW")


# -- negative --------------------------------------------------------------------------------------------------------

def test_negative_never_negates_what_the_prompt_asks_for(fake_ollama, engine):
    fake_ollama.script("/api/chat", reply({"terms": ["blurry", "no text", "red fox", "Snow", "watermark", "blurry",
                                                     "deformed paws"]}))
    result = engine.negative("A red fox asleep in snow")
    assert result.value == "blurry, text, watermark, deformed paws"
    assert fake_ollama.bodies()[0]["options"]["temperature"] == 0.3


def test_negative_fallback_list(fake_ollama, engine):
    fake_ollama.script("/api/chat", {"content": ""}, {"content": ""})
    result = engine.negative("a blurry watercolour of text on paper")
    assert result.fallback and "blurry" not in result.value.split(", ") and "text" not in result.value.split(", ")
    assert result.value.startswith("low quality, distorted, deformed")


# -- temperature and seeds -------------------------------------------------------------------------------------------

def test_engine_temperature_overrides_every_operation(fake_ollama):
    engine = PromptEngine(OllamaClient(fake_ollama.url, MODEL), temperature=0.2, top_p=0.8, top_k=20, num_ctx=8192)
    engine.expand(REQUEST, "what", 2)
    engine.combine("a", "b")
    engine.negative("a fox")
    for body in fake_ollama.bodies():
        assert {k: body["options"][k] for k in ("temperature", "top_p", "top_k", "num_ctx")} == \
            {"temperature": 0.2, "top_p": 0.8, "top_k": 20, "num_ctx": 8192}


def test_seeds_make_outputs_repeatable_and_engine_seed_is_the_default(fake_ollama):
    engine = PromptEngine(OllamaClient(fake_ollama.url, MODEL), seed=100)
    a = engine.expand(REQUEST, "how", 3, seed=1).value
    b = engine.expand(REQUEST, "how", 3, seed=1).value
    c = engine.expand(REQUEST, "how", 3, seed=2).value
    engine.combine("a", "b")
    assert a == b and a != c
    assert [body["options"]["seed"] for body in fake_ollama.bodies()] == [1, 1, 2, 100]
    PromptEngine(OllamaClient(fake_ollama.url, MODEL)).combine("a", "b")
    assert "seed" not in fake_ollama.bodies()[-1]["options"]


def test_engine_is_safe_from_a_thread_pool(fake_ollama, engine):
    halves = [f"A fox number {i} in snow." for i in range(12)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda t: engine.refine(t, "what", CRITIQUE, REQUEST, seed=1), halves))
    assert all(not r.fallback for r in results)
    assert engine.stats.calls == 12 == len(fake_ollama.bodies())


def test_describe_for_the_run_record(fake_ollama):
    engine = PromptEngine(OllamaClient(fake_ollama.url, MODEL, keep_alive="0"), seed=4, low_vram=True)
    assert engine.describe() == {"provider": "ollama", "base_url": fake_ollama.url, "model": MODEL,
                                 "temperature": DEFAULT_TEMPERATURES, "seed": 4, "top_p": None, "top_k": None,
                                 "num_ctx": None, "keep_alive": 0, "low_vram": True, "stream": True}


# -- validation and cleaning -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, name", [
    (lambda e: e.expand("", "what", 2), "prompt"), (lambda e: e.expand("x", "style", 2), "dimension"),
    (lambda e: e.expand("x", "what", 0), "n"), (lambda e: e.expand("x", "what", 33), "n"),
    (lambda e: e.refine_variants("x", "what", "c", "u", 17), "n"),
    (lambda e: e.combine("a", "b", descriptiveness=4), "descriptiveness"),
    (lambda e: e.combine("a", "b", style="anime"), "style"), (lambda e: e.refine("x", "what", 3, "u"), "critique"),
    (lambda e: e.critique("u", "w", "h", "p", "high", "what"), "scores")])
def test_bad_inputs_fail_before_any_request(fake_ollama, engine, call, name):
    with pytest.raises(InvalidParameter) as info:
        call(engine)
    assert info.value.name == name
    assert fake_ollama.requests == []


@pytest.mark.parametrize("kwargs, name", [({"temperature": 3.0}, "temperature"), ({"top_p": 0.0}, "top_p"),
                                          ({"num_ctx": 0}, "num_ctx")])
def test_bad_engine_settings(kwargs, name):
    with pytest.raises(InvalidParameter) as info:
        PromptEngine(OllamaClient("http://localhost:11434", MODEL), **kwargs)
    assert info.value.name == name


@pytest.mark.parametrize("raw, clean", [
    ('Here is the prompt: "A red fox in snow."', "A red fox in snow."),
    ("Improved WHAT prompt:\n“A red fox in snow.”", "A red fox in snow."),
    ("WHAT (content): a red fox", "a red fox"),
    ("<think>plan</think>\n\nA fox.\n\nNote: I added the snow.", "A fox."),
    ("```\nA fox\nin snow\n```", "A fox in snow"),
    ("What a night: stars over a lake", "What a night: stars over a lake"),
    ("'single quoted'", "single quoted"),
])
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


def test_critique_accepts_numpy_scores(fake_ollama, engine):
    np = pytest.importorskip("numpy")
    result = engine.critique(REQUEST, "w", "h", "p", {"alignment": np.float32(82.5), "aesthetic": np.float64(7.0)},
                             "what")
    assert not result.fallback
    assert "Severity: minor (alignment 82.5/100 is above 32)" in last_user(fake_ollama.bodies()[0])
