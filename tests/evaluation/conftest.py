"""Evaluations run in-process on the real collaborators (PromptEngine over HTTP to the fake Ollama, the tiny
diffusers Flux, the tiny CLIP + aesthetic scorer) with judges that say what a test needs."""
from __future__ import annotations

import pytest

from pipeline.beam.search import BeamConfig, BeamSearch, SearchCallbacks
from pipeline.evaluation.judges import Verdict
from pipeline.evaluation.prompt_sets import PromptItem
from pipeline.evaluation.record import EvalRecord
from pipeline.llm.client import OllamaClient
from pipeline.llm.operations import PromptEngine

MODEL = "qwen2.5:7b-instruct"
PROMPTS = [PromptItem("three red apples on a plate", "counting"), PromptItem("a blue door in a pink wall", "colour"),
           PromptItem("a cat under a bench", "spatial"), PromptItem('a sign that reads "OPEN"', "text"),
           PromptItem("a pangolin on a log", "rare")]


class ScriptedJudge:
    """A deterministic judge: the verdict for each prompt comes from a table (default: `default`), with a score
    per arm so mean gains are exact. It never looks at the pixels, which is the point: the arithmetic is tested."""

    description = "scripted for the test"

    def __init__(self, name: str, table: dict, default: str = "beam"):
        self.name, self.table, self.default, self.seen = name, table, default, []

    def verdict(self, prompt, image_beam, image_control):
        self.seen.append((prompt, tuple(image_beam.shape), tuple(image_control.shape)))
        winner = self.table.get(prompt, self.default)
        beam, control = {"beam": (2.0, 1.0), "control": (1.0, 3.0), "tie": (1.0, 1.0)}[winner]
        return Verdict(winner, beam, control)

    def describe(self):
        return {"name": self.name, "kind": "scripted", "description": self.description}


def eval_config(**changes) -> BeamConfig:
    return BeamConfig(**({"beam_width": 2, "keep_top": 1, "iterations": 2, "seed": 5, "width": 64, "height": 64,
                          "steps": 2, "control_arm": True} | changes))


@pytest.fixture
def make_search(fake_ollama, tiny_generator, tiny_scorer):
    """make_search(config, should_stop) -> a factory of BeamSearch objects, counting how many it made."""
    def factory(config=None, should_stop=None):
        engine = PromptEngine(OllamaClient(fake_ollama.url, MODEL, retries=0))
        callbacks = SearchCallbacks(should_stop=should_stop)

        def make():
            make.count += 1
            return BeamSearch(engine, tiny_generator, tiny_scorer, config or eval_config(), callbacks)

        make.count = 0
        return make
    return factory


def new_record(root, judges, items=PROMPTS, config=None) -> EvalRecord:
    settings = {"search": (config or eval_config()).to_dict(), "scorers": ["clip"],
                "prompts": {"source": "test", "count": len(items)},
                "bootstrap": {"resamples": 2000, "seed": 0, "confidence": 0.95}}
    return EvalRecord.create(root, settings, [j.describe() for j in judges], items, eval_id="eval-test")
