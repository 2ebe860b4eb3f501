"""Writing the run record safely, and saying so plainly when the run directory cannot be written.

Every file of a record is written to a `.tmp` sibling and renamed over the old one, so a reader (and `--resume`)
sees either the old or the new file, never half of one. When the disk fills up, a quota or file-size limit is hit,
or the folder becomes read-only in the middle of a run, the search stops with RecordNotWritable: not an internal
error but a storage problem, with what the record on disk holds and what to do.
"""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator, Optional

from ..errors import PromptBeamError
from .journal import load_report

# errno -> (what happened to the run directory, what the user does about it)
_FREE_SPACE = "free some space on it"
_WRITABLE = "make it writable again (or move the run directory to a writable disk)"
PROBLEMS = {
    errno.ENOSPC: ("the disk holding {run_dir} is full", _FREE_SPACE),
    errno.EDQUOT: ("the disk quota for {run_dir} is used up", _FREE_SPACE),
    errno.EFBIG: ("a file in {run_dir} hit the file-size limit", "raise the file-size limit (ulimit -f)"),
    errno.EROFS: ("{run_dir} is on a file system that became read-only", _WRITABLE),
    errno.EACCES: ("{run_dir} is no longer writable (permission denied)", _WRITABLE),
    errno.EPERM: ("{run_dir} is no longer writable (operation not permitted)", _WRITABLE),
}
# These two also come from reading files elsewhere (a model without read permission): they count only for a path
# inside the run directory.
_ONLY_INSIDE = (errno.EACCES, errno.EPERM)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator:
    """A binary handle on `path`'s .tmp sibling; on success it is synced and renamed over `path`. On failure the
    .tmp file is removed: half a file on a full disk would only hold on to the space that is missing."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def storage_failure(exc: Optional[BaseException], run_dir: Path) -> Optional[OSError]:
    """The OSError in `exc` or its causes that means the run directory cannot be written, else None."""
    run_dir = Path(os.path.abspath(run_dir))
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in PROBLEMS:
            if exc.errno not in _ONLY_INSIDE or _inside(exc.filename, run_dir):
                return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _inside(filename, run_dir: Path) -> bool:
    if not filename:
        return False
    path = Path(os.path.abspath(os.fsdecode(filename)))
    return path == run_dir or run_dir in path.parents


def page_not_written(run_dir: Path, exc: BaseException) -> str:
    """One line for a report.html that could not be written: what happened, that nothing is lost, what to do."""
    failure = storage_failure(exc, run_dir)
    if failure is not None:
        happened, fix = PROBLEMS[failure.errno]
        why = f"{happened.format(run_dir=run_dir)} ({os.strerror(failure.errno)})"
    else:
        why, fix = f"{type(exc).__name__}: {exc}", "fix that"
    return (f"could not write {Path(run_dir) / 'report.html'}: {why}; the search goes on and report.json is complete. "
            f"{fix[0].upper() + fix[1:]}, then `python -m pipeline view {run_dir}` writes the page again")


class RecordNotWritable(PromptBeamError):
    """The run directory could not be written (full disk, read-only folder, ...). The record on disk is valid up
    to `last` (the last candidate it holds); `resume_command`, when a caller sets it, is shown as the way on."""

    def __init__(self, run_dir: Path, error: OSError, candidates: int, last: Optional[str], started: bool = True):
        self.run_dir = Path(run_dir)
        self.error = error
        self.candidates = candidates
        self.last = last
        self.started = started
        self.resume_command: Optional[str] = None
        super().__init__()

    def __str__(self) -> str:
        happened, fix = PROBLEMS[self.error.errno]
        happened = happened.format(run_dir=self.run_dir)
        detail = os.strerror(self.error.errno) + (f": {self.error.filename}" if self.error.filename else "")
        if not self.started:
            return f"{happened} ({detail}), so the run could not start; {fix}, then start it again"
        if self.last:
            held = f"the run record is complete up to the last finished candidate ({self.last}, " \
                   f"{self.candidates} in report.json)"
        else:
            held = "the run record is valid but holds no finished candidate yet"
        way_on = f":\n  {self.resume_command}" if self.resume_command else " (BeamSearch.resume)"
        return f"{happened} ({detail}); the search stopped and {held}. {fix[0].upper() + fix[1:]}, then resume " \
               f"it{way_on}"


def not_writable(run_dir: Path, error: OSError) -> RecordNotWritable:
    """RecordNotWritable describing what report.json on disk holds now."""
    candidates, last = 0, None
    try:
        entries = load_report(Path(run_dir)).get("candidates") or []      # report.json and its journal
        candidates, last = len(entries), (entries[-1].get("id") if entries else None)
    except (OSError, ValueError):
        pass
    return RecordNotWritable(run_dir, error, candidates, last)


def raise_if_not_writable(exc: BaseException, run_dir: Path) -> None:
    """Raise RecordNotWritable (from exc) when exc means the run directory cannot be written; else return."""
    failure = storage_failure(exc, run_dir)
    if failure is not None:
        raise not_writable(run_dir, failure) from exc
