"""In-memory fakes of the ports for unit tests: the same rules as the real adapters, no emulator."""
from __future__ import annotations

import copy
import dataclasses
import threading
import uuid

from adapters.jobs import Failure, JobRequest, JobState, JobStatus, check_transition, utc_now

__all__ = ["InMemoryJobQueue", "InMemoryStatusStore"]


class InMemoryJobQueue:
    """Keeps what was published, in order: `messages` (requests) and `dead_letters` (pairs)."""

    def __init__(self) -> None:
        self.messages: list[JobRequest] = []
        self.dead_letters: list[tuple[JobRequest | bytes, Failure]] = []
        self._lock = threading.Lock()

    def publish(self, request: JobRequest) -> str:
        with self._lock:
            self.messages.append(request)
        return uuid.uuid4().hex

    def publish_dead_letter(self, request: JobRequest | bytes, failure: Failure) -> str:
        with self._lock:
            self.dead_letters.append((request, failure))
        return uuid.uuid4().hex


class InMemoryStatusStore:
    """Status documents in a dict behind a lock (the lock plays the transaction)."""

    def __init__(self) -> None:
        self._docs: dict[str, JobStatus] = {}
        self._lock = threading.Lock()
        self.writes = 0  # how many documents were written, for the coalescing tests

    def create(self, status: JobStatus) -> bool:
        with self._lock:
            if status.job_id in self._docs:
                return False
            self._docs[status.job_id] = copy.deepcopy(status)
            self.writes += 1
            return True

    def get(self, job_id: str) -> JobStatus | None:
        with self._lock:
            status = self._docs.get(job_id)
            return copy.deepcopy(status) if status else None

    def transition(self, job_id: str, state: JobState, attempt: int, **fields) -> JobStatus:
        with self._lock:
            current = self._docs.get(job_id)
            check_transition(current, state, attempt)
            now = utc_now()
            updated = dataclasses.replace(current, **fields, state=state, attempt=attempt,
                                          times={**current.times, state.value: now}, updated=now)
            if state is JobState.RUNNING:
                updated.heartbeat = now
            self._docs[job_id] = updated
            self.writes += 1
            return copy.deepcopy(updated)

    def record_progress(self, job_id: str, attempt: int, *, chunks_done: int, chunks_total: int,
                        bytes_in: int, bytes_out: int) -> bool:
        with self._lock:
            current = self._docs.get(job_id)
            if current is None or current.state is not JobState.RUNNING or current.attempt != attempt:
                return False
            now = utc_now()
            current.chunks_done = max(current.chunks_done, chunks_done)
            current.chunks_total = max(current.chunks_total, chunks_total)
            current.bytes_in = max(current.bytes_in, bytes_in)
            current.bytes_out = max(current.bytes_out, bytes_out)
            current.heartbeat = current.updated = now
            self.writes += 1
            return True

    def list_jobs(self, owner: str, state: JobState | None = None, limit: int = 50,
                  cursor: str | None = None) -> tuple[list[JobStatus], str | None]:
        with self._lock:
            jobs = sorted((s for s in self._docs.values() if s.owner == owner
                           and (state is None or s.state is state)),
                          key=lambda s: (s.times.get(JobState.QUEUED.value, ""), s.job_id), reverse=True)
        start = 0
        if cursor is not None:
            ids = [s.job_id for s in jobs]
            start = ids.index(cursor) + 1 if cursor in ids else len(ids)
        page = jobs[start:start + limit]
        more = start + limit < len(jobs)
        return copy.deepcopy(page), (page[-1].job_id if more and page else None)

    def stale_jobs(self, queued_before: str, heartbeat_before: str) -> list[JobStatus]:
        with self._lock:
            return [copy.deepcopy(s) for s in self._docs.values()
                    if (s.state is JobState.QUEUED and s.updated and s.updated < queued_before)
                    or (s.state is JobState.RUNNING and (s.heartbeat or "") < heartbeat_before)]


# Named fakes that a pickled spec finds again in the same process (TestPipeline and the local
# streaming runner run DoFns in this process): what a real spec's open() does with a client.
_REGISTRY: dict[str, object] = {}


@dataclasses.dataclass(frozen=True)
class MemorySpec:
    """A picklable handle on a named in-memory fake; `open()` returns the same object every time."""

    name: str

    def open(self):
        return _REGISTRY[self.name]

    @classmethod
    def register(cls, name: str, fake: object) -> "MemorySpec":
        _REGISTRY[name] = fake
        return cls(name)
