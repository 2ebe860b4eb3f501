"""A record of 1,000 candidates: what recording one costs does not grow with the record (bytes written, counted,
not timed), report.json is a valid snapshot at every moment, a killed process loses nothing it had recorded, a
torn journal line is only the change in flight, and replaying the journal twice changes nothing."""
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path


from pipeline.record.candidate import Candidate
from pipeline.record.journal import JOURNAL_NAME, SNAPSHOT_DIVISOR, load_report
from pipeline.record.page import PAGE_NAME
from pipeline.record.report import REPORT_NAME, RunRecord

REPO = Path(__file__).resolve().parents[2]


def candidate(index: int, width: int = 10) -> Candidate:
    iteration, position = divmod(index, width)
    words = " ".join(f"word{(index * 7 + k) % 97}" for k in range(30))
    return Candidate(id=f"i{iteration}c{position}", iteration=iteration, index=position, parent=None,
                     dimension=None, what=words[:100], how=words[100:], prompt=words, negative=None, seed=index,
                     scores={"alignment": 30.0, "aesthetic": 6.0, "total": 40.0 + index % 11}, status="ok")


class CountingRecord(RunRecord):
    """The real record, counting what its rewrites of report.json and report.html write."""
    snapshot_bytes = 0
    snapshots = 0

    def save(self) -> None:
        super().save()
        self.snapshots += 1
        self.snapshot_bytes += (self.run_dir / REPORT_NAME).stat().st_size
        self.snapshot_bytes += (self.run_dir / PAGE_NAME).stat().st_size


def bytes_per_candidate(root: Path, count: int) -> float:
    record = CountingRecord.create(root, "scale", {}, run_id=f"n{count}")
    record.snapshot_bytes = record.snapshots = 0
    for index in range(count):
        record.add_candidate(candidate(index))
    journal = (record.run_dir / JOURNAL_NAME)
    return (record.snapshot_bytes + (journal.stat().st_size if journal.exists() else 0)) / count


def test_recording_a_candidate_writes_the_same_amount_at_any_record_size(tmp_path):
    at_100, at_1000 = bytes_per_candidate(tmp_path, 100), bytes_per_candidate(tmp_path, 1000)
    # Before the journal, every candidate rewrote the whole record: ~500x more bytes per candidate at 1,000 than
    # at 2. Now the rewrites are amortised: at most a constant factor more per candidate, however large.
    assert at_1000 < 1.5 * at_100, (at_100, at_1000)


def test_small_records_are_rewritten_at_every_change_and_large_ones_amortised(tmp_path):
    record = CountingRecord.create(tmp_path, "scale", {}, run_id="r")
    record.snapshots = 0
    for index in range(SNAPSHOT_DIVISOR):
        record.add_candidate(candidate(index))
    journal = record.run_dir / JOURNAL_NAME
    assert record.snapshots == SNAPSHOT_DIVISOR and not (journal.exists() and journal.stat().st_size)
    for index in range(SNAPSHOT_DIVISOR, 1000):
        record.add_candidate(candidate(index))
    assert record.snapshots < 100                          # 16 + ~68 geometric steps, not 1,000
    journal_lines = journal.read_text().count("\n")
    assert journal_lines < 1000 // SNAPSHOT_DIVISOR
    record.finish("max_iterations", "finished")
    on_disk = json.loads((record.run_dir / REPORT_NAME).read_text())
    assert [c["id"] for c in on_disk["candidates"]] == [candidate(i).id for i in range(1000)]
    assert journal.read_bytes() == b""                              # the finish wrote everything into report.json


def test_report_json_is_always_a_valid_snapshot_and_the_journal_completes_it(tmp_path):
    record = RunRecord.create(tmp_path, "scale", {}, run_id="r")
    for index in range(300):
        record.add_candidate(candidate(index))
        snapshot = json.loads((record.run_dir / REPORT_NAME).read_text())
        ids = [c["id"] for c in snapshot["candidates"]]
        assert ids == [candidate(i).id for i in range(len(ids))]        # a prefix: never torn, never reordered
        merged = load_report(record.run_dir)
        assert len(merged["candidates"]) == index + 1 and merged["candidates"][-1] == record.report["candidates"][-1]


