"""How the VLM service's answer follows from a pair asked in both orders (the cases the fake model does not make
on its own: one order undecided, one answer unusable), and what /bias_stats counts."""
from pipeline.llm.vision import judgement
from pipeline.services.vlm_answers import BiasStats, compare_response


def answer(winner, strengths=(), weaknesses=(), suggestion="", **extra):
    return {"winner": winner, "reason": f"{winner} it is", "winner_strengths": list(strengths),
            "loser_weaknesses": list(weaknesses), "improvement_suggestion": suggestion, **extra}


def respond(a_first, b_first, aspect="overall"):
    return compare_response(judgement(("A", "B"), a_first, b_first, "m", 1.5), aspect)


def test_one_undecided_order_makes_a_tie_at_half_confidence():
    body = respond(answer("first", ["sharp"]), answer("tie"))
    assert (body["choice"], body["confidence"]) == ("TIE", 0.5)
    assert body["ranks"] == {"A": {"alignment": 1, "aesthetics": 1}, "B": {"alignment": 1, "aesthetics": 1}}
    assert body["winner_strengths"] == [] and body["explanation"] == (
        "With A shown first, A is better: first it is. With B shown first, a tie: tie it is. "
        "The two orders disagree, so the pair is a tie.")
    assert (body["model"], body["seconds"]) == ("m", 1.5)


def test_a_decided_pair_merges_both_answers_points_once():
    body = respond(answer("first", ["sharp", "red door"], ["blurry"], ""),
                   answer("second", ["red door", "light"], ["blurry", "no door"], "say 'red door'"), "alignment")
    assert (body["choice"], body["confidence"], body["ranks"]) == ("A", 1.0, {"A": {"alignment": 1},
                                                                            "B": {"alignment": 2}})
    assert body["winner_strengths"] == ["sharp", "red door", "light"]
    assert body["loser_weaknesses"] == ["blurry", "no door"] and body["improvement_suggestion"] == "say 'red door'"
    assert [(a["first"], a["second"], a["winner"]) for a in body["answers"]] == [("A", "B", "first"),
                                                                               ("B", "A", "second")]


def test_bias_stats_count_positions_disagreements_and_unusable_answers():
    stats = BiasStats()
    stats.record(respond(answer("first"), answer("first")))                 # position-following: a tie
    stats.record(respond(answer("second"), answer("first")))                # B both times
    stats.record(respond(answer("tie", unusable=True), answer("first")))    # one unusable, one decided
    report = stats.describe()
    assert report["total_comparisons"] == 3 and report["answers"] == 6
    assert report["choice_distribution"] == {"A": 0, "B": 1, "TIE": 2}
    assert report["position"] == {"first": 4, "second": 1, "tie": 1}
    assert report["order_disagreements"] == 1 and report["fallback_rate"] == 1 / 6
    assert report["json_parse_success_rate"] == 5 / 6 and report["rank_mismatch_count"] == 0
    assert BiasStats().describe()["json_parse_success_rate"] == 0
