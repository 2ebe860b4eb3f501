"""The VLM service's own behaviour, as a real subprocess on loopback judging real PNGs through the fake Ollama:
every pair asked in both orders (the model sees the pixels of both files, in both positions), a position-biased
or unusable model gives TIE, the focused questions, confined file access, one-line errors, the bounded queue,
and the checks at start."""
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from pipeline.config import DEFAULT_VLM_MODEL
from pipeline.services.vlm import main, parse_args
from tests.fixtures.ollama import mean_rgb
from tests.fixtures.servers import free_port
from tests.services.conftest import VLM_MODEL, start_vlm

RED, BLUE, PALE_BLUE = (200, 30, 30), (30, 40, 210), (120, 120, 160)
PROMPT = "a blue door in a white wall"


def compare(vlm, a, b, prompt=PROMPT, endpoint="/compare") -> requests.Response:
    return requests.post(vlm.url + endpoint, json={"image_a": str(a), "image_b": str(b), "prompt": prompt},
                         timeout=60)


def bias(vlm) -> dict:
    return requests.get(vlm.url + "/bias_stats", timeout=10).json()


def seen_colours(vlm) -> list:
    """The mean colour of each image of each vision request, in the order the model was shown them (0-255)."""
    return [[tuple(round(255 * c) for c in mean_rgb(image)) for image in request["images"]]
            for request in vlm.fake.vision_requests]


def test_each_pair_is_asked_in_both_orders_and_the_answer_follows_the_pixels(vlm):
    red, blue = vlm.png("red.png", RED), vlm.png("blue.png", BLUE)
    response = compare(vlm, red, blue)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choice"] == "B" and body["confidence"] == 1.0
    assert body["ranks"] == {"A": {"alignment": 2, "aesthetics": 2}, "B": {"alignment": 1, "aesthetics": 1}}
    assert [(a["first"], a["winner"]) for a in body["answers"]] == [("A", "second"), ("B", "first")]
    assert body["explanation"].startswith("With A shown first, B is better: The second image has more blue")
    assert "With B shown first, B is better: The first image has more blue" in body["explanation"]
    # Two requests, each with both files' own pixels, A first and then B first.
    assert seen_colours(vlm) == [[RED, BLUE], [BLUE, RED]]
    assert [r["model"] for r in vlm.fake.vision_requests] == [VLM_MODEL, VLM_MODEL]
    user = [m for m in vlm.fake.bodies()[0]["messages"] if m["role"] == "user"][0]
    assert json.dumps(PROMPT) in user["content"] and "red.png" not in json.dumps(vlm.fake.bodies())
    # The same pair the other way round gets the mirrored answer.
    swapped = compare(vlm, blue, red).json()
    assert swapped["choice"] == "A" and swapped["ranks"]["A"] == {"alignment": 1, "aesthetics": 1}


def test_a_position_biased_model_gets_tie_not_a_win(vlm):
    before = bias(vlm)
    vlm.fake.judge_mode = "position"           # always "first", whatever the pixels
    body = compare(vlm, vlm.png("red.png", RED), vlm.png("blue.png", BLUE)).json()
    assert body["choice"] == "TIE" and body["confidence"] == 0.5
    assert body["ranks"] == {"A": {"alignment": 1, "aesthetics": 1}, "B": {"alignment": 1, "aesthetics": 1}}
    assert body["winner_strengths"] == [] and body["loser_weaknesses"] == []
    assert body["explanation"].endswith("The two orders disagree, so the pair is a tie.")
    after = bias(vlm)
    assert after["order_disagreements"] == before["order_disagreements"] + 1
    assert after["position"]["first"] == before["position"]["first"] + 2
    assert after["choice_distribution"]["TIE"] == before["choice_distribution"]["TIE"] + 1
    assert after["total_comparisons"] == before["total_comparisons"] + 1 and after["answers"] == before["answers"] + 2


