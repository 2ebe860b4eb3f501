"""The list of run directories (pipeline/record/run_index.py): order, damaged runs, what is not a run, escaping."""
import json
import os

from pipeline.record.run_index import list_runs, newest_run, runs_page

from tests.fixtures import recorded_runs


def test_runs_are_listed_newest_first_and_damaged_ones_are_not_hidden(tmp_path):
    older = recorded_runs.one_round_run(tmp_path, "b-older").run_dir
    newer = recorded_runs.one_round_run(tmp_path, "a-newer").run_dir
    for run_dir, started in ((older, "2026-01-01T00:00:00+00:00"), (newer, "2026-01-02T00:00:00+00:00")):
        report = json.loads((run_dir / "report.json").read_text())
        report["timings"]["started_at"] = started
        (run_dir / "report.json").write_text(json.dumps(report))
    damaged = tmp_path / "c-damaged"
    damaged.mkdir()
    (damaged / "report.json").write_text("{truncated")
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "report.json").write_text("{}")
    (tmp_path / "stray.txt").write_text("")
    runs = list_runs(tmp_path)
    assert [r["run_id"] for r in runs] == ["a-newer", "b-older", "c-damaged"]  # no start time: ordered last here
    assert runs[2]["error"].startswith("report.json unreadable") and runs[2]["best"] is None
    assert runs[0]["best_image"] == f"{runs[0]['best']}.png" and runs[0]["rounds"] == 1
    assert newest_run(tmp_path) == newer
    assert list_runs(tmp_path / "missing") == [] and newest_run(tmp_path / "missing") is None


def test_without_start_times_the_latest_written_report_is_newest(tmp_path):
    for name, mtime in (("x", 1_000_000), ("y", 2_000_000)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text("{}")
        os.utime(tmp_path / name / "report.json", (mtime, mtime))
    assert [r["run_id"] for r in list_runs(tmp_path)] == ["y", "x"]


def test_the_runs_page_escapes_prompts_and_links_each_run(tmp_path):
    run = recorded_runs.one_round_run(tmp_path, "r1", prompt='<img src=x onerror=alert(1)> "fox"').run_dir
    html = runs_page(list_runs(tmp_path), link_prefix="runs/")
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt; &quot;fox&quot;" in html
    report = json.loads((run / "report.json").read_text())
    assert 'href="runs/r1/"' in html and f'src="runs/r1/{report["best"]}.png"' in html
    assert "No runs yet" in runs_page([])
