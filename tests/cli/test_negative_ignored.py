"""A negative prompt Flux did not use is marked so in the record (candidate field + PNG chunk), and `search
--true-cfg SCALE` makes diffusers Flux use it (true CFG). Real CLI subprocesses on the tiny Flux and CLIP."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.cli.models import recorded_models
from pipeline.record.pnginfo import read_png_text

from tests.cli.test_cli_search import cli, only_run_dir, read_report


@pytest.fixture
def models(tiny_flux_dir, tiny_clip_dir, tiny_aesthetic_path) -> list:
    return ["--flux", tiny_flux_dir, "--clip", f"local-dir:{tiny_clip_dir}", "--aesthetic", tiny_aesthetic_path,
            "--width", "64", "--height", "64", "--steps", "2", "--device", "cpu"]


def search(fake_ollama, models, out, *flags):
    result = cli("search", "a lighthouse at dusk", "--ollama-url", fake_ollama.url, *models, "--beam-width", 2,
                 "--keep-top", 1, "--iterations", 1, "--seed", 4, "--negative", "--out", out, *flags)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    return result, run_dir, read_report(run_dir)


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_negative_without_true_cfg_is_marked_ignored_and_true_cfg_uses_it(fake_ollama, models, tmp_path):
    result, run_dir, report = search(fake_ollama, models, tmp_path / "plain")
    assert "note: Flux ignores negative prompts unless --true-cfg is above 1" in result.stderr
    for candidate in report["candidates"]:
        assert candidate["negative"] and candidate["negative_ignored"] is True
        text = read_png_text(run_dir / candidate["image"])
        assert text["promptbeam:negative"] == candidate["negative"]
        assert text["promptbeam:negative_ignored"] == "true"
    assert report["config"]["generator"]["true_cfg_scale"] == 1.0

    result, cfg_dir, cfg_report = search(fake_ollama, models, tmp_path / "cfg", "--true-cfg", 2.5)
    assert "note: Flux ignores" not in result.stderr
    assert cfg_report["config"]["generator"]["true_cfg_scale"] == 2.5
    assert cfg_report["config"]["cli"]["true_cfg"] == 2.5                  # what --resume reloads
    for candidate, plain in zip(cfg_report["candidates"], report["candidates"]):
        assert (candidate["prompt"], candidate["negative"], candidate["seed"]) == \
            (plain["prompt"], plain["negative"], plain["seed"])
        assert candidate["negative_ignored"] is False
        assert "promptbeam:negative_ignored" not in read_png_text(cfg_dir / candidate["image"])
        # Same prompt, negative and seed: only the negative's second pass can change the image.
        assert np.abs(pixels(cfg_dir / candidate["image"]) - pixels(run_dir / plain["image"])).max() > 0


@pytest.mark.parametrize("flags, message", [
    (["--negative", "--true-cfg", "0.5"], "error: --true-cfg: must be >= 1 (1 = negative prompts off), got 0.5"),
    (["--negative", "--true-cfg", "nan"], "error: --true-cfg: must be a finite number >= 1, got nan"),
    (["--true-cfg", "3"], "error: --true-cfg: weights the negative prompt against the prompt, so it needs "
                          "--negative"),
    (["--true-cfg", "lots"], "argument --true-cfg: invalid float value: 'lots'"),
])
def test_bad_true_cfg_exits_2_naming_the_flag(flags, message, fake_ollama, models, tmp_path):
    out = tmp_path / "runs"
    result = cli("search", "a lighthouse", "--ollama-url", fake_ollama.url, *models, "--out", out, *flags)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and fake_ollama.requests == []         # refused before any work


def test_resume_reloads_the_recorded_true_cfg():
    assert recorded_models({"config": {"cli": {"flux": "f", "true_cfg": 2.5}}})["true_cfg"] == 2.5
    generator = {"backend": "diffusers-flux", "model": "m", "loras": [], "true_cfg_scale": 3.0}
    assert recorded_models({"config": {"generator": generator}})["true_cfg"] == 3.0