def test_images_the_model_cannot_tell_apart_tie_with_full_confidence(vlm):
    body = compare(vlm, vlm.png("a.png", PALE_BLUE), vlm.png("b.png", PALE_BLUE, size=(64, 96))).json()
    assert body["choice"] == "TIE" and body["confidence"] == 1.0
    assert [a["winner"] for a in body["answers"]] == ["tie", "tie"]


def test_unusable_answers_are_retried_once_then_a_tie(vlm):
    before = bias(vlm)
    vlm.fake.judge_mode = "garbage"            # text that is not JSON
    body = compare(vlm, vlm.png("red.png", RED), vlm.png("blue.png", BLUE)).json()
    assert body["choice"] == "TIE"
    assert all(answer["unusable"] and "could not be used" in answer["reason"] for answer in body["answers"])
    assert len(vlm.fake.bodies()) == 4         # each order: the question, then one retry
    after = bias(vlm)
    assert after["answers"] - before["answers"] == 2
    unusable = after["fallback_rate"] * after["answers"] - before["fallback_rate"] * before["answers"]
    assert unusable == pytest.approx(2)


def test_feedback_comes_from_both_answers_and_only_for_a_decided_pair(vlm):
    red, blue = vlm.png("red.png", RED), vlm.png("blue.png", BLUE)

    def answer(winner, strengths, weaknesses, suggestion):
        return {"content": json.dumps({"reason": "r", "winner": winner, "winner_strengths": strengths,
                                       "loser_weaknesses": weaknesses, "improvement_suggestion": suggestion})}
    vlm.fake.script("/api/chat", answer("second", ["clear door", "blue"], ["no door"], ""),
                    answer("first", ["blue", "sharp"], ["muddy red"], "name the door's colour"))
    body = compare(vlm, red, blue).json()
    assert body["choice"] == "B"
    assert body["winner_strengths"] == ["clear door", "blue", "sharp"]
    assert body["loser_weaknesses"] == ["no door", "muddy red"]
    assert body["improvement_suggestion"] == "name the door's colour"
    vlm.fake.script("/api/chat", answer("second", ["x"], ["y"], "s1"), answer("second", ["z"], ["w"], "s2"))
    tie = compare(vlm, red, blue).json()
    assert tie["choice"] == "TIE" and tie["winner_strengths"] == [] and tie["improvement_suggestion"] == "s1"


def test_focused_endpoints_ask_one_aspect_and_rank_only_it(vlm):
    red, blue = vlm.png("red.png", RED), vlm.png("blue.png", BLUE)
    alignment = compare(vlm, red, blue, endpoint="/compare-alignment").json()
    assert alignment["choice"] == "B" and alignment["ranks"] == {"A": {"alignment": 2}, "B": {"alignment": 1}}
    aesthetics = compare(vlm, blue, red, prompt="", endpoint="/compare-aesthetics").json()
    assert aesthetics["choice"] == "A" and aesthetics["ranks"] == {"A": {"aesthetics": 1}, "B": {"aesthetics": 2}}
    systems = [body["messages"][0]["content"] for body in vlm.fake.bodies()]
    users = [body["messages"][1]["content"] for body in vlm.fake.bodies()]
    assert all("prompt adherence only" in s for s in systems[:2])
    assert all("visual quality" in s and "ignore what they depict" in s for s in systems[2:])
    assert all(json.dumps(PROMPT) in u for u in users[:2]) and all("User request" not in u for u in users[2:])
    assert all("winner_strengths" in body["format"]["properties"] for body in vlm.fake.bodies())
    for endpoint in ("/compare", "/compare-alignment"):
        empty = compare(vlm, red, blue, prompt="  ", endpoint=endpoint)
        assert empty.status_code == 422 and "prompt: is empty" in empty.json()["detail"]


