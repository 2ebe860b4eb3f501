"""`search --compile` as a real subprocess on the tiny models: the compile happens before round 0 and its time is in
report.json (timings.compile_s) and the summary; with no working C++ compiler it falls back to eager with one
warning line, recorded in the report, and the search still finishes; wrong combinations of --compile / --fp8 exit 2
naming the flag."""
import pytest

from tests.cli.test_cli_search import cli, cli_env, models, only_run_dir, read_report, summary  # noqa: F401


def test_search_compile_warms_up_before_round_zero_and_records_the_time(fake_ollama, models, tmp_path,
                                                                       compile_cache):
    out = tmp_path / "runs"
    result = cli("search", "a lighthouse at dusk", "--ollama-url", fake_ollama.url, *models, "--beam-width", 2,
                 "--keep-top", 1, "--iterations", 2, "--compile", "--compile-cache", compile_cache,
                 "--out", out, timeout=900)
    assert result.returncode == 0, result.stderr
    report = read_report(only_run_dir(out))
    assert report["timings"]["compile_s"] > 0 and report["warnings"] == []
    speed = report["config"]["generator"]["speed"]
    assert speed["status"] == "compiled" and speed["warmed"] == [[64, 64, 1], [64, 64, 2]]
    assert speed["cache_dir"] == str(compile_cache) and any(compile_cache.rglob("*"))
    assert summary(result.stdout)["compile"].endswith("s warm-up before round 0")
    assert "--compile: Flux compiles before round 0" in result.stderr


def test_a_compile_that_fails_renders_eager_with_one_warning_line(fake_ollama, models, tmp_path):
    out = tmp_path / "runs"
    result = cli("search", "a lighthouse at dusk", "--ollama-url", fake_ollama.url, *models, "--beam-width", 2,
                 "--keep-top", 1, "--iterations", 2, "--compile", "--compile-cache", tmp_path / "cache",
                 "--out", out, timeout=900, env=cli_env(CXX=str(tmp_path / "no-such-g++")))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "--compile failed" in line]
    assert len(warnings) == 1 and "rendering without compilation (eager)" in warnings[0]
    assert "Traceback" not in result.stderr
    report = read_report(only_run_dir(out))
    assert len(report["warnings"]) == 1 and report["warnings"][0] in warnings[0]
    assert report["config"]["generator"]["speed"]["status"] == "failed"
    assert report["stop_reason"] == "max_iterations" and all(c["status"] == "ok" for c in report["candidates"])


@pytest.mark.parametrize("flags, words", [
    (["--fp8"], "fp8: needs --compile too"),
    (["--compile", "--fp8"], "fp8: needs an NVIDIA GPU with fp8"),
    (["--compile", "--flux-url", "http://127.0.0.1:9"], "--compile: speeds up Flux in this process, but --flux-url"),
])
def test_wrong_speed_flags_exit_2_naming_the_flag(fake_ollama, models, tmp_path, flags, words):
    result = cli("search", "a lighthouse", "--ollama-url", fake_ollama.url, *models, *flags, "--out", tmp_path)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())                       # refused before anything was recorded
