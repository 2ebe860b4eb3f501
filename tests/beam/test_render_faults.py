"""Rendering faults: a batch that runs out of GPU memory (split in halves, down to one; only a request that does not
fit alone fails, said once), images with NaN / infinite values or all black (the candidate fails with the reason,
is never scored or chosen), and a generator raising in the middle of a batch (what it rendered is kept)."""
import json

import pytest
import torch

from pipeline.beam.config import BeamConfig
from pipeline.beam.render import RoundRenderer, image_fault
from pipeline.beam.search import BeamSearch, SearchCallbacks
from pipeline.beam.selection import derive_seed
from pipeline.beam.types import Candidate
from pipeline.generation.diffusers_flux import DiffusersFluxGenerator
from tests.beam.test_beam_collaborators import FastOps, HashGenerator, StatsScorer
from tests.fixtures.tiny_flux import TINY_SIZE, TINY_STEPS, tiny_request as req


class SmallCard:
    """The real tiny FluxPipeline behind a card with room for `capacity` images per call: a bigger call raises
    the error CUDA raises, before any work (as an allocation at the first step does). A prompt containing "huge"
    never fits. Everything else is the real pipeline."""

    def __init__(self, pipe, capacity: int):
        object.__setattr__(self, "pipe", pipe)
        object.__setattr__(self, "capacity", capacity)
        object.__setattr__(self, "calls", [])

    def __call__(self, **kwargs):
        prompts = kwargs["prompt"]
        self.calls.append(len(prompts))
        if len(prompts) > self.capacity or any("huge" in p for p in prompts):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.10 GiB total "
                                         "capacity; 70.02 GiB already allocated)")
        return self.pipe(**kwargs)

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __setattr__(self, name, value):          # the generator swaps schedulers on the pipeline
        setattr(self.pipe, name, value)


@pytest.fixture
def small_card(tiny_flux_dir):
    def make(capacity: int) -> DiffusersFluxGenerator:
        generator = DiffusersFluxGenerator(str(tiny_flux_dir), device="cpu", max_batch=4)
        generator.pipe = SmallCard(generator.pipe, capacity)
        return generator
    return make


def test_an_out_of_memory_batch_is_split_until_it_fits_and_the_smaller_size_is_kept(small_card, tiny_generator):
    generator = small_card(capacity=1)
    requests = [req(f"a red cat, take {i}", seed=i) for i in range(4)]
    results = generator.generate(requests)
    assert generator.pipe.calls == [4, 2, 1, 1, 2, 1, 1]          # 4 -> 2 + 2 -> 1 + 1 + 1 + 1
    assert [r.metadata["batch_size"] for r in results] == [1, 1, 1, 1] and generator.max_batch == 1
    (line,) = generator.warnings                                   # said once, not at every split
    assert line.startswith(f"out of GPU memory rendering 4 images at {TINY_SIZE}x{TINY_SIZE}: rendering at most 2")
    for result, alone in zip(results, tiny_generator.generate(requests)):   # the same images as a roomy card
        torch.testing.assert_close(result.image, alone.image, atol=1e-4, rtol=0)
    generator.pipe.calls.clear()
    generator.generate(requests[:2])
    assert generator.pipe.calls == [1, 1]                          # later calls start at the size that fits
    assert generator.describe()["max_batch"] == 1


def test_only_the_request_that_does_not_fit_alone_fails(small_card, tmp_path):
    generator = small_card(capacity=4)
    candidates = [Candidate(id=f"i0c{i}", iteration=0, index=i, parent=None, dimension=None, what="w", how="h",
                            prompt=prompt, negative=None, seed=i)
                  for i, prompt in enumerate(["a red cat", "a huge whale", "a blue dog", "green hills"])]
    config = BeamConfig(width=TINY_SIZE, height=TINY_SIZE, steps=TINY_STEPS)
    renderer = RoundRenderer(generator, StatsScorer(), config, SearchCallbacks(), lambda: None, lambda: False, "x")
    images = renderer.generate(candidates)
    assert sorted(images) == ["i0c0", "i0c2", "i0c3"]
    failed = candidates[1]
    assert failed.status == "failed" and failed.failed_stage == "generate"
    assert failed.error.startswith("OutOfGPUMemory: out of GPU memory rendering 1 image(s)")
    assert renderer.new_warnings() == [generator.warnings[0]] and renderer.new_warnings() == []


