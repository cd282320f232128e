"""The ports: what service functions and DoFns ask of the queue and the status store, as small Protocols."""
from __future__ import annotations

from typing import Protocol

from adapters.jobs import Failure, JobRequest, JobState, JobStatus

__all__ = ["AdapterSpec", "JobQueue", "StatusStore"]


class JobQueue(Protocol):
    """Where job requests wait for the streaming pipeline, and where dead letters go."""

    def publish(self, request: JobRequest) -> str:
        """Publishes one job message; returns the message id. Raises ValueError for a message
        the topic's schema rejects."""

    def publish_dead_letter(self, request: JobRequest | bytes, failure: Failure) -> str:
        """Publishes a message that failed (the request, or the raw bytes that were not one)
        with the failure's fields as attributes; returns the message id."""


class StatusStore(Protocol):
    """One status document per job. Every state change is transactional and forward-only
    (adapters.jobs.check_transition); progress has one writer per job."""

    def create(self, status: JobStatus) -> bool:
        """Stores a new job's first status; False (and nothing written) if the job id exists."""

    def get(self, job_id: str) -> JobStatus | None: ...

    def transition(self, job_id: str, state: JobState, attempt: int, **fields) -> JobStatus:
        """Moves the job to `state` for `attempt`, setting `fields` and the state's time, in one
        transaction; returns the new status. Raises TransitionRefused when the rules say no."""

    def record_progress(self, job_id: str, attempt: int, *, chunks_done: int, chunks_total: int,
                        bytes_in: int, bytes_out: int) -> bool:
        """Sets progress and the heartbeat while the job is RUNNING on `attempt`; counts never go
        down. False (nothing written) when the job is not running that attempt."""

    def list_jobs(self, owner: str, state: JobState | None = None, limit: int = 50,
                  cursor: str | None = None) -> tuple[list[JobStatus], str | None]:
        """The owner's jobs, newest first, and the cursor of the next page (None at the end)."""

    def stale_jobs(self, queued_before: str, heartbeat_before: str) -> list[JobStatus]:
        """Jobs QUEUED since before `queued_before`, or RUNNING with a heartbeat (or claim)
        older than `heartbeat_before` (ISO times, as adapters.jobs.utc_now writes them)."""


class AdapterSpec(Protocol):
    """What a DoFn holds instead of a client: small, picklable settings whose `open()` (called in
    the DoFn's setup()) builds the adapter, e.g. adapters.memory.MemorySpec in unit tests."""

    def open(self): ...