def test_files_are_read_inside_the_allowed_folders_only(vlm, tmp_path):
    inside = vlm.png("blue.png", BLUE)
    (vlm.workdir / "secret.png").write_bytes(inside.read_bytes())
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(inside.read_bytes())
    link = vlm.workdir / "output" / "link.png"
    link.unlink(missing_ok=True)
    link.symlink_to(elsewhere)
    for reference in ("output/../secret.png", str(elsewhere), "/etc/hostname", str(link)):
        response = compare(vlm, inside, reference)
        assert response.status_code == 403, (reference, response.text)
        detail = response.json()["detail"]
        assert detail.startswith(f"image_b: {reference}") and "start the service with --allow-dir DIR" in detail
    missing = compare(vlm, "output/gone.png", inside)
    assert missing.status_code == 400 and missing.json()["detail"] == "image_a: file not found: output/gone.png"
    (vlm.workdir / "output" / "notes.png").write_text("not a png")
    broken = compare(vlm, "output/notes.png", inside)
    assert broken.status_code == 400 and "image_a: output/notes.png is not an image" in broken.json()["detail"]
    assert vlm.fake.bodies() == []             # nothing refused reached the model


def test_ollama_failures_are_one_line_5xx(vlm):
    red, blue = vlm.png("red.png", RED), vlm.png("blue.png", BLUE)
    vlm.fake.script("/api/chat", *[{"close": True}] * 3)          # the first attempt and both retries
    down = compare(vlm, red, blue)
    assert down.status_code == 502
    assert down.json()["detail"] == (f"Cannot reach Ollama at {vlm.fake.url}: start it with `ollama serve`, or start "
                                     f"the service with --ollama-url URL (default OLLAMA_BASE_URL)")
    vlm.fake.models.remove(VLM_MODEL)                              # deleted while the service runs
    gone = compare(vlm, red, blue)
    assert gone.status_code == 502
    detail = gone.json()["detail"]
    assert detail.startswith(f"--model: Ollama model '{VLM_MODEL}' is not installed at {vlm.fake.url}")
    assert f"run `ollama pull {VLM_MODEL}`" in detail and "\n" not in detail
    status = requests.get(vlm.url + "/download/status", timeout=10).json()
    assert status == {"status": "not_downloaded", "model": VLM_MODEL, "message": f"run `ollama pull {VLM_MODEL}`"}


def test_load_unload_health_and_download_status(vlm):
    requests.post(vlm.url + "/unload", timeout=30)
    health = requests.get(vlm.url + "/health", timeout=10).json()
    assert health["status"] == "healthy" and health["model_loaded"] is False
    assert health["model"] == health["model_repo"] == VLM_MODEL and health["orders_per_comparison"] == 2
    assert health["vision"] == {"family": "qwen25vl", "images_per_request": None}
    assert health["allow_dirs"] == [str((vlm.workdir / "output").resolve())]
    assert requests.post(vlm.url + "/load", json={}, timeout=30).json()["status"] == "loaded"
    assert VLM_MODEL in vlm.fake.loaded
    assert requests.get(vlm.url + "/health", timeout=10).json()["model_loaded"] is True
    assert requests.post(vlm.url + "/unload", json={}, timeout=30).json()["status"] == "unloaded"
    assert VLM_MODEL not in vlm.fake.loaded and vlm.fake.unloads == [VLM_MODEL, VLM_MODEL]
    assert requests.post(vlm.url + "/unload", json={}, timeout=30).json()["status"] == "not_loaded"
    assert requests.get(vlm.url + "/download/status", timeout=10).json()["status"] == "cached"


def test_batch_answers_each_comparison_and_reports_failures_in_place(vlm):
    red, blue = vlm.png("red.png", RED), vlm.png("blue.png", BLUE)
    body = {"comparisons": [{"image_a": str(red), "image_b": str(blue), "prompt": PROMPT},
                            {"image_a": "output/gone.png", "image_b": str(blue), "prompt": PROMPT},
                            {"image_a": "/etc/hostname", "image_b": str(blue), "prompt": PROMPT},
                            {"image_a": str(blue), "image_b": str(red), "prompt": PROMPT}],
            "cleanup_between": True}
    answer = requests.post(vlm.url + "/compare-batch", json=body, timeout=60).json()
    assert answer["total"] == 4
    first, missing, outside, last = answer["results"]
    assert first["choice"] == "B" and last["choice"] == "A"
    assert missing == {"error": True, "status": 400, "detail": "image_a: file not found: output/gone.png"}
    assert outside["error"] and outside["status"] == 403 and "--allow-dir" in outside["detail"]
    assert len(vlm.fake.bodies()) == 4
    too_many = requests.post(vlm.url + "/compare-batch", json={"comparisons": [body["comparisons"][0]] * 65},
                             timeout=30)
    assert too_many.status_code == 422


