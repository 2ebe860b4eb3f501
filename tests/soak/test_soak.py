"""Soak: a long search (>= 2,000 candidates by default) with tiny real models on the CPU, as a user runs it
(`python -m pipeline search` against a streaming Ollama stand-in), while its resident memory, open files and
threads are sampled from /proc. They must stay bounded: the figures go to docs/reliability.md ("Soak").

    PROMPTBEAM_SOAK=1 python -m pytest -q -s tests/soak          # about an hour on two busy CPU cores
    PROMPTBEAM_SOAK_CANDIDATES=300 ...                            # a shorter run
    PROMPTBEAM_SOAK_OUT=soak.json     # the figures (default: in pytest's tmp); the samples go to soak.samples.jsonl
                                      # as they are taken, so a run stopped early still leaves them
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.cli.test_cli_search import REPO, cli_env
from tests.fixtures.servers import free_port, stop_process, wait_until_ready

CANDIDATES = int(os.environ.get("PROMPTBEAM_SOAK_CANDIDATES", "2000"))
BEAM_WIDTH, KEEP_TOP = 10, 5                 # 10 candidates a round
WARM = 100                                   # candidates after which everything has been loaded and used once
# Bounds past the warm-up: open files and threads must not grow at all (a little slack for a round's LLM threads
# coming and going); resident memory may grow with what the record holds in memory (each candidate's entry).
FD_SLACK, THREAD_SLACK, RSS_MB_PER_1000 = 4, 8, 60


def proc_sample(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def candidates_recorded(out: Path) -> int:
    reports = list(out.glob("*/report.json"))
    if not reports:
        return 0
    try:
        return len(json.loads(reports[0].read_text(encoding="utf-8"))["candidates"])
    except (OSError, ValueError):
        return -1       # between a write and its rename: read again at the next sample


def test_a_long_search_keeps_memory_files_and_threads_bounded(tiny_flux_dir, tiny_clip_dir, tiny_aesthetic_path,
                                                              tmp_path):
    port = free_port()
    ollama = subprocess.Popen([sys.executable, "-m", "tests.fixtures.ollama", "--port", str(port)], cwd=REPO,
                              stdout=subprocess.DEVNULL, env=cli_env())
    wait_until_ready(ollama, f"http://127.0.0.1:{port}/api/tags", 60, "the Ollama stand-in")
    out = tmp_path / "runs"
    iterations = 1 + -(-(CANDIDATES - BEAM_WIDTH) // BEAM_WIDTH) + 10      # a few rounds more: duplicates drop some
    search = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "search", "a lighthouse on a cliff at dusk", "--ollama-url",
         f"http://127.0.0.1:{port}", "--flux", str(tiny_flux_dir), "--clip", f"local-dir:{tiny_clip_dir}",
         "--aesthetic", str(tiny_aesthetic_path), "--width", "32", "--height", "32", "--steps", "1",
         "--device", "cpu", "--beam-width", str(BEAM_WIDTH), "--keep-top", str(KEEP_TOP),
         "--iterations", str(iterations), "--seed", "11", "--out", str(out)],
        cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    destination = Path(os.environ.get("PROMPTBEAM_SOAK_OUT") or tmp_path / "soak.json")
    live = destination.with_suffix(".samples.jsonl")
    samples, started = [], time.monotonic()
    try:
        while search.poll() is None:
            count = candidates_recorded(out)
            if count >= 0:
                samples.append({"candidates": count, "seconds": round(time.monotonic() - started, 1),
                                **proc_sample(search.pid)})
                with open(live, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(samples[-1]) + "\n")
            time.sleep(2.0)
        stdout = search.stdout.read()
    finally:
        if search.poll() is None:
            search.kill()
        stop_process(ollama)
    assert search.returncode == 0, stdout
    total = candidates_recorded(out)
    assert total >= CANDIDATES, f"only {total} candidates (duplicates dropped more than the spare rounds)"

    warm = [s for s in samples if s["candidates"] >= WARM]
    base = warm[0]
    peak = {key: max(s[key] for s in warm) for key in ("rss_mb", "fds", "threads")}
    last = warm[-1]
    growth_per_1000 = (last["rss_mb"] - base["rss_mb"]) / max(1, last["candidates"] - base["candidates"]) * 1000
    figures = {"candidates": total, "seconds": samples[-1]["seconds"], "at_warm": base, "peak": peak, "last": last,
               "rss_growth_mb_per_1000_candidates": round(growth_per_1000, 1),
               "samples": samples[::max(1, len(samples) // 200)]}
    destination.write_text(json.dumps(figures, indent=1))
    print(f"\nsoak: {total} candidates in {figures['seconds']:.0f} s; after {base['candidates']}: "
          f"RSS {base['rss_mb']:.0f} MB, {base['fds']} files, {base['threads']} threads; peak RSS "
          f"{peak['rss_mb']:.0f} MB, {peak['fds']} files, {peak['threads']} threads; RSS growth "
          f"{growth_per_1000:.1f} MB per 1,000 candidates; samples in {destination}")
    assert peak["fds"] <= base["fds"] + FD_SLACK
    assert peak["threads"] <= base["threads"] + THREAD_SLACK
    assert growth_per_1000 <= RSS_MB_PER_1000
