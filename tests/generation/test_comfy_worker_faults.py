"""A ComfyUI worker that answers with an image of the wrong size (a render workflow that scales after VAEDecode),
against the loopback worker: the request fails naming the sizes and the likely cause, never scored as if it fit;
in a search the candidate fails with that reason and the record keeps it. (The same against a real ComfyUI:
tests/integration/test_search_faults_real.py.)"""
from pathlib import Path

import pytest

from pipeline.beam import BeamConfig, BeamSearch
from pipeline.errors import GenerationFailed
from pipeline.generation import GenerationRequest
from pipeline.generation.comfy_workers import ComfyWorkerPool
from pipeline.record import RunRecord
from tests.beam.test_beam_collaborators import FastOps, StatsScorer

SHIPPED = Path(__file__).resolve().parents[2] / "workflows" / "api" / "render_flux_worker.json"


def test_an_image_of_the_wrong_size_fails_the_request_naming_both_sizes(workers):
    (wrong,) = workers(1, mode="wrong_size", render_s=0.01)
    pool = ComfyWorkerPool([wrong.url], str(SHIPPED), poll_s=0.02)
    with pytest.raises(GenerationFailed) as info:
        pool.generate([GenerationRequest("a fox", seed=1, width=64, height=48, steps=2)])
    assert str(info.value) == (f"ComfyUI at {wrong.url} returned a 32x24 image for a 64x48 request: does the render "
                               f"workflow resize or crop after VAEDecode?")


def test_in_a_search_the_wrong_size_fails_its_candidates_with_the_reason_on_record(workers, tmp_path):
    (wrong,) = workers(1, mode="wrong_size", render_s=0.01)
    pool = ComfyWorkerPool([wrong.url], str(SHIPPED), poll_s=0.02)
    config = BeamConfig(beam_width=2, keep_top=1, iterations=2, width=64, height=64, steps=2, seed=1)
    with pytest.raises(GenerationFailed, match="no candidate could be rendered and scored .first error: "
                                               "GenerationFailed: ComfyUI at .* returned a 32x32 image for a 64x64 "
                                               "request: does the render workflow resize or crop after VAEDecode"):
        BeamSearch(FastOps(), pool, StatsScorer(), config).run("a fox", tmp_path, "wrong")
    report = RunRecord.open(tmp_path / "wrong").report
    assert report["status"] == "failed" and report["stop_reason"] == "failures"
    assert [(c["status"], c["failed_stage"], c["image"]) for c in report["candidates"]] == \
        [("failed", "generate", None)] * 2
    assert all("returned a 32x32 image for a 64x64 request" in c["error"] for c in report["candidates"])
