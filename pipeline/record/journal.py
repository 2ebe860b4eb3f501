"""report.journal: the changes made to a run record since report.json was last rewritten, one JSON line each.

Rewriting report.json (and report.html) for every candidate costs time that grows with the run: a 1,000-candidate
record is a megabyte of JSON and several of HTML. So each change is appended here instead (one short line, synced
to disk before the search goes on), and report.json is rewritten only when the journal holds as many lines as
1/SNAPSHOT_DIVISOR of the record's candidates (every change while a record has fewer than SNAPSHOT_DIVISOR
candidates, so small runs behave exactly as before), and always when a run finishes, warns or changes its control
arm. The total written therefore grows linearly with the run: a constant amount per candidate.

What a reader sees: report.json is a complete, valid snapshot at every moment (written to a .tmp file and renamed);
report.json + report.journal replayed in order is the record as of the last finished change. `RunRecord.open` and
`read_report` do that replay. A crash can tear the journal's last line only: that change was in flight and is
ignored, exactly as a crash in the middle of a rewrite of report.json lost only the change in flight.

A line is {"set": {top-level field: value, ...}} and/or {"candidate": entry} (added, or replacing the entry with
the same id) and/or {"iteration": entry} (added, or replacing the round with the same number). Replaying a line
twice gives the same record, so a crash between a snapshot's rename and the journal's truncation is harmless.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

JOURNAL_NAME = "report.journal"
SNAPSHOT_DIVISOR = 16


def snapshot_due(lines: int, candidates: int) -> bool:
    """Rewrite report.json now? After max(1, candidates // SNAPSHOT_DIVISOR) journal lines: amortised, every
    candidate then costs the same whatever the size of the record."""
    return lines >= max(1, candidates // SNAPSHOT_DIVISOR)


class Journal:
    """Appends lines durably (written, flushed and fsync'd before append() returns)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / JOURNAL_NAME
        self.lines = 0
        self._handle = None

    def append(self, change: dict) -> None:
        data = (json.dumps(change, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        if self._handle is None:
            self._handle = open(self.path, "ab")
        self._handle.write(data)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.lines += 1

    def clear(self) -> None:
        """After a snapshot: the journal's changes are all in report.json now."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self.lines or self.path.exists():
            with open(self.path, "wb") as handle:       # truncate; an empty journal replays to nothing
                os.fsync(handle.fileno())
        self.lines = 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_changes(run_dir: Path) -> Iterator[dict]:
    """The journal's complete lines, in order (a torn last line, from a crash mid-append, is left out)."""
    path = Path(run_dir) / JOURNAL_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            change = json.loads(raw)
        except ValueError:          # only the last line can be torn: nothing after it was written
            return
        if isinstance(change, dict):
            yield change


def replay(report: dict, changes) -> dict:
    """Apply journal changes to a report loaded from report.json (in place; returned for convenience)."""
    for change in changes:
        report.update(change.get("set") or {})
        if "candidate" in change:
            _upsert(report.setdefault("candidates", []), change["candidate"], "id")
        if "iteration" in change:
            _upsert(report.setdefault("iterations", []), change["iteration"], "iteration")
    return report


def load_report(run_dir: Path) -> dict:
    """report.json with the journal replayed on it: the record as of its last finished change. Raises OSError
    and ValueError (json) like reading report.json does."""
    run_dir = Path(run_dir)
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    if not isinstance(report, dict):
        raise ValueError(f"{run_dir / 'report.json'} is not a JSON object")
    return replay(report, read_changes(run_dir))


def _upsert(items: list, entry: dict, key: str) -> None:
    for index in range(len(items) - 1, -1, -1):       # the newest first: a replaced entry is a recent one
        if isinstance(items[index], dict) and items[index].get(key) == entry.get(key):
            items[index] = entry
            return
    items.append(entry)
