"""Load control for the services: one model call at a time, a bounded wait line, and output retention.

Requests wait on the event loop (an asyncio lock), not in worker threads, so any number of waiting requests
leaves the thread pool free and `/health` keeps answering while an image renders. Past `depth` waiting requests
the service answers 503 with `Retry-After` (an estimate from recent call times) instead of letting clients
pile up until they time out.
"""
from __future__ import annotations

import asyncio
import math
import os
import time
from pathlib import Path
from typing import Callable, Optional, TypeVar

T = TypeVar("T")


class Busy(Exception):
    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class RenderQueue:
    """Serialises model calls; at most `depth` requests wait behind the one running."""

    def __init__(self, depth: int, flag: str = "--queue-depth", what: str = "request"):
        if depth < 0:
            raise ValueError(f"{flag} must be >= 0, got {depth}")
        self.depth, self.flag, self.what = depth, flag, what
        self.waiting = 0
        self.running = 0
        self.served = 0
        self.refused = 0
        self._lock: Optional[asyncio.Lock] = None   # made on the server's event loop, at first use
        self._seconds = 0.0                         # moving average of one call's duration
        self.in_hand = self.peak_in_hand = 0        # requests holding a body (services/guard.py), now and at most

    def retry_after(self) -> int:
        return max(1, math.ceil((self.waiting + self.running) * (self._seconds or 1.0)))

    async def run(self, work: Callable[[], T]) -> T:
        """Run `work` in a worker thread when its turn comes, or raise Busy at once when the line is full."""
        from starlette.concurrency import run_in_threadpool

        if self._lock is None:
            self._lock = asyncio.Lock()
        if self.waiting >= self.depth and (self.running or self._lock.locked()):
            self.refused += 1
            raise Busy(f"the service is busy: {self.running} {self.what} running and {self.waiting} waiting, the "
                       f"most it queues ({self.flag} {self.depth}); retry in about {self.retry_after()} s",
                       self.retry_after())
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        started = time.perf_counter()
        try:
            return await run_in_threadpool(work)
        finally:
            took = time.perf_counter() - started
            self._seconds = took if not self._seconds else 0.7 * self._seconds + 0.3 * took
            self.running -= 1
            self.served += 1
            self._lock.release()

    def describe(self) -> dict:
        return {"running": self.running, "waiting": self.waiting, "depth": self.depth, "served": self.served,
                "refused": self.refused, "average_seconds": round(self._seconds, 3), "in_hand": self.in_hand,
                "peak_in_hand": self.peak_in_hand}


def prune_outputs(folder: Path, pattern: str, keep: Optional[int] = None,
                  max_age_s: Optional[float] = None) -> int:
    """Delete the service's own files (`pattern` in `folder`) beyond the newest `keep` or older than `max_age_s`.
    Returns how many were deleted. Files vanishing meanwhile (another request pruning) are not an error."""
    if keep is None and max_age_s is None:
        return 0
    entries = []
    for path in folder.glob(pattern):
        try:
            entries.append((path.stat().st_mtime, path))
        except FileNotFoundError:
            continue
    entries.sort(reverse=True)                       # newest first
    now = time.time()
    doomed = [path for index, (mtime, path) in enumerate(entries)
              if (keep is not None and index >= keep) or (max_age_s is not None and now - mtime > max_age_s)]
    removed = 0
    for path in doomed:
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed
