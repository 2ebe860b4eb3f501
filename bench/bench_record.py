"""How the run record scales (CPU; no GPU needed): recording one candidate when the record already holds 10, 100
and 1,000, and a 100-round, 10-wide search with the fast test collaborators, first rounds against last rounds.

    python bench/bench_record.py            # writes OUT/bench_record.json (default bench/out)
Env: ROUNDS (100), WIDTH (10), SIZES (10,100,1000).
"""
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402

from bench_common import Results  # noqa: E402
from pipeline.beam import BeamConfig, BeamSearch, SearchCallbacks  # noqa: E402
from pipeline.record.candidate import Candidate  # noqa: E402
from pipeline.record.page import build_page  # noqa: E402
from pipeline.record.report import RunRecord  # noqa: E402
from tests.beam.test_beam_collaborators import FastOps, HashGenerator, StatsScorer  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "100"))
WIDTH = int(os.environ.get("WIDTH", "10"))
SIZES = [int(n) for n in os.environ.get("SIZES", "10,100,1000").split(",")]
PROBE = 64                     # candidates timed at each size: a whole snapshot cycle at 1,000 (1,000/16)


def candidate(index: int) -> Candidate:
    iteration, position = divmod(index, WIDTH)
    words = " ".join(f"word{(index * 7 + k) % 97}" for k in range(40))     # a prompt of a realistic length
    return Candidate(id=f"i{iteration}c{position}", iteration=iteration, index=position,
                     parent=f"i{iteration - 1}c0" if iteration else None, dimension="what" if iteration else None,
                     what=words[:150], how=words[150:], prompt=words, negative=None, seed=index,
                     scores={"alignment": 30.0 + index % 7, "aesthetic": 6.0, "total": 40.0 + index % 11},
                     status="ok")


def per_candidate_seconds(root: Path) -> dict:
    """Seconds of add_candidate (entry + PNG, as the search records) once the record holds N: median, and mean
    (the mean includes the rewrites of report.json and report.html, amortised)."""
    record = RunRecord.create(root, "scale", {"beam_width": WIDTH}, run_id="sizes")
    image = torch.rand(64, 64, 3)
    added, timings = 0, {}
    for size in SIZES:
        while added < size:
            record.add_candidate(candidate(added), image)
            added += 1
        times = []
        for _ in range(PROBE):
            started = time.perf_counter()
            record.add_candidate(candidate(added), image)
            times.append(time.perf_counter() - started)
            added += 1
        timings[size] = {"median": round(statistics.median(times), 5), "mean": round(statistics.mean(times), 5)}
    record.finish("max_iterations", "finished")
    started = time.perf_counter()
    build_page(record.report)
    timings["page_build_s"] = round(time.perf_counter() - started, 3)
    timings["report_json_MB"] = round((record.run_dir / "report.json").stat().st_size / 1e6, 2)
    timings["report_html_MB"] = round((record.run_dir / "report.html").stat().st_size / 1e6, 2)
    return timings


def long_search(root: Path) -> dict:
    marks = {}

    def on_progress(event) -> None:
        if event.phase == "select":
            marks.setdefault(event.iteration, time.perf_counter())

    config = BeamConfig(width=16, height=16, seed=3, beam_width=WIDTH, keep_top=WIDTH // 2, iterations=ROUNDS)
    started = time.perf_counter()
    result = BeamSearch(FastOps(), HashGenerator(), StatsScorer(), config,
                        SearchCallbacks(on_progress=on_progress)).run("a lighthouse in a storm", root, "long")
    wall = time.perf_counter() - started
    ends = [marks[i] for i in sorted(marks)]
    rounds = [b - a for a, b in zip([started] + ends, ends)]
    first, last = statistics.mean(rounds[:10]), statistics.mean(rounds[-10:])
    started = time.perf_counter()
    RunRecord.open(result.run_dir)
    return {"wall_s": round(wall, 2), "candidates": len(result.report["candidates"]), "rounds": len(rounds),
            "first_10_rounds_mean_s": round(first, 4), "last_10_rounds_mean_s": round(last, 4),
            "last_over_first": round(last / first, 2), "open_s": round(time.perf_counter() - started, 3)}


def main():
    result = Results("bench_record", rounds=ROUNDS, width=WIDTH, cpu_count=os.cpu_count())
    with tempfile.TemporaryDirectory() as tmp:
        for key, value in per_candidate_seconds(Path(tmp)).items():
            result.log(f"record_one_candidate_at_{key}_s" if isinstance(key, int) else key, value)
        for key, value in long_search(Path(tmp)).items():
            result.log(f"search_{key}", value)
    result.print_final()


if __name__ == "__main__":
    main()