KILLER = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from tests.record.test_record_scale import candidate
from pipeline.record.report import RunRecord
record = RunRecord.create(sys.argv[2], "scale", {}, run_id="killed")
for index in range(int(sys.argv[3])):
    record.add_candidate(candidate(index))
    print(candidate(index).id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)          # no finish, no flush, no atexit: as a crash or the OOM killer
"""


def test_a_killed_process_loses_no_recorded_candidate_and_resumes_from_the_record(tmp_path):
    done = subprocess.run([sys.executable, "-c", KILLER, str(REPO), str(tmp_path), "137"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    printed = done.stdout.split()
    run_dir = tmp_path / "killed"
    assert (run_dir / JOURNAL_NAME).stat().st_size > 0              # the last candidates are journaled only
    reopened = RunRecord.open(run_dir)
    assert [c.id for c in reopened.candidates()] == printed and len(printed) == 137
    reopened.add_candidate(candidate(137))                          # and the record goes on from there
    reopened.finish("max_iterations", "finished")
    assert len(json.loads((run_dir / REPORT_NAME).read_text())["candidates"]) == 138


def test_a_torn_last_journal_line_is_the_change_in_flight_only(tmp_path):
    record = RunRecord.create(tmp_path, "scale", {}, run_id="r")
    for index in range(200):
        record.add_candidate(candidate(index))
    with open(record.run_dir / JOURNAL_NAME, "ab") as handle:        # a crash in the middle of an append
        handle.write(b'{"candidate": {"id": "i20c0", "iteration": 20, "ind')
    assert [c.id for c in RunRecord.open(record.run_dir).candidates()] == [candidate(i).id for i in range(200)]


def test_a_crash_between_a_rewrite_and_emptying_the_journal_replays_harmlessly(tmp_path):
    record = RunRecord.create(tmp_path, "scale", {}, run_id="r")
    for index in range(100):
        record.add_candidate(candidate(index))
    journal = record.run_dir / JOURNAL_NAME
    assert journal.stat().st_size > 0
    stale = tmp_path / "journal-before-rewrite"
    shutil.copy(journal, stale)
    record.add_iteration({"iteration": 0, "candidates": [], "survivors": []})
    record.save()                                  # report.json now holds everything the old journal held
    shutil.copy(stale, journal)                    # ... but the journal was not emptied before the crash
    reopened = RunRecord.open(record.run_dir).report
    assert reopened["candidates"] == record.report["candidates"]
    assert reopened["iterations"] == record.report["iterations"]


def test_a_long_search_is_resumed_from_a_journaled_record(tmp_path):
    from pipeline.beam import BeamConfig, BeamSearch, SearchCallbacks
    from tests.beam.test_beam_collaborators import FastOps, HashGenerator, StatsScorer

    config = BeamConfig(width=16, height=16, seed=3, beam_width=10, keep_top=5, iterations=25)
    straight = BeamSearch(FastOps(), HashGenerator(), StatsScorer(), config).run("a lighthouse", tmp_path, "a")
    finished = []
    cut = BeamSearch(FastOps(), HashGenerator(), StatsScorer(), config, SearchCallbacks(
        on_candidate=lambda c, i: finished.append(c.id), should_stop=lambda: len(finished) >= 173)).run(
        "a lighthouse", tmp_path, "b")
    assert cut.stop_reason == "interrupted"
    resumed = BeamSearch(FastOps(), HashGenerator(), StatsScorer(), config).resume(cut.run_dir)
    keep = ("candidates", "iterations", "best", "lineage", "finalists", "stop_reason", "status")
    assert {k: resumed.report[k] for k in keep} == {k: straight.report[k] for k in keep}
    assert len(straight.report["candidates"]) > 200
    page = (resumed.run_dir / PAGE_NAME).read_text(encoding="utf-8")
    thumbs = page.count('class="thumb"')
    assert thumbs >= 200 and page.count('<img class="thumb" loading="lazy"') == thumbs
