"""Soak: a long search (>= 2,000 candidates by default) with tiny real models on the CPU, as a user runs it
(`python -m pipeline search` against the streaming Ollama stand-in), while its resident memory, open files and
threads are sampled from /proc. They must stay bounded: the figures go to docs/reliability.md ("Soak").

    PROMPTBEAM_SOAK=1 python -m pytest -q -s tests/soak          # one to two hours on two busy CPU cores
    PROMPTBEAM_SOAK_CANDIDATES=300 ...                            # a shorter run
    PROMPTBEAM_SOAK_OUT=soak.json     # the figures (default: in pytest's tmp); the samples go to soak.samples.jsonl
                                      # as they are taken, so a run stopped early still leaves them
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.cli.test_cli_search import REPO, cli_env
from tests.fixtures.ollama import FakeOllama, default_answer

CANDIDATES = int(os.environ.get("PROMPTBEAM_SOAK_CANDIDATES", "2000"))
BEAM_WIDTH, KEEP_TOP = 10, 5                 # 10 candidates a round
WARM = min(100, CANDIDATES // 5)            # candidates after which everything has been loaded and used once
# Bounds past the warm-up: open files and threads must not grow at all (a little slack for a round's LLM threads
# coming and going); resident memory may grow with what the record holds in memory (each candidate's entry).
FD_SLACK, THREAD_SLACK, RSS_MB_PER_1000 = 4, 8, 60


def proc_sample(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def slope(xs: list, ys: list) -> float:
    """Least-squares slope of ys over xs (0 when xs do not vary): growth, not the noise of two samples."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread if spread else 0.0


def candidates_recorded(out: Path) -> int:
    """The record as a reader sees it: report.json and the changes journaled since its last rewrite."""
    from pipeline.record import load_report

    reports = list(out.glob("*/report.json"))
    if not reports:
        return 0
    try:
        return len(load_report(reports[0].parent)["candidates"])
    except (OSError, ValueError):
        return -1       # between a write and its rename: read again at the next sample


def inexhaustible(body: dict):
    """The fake's usual answer with a few words no other answer has added to every entry of a list: the fake's
    own texts come from a small vocabulary, and a long search would run out of new prompts (and stop, exhausted)
    long before 2,000 candidates."""
    data = json.loads(default_answer(body))
    for entries in (value for value in data.values() if isinstance(value, list)):
        for entry in entries:
            for key, text in entry.items():
                tag = next(_TAGS)
                entry[key] = f"{text} Marked n{tag}a, n{tag}b, n{tag}c, n{tag}d, n{tag}e and n{tag}f."
    return json.dumps(data)


_TAGS = itertools.count()


def test_a_long_search_keeps_memory_files_and_threads_bounded(tiny_flux_dir, tiny_clip_dir, tiny_aesthetic_path,
                                                              tmp_path):
    # The stand-in runs in this (the test's) process: the search is a process of its own, measured alone.
    ollama = FakeOllama().start()
    ollama.answer_with(inexhaustible)
    out = tmp_path / "runs"
    iterations = 1 + -(-(CANDIDATES - BEAM_WIDTH) // BEAM_WIDTH) + 2      # two spare rounds: a duplicate is rare
    search = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "search", "a lighthouse on a cliff at dusk", "--ollama-url",
         ollama.url, "--flux", str(tiny_flux_dir), "--clip", f"local-dir:{tiny_clip_dir}",
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
        ollama.stop()
    assert search.returncode == 0, stdout
    total = candidates_recorded(out)
    assert total >= CANDIDATES, f"only {total} candidates: {stdout}"

    warm = [s for s in samples if s["candidates"] >= WARM]
    base = warm[0]
    peak = {key: max(s[key] for s in warm) for key in ("rss_mb", "fds", "threads")}
    last = warm[-1]
    growth_per_1000 = slope([s["candidates"] for s in warm], [s["rss_mb"] for s in warm]) * 1000
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