def test_the_queue_is_bounded_and_health_answers_meanwhile(vlm):
    red, blue = vlm.png("red.png", RED), vlm.png("blue.png", BLUE)
    vlm.fake.delay_when("User request", 0.8)                  # each order takes 0.8 s: a comparison 1.6 s
    start = threading.Barrier(3)

    def one(_):
        start.wait()
        return compare(vlm, red, blue)
    with ThreadPoolExecutor(3) as pool:
        running = [pool.submit(one, i) for i in range(3)]
        while not vlm.fake.bodies():
            pass
        health = requests.get(vlm.url + "/health", timeout=5).json()
        answers = [future.result() for future in running]
    assert health["queue"]["running"] == 1
    assert sorted(a.status_code for a in answers) == [200, 200, 503]
    refused = next(a for a in answers if a.status_code == 503)
    assert int(refused.headers["Retry-After"]) >= 1
    assert "--queue-depth 1" in refused.json()["detail"]


@pytest.mark.parametrize("model, code, words", [
    ("qwen2.5:7b-instruct", 2, "error: --model: 'qwen2.5:7b-instruct' cannot see images (Ollama lists no 'vision' "
                               "capability for it)"),
    ("llama3.2-vision:11b", 2, "error: --model: 'llama3.2-vision:11b' (mllama) takes one image per request"),
    ("nope:1b", 2, "error: --model: Ollama model 'nope:1b' is not installed at"),
])
def test_a_model_that_cannot_judge_pairs_fails_at_start_in_one_line(vlm_fake, capsys, model, code, words):
    # main() in this process: the check runs before the server starts (the subprocess case is the one below)
    assert main(["--port", str(free_port()), "--ollama-url", vlm_fake.url, "--model", model]) == code
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and err.startswith(words), err


def test_an_ollama_that_is_down_fails_at_start_in_one_line(tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    process = start_vlm(["--port", str(free_port())], tmp_path, {"OLLAMA_BASE_URL": down})
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 1
    assert out.strip() == (f"error: Cannot reach Ollama at {down}: start it with `ollama serve`, or start the "
                           f"service with --ollama-url URL (default OLLAMA_BASE_URL)")


def test_url_and_model_default_from_the_environment():
    env = {"OLLAMA_BASE_URL": "http://gpu:11434", "VLM_MODEL": "gemma3:12b", "OLLAMA_MODEL": "qwen2.5:7b-instruct"}
    args = parse_args([], env=env)
    assert (args.ollama_url, args.model, args.port, args.allow_dirs) == ("http://gpu:11434", "gemma3:12b", 8004,
                                                                         ["output"])
    assert parse_args(["--model", "qwen3-vl:8b"], env=env).model == "qwen3-vl:8b"
    bare = parse_args([], env={})
    assert (bare.ollama_url, bare.model) == ("http://localhost:11434", DEFAULT_VLM_MODEL) == \
        ("http://localhost:11434", "qwen2.5vl:7b")
    with pytest.raises(SystemExit):
        parse_args(["--queue-depth", "-1"], env={})


def test_images_are_sent_downscaled_to_max_side(vlm):
    big = vlm.png("big.png", BLUE, size=(1600, 900))
    compare(vlm, big, vlm.png("red.png", RED))
    sizes = [image.size for request in vlm.fake.vision_requests for image in request["images"]]
    assert (768, 432) in sizes and max(max(size) for size in sizes) == 768
    assert np.allclose(seen_colours(vlm)[0][0], BLUE, atol=1)
