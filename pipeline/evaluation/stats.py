"""The arithmetic of an evaluation: each prompt's outcome, the win rate, and its bootstrap interval.

    outcome of a prompt   1 when the beam's winner is judged better, 0 when the control's is, 0.5 for a tie
    win rate              the mean outcome over the prompts (a tie counts as half a win for each arm)
    ci95                  a percentile bootstrap over prompts: `resamples` times, draw n prompts with replacement
                          (random.Random(seed), so the same eval gives the same interval) and take the mean
                          outcome; the interval runs from the 2.5th to the 97.5th percentile of those means

With several judges a prompt's verdict is their majority (beam votes against control votes; equal is a tie);
each judge's own tally is in `per_judge`. The interval describes the uncertainty from the choice of prompts
only: it says how much the win rate could move on another set of prompts like these, not how right the judges
are.
"""
from __future__ import annotations

import math
import random
from statistics import fmean
from typing import Iterable, Mapping, Optional, Sequence

OUTCOME = {"beam": 1.0, "tie": 0.5, "control": 0.0}
RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


def overall_verdict(verdicts: Mapping[str, str]) -> str:
    """The majority of the judges' verdicts; as many beam as control votes (ties abstain) is a tie."""
    beam = sum(1 for v in verdicts.values() if v == "beam")
    control = sum(1 for v in verdicts.values() if v == "control")
    return "beam" if beam > control else "control" if control > beam else "tie"


def win_rate(verdicts: Sequence[str]) -> Optional[float]:
    return fmean(OUTCOME[v] for v in verdicts) if verdicts else None


def bootstrap_interval(verdicts: Sequence[str], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       confidence: float = CONFIDENCE) -> Optional[list]:
    """[low, high] of the win rate (see the module docstring); None without prompts."""
    outcomes = [OUTCOME[v] for v in verdicts]
    n = len(outcomes)
    if not n:
        return None
    rng = random.Random(seed)
    means = sorted(sum(outcomes[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1.0 - confidence) / 2.0
    low = means[int(math.floor(resamples * tail))]
    high = means[int(math.ceil(resamples * (1.0 - tail))) - 1]
    return [low, high]


def tally(verdicts: Sequence[str], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    return {"n": len(verdicts), "beam_wins": verdicts.count("beam"), "control_wins": verdicts.count("control"),
            "ties": verdicts.count("tie"), "win_rate": win_rate(verdicts),
            "ci95": bootstrap_interval(verdicts, resamples, seed)}


def summarise(entries: Sequence[Mapping], judges: Iterable[str], resamples: int = RESAMPLES,
              seed: int = BOOTSTRAP_SEED) -> dict:
    """eval.json's `summary` from the judged prompts (entries with verdicts, judge gains, images, seconds)."""
    judges = list(judges)
    overall = [entry["verdict"] for entry in entries]
    summary = tally(overall, resamples, seed)
    summary["mean_gain"] = {judge: (fmean(entry["gains"][judge] for entry in entries) if entries else None)
                            for judge in judges}
    summary["images"] = sum(int(entry.get("images") or 0) for entry in entries)
    summary["seconds"] = round(sum(float(entry.get("seconds") or 0.0) for entry in entries), 3)
    summary["per_judge"] = {judge: tally([entry["verdicts"][judge] for entry in entries], resamples, seed)
                            for judge in judges}
    categories = sorted({entry.get("category") or "" for entry in entries})
    summary["by_category"] = {category or "(none)": tally([entry["verdict"] for entry in entries
                                                           if (entry.get("category") or "") == category],
                                                          resamples, seed)
                              for category in categories}
    return summary
