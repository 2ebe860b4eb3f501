"""One rule per model kind: the resolve step each part exposes is what its loader, `search`'s flag checks and
`doctor` all answer with — the same verdict and the same words, for a good spec and for a bad one."""
from __future__ import annotations

import pytest

from pipeline.config import LoraSpec
from pipeline.errors import InvalidParameter, ModelNotFound
from pipeline.generation.sources import resolve_flux, resolve_loras
from pipeline.scoring.sources import resolve_aesthetic, resolve_clip
from tests.cli.test_cli_search import cli


def test_a_diffusers_folder_resolves_to_where_the_loader_reads(tiny_flux_dir):
    source = resolve_flux(str(tiny_flux_dir))
    assert (source.status, source.form) == ("ok", "folder")
    assert source.location == str(tiny_flux_dir.resolve())


def test_a_folder_without_model_index_fails_the_same_way_everywhere(tmp_path):
    broken = tmp_path / "not_flux"
    broken.mkdir()
    source = resolve_flux(str(broken))
    assert source.status == "fail" and source.invalid and "model_index.json" in source.detail

    from pipeline.generation.diffusers_flux import load_flux_pipeline
    with pytest.raises(ModelNotFound) as loader:
        load_flux_pipeline(str(broken), None, None)
    assert str(loader.value) == source.message()

    doctor = cli("doctor", "--flux", broken, "--ollama-url", "http://127.0.0.1:9")
    (flux_line,) = [line for line in doctor.stdout.splitlines() if "flux" in line and "FAIL" in line]
    assert source.detail in flux_line and source.fix in flux_line

    search = cli("search", "a fox", "--flux", broken)
    assert search.returncode == 2 and f"--flux: {source.message()}" in search.stderr


def test_a_missing_lora_is_refused_by_the_loader_and_the_check_alike(tiny_flux_dir, tmp_path):
    missing = [LoraSpec(path=str(tmp_path / "nope.safetensors"))]
    source = resolve_loras(missing, lora_dirs=[])
    assert source.status == "fail" and "nope.safetensors" in source.detail
    with pytest.raises(InvalidParameter, match="nope.safetensors"):
        source.raise_if_invalid("lora")

    from pipeline.generation.diffusers_flux import DiffusersFluxGenerator
    with pytest.raises(ModelNotFound) as loader:
        DiffusersFluxGenerator(str(tiny_flux_dir), loras=missing, lora_dirs=[], device="cpu")
    assert str(loader.value) == source.detail


def test_clip_ids_resolve_with_the_loaders_own_exceptions(tiny_clip_dir, tmp_path):
    good = resolve_clip(f"local-dir:{tiny_clip_dir}")
    assert (good.status, good.form) == ("ok", "local-dir")

    unknown = resolve_clip("ViT-Nope-99/openai")
    assert unknown.status == "fail" and "unknown open_clip architecture" in unknown.detail
    with pytest.raises(InvalidParameter, match="clip_model: unknown open_clip architecture"):
        unknown.require()                      # the loader raises the rule's own error, unchanged

    from pipeline.scoring import load_scorer
    with pytest.raises(ModelNotFound) as loader:
        load_scorer(f"local-dir:{tmp_path}", device="cpu")
    assert str(loader.value) == resolve_clip(f"local-dir:{tmp_path}").detail


def test_aesthetic_heads_resolve_without_downloading(tiny_aesthetic_path, tmp_path):
    found = resolve_aesthetic(tiny_aesthetic_path)
    assert (found.status, found.form, found.location) == ("ok", "file", tiny_aesthetic_path)

    laion = resolve_aesthetic("laion", [str(tmp_path)])
    assert laion.status == "warn" and laion.location == str(tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    assert not (tmp_path / "sac+logos+ava1-l14-linearMSE.pth").exists()

    missing = resolve_aesthetic(str(tmp_path / "other_head.pth"))
    assert missing.status == "fail" and missing.invalid
    with pytest.raises(ModelNotFound, match="aesthetic checkpoint not found"):
        missing.require()
