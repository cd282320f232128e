"""The records every port carries: a job request, its status document, a failure, and the one transition rule."""
from __future__ import annotations

import dataclasses
import datetime
import enum
import re
import secrets
from typing import Any, Mapping

from codec.sizes import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE

__all__ = [
    "COMPRESS", "DECOMPRESS", "OPERATIONS", "JOB_ID_PATTERN", "JobState", "TERMINAL_STATES",
    "JobRequest", "Failure", "JobStatus", "TransitionRefused", "check_transition", "transitioned", "marked_deleted",
    "new_job_id", "utc_now", "HISTORY_LIMIT",
]

COMPRESS = "compress"
DECOMPRESS = "decompress"
OPERATIONS = (COMPRESS, DECOMPRESS)
# Lowercase letters, digits and '-': valid in object names, Firestore ids and Dataflow job names.
JOB_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
# Transitions a status document remembers (the first and the latest): a job of 3 attempts makes
# about 8, so only a runaway re-queue loop reaches the bound, and the document stays small.
HISTORY_LIMIT = 32


class JobState(str, enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


def utc_now() -> str:
    """The time as every record stores it: ISO 8601 in UTC, to the microsecond."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def new_job_id() -> str:
    """An unguessable job id (128 random bits) that still sorts by creation time."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"job-{stamp}-{secrets.token_hex(16)}"


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """One job as it travels: on the queue, through the streaming graph, into the batch graph.

    `attempt` starts at 1; the reconciler re-publishes a stuck job with attempt + 1 and every
    attempt writes its temporaries under paths of its own. `table_uri` names a stored frequency
    table to encode with (else the pipeline counts one). `trace_context` is a W3C traceparent.
    """

    job_id: str
    operation: str
    input_uri: str
    output_uri: str
    owner: str = ""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    attempt: int = 1
    table_uri: str | None = None
    requested_at: str = ""
    trace_context: str | None = None

    def __post_init__(self) -> None:
        if not JOB_ID_PATTERN.fullmatch(self.job_id or ""):
            raise ValueError(f"job id {self.job_id!r} must be 1-128 lowercase letters, digits or '-'")
        if self.operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {OPERATIONS}, got {self.operation!r}")
        if not self.input_uri or not self.output_uri:
            raise ValueError("a job needs both an input and an output URI")
        if self.input_uri == self.output_uri:
            raise ValueError(f"input and output are the same object: {self.output_uri}")
        if not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be between 1 byte and {MAX_CHUNK_SIZE}, got {self.chunk_size}")
        if self.attempt < 1:
            raise ValueError(f"attempt must be 1 or more, got {self.attempt}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "JobRequest":
        """The request a dict describes; ValueError names a missing or unknown field."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown job field(s): {', '.join(sorted(unknown))}")
        try:
            return cls(**dict(data))
        except TypeError as e:
            raise ValueError(f"incomplete job request: {e}") from None

    def next_attempt(self) -> "JobRequest":
        return dataclasses.replace(self, attempt=self.attempt + 1)


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why one job (or one file of a batch run) failed: what the status store, the dead-letter
    topic, the failures CSV and the CLI all read."""

    job_id: str
    source: str
    stage: str
    error_type: str
    message: str
    attempt: int = 1  # the attempt that failed: only that attempt may mark the job FAILED
    trace_context: str | None = None  # the job's traceparent, so its failure is reported in its trace

    @classmethod
    def of(cls, job_id: str, source: str, stage: str, error: BaseException | str,
           attempt: int = 1, trace_context: str | None = None) -> "Failure":
        if isinstance(error, BaseException):
            error_type, message = type(error).__name__, str(error)
        else:
            error_type, message = "Error", str(error)
        return cls(job_id, source, stage, error_type, " ".join(message.split()), attempt, trace_context)

    @property
    def reason(self) -> str:
        """One line: `stage: ErrorType: message`."""
        return f"{self.stage}: {self.error_type}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"stage": self.stage, "type": self.error_type, "message": self.message}


@dataclasses.dataclass
class JobStatus:
    """One job's status document (one per job id)."""

    job_id: str
    state: JobState = JobState.QUEUED
    attempt: int = 1
    owner: str = ""
    operation: str = ""
    input: str = ""
    output: str = ""
    metadata: str | None = None
    chunks_done: int = 0
    chunks_total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    ratio: float | None = None
    error: dict[str, str] | None = None
    times: dict[str, str] = dataclasses.field(default_factory=dict)  # state -> when it was entered
    heartbeat: str | None = None
    updated: str | None = None
    request: dict[str, Any] | None = None  # the JobRequest, so the reconciler can publish it again
    # Every transition as {state, attempt, at}, oldest first (bounded: _with_entry); `times` keeps
    # only the last time of each state, which a re-queued job overwrites.
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # When its owner deleted the job: hidden from then on, the document itself purged later
    # (the reconciler), so that a worker that was still running it finds it CANCELLED, not missing.
    deleted: str | None = None

    @classmethod
    def queued(cls, request: JobRequest) -> "JobStatus":
        now = utc_now()
        return cls(request.job_id, JobState.QUEUED, request.attempt, request.owner, request.operation,
                   request.input_uri, request.output_uri, times={JobState.QUEUED.value: now}, updated=now,
                   request=request.to_dict(), history=[_entry(JobState.QUEUED, request.attempt, now)])

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "JobStatus":
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        known["state"] = JobState(known.get("state", JobState.QUEUED))
        return cls(**known)


class TransitionRefused(Exception):
    """A status change the rules do not allow (a duplicate, a stale attempt, a finished job)."""


def check_transition(current: JobStatus | None, state: JobState, attempt: int) -> None:
    """Raises TransitionRefused unless `current` may move to `state` for `attempt`.

    Only forward moves: QUEUED -> RUNNING (the claim, once per attempt), RUNNING -> a terminal
    state, QUEUED -> FAILED or CANCELLED; a re-queue (QUEUED or RUNNING -> QUEUED) only for the
    next attempt. Nothing moves a terminal job, and an older attempt never moves a newer one.
    """
    if current is None:
        raise TransitionRefused("no such job")
    if current.terminal:
        raise TransitionRefused(f"job is already {current.state.value}")
    if attempt < current.attempt:
        raise TransitionRefused(f"attempt {attempt} is stale: the job is on attempt {current.attempt}")
    if state is JobState.QUEUED:
        if attempt != current.attempt + 1:
            raise TransitionRefused(f"a re-queue must be for attempt {current.attempt + 1}, got {attempt}")
        return
    if attempt != current.attempt:
        raise TransitionRefused(f"attempt {attempt} is not the job's attempt {current.attempt}")
    if state is JobState.RUNNING and current.state is not JobState.QUEUED:
        raise TransitionRefused(f"attempt {attempt} was already claimed")
    if state is JobState.SUCCEEDED and current.state is not JobState.RUNNING:
        raise TransitionRefused("only a running job can succeed")


def transitioned(current: JobStatus | None, state: JobState, attempt: int, **fields) -> JobStatus:
    """The status after moving `current` to `state` for `attempt` (check_transition decides, and
    raises TransitionRefused): `fields` set, the state's time recorded, a heartbeat on a claim.
    What every status store writes in its transaction, so the fakes and the real one agree."""
    check_transition(current, state, attempt)
    now = utc_now()
    updated = dataclasses.replace(current, **fields, state=state, attempt=attempt,
                                  times={**current.times, state.value: now}, updated=now,
                                  history=_with_entry(current.history, _entry(state, attempt, now)))
    if state is JobState.RUNNING:
        updated.heartbeat = now
    return updated


def _entry(state: JobState, attempt: int, at: str) -> dict[str, Any]:
    return {"state": state.value, "attempt": attempt, "at": at}


def _with_entry(history: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """`history` + `entry`, at most HISTORY_LIMIT long: the first entry (when the job was queued)
    and the latest ones are kept, what a reader needs to tell how it began and how it ended."""
    history = [*(history or []), entry]
    if len(history) > HISTORY_LIMIT:
        history = [history[0], *history[len(history) - HISTORY_LIMIT + 1:]]
    return history


def marked_deleted(current: JobStatus | None) -> JobStatus | None:
    """The status after its owner deleted the job: a queued or running job is cancelled in the same
    write, a finished one keeps its state. None (nothing to write) for a missing or deleted job."""
    if current is None or current.deleted:
        return None
    updated = current if current.terminal else transitioned(current, JobState.CANCELLED, current.attempt)
    now = utc_now()
    return dataclasses.replace(updated, deleted=now, updated=now)
