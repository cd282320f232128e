"""Progress writes coalesced per job: at most one status write per interval, counts that never go down."""
from __future__ import annotations

import threading
import time
from typing import Callable

from adapters.ports import StatusStore

__all__ = ["CoalescedProgress"]


class CoalescedProgress:
    """The one progress writer of one job attempt, over any StatusStore.

    update() keeps the highest counts seen and writes them at most once per `min_interval`
    seconds (the first update writes at once); unchanged counts are written again only after
    `keepalive` seconds, as a heartbeat. flush() writes what is still pending. `clock` is
    injectable for tests. `current` turns False once the store refuses a write (the job is no
    longer running this attempt), so the caller can stop working on it.
    """

    def __init__(self, store: StatusStore, job_id: str, attempt: int, min_interval: float = 1.0,
                 keepalive: float = 15.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._store, self.job_id, self.attempt = store, job_id, attempt
        self._min_interval, self._keepalive, self._clock = min_interval, keepalive, clock
        self._counts = (0, 0, 0, 0)
        self._pending = False
        self._last_write: float | None = None
        self._lock = threading.Lock()
        self.current = True
        self.writes = 0

    def update(self, chunks_done: int, chunks_total: int, bytes_in: int, bytes_out: int) -> bool:
        """Records progress; returns True when this call wrote it to the store."""
        with self._lock:
            new = tuple(max(a, b) for a, b in zip(self._counts, (chunks_done, chunks_total, bytes_in, bytes_out)))
            self._pending = self._pending or new != self._counts or self._last_write is None
            self._counts = new
            now = self._clock()
            if self._last_write is not None:
                since = now - self._last_write
                if since < self._min_interval:
                    return False
                self._pending = self._pending or since >= self._keepalive
            return self._write(now)

    def flush(self) -> bool:
        """Writes pending progress now (before a job's last transition); True if it wrote."""
        with self._lock:
            return self._write(self._clock())

    def _write(self, now: float) -> bool:
        if not self._pending:
            return False
        chunks_done, chunks_total, bytes_in, bytes_out = self._counts
        accepted = self._store.record_progress(self.job_id, self.attempt, chunks_done=chunks_done,
                                               chunks_total=chunks_total, bytes_in=bytes_in,
                                               bytes_out=bytes_out)
        self._pending, self._last_write = False, now
        self.writes += 1
        self.current = self.current and accepted
        return True
