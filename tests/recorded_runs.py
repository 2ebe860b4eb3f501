"""Real run directories for the report page tests, recorded by BeamSearch with the fast deterministic
collaborators (tests/test_beam_collaborators.py): real PNGs, real report.json, real report.html."""
from __future__ import annotations

from pipeline.beam import BeamConfig, BeamSearch, SearchCallbacks
from pipeline.beam_selection import derive_seed

from tests.test_beam_collaborators import FastOps, HashGenerator, StatsScorer

PROMPT = "a lighthouse in a storm"


def config(**changes) -> BeamConfig:
    return BeamConfig(**({"width": 48, "height": 48, "seed": 3, "beam_width": 4, "keep_top": 2,
                          "iterations": 3} | changes))


def full_run(root, run_id="full", prompt=PROMPT, **changes):
    """Three rounds with the control arm, and round 0's third candidate failing in the generator."""
    doomed = derive_seed(3, "image", 0, 2)
    generator = HashGenerator(fail_when=lambda text, seed: seed == doomed)
    return BeamSearch(FastOps(), generator, StatsScorer(), config(control_arm=True, **changes)).run(
        prompt, root, run_id)


def one_round_run(root, run_id="single", prompt=PROMPT):
    return BeamSearch(FastOps(), HashGenerator(), StatsScorer(), config(iterations=1)).run(prompt, root, run_id)


class _StopAtCall:
    def __init__(self, generator, call):
        self.generator, self.call = generator, call

    def __call__(self):
        return len(self.generator.calls) >= self.call


def interrupted_run(root, run_id="resumed"):
    """Interrupted while rendering round 2 (its plan is pending in the record)."""
    generator = HashGenerator()
    return BeamSearch(FastOps(), generator, StatsScorer(), config(),
                      SearchCallbacks(should_stop=_StopAtCall(generator, 3))).run(PROMPT, root, run_id)


def resumed_run(root, run_id="resumed"):
    """Interrupted in round 2, then resumed and extended to 4 rounds."""
    first = interrupted_run(root, run_id)
    return BeamSearch(FastOps(), HashGenerator(), StatsScorer(), config()).resume(first.run_dir, {"iterations": 4})