class BrokenImages(HashGenerator):
    """The hash generator, except that chosen seeds come back as NaN, infinite or all-black images (what a VAE
    that overflowed gives in float, and once saved as 8-bit). Broken images are made bright red and green so that
    the scorer would rank them first if it ever saw them."""

    def __init__(self, broken: dict):
        super().__init__()
        self.broken = broken                  # seed -> "nan" | "inf" | "black"

    def render(self, prompt, seed, width, height):
        kind = self.broken.get(seed)
        if kind is None:
            return super().render(prompt, seed, width, height)
        image = torch.ones(height, width, 3)
        if kind == "nan":
            image[: height // 2] = float("nan")
        elif kind == "inf":
            image[0, 0, 0] = float("inf")
        else:
            image.zero_()
        return image


def test_broken_images_fail_their_candidates_and_are_never_scored_or_chosen(tmp_path):
    seeds = {derive_seed(3, "image", 0, i): kind for i, kind in enumerate(["nan", "inf", "black"])}
    scorer = StatsScorer()
    seen_by_scorer = []
    original = scorer.score
    scorer.score = lambda images, text, captions=False: (seen_by_scorer.extend(images), original(images, text))[1]
    result = BeamSearch(FastOps(), BrokenImages(seeds), scorer,
                        BeamConfig(width=32, height=32, seed=3, beam_width=6, keep_top=2, iterations=2)).run(
        "a lighthouse", tmp_path, "broken")
    report = json.loads((result.run_dir / "report.json").read_text())
    failed = {c["id"]: c for c in report["candidates"] if c["status"] == "failed"}
    assert set(failed) == {"i0c0", "i0c1", "i0c2"}
    assert "1536 NaN values of 3072" in failed["i0c0"]["error"]
    assert "1 infinite values" in failed["i0c1"]["error"]
    assert "all black (every pixel 0)" in failed["i0c2"]["error"]
    for entry in failed.values():
        assert entry["failed_stage"] == "generate" and entry["scores"] is None and entry["image"] is None
        assert not (result.run_dir / f"{entry['id']}.png").exists()
        assert entry["id"] not in report["lineage"] + report["finalists"]
    assert all(torch.isfinite(image).all() and image.any() for image in seen_by_scorer)
    assert report["iterations"][0]["failed"] == ["i0c0", "i0c1", "i0c2"]
    assert report["best"] not in failed


def test_a_nan_vae_is_named_in_the_failure(tiny_flux_dir):
    generator = DiffusersFluxGenerator(str(tiny_flux_dir), device="cpu")
    with torch.no_grad():
        generator.pipe.vae.decoder.conv_out.bias.fill_(float("nan"))   # a VAE whose output is NaN
    image = generator.generate([req()])[0].image
    assert image_fault(image).startswith(f"the image has {image.numel()} NaN values of {image.numel()}")


def test_a_generator_raising_mid_batch_keeps_what_it_rendered(small_card):
    generator = small_card(capacity=4)
    calls = generator.pipe.calls
    original = generator.pipe.pipe

    class FailsOnItsSecondCall:
        def __call__(self, **kwargs):
            if len(calls) == 2:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return original(**kwargs)

        def __getattr__(self, name):
            return getattr(original, name)

    object.__setattr__(generator.pipe, "pipe", FailsOnItsSecondCall())
    candidates = [Candidate(id=f"i0c{i}", iteration=0, index=i, parent=None, dimension=None, what="w", how="h",
                            prompt=f"a cat, take {i}", negative=None, seed=i, ) for i in range(6)]
    generator.max_batch = 3
    config = BeamConfig(width=TINY_SIZE, height=TINY_SIZE, steps=TINY_STEPS)
    renderer = RoundRenderer(generator, StatsScorer(), config, SearchCallbacks(), lambda: None, lambda: False, "x")
    images = renderer.generate(candidates)
    assert sorted(images) == [c.id for c in candidates]             # the second batch's three, rendered alone
    assert calls == [3, 3, 1, 1, 1]                                 # the first batch was not rendered again
    assert all(c.status != "failed" for c in candidates)
