"""OllamaClient under the faults of a real network and a real server, against the fake Ollama on loopback: streamed
answers, connections dropped mid-answer (streamed and not), answers that drip a byte at a time, huge answers,
busy servers (429 / 503 with Retry-After). Each case checks the exact message a user reads."""
import json
import time
import tracemalloc

import pytest

from pipeline.llm.client import (OllamaBadOutput, OllamaBusy, OllamaClient, OllamaError, OllamaTimeout,
                                 OllamaUnreachable, _retry_after)

MODEL = "qwen2.5:7b-instruct"
HELLO = [{"role": "user", "content": 'Describe "a red kite over a hill"'}]
SCHEMA = {"type": "object", "properties": {"pairs": {"type": "array", "minItems": 3, "items": {
    "type": "object", "properties": {"what": {"type": "string"}, "how": {"type": "string"}}}}}}


def client_for(fake, **kwargs):
    kwargs.setdefault("backoff_s", 0.0)
    return OllamaClient(fake.url, MODEL, **kwargs)


class Sink:
    """Collects the pieces of a streamed answer; `used` says whether anything was taken from it yet."""

    def __init__(self, used_after: int = 10 ** 9):
        self.pieces: list[str] = []
        self.restarts = 0
        self.used_after = used_after      # characters after which the answer counts as used

    def feed(self, text):
        self.pieces.append(text)

    def restart(self):
        if len("".join(self.pieces)) >= self.used_after:
            return False
        self.restarts += 1
        self.pieces.clear()
        return True


# -- streaming -------------------------------------------------------------------------------------------------------

