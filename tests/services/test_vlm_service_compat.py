"""The VLM service as a drop-in for the seed's client: the requests `local-vlm-provider.js` makes, replayed body for
body and in its order, against the real service subprocess (the fake Ollama as the vision model), and the answers
read the way that client reads them.

What the client sends (local-vlm-provider.js):
- healthCheck: GET /health; loadModel: POST /load {}; unloadModel: POST /unload {};
- compareImages(a, b, prompt): POST /compare {image_a, image_b, prompt};
- compareWithDebiasing: the same, with a and b swapped when Math.random() < 0.5, the answer mapped back
  (_mapResultBack: choice A<->B, ranks.A<->ranks.B);
- compareWithEnsemble: ensembleSize (VLM_ENSEMBLE_SIZE, 3) debiased votes; the winner is the side with the lower
  average of 0.7 * ranks.alignment + 0.3 * ranks.aesthetics, TIE when equal;
- compareWithEnsembleSeparate: per vote POST /compare-alignment {image_a, image_b, prompt}, then
  POST /compare-aesthetics {image_a, image_b, prompt: ''}, both in the vote's (swapped or not) order;
- rankImages(images, prompt) for up to 8 images: every pair i<j in order, skipping pairs its ComparisonGraph can
  infer (one hop: the winner also beats whoever the loser beat).
Image paths are each candidate's `localPath` in the app's output/<date>/<session>/ folder.
"""
import pytest
import requests

PROMPT = "a lighthouse on a cliff at dusk"
ALIGNMENT_WEIGHT = 0.7                     # DEFAULT_ALIGNMENT_WEIGHT of the client
# Blue decides the fake judge: BLUE > PALE > RED.
COLOURS = {"pale": (120, 120, 160), "red": (200, 30, 30), "blue": (30, 40, 210)}
SESSION = "output/2026-03-01/ses-101500"


@pytest.fixture
def candidates(vlm):
    """{candidateId, localPath} as the orchestrator hands them to rankImages, absolute paths under output/."""
    return [{"candidateId": f"i1c{index}", "localPath": str(vlm.png(f"{SESSION[7:]}/i1c{index}.png", rgb)),
             "colour": name} for index, (name, rgb) in enumerate(COLOURS.items())]


def post(vlm, path, body) -> dict:
    response = requests.post(vlm.url + path, json=body, timeout=60)
    assert response.status_code == 200, (path, response.text)
    return response.json()


def client_reads(data: dict) -> dict:
    """compareImages' reading of an answer (missing ranks default to A 1/1, B 2/2; a rank of 0 becomes 1)."""
    assert data["choice"] in ("A", "B", "TIE")
    assert isinstance(data["explanation"], str) and data["explanation"]
    assert isinstance(data["confidence"], float) and 0 < data["confidence"] <= 1
    assert all(isinstance(p, str) for key in ("winner_strengths", "loser_weaknesses") for p in data[key])
    assert isinstance(data["improvement_suggestion"], str)
    ranks = data.get("ranks") or {"A": {"alignment": 1, "aesthetics": 1}, "B": {"alignment": 2, "aesthetics": 2}}
    for side in ("A", "B"):
        ranks[side]["alignment"] = ranks[side].get("alignment") or 1
        ranks[side]["aesthetics"] = ranks[side].get("aesthetics") or 1
        assert {ranks[side]["alignment"], ranks[side]["aesthetics"]} <= {1, 2}
        ranks[side]["combined"] = ALIGNMENT_WEIGHT * ranks[side]["alignment"] + \
            (1 - ALIGNMENT_WEIGHT) * ranks[side]["aesthetics"]
    return {"choice": data["choice"], "ranks": ranks, "winnerStrengths": data["winner_strengths"] or []}


def map_back(result: dict, swapped: bool) -> dict:
    if not swapped:
        return result
    flip = {"A": "B", "B": "A", "TIE": "TIE"}
    return {**result, "choice": flip[result["choice"]],
            "ranks": {"A": result["ranks"]["B"], "B": result["ranks"]["A"]}}


def ensemble(vlm, a: str, b: str, swaps) -> dict:
    """compareWithEnsemble with the given draws of Math.random() < 0.5, one per vote."""
    votes, totals = {"A": 0, "B": 0}, {"A": 0.0, "B": 0.0}
    for swapped in swaps:
        first, second = (b, a) if swapped else (a, b)
        result = map_back(client_reads(post(vlm, "/compare", {"image_a": first, "image_b": second,
                                                              "prompt": PROMPT})), swapped)
        if result["choice"] in votes:
            votes[result["choice"]] += 1
        for side in ("A", "B"):
            totals[side] += result["ranks"][side]["combined"] / len(swaps)
    winner = "A" if totals["A"] < totals["B"] else "B" if totals["B"] < totals["A"] else "TIE"
    return {"winner": winner, "votes": votes}


