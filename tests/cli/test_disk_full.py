"""The output disk fills up, or turns read-only, in the middle of `search`: the command says what happened, what the
record holds and how to go on (exit 1, no "internal" error), the record stays valid, and `--resume` finishes the run
once there is room again. A real small tmpfs is mounted for this (root only; skipped where mounting is refused).

The run is held between round 0 and round 1 by a slow Ollama unload (--low-vram), and the disk is filled or made
read-only in that pause: round 1's first PNG is then the first write that fails, whatever the machine's speed."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.test_cli_search import REPO, UNLOADED, cli, cli_env, only_run_dir, read_report


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


@pytest.fixture
def models(tiny_flux_dir, tiny_clip_dir, tiny_aesthetic_path) -> list:
    return ["--flux", tiny_flux_dir, "--clip", f"local-dir:{tiny_clip_dir}", "--aesthetic", tiny_aesthetic_path,
            "--width", "64", "--height", "64", "--steps", "2", "--device", "cpu"]


def fill(disk: Path) -> Path:
    """Write a ballast file until the file system answers ENOSPC, down to the last byte."""
    ballast = disk / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 1 << 12, 1):
            while True:
                try:
                    if os.write(fd, b"\0" * size) < size:
                        continue
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return ballast


def search_paused_between_rounds(fake_ollama, models, out: Path, act) -> tuple[subprocess.CompletedProcess, Path]:
    """Run a 3-round search; once round 1 is planned (recorded as pending) and the run waits on the slow unload,
    call act() (fill the disk, remount it read-only), then let the search meet it."""
    fake_ollama.script("/api/generate", {"json": UNLOADED}, {"json": UNLOADED, "delay": 3})
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "search", "a lighthouse at dusk", "--ollama-url", fake_ollama.url,
         *map(str, models), "--beam-width", "2", "--keep-top", "1", "--iterations", "3", "--low-vram",
         "--out", str(out)], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            reports = list(out.glob("*/report.json"))
            if reports:
                try:
                    pending = json.loads(reports[0].read_text(encoding="utf-8")).get("pending")
                except ValueError:
                    pending = None
                if pending and pending.get("iteration") == 1:
                    break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before round 1 was planned"
        act()
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), only_run_dir(out)


def assert_stopped_with_a_valid_record(result, run_dir: Path) -> dict:
    assert result.returncode == 1, result.stderr
    assert "internal" not in result.stderr and "--debug" not in result.stderr and "Traceback" not in result.stderr
    assert "the search stopped and the run record is complete up to the last finished candidate (i0c1, 2 in " \
           "report.json)" in result.stderr
    assert f"then resume it: python -m pipeline search --resume {run_dir}" in result.stderr
    report = read_report(run_dir)                                  # valid JSON: the last good save
    assert [c["id"] for c in report["candidates"]] == ["i0c0", "i0c1"]
    assert report["pending"]["iteration"] == 1
    assert all((run_dir / c["image"]).is_file() for c in report["candidates"])
    assert not list(run_dir.glob("*.tmp"))                         # no torn file left holding space
    return report


def resume_finishes(fake_ollama, run_dir: Path) -> None:
    result = cli("search", "--resume", run_dir, "--ollama-url", fake_ollama.url, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    report = read_report(run_dir)
    assert report["status"] == "finished" and report["stop_reason"] == "max_iterations"
    ids = [c["id"] for c in report["candidates"]]
    assert ids[:2] == ["i0c0", "i0c1"] and len(ids) == len(set(ids)) == 6
    assert all((run_dir / c["image"]).is_file() for c in report["candidates"])


def test_disk_full_mid_run_says_what_to_do_and_resume_finishes(fake_ollama, models, small_disk):
    ballast = []
    result, run_dir = search_paused_between_rounds(fake_ollama, models, small_disk / "runs",
                                                   lambda: ballast.append(fill(small_disk)))
    assert f"error: the disk holding {run_dir} is full (No space left on device" in result.stderr
    assert "Free some space on it, then resume it" in result.stderr
    assert_stopped_with_a_valid_record(result, run_dir)

    resumed = cli("search", "--resume", run_dir, "--ollama-url", fake_ollama.url, "--device", "cpu")
    assert resumed.returncode == 1 and "is full" in resumed.stderr       # still full: the same plain answer
    assert read_report(run_dir)["pending"]["iteration"] == 1

    ballast[0].unlink()
    resume_finishes(fake_ollama, run_dir)


def test_read_only_folder_mid_run_says_what_to_do_and_resume_finishes(fake_ollama, models, small_disk):
    def read_only():
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True, capture_output=True)

    result, run_dir = search_paused_between_rounds(fake_ollama, models, small_disk / "runs", read_only)
    assert f"error: {run_dir} is on a file system that became read-only (Read-only file system: " in result.stderr
    assert "Make it writable again" in result.stderr
    assert_stopped_with_a_valid_record(result, run_dir)

    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True, capture_output=True)
    resume_finishes(fake_ollama, run_dir)


def test_a_full_disk_before_the_first_save_leaves_no_empty_run(fake_ollama, models, small_disk):
    out = small_disk / "runs"
    out.mkdir()
    fill(small_disk)
    result = cli("search", "a lighthouse at dusk", "--ollama-url", fake_ollama.url, *models, "--beam-width", 2,
                 "--iterations", 1, "--out", out)
    assert result.returncode == 1, result.stderr
    assert "is full (No space left on device" in result.stderr
    assert "so the run could not start; free some space on it, then start it again" in result.stderr
    assert "internal" not in result.stderr and "Traceback" not in result.stderr
    assert list(out.iterdir()) == []
