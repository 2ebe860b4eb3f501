"""End to end with the real collaborators: PromptEngine over HTTP to the fake Ollama server, the tiny diffusers Flux
pipeline (DiffusersFluxGenerator) and the tiny open_clip + LAION-head Scorer."""
import json

import pytest
import torch

from pipeline.beam.search import BeamConfig, BeamSearch, SearchCallbacks
from pipeline.beam.selection import derive_seed, lineage, rank
from pipeline.beam.types import Candidate
from pipeline.generation.protocol import GenerationRequest
from pipeline.llm.client import OllamaClient
from pipeline.record.pnginfo import parse_a1111_parameters, read_png_text
from pipeline.llm.operations import PromptEngine
from pipeline.record.report import RunRecord

PROMPT = "a red fox in the snow"
MODEL = "qwen2.5:7b-instruct"


@pytest.fixture
def engine(fake_ollama):
    return PromptEngine(OllamaClient(fake_ollama.url, MODEL, retries=0))


def config(**changes):
    return BeamConfig(**({"beam_width": 4, "keep_top": 2, "iterations": 3, "seed": 11, "width": 64, "height": 64,
                          "steps": 2} | changes))


def strip(report):
    return {k: v for k, v in report.items() if k not in ("run_id", "timings")}


def test_search_end_to_end_is_exact_and_reproducible(tmp_path, engine, fake_ollama, tiny_generator, tiny_scorer):
    first = BeamSearch(engine, tiny_generator, tiny_scorer, config()).run(PROMPT, tmp_path / "runs")
    chats = len(fake_ollama.bodies("/api/chat"))
    second = BeamSearch(engine, tiny_generator, tiny_scorer, config()).run(PROMPT, tmp_path / "runs")
    report = first.report
    assert strip(report) == strip(second.report)
    assert json.loads((first.run_dir / "report.json").read_text()) == report
    # round 0: the four (WHAT, HOW, combined prompt) entries, two per request; then one request per parent
    # (critique and children together). Before the per-round operations this search made 22 requests.
    assert report["llm"]["calls"] == chats == 2 + 2 * 2

    # the record describes the real components
    cfg = report["config"]
    assert cfg["generator"]["backend"] == "diffusers-flux" and cfg["scorer"]["clip_model"].startswith("local-dir:")
    assert cfg["llm"]["model"] == MODEL and cfg["llm"]["base_url"] == fake_ollama.url
    assert report["stop_reason"] == "max_iterations" and report["status"] == "finished"

    # structure: round 0 pairs, alternate refinement, elitism, seed inheritance, lineage
    cands = {c["id"]: Candidate.from_dict(c) for c in report["candidates"]}
    round0 = [c for c in cands.values() if c.iteration == 0]
    assert [c.seed for c in round0] == [derive_seed(11, "image", 0, i) for i in range(4)]
    assert len({(c.what, c.how) for c in round0}) == 4
    previous = []
    for entry in report["iterations"]:
        pool = [cands[i] for i in previous + entry["candidates"]]
        assert entry["survivors"] == [c.id for c in rank(pool)[:2]]
        for child in (cands[i] for i in entry["candidates"] if cands[i].parent):
            parent = cands[child.parent]
            assert child.parent in previous and child.seed == parent.seed
            assert child.dimension == ("what" if entry["iteration"] == 1 else "how")
            kept = "how" if child.dimension == "what" else "what"
            assert getattr(child, kept) == getattr(parent, kept) and child.critique["critique"]
        previous = entry["survivors"]
    assert report["best"] == report["iterations"][-1]["survivors"][0] == first.best.id
    assert report["lineage"] == lineage(cands, report["best"])
    assert report["finalists"] == previous and first.finalist_images.shape == (2, 64, 64, 3)

    # the record is enough to reproduce the winner: render its prompt and seed again, score it again
    best = first.best
    again = tiny_generator.generate([GenerationRequest(best.prompt, best.seed, 64, 64, steps=2)])[0].image
    assert torch.allclose(again, first.best_image, atol=1e-5)
    rescored = tiny_scorer.score([first.best_image], PROMPT)[0]
    assert rescored.total(0.7) == pytest.approx(best.total, abs=1e-4)
    on_disk = RunRecord.open(first.run_dir).load_image(best.image)
    assert torch.allclose(on_disk, first.best_image, atol=1 / 255 + 1e-6)
    params = parse_a1111_parameters(read_png_text(first.run_dir / best.image)["parameters"])
    assert params["prompt"] == best.prompt and params["Seed"] == str(best.seed) and params["Size"] == "64x64"
    assert params["Steps"] == "2" and params["Model"] == "flux"


def test_end_to_end_interrupt_then_resume(tmp_path, engine, fake_ollama, tiny_generator, tiny_scorer):
    finished = []

    def should_stop():
        return len(finished) >= 6          # mid round 1: round 0 and the first parent's two children
    result = BeamSearch(engine, tiny_generator, tiny_scorer, config(),
                        SearchCallbacks(on_candidate=lambda c, i: finished.append(c.id),
                                        should_stop=should_stop)).run(PROMPT, tmp_path / "a", "run")
    assert result.stop_reason == "interrupted"
    report = RunRecord.open(result.run_dir).report
    # round 1 streams parent by parent, so the stop lands inside it: its first parent's children are recorded
    assert report["status"] == "interrupted" and len(report["iterations"]) == 1 and len(report["candidates"]) == 6
    assert report["pending"]["iteration"] == 1

    resumed = BeamSearch(engine, tiny_generator, tiny_scorer, config()).resume(result.run_dir)
    straight = BeamSearch(engine, tiny_generator, tiny_scorer, config()).run(PROMPT, tmp_path / "b", "run")
    assert resumed.stop_reason == "max_iterations"
    drop = lambda r: {k: v for k, v in strip(r).items() if k != "llm"}
    assert drop(resumed.report) == drop(straight.report)
