"""`python -m pipeline view`, run as a real subprocess on recorded runs. The browser it opens is the one the
BROWSER variable names (Python's webbrowser reads it): here a script that records the address it was given."""
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures import recorded_runs

REPO = Path(__file__).resolve().parents[2]


def view(*args, cwd, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "BROWSER"}
    env.update(PYTHONPATH=str(REPO), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "pipeline", "view", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """./runs with an older and a newer run (the newer started later)."""
    cwd = tmp_path_factory.mktemp("cwd")
    older = recorded_runs.one_round_run(cwd / "runs", "older")
    time.sleep(1.1)                     # start times are recorded to the second
    newer = recorded_runs.full_run(cwd / "runs", "newer")
    return cwd, older.run_dir, newer.run_dir


def test_print_shows_the_newest_run_under_dot_runs(runs):
    cwd, older, newer = runs
    result = view("--print", cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str((newer / "report.html").resolve())


def test_a_given_run_dir_or_its_report_or_a_folder_of_runs(runs, tmp_path):
    cwd, older, newer = runs
    for given in (older, older / "report.json", older / "report.html"):
        result = view(given, "--print", cwd=tmp_path)
        assert result.returncode == 0 and result.stdout.strip() == str((older / "report.html").resolve())
    assert view(cwd / "runs", "--print", cwd=tmp_path).stdout.strip() == str((newer / "report.html").resolve())
    assert view("--out", cwd / "runs", "--print", cwd=tmp_path).stdout.strip() == str(
        (newer / "report.html").resolve())


def test_view_opens_the_page_in_the_browser(runs, tmp_path):
    cwd, _, newer = runs
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf "%s" "$1" > "{opened}"\n')
    browser.chmod(browser.stat().st_mode | stat.S_IEXEC)
    result = view(cwd=cwd, env_extra={"BROWSER": str(browser)})
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10          # webbrowser may start the browser in the background
    while not opened.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert opened.read_text() == (newer / "report.html").resolve().as_uri()


def test_a_run_without_a_page_gets_one(tmp_path, runs):
    _, older, _ = runs
    run_dir = tmp_path / "old-run"
    run_dir.mkdir()
    (run_dir / "report.json").write_bytes((older / "report.json").read_bytes())
    result = view(run_dir, "--print", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "i0c0" in (run_dir / "report.html").read_text(encoding="utf-8")


def test_bad_input_is_a_clear_error(tmp_path):
    result = view("--print", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: --out: no runs under runs (a run directory holds a report.json); "
                                     f"run `python -m pipeline search PROMPT` first, or pass RUN_DIR")
    result = view(tmp_path / "missing", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip() == f"error: RUN_DIR: {tmp_path / 'missing'} does not exist"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = view(empty, cwd=tmp_path)
    assert result.returncode == 2 and "has no report.json and no run directories" in result.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "report.json").write_text("{not json")
    result = view(broken, "--print", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: cannot show {broken}: {broken / 'report.json'}: invalid JSON "
                                     f"(Expecting property name enclosed in double quotes at line 1)")