def test_the_clients_session_replayed(vlm, candidates):
    """healthCheck, loadModel, rankImages over three candidates with 3-vote ensembles, unloadModel."""
    health = requests.get(vlm.url + "/health", timeout=30).json()
    assert health["status"] == "healthy" and isinstance(health["model_loaded"], bool) and health["model_repo"]
    assert post(vlm, "/load", {})["status"] == "loaded"

    # rankImages(all-pairs): (pale, red) and (pale, blue) are judged; (red, blue) is inferred (blue beat pale,
    # who beat red). The swap draws are a recorded run's.
    pale, red, blue = (c["localPath"] for c in candidates)
    draws = iter([[False, True, False], [True, True, False]])
    first = ensemble(vlm, pale, red, next(draws))
    second = ensemble(vlm, pale, blue, next(draws))
    assert first == {"winner": "A", "votes": {"A": 3, "B": 0}}           # pale beats red in every vote
    assert second == {"winner": "B", "votes": {"A": 0, "B": 3}}          # and blue beats pale
    assert len(vlm.fake.vision_requests) == 12                          # 6 votes, each asked in both orders

    assert post(vlm, "/unload", {})["status"] == "unloaded"
    assert vlm.fake.unloads == ["qwen2.5vl:7b"]


def test_a_swap_of_the_pair_never_changes_the_mapped_vote(vlm, candidates):
    """The client's random swap is a coin per vote; with both orders asked here, either draw gives the same vote,
    so its 3-vote ensemble says what one vote says (VLM_ENSEMBLE_SIZE=1 is enough with this service)."""
    pale, red, _ = (c["localPath"] for c in candidates)
    plain = map_back(client_reads(post(vlm, "/compare", {"image_a": red, "image_b": pale, "prompt": PROMPT})),
                     False)
    swapped = map_back(client_reads(post(vlm, "/compare", {"image_a": pale, "image_b": red, "prompt": PROMPT})),
                       True)
    assert (plain["choice"], plain["ranks"]) == (swapped["choice"], swapped["ranks"]) and plain["choice"] == "B"
    assert plain["winnerStrengths"] and swapped["winnerStrengths"]


def test_a_position_biased_model_leaves_the_clients_ensemble_at_tie(vlm, candidates):
    """The seed's service gives each vote to whichever image the coin put first; here every vote is TIE."""
    vlm.fake.judge_mode = "position"
    pale, red, _ = (c["localPath"] for c in candidates)
    for draws in ([False, False, False], [True, False, True]):
        assert ensemble(vlm, pale, red, draws) == {"winner": "TIE", "votes": {"A": 0, "B": 0}}


def test_separate_evaluations_replayed(vlm, candidates):
    """compareWithEnsembleSeparate, 2 votes: alignment then aesthetics per vote (aesthetics with prompt '')."""
    pale, _, blue = (c["localPath"] for c in candidates)
    alignment, aesthetics = [], []
    for swapped in (False, True):
        first, second = (blue, pale) if swapped else (pale, blue)
        alignment.append(map_back(client_reads(post(vlm, "/compare-alignment", {
            "image_a": first, "image_b": second, "prompt": PROMPT})), swapped))
        aesthetics.append(map_back(client_reads(post(vlm, "/compare-aesthetics", {
            "image_a": first, "image_b": second, "prompt": ""})), swapped))
    # _aggregateSeparateResults: average each dimension, weight 0.7 / 0.3, lower wins.
    average = {side: ALIGNMENT_WEIGHT * sum(r["ranks"][side]["alignment"] for r in alignment) / 2 +
               (1 - ALIGNMENT_WEIGHT) * sum(r["ranks"][side]["aesthetics"] for r in aesthetics) / 2
               for side in ("A", "B")}
    assert average["B"] < average["A"] and {r["choice"] for r in alignment + aesthetics} == {"B"}
    bodies = vlm.fake.bodies()
    assert len(bodies) == 8 and sum("User request" in b["messages"][1]["content"] for b in bodies) == 4


def test_the_clients_failures_come_back_as_it_reports_them(vlm, candidates):
    """A path outside the allowed folders: the client's axios error carries 403 and the detail; a missing file is
    the seed's 400 ("not found", which the client turns into 'Image file not found: ...')."""
    pale = candidates[0]["localPath"]
    outside = requests.post(vlm.url + "/compare", json={"image_a": "/etc/passwd", "image_b": pale, "prompt": PROMPT},
                            timeout=30)
    assert outside.status_code == 403 and "--allow-dir" in outside.json()["detail"]
    missing = requests.post(vlm.url + "/compare", json={"image_a": pale + ".gone", "image_b": pale,
                                                        "prompt": PROMPT}, timeout=30)
    assert missing.status_code == 400 and "file not found" in missing.json()["detail"]
    assert requests.post(vlm.url + "/compare", json={"image_a": pale}, timeout=30).status_code == 422