def test_a_streamed_answer_is_the_same_answer_handed_over_piece_by_piece(fake_ollama):
    client = client_for(fake_ollama)
    whole = client.chat(HELLO, format=SCHEMA, options={"seed": 4})
    sink = Sink()
    streamed = client.chat(HELLO, format=SCHEMA, options={"seed": 4}, sink=sink)
    assert [b["stream"] for b in fake_ollama.bodies()] == [False, True]
    assert streamed.text == whole.text and "".join(sink.pieces) == whole.text
    assert len(sink.pieces) == -(-len(whole.text) // 4)          # one piece per token of ~4 characters
    assert streamed.done_reason == "stop" and streamed.stats.eval_count > 0
    assert len(json.loads(streamed.text)["pairs"]) == 3


def test_a_streamed_answer_arrives_at_the_speed_of_the_latency_model(fake_ollama):
    from tests.fixtures.ollama import Latency
    fake_ollama.set_latency(Latency(decode_tps=400, prefill_tps=1e9, slots=1))
    arrivals = []

    class Clock(Sink):
        def feed(self, text):
            arrivals.append(time.monotonic())
            super().feed(text)
    started = time.monotonic()
    reply = client_for(fake_ollama).chat(HELLO, format=SCHEMA, sink=Clock())
    tokens = -(-len(reply.text) // 4)
    # the first token comes after 1/400 s, the last after tokens/400 s: the answer is spread over its decode time
    assert arrivals[0] - started < 0.5 * tokens / 400
    assert arrivals[-1] - started >= 0.9 * tokens / 400


# -- a connection dropped mid-answer ---------------------------------------------------------------------------------

def test_an_answer_dropped_mid_body_is_asked_again(fake_ollama):
    fake_ollama.script("/api/chat", {"content": "A fox in the snow.", "drop_after": 40})
    reply = client_for(fake_ollama).chat(HELLO)
    assert reply.text and reply.stats.attempts == 2 and len(fake_ollama.bodies()) == 2


def test_an_answer_dropped_every_time_says_so(fake_ollama):
    drop = {"content": "A fox in the snow.", "drop_after": 40}
    fake_ollama.script("/api/chat", drop, drop, drop)
    with pytest.raises(OllamaUnreachable) as info:
        client_for(fake_ollama, retries=2).chat(HELLO)
    assert str(info.value) == (
        f"Ollama at {fake_ollama.url} dropped the connection in the middle of the chat answer for model '{MODEL}' "
        f"(3 times). Check the Ollama server log (a crash, or a proxy that cuts long answers) and run again.")


def test_a_stream_dropped_before_anything_was_used_is_asked_again_from_the_start(fake_ollama):
    fake_ollama.script("/api/chat", {"default": True, "drop_after": 30})
    sink = Sink()
    reply = client_for(fake_ollama).chat(HELLO, format=SCHEMA, sink=sink)
    assert sink.restarts == 1 and "".join(sink.pieces) == reply.text and json.loads(reply.text)["pairs"]
    assert reply.stats.attempts == 2


def test_a_stream_dropped_after_part_of_it_was_used_fails_and_keeps_the_part(fake_ollama):
    fake_ollama.script("/api/chat", {"default": True, "drop_after": 60})
    sink = Sink(used_after=20)
    with pytest.raises(OllamaUnreachable) as info:
        client_for(fake_ollama).chat(HELLO, format=SCHEMA, sink=sink)
    assert str(info.value) == (
        f"Ollama at {fake_ollama.url} dropped the connection in the middle of the chat answer for model '{MODEL}'. "
        f"Check the Ollama server log (a crash, or a proxy that cuts long answers) and run again.")
    assert len("".join(sink.pieces)) == 60 and len(fake_ollama.bodies()) == 1


def test_an_error_line_in_the_middle_of_a_stream(fake_ollama):
    fake_ollama.script("/api/chat", {"default": True, "error_after": 20})
    reply = client_for(fake_ollama).chat(HELLO, format=SCHEMA, sink=Sink())       # nothing used: asked again
    assert reply.stats.attempts == 2
    fake_ollama.script("/api/chat", {"default": True, "error_after": 20})
    with pytest.raises(OllamaError) as info:
        client_for(fake_ollama).chat(HELLO, format=SCHEMA, sink=Sink(used_after=8))
    assert str(info.value) == (
        f"Ollama at {fake_ollama.url} failed in the middle of the chat answer for model '{MODEL}' (Ollama said: an "
        f"error was encountered while running the model: unexpected EOF). Check the Ollama server log.")


# -- an answer that drips --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("streamed", [False, True])
def test_an_answer_that_drips_a_byte_at_a_time_ends_at_the_overall_timeout(fake_ollama, streamed):
    # every byte arrives well within the socket's timeout; only the overall deadline can end it
    fake_ollama.script("/api/chat", {"content": "x" * 500, "drip": 0.05})
    client = client_for(fake_ollama, timeout=0.6, retries=2)
    started = time.monotonic()
    with pytest.raises(OllamaTimeout) as info:
        client.chat(HELLO, sink=Sink() if streamed else None)
    elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 3.0, elapsed             # the whole answer would drip for 25 s
    assert str(info.value) == (
        f"Ollama at {fake_ollama.url} did not answer the chat request for model '{MODEL}' within 0.6 s. The model "
        f"may still be loading or be too large for this machine: raise the timeout, or use a smaller model.")
    assert len(fake_ollama.bodies()) == 1             # a timeout is not retried


def test_retries_stay_within_the_one_deadline(fake_ollama):
    slow_error = {"status": 500, "json": {"error": "runner crashed"}, "delay": 0.5}
    fake_ollama.script("/api/chat", *[slow_error] * 6)
    started = time.monotonic()
    with pytest.raises((OllamaError, OllamaTimeout)):
        client_for(fake_ollama, timeout=0.8, retries=10, backoff_s=0.05).chat(HELLO)
    assert time.monotonic() - started < 2.2          # ten retries of 0.5 s each would take over 5 s
    assert len(fake_ollama.bodies()) <= 3


# -- a huge answer ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("streamed", [False, True])
def test_a_huge_answer_is_cut_off_without_being_read_whole(fake_ollama, streamed):
    fake_ollama.script("/api/chat", {"content": "A fox.", "size": 40 * 2 ** 20})      # 40 MB of text
    client = client_for(fake_ollama, max_answer_bytes=2 ** 20)
    tracemalloc.start()
    try:
        with pytest.raises(OllamaBadOutput) as info:
            client.chat(HELLO, sink=Sink() if streamed else None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size = "40.0 MB announced" if not streamed else "more than 1.0 MB"
    assert str(info.value) == (
        f"Ollama at {fake_ollama.url} sent an answer to the chat request for model '{MODEL}' larger than this "
        f"client reads ({size}; the limit is 1 MB), so it was cut off unread. A model that does not stop writing: "
        f"set num_predict, or try another model.")
    assert peak < 12 * 2 ** 20, f"{peak / 2 ** 20:.1f} MB held while refusing a 40 MB answer"


def test_an_answer_within_the_limit_is_read(fake_ollama):
    fake_ollama.script("/api/chat", {"content": "A fox.", "size": 300_000})
    assert len(client_for(fake_ollama, max_answer_bytes=2 ** 20).chat(HELLO).text) < 300_001


# -- busy: 429 / 503 with Retry-After --------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [429, 503])
def test_busy_answers_wait_for_retry_after_then_ask_again(fake_ollama, status):
    busy = {"status": status, "json": {"error": "server busy, please try again. maximum pending requests exceeded"},
            "headers": {"Retry-After": "0.3"}}
    fake_ollama.script("/api/chat", busy, busy)
    started = time.monotonic()
    reply = client_for(fake_ollama, retries=0, timeout=5).chat(HELLO)   # busy answers are not failures
    assert reply.text and reply.stats.attempts == 3
    assert time.monotonic() - started >= 0.6


def test_a_retry_after_past_the_timeout_fails_at_once_saying_what_to_do(fake_ollama):
    fake_ollama.script("/api/chat", {"status": 503, "json": {"error": "server busy, please try again"},
                                     "headers": {"Retry-After": "120"}})
    started = time.monotonic()
    with pytest.raises(OllamaBusy) as info:
        client_for(fake_ollama, timeout=2).chat(HELLO)
    assert time.monotonic() - started < 1.5          # it did not wait out its 2 s timeout
    assert str(info.value) == (
        f"Ollama at {fake_ollama.url} is busy (HTTP 503: server busy, please try again) and asked to retry in "
        f"120 s, past the 2 s timeout for the chat request. Wait and run again, send fewer requests at once "
        f"(llm_concurrency), or raise OLLAMA_NUM_PARALLEL / OLLAMA_MAX_QUEUE on the server.")
    assert info.value.status == 503 and isinstance(info.value, OllamaError)


def test_busy_without_retry_after_backs_off_until_the_timeout(fake_ollama):
    busy = {"status": 429, "json": {"error": "too many requests"}}
    fake_ollama.script("/api/chat", *[busy] * 20)
    started = time.monotonic()
    with pytest.raises(OllamaBusy, match=r"is busy \(HTTP 429: too many requests\) and stayed busy, past the 1 s"):
        client_for(fake_ollama, timeout=1, backoff_s=0.1).chat(HELLO)
    assert time.monotonic() - started < 1.9          # the next backoff would have ended past the deadline
    assert 3 <= len(fake_ollama.bodies()) <= 5          # 0.1, 0.2, 0.4 s apart


def test_retry_after_as_an_http_date():
    soon = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 28 <= _retry_after(soon) <= 31
    assert _retry_after("2") == 2.0 and _retry_after(None) is None and _retry_after("soon") is None
