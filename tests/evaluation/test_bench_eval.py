"""bench/bench_eval.py in its CPU smoke mode (TINY=1): the GPU benchmark's code path end to end on miniature
models, so the script the GPU machine runs is known to work before a lease is spent on it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_eval_benchmark_runs_in_its_cpu_smoke_mode(tmp_path):
    env = dict(os.environ, TINY="1", OUT=str(tmp_path), PROMPTS="2", BEAM="2", KEEP="1", ROUNDS="2",
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "bench/bench_eval.py"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    numbers = json.loads((tmp_path / "bench_eval.json").read_text())
    assert numbers["tiny"] is True and numbers["prompts_judged"] == 2
    assert numbers["images"] == 2 * (2 + 2 + 2)           # per prompt: round 0, round 1, the control arm's seeds
    assert set(numbers["judging_s"]) == {"hpsv2", "pickscore"}
    assert 0 < numbers["search_s"] <= numbers["wall_s"] and numbers["images_per_s"] > 0
    assert "RESULT {" in result.stdout
