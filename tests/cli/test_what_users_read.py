"""What a user reads when a fault hits `python -m pipeline search` (a real subprocess, the fake Ollama, tiny models):
one line per problem that says what happened and what to do, never a Python traceback (that is for --debug), and
a record that keeps everything finished before the fault."""
from __future__ import annotations

import json
import resource
import subprocess
import sys

from tests.beam.test_exhausted import repetitive
from tests.cli.test_cli_search import REPO, cli_env, models, only_run_dir, read_report  # noqa: F401 (fixture)

MODEL = "qwen2.5:7b-instruct"
SMALL = ["--beam-width", "2", "--keep-top", "1"]


def search(fake, models, out, *flags, file_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit_files():             # `ulimit -f`: larger files fail with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
    return subprocess.run([sys.executable, "-m", "pipeline", "search", "a lighthouse at dusk", "--ollama-url",
                           fake.url, *map(str, models), *SMALL, "--out", str(out), *map(str, flags)],
                          cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_files if file_limit else None)


def said(stderr: str) -> list[str]:
    """The lines meant for the user to act on: errors, warnings and notes (not progress bars or candidates)."""
    assert "Traceback" not in stderr and "internal:" not in stderr, stderr
    return [line.strip() for line in stderr.splitlines() if line.strip().startswith(("error:", "warning:", "note:"))]


def test_a_report_page_that_cannot_be_written_is_one_warning_line_and_the_search_goes_on(fake_ollama, models,
                                                                                         tmp_path):
    # PNGs (~11 kB) and report.json (~8 kB) fit under the limit, report.html (13 kB and more) does not
    result = search(fake_ollama, models, tmp_path / "runs", "--iterations", 2, file_limit=12_000)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    assert said(result.stderr) == [
        f"warning: could not write {run_dir}/report.html: a file in {run_dir} hit the file-size limit (File too "
        f"large); the search goes on and report.json is complete. Raise the file-size limit (ulimit -f), then "
        f"`python -m pipeline view {run_dir}` writes the page again"]
    report = read_report(run_dir)
    assert report["status"] == "finished" and len(report["candidates"]) == 4 and not (run_dir / "report.html").exists()


def test_the_model_deleted_mid_run_is_one_error_line_naming_ollama_pull_and_the_record_stays(fake_ollama, models,
                                                                                             tmp_path):
    fake_ollama.after_chats(1, lambda: fake_ollama.remove_model(MODEL))     # round 0 answered, then `ollama rm`
    result = search(fake_ollama, models, tmp_path / "runs", "--iterations", 3)
    assert result.returncode == 1
    run_dir = only_run_dir(tmp_path / "runs")
    assert said(result.stderr) == [
        f"error: Ollama model '{MODEL}' is not installed at {fake_ollama.url} (Ollama said: model '{MODEL}' not "
        f"found). Installed models: llama3.1:8b. Run `ollama pull {MODEL}`, or set OLLAMA_MODEL / the model input to "
        f"an installed model."]
    assert f"run record: {run_dir}" in result.stderr
    report = read_report(run_dir)
    assert report["status"] == "failed" and [c["id"] for c in report["candidates"]] == ["i0c0", "i0c1"]


def test_a_busy_server_that_fails_a_round_is_one_note_with_the_first_error(fake_ollama, models, tmp_path):
    busy = {"status": 503, "json": {"error": "server busy, please try again. maximum pending requests exceeded"},
            "headers": {"Retry-After": "600"}}
    fake_ollama.after_chats(1, lambda: fake_ollama.script("/api/chat", busy))     # after round 0
    result = search(fake_ollama, models, tmp_path / "runs", "--iterations", 3)
    assert result.returncode == 0, result.stderr        # the best so far is the result
    run_dir = only_run_dir(tmp_path / "runs")
    assert said(result.stderr) == [
        f"note: 2 of 2 candidates of round 2 failed, so the search stopped with the best so far (stop reason "
        f"failures); the first: critique failed: OllamaBusy: Ollama at {fake_ollama.url} is busy (HTTP 503: server "
        f"busy, please try again. maximum pending requests exceeded) and asked to retry in 600 s, past the 180 s "
        f"timeout for the chat request. Wait and run again, send fewer requests at once (llm_concurrency), or raise "
        f"OLLAMA_NUM_PARALLEL / OLLAMA_MAX_QUEUE on the server."]
    assert read_report(run_dir)["stop_reason"] == "failures"


def test_a_model_that_only_repeats_itself_stops_exhausted_with_a_note(fake_ollama, models, tmp_path):
    fake_ollama.answer_with(repetitive(nudge_helps=False))
    result = search(fake_ollama, models, tmp_path / "runs", "--iterations", 8)
    assert result.returncode == 0, result.stderr
    assert said(result.stderr) == [
        "note: round 3 brought no new prompt: the LLM wrote only prompts it had written before, also when asked "
        "again with them listed (stop reason exhausted). Try another or a larger model (--llm-model), or "
        "--dimension-policy adaptive"]
    report = json.loads((only_run_dir(tmp_path / "runs") / "report.json").read_text())
    assert report["stop_reason"] == "exhausted" and len(report["iterations"]) == 3
    assert "stop reason:   exhausted" in result.stdout
