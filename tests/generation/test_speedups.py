"""--compile and --fp8 of the diffusers backend on the CPU: a real inductor compile of the tiny Flux's repeated
blocks (warm-up at batch 1 and 2, then no recompile at batch 3 or 4; the same images as eager), a compile that
fails falling back to eager with one warning, and --fp8 refused with the reason where it cannot run."""
import pytest
import torch

from pipeline.errors import InvalidParameter
from pipeline.generation import speedups
from pipeline.generation.diffusers_flux import DiffusersFluxGenerator
from tests.fixtures.tiny_flux import TINY_SIZE, tiny_request as req


def compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_compile_warms_up_at_two_batch_sizes_then_never_recompiles(tiny_flux_dir, tiny_generator, compile_cache):
    generator = DiffusersFluxGenerator(str(tiny_flux_dir), device="cpu", compile=True,
                                       compile_cache=str(compile_cache))
    assert generator.speed.status == "compiled" and generator.warm_up_needed
    done = generator.warm_up(req(steps=4))
    assert done["warning"] is None and done["seconds"] > 0
    assert generator.speed.warmed == [[TINY_SIZE, TINY_SIZE, 1], [TINY_SIZE, TINY_SIZE, 2]]
    assert any(compile_cache.rglob("*")), "inductor wrote nothing into the cache folder"
    info = generator.describe()["speed"]
    assert info["status"] == "compiled" and info["cache_dir"] == str(compile_cache) and "compile_s" not in info

    graphs = compiled_graphs()
    requests = [req(f"a red cat, take {i}", seed=10 + i) for i in range(4)]
    four = generator.generate(requests)
    three = generator.generate(requests[:3])
    generator.warm_up(req())                       # the same size again: nothing left to warm up
    assert compiled_graphs() == graphs, "a batch of 3 or 4, or a second warm-up, compiled again"
    assert len(generator.speed.warmed) == 2
    eager = tiny_generator.generate(requests)
    for compiled_image, three_image, eager_image in zip(four, three, eager):
        torch.testing.assert_close(compiled_image.image, eager_image.image, atol=2e-3, rtol=0)
        torch.testing.assert_close(three_image.image, compiled_image.image, atol=2e-3, rtol=0)


def test_a_generator_without_compile_needs_no_warm_up(tiny_generator):
    assert not tiny_generator.warm_up_needed
    assert tiny_generator.warm_up(req()) == {"seconds": 0.0, "warning": None}
    assert tiny_generator.describe()["speed"]["status"] == "eager"


def test_an_unusable_cache_folder_falls_back_to_eager_with_one_warning(tiny_flux_dir, tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    generator = DiffusersFluxGenerator(str(tiny_flux_dir), device="cpu", compile=True,
                                       compile_cache=str(blocker / "cache"))
    assert generator.speed.status == "failed" and not generator.warm_up_needed
    (line,) = [r.getMessage() for r in caplog.records if "--compile failed" in r.getMessage()]
    assert "rendering without compilation (eager)" in line and "\n" not in line
    assert generator.generate([req()])[0].image.shape == (TINY_SIZE, TINY_SIZE, 3)


def test_a_compile_error_at_warm_up_falls_back_to_eager(tiny_flux_dir, tmp_path, monkeypatch):
    import torch._inductor.config as inductor_config

    # No working C++ compiler: inductor's CPU code cannot be built (a fresh cache, so nothing is reused).
    monkeypatch.setattr(inductor_config.cpp, "cxx", (str(tmp_path / "no-such-g++"),))
    generator = DiffusersFluxGenerator(str(tiny_flux_dir), device="cpu", compile=True,
                                       compile_cache=str(tmp_path / "cache"))
    done = generator.warm_up(req())
    assert done["warning"] and done["warning"].startswith("--compile failed (")
    assert generator.speed.status == "failed" and generator.describe()["speed"]["error"] == done["warning"]
    image = generator.generate([req(seed=5)])[0].image
    assert image.shape == (TINY_SIZE, TINY_SIZE, 3) and torch.isfinite(image).all()


def test_fp8_is_refused_on_the_cpu_and_without_compile(tiny_flux_dir):
    with pytest.raises(InvalidParameter, match=r"^fp8: needs an NVIDIA GPU with fp8"):
        DiffusersFluxGenerator(str(tiny_flux_dir), device="cpu", compile=True, fp8=True)
    with pytest.raises(InvalidParameter, match=r"^fp8: needs --compile too"):
        DiffusersFluxGenerator(str(tiny_flux_dir), device="cpu", fp8=True)


def test_torchao_advice_names_the_version_to_install():
    assert speedups.torchao_for("2.11.0+cu130") == "0.17.0"
    assert speedups.torchao_for("2.99.0") is None
    problem = speedups.torchao_problem("2.11.0+cu130")
    try:
        import torchao  # noqa: F401
    except ImportError:
        assert problem == "torchao is not installed (optional; needed for --fp8): pip install torchao==0.17.0"


def test_compile_cache_folder_follows_flag_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(speedups.COMPILE_CACHE_ENV, str(tmp_path / "env"))
    assert speedups.compile_cache_dir() == tmp_path / "env"
    assert speedups.compile_cache_dir(str(tmp_path / "flag")) == tmp_path / "flag"
    monkeypatch.delenv(speedups.COMPILE_CACHE_ENV)
    assert speedups.compile_cache_dir().parts[-3:] == (".cache", "promptbeam", "compile")
