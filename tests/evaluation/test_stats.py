"""The arithmetic of eval: outcomes, win rate (a tie is half), the seeded percentile bootstrap over prompts, the
majority verdict of several judges and eval.json's summary."""
from __future__ import annotations

import random

import pytest

from pipeline.evaluation import stats


def reference_bootstrap(outcomes, resamples, seed, confidence=0.95):
    """The documented scheme, written out independently: draw n indices with random.Random(seed).randrange(n),
    `resamples` times; nearest-rank percentiles of the sorted means."""
    rng, n = random.Random(seed), len(outcomes)
    means = []
    for _ in range(resamples):
        total = 0.0
        for _ in range(n):
            total += outcomes[rng.randrange(n)]
        means.append(total / n)
    means.sort()
    k_low = int(resamples * (1 - confidence) / 2)
    k_high = resamples - k_low - 1
    return [means[k_low], means[k_high]]


def test_a_tie_counts_half():
    assert stats.win_rate(["beam", "beam", "control", "tie"]) == pytest.approx(0.625)
    assert stats.win_rate(["tie"] * 5) == 0.5
    assert stats.win_rate([]) is None


def test_the_interval_is_the_documented_bootstrap_and_reproducible():
    verdicts = ["beam"] * 13 + ["control"] * 5 + ["tie"] * 2
    outcomes = [stats.OUTCOME[v] for v in verdicts]
    interval = stats.bootstrap_interval(verdicts, resamples=2000, seed=0)
    assert interval == reference_bootstrap(outcomes, 2000, 0)
    assert stats.bootstrap_interval(verdicts, resamples=2000, seed=0) == interval      # seeded: the same again
    assert stats.bootstrap_interval(verdicts, resamples=300, seed=7) == reference_bootstrap(outcomes, 300, 7)
    low, high = interval
    assert 0.0 <= low < stats.win_rate(verdicts) < high <= 1.0


def test_the_interval_narrows_with_more_prompts_and_is_degenerate_when_all_agree():
    few = stats.bootstrap_interval(["beam", "control"] * 5)
    many = stats.bootstrap_interval(["beam", "control"] * 100)
    assert many[1] - many[0] < few[1] - few[0]
    assert stats.bootstrap_interval(["beam"] * 7) == [1.0, 1.0]
    assert stats.bootstrap_interval([]) is None


@pytest.mark.parametrize("verdicts, overall", [
    ({"a": "beam"}, "beam"), ({"a": "beam", "b": "control"}, "tie"), ({"a": "beam", "b": "tie"}, "beam"),
    ({"a": "control", "b": "control", "c": "beam"}, "control"), ({"a": "tie", "b": "tie"}, "tie")])
def test_the_majority_of_the_judges(verdicts, overall):
    assert stats.overall_verdict(verdicts) == overall


def test_summary_of_entries():
    entries = [
        {"verdict": "beam", "verdicts": {"h": "beam", "p": "beam"}, "gains": {"h": 0.02, "p": 1.0},
         "category": "counting", "images": 10, "seconds": 1.5},
        {"verdict": "tie", "verdicts": {"h": "beam", "p": "control"}, "gains": {"h": 0.01, "p": -0.5},
         "category": "counting", "images": 10, "seconds": 2.0},
        {"verdict": "control", "verdicts": {"h": "control", "p": "control"}, "gains": {"h": -0.03, "p": -1.5},
         "category": "text", "images": 12, "seconds": 0.5},
    ]
    summary = stats.summarise(entries, ["h", "p"], resamples=500, seed=4)
    assert (summary["n"], summary["beam_wins"], summary["control_wins"], summary["ties"]) == (3, 1, 1, 1)
    assert summary["win_rate"] == pytest.approx(0.5)
    assert summary["ci95"] == reference_bootstrap([1.0, 0.5, 0.0], 500, 4)
    assert summary["mean_gain"] == pytest.approx({"h": 0.0, "p": -1 / 3})
    assert (summary["images"], summary["seconds"]) == (32, 4.0)
    assert summary["per_judge"]["h"]["win_rate"] == pytest.approx(2 / 3)
    assert summary["per_judge"]["p"]["beam_wins"] == 1 and summary["per_judge"]["p"]["control_wins"] == 2
    assert summary["by_category"]["counting"]["win_rate"] == pytest.approx(0.75)
    assert summary["by_category"]["text"]["n"] == 1
    empty = stats.summarise([], ["h"])
    assert empty["n"] == 0 and empty["win_rate"] is None and empty["ci95"] is None and empty["mean_gain"] == {"h": None}
