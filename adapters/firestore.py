"""The status store on Firestore: one document per job, every change in a transaction under adapters.jobs.check_transition."""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from google.api_core import exceptions

from adapters import tracing
from adapters.jobs import JobState, JobStatus, marked_deleted, transitioned, utc_now
from adapters.retries import CALL_TIMEOUT, firestore_retry

__all__ = ["COMPOSITE_INDEXES", "FirestoreStatusSpec", "FirestoreStatusStore", "KeptListener"]

# A transaction that loses a race is re-run (with a fresh read) this many times in all; one
# writer per job document keeps races rare, so running out means something is wrong.
_TRANSACTION_ATTEMPTS = 10
_QUEUED_AT = f"times.{JobState.QUEUED.value}"

# The composite indexes the queries below need on a real project, as (field, order) pairs: equality
# fields first, then the range or ordering ones. `dcas setup` creates them; the emulator needs none.
COMPOSITE_INDEXES: tuple[tuple[tuple[str, str], ...], ...] = (
    (("owner", "ASCENDING"), (_QUEUED_AT, "DESCENDING"), ("job_id", "DESCENDING")),                # list_jobs
    (("owner", "ASCENDING"), ("state", "ASCENDING"), (_QUEUED_AT, "DESCENDING"), ("job_id", "DESCENDING")),
    (("state", "ASCENDING"), ("updated", "ASCENDING")),                                           # stale_jobs
    (("state", "ASCENDING"), ("heartbeat", "ASCENDING")),
)


class FirestoreStatusStore:
    """The StatusStore port on Firestore (native mode). The client honours FIRESTORE_EMULATOR_HOST.

    Times are the ISO strings of adapters.jobs.utc_now, as JobStatus holds them, so they compare
    as strings in queries the same way the in-memory fake compares them.

    On a real project the queries need the composite indexes COMPOSITE_INDEXES lists (`dcas
    setup` creates them; the emulator needs none). Firestore's error for a missing one carries
    the link that creates it.
    """

    def __init__(self, project: str, collection: str = "jobs") -> None:
        from google.cloud import firestore
        self._firestore = firestore
        self._client = firestore.Client(project=project)
        self._jobs = self._client.collection(collection)
        self._call = {"retry": firestore_retry(), "timeout": CALL_TIMEOUT}

    def create(self, status: JobStatus) -> bool:
        data = status.to_dict()
        try:
            with tracing.span("status create", job_id=status.job_id, state=status.state.value):
                self._jobs.document(status.job_id).create(data, **self._call)
            return True
        except exceptions.Conflict:  # AlreadyExists
            # A retried create whose first try did land finds its own document: same to the microsecond.
            existing = self._jobs.document(status.job_id).get(**self._call)
            return existing.exists and existing.to_dict() == data

    def get(self, job_id: str) -> JobStatus | None:
        snapshot = self._jobs.document(job_id).get(**self._call)
        return JobStatus.from_dict(snapshot.to_dict()) if snapshot.exists else None

    def transition(self, job_id: str, state: JobState, attempt: int, **fields) -> JobStatus:
        # A span only inside a job's trace (tracing.span joins the current span, if any).
        with tracing.span(f"status {state.value}", job_id=job_id, attempt=attempt):
            return self._in_transaction(job_id, lambda current: transitioned(current, state, attempt, **fields))

    def record_progress(self, job_id: str, attempt: int, *, chunks_done: int, chunks_total: int,
                        bytes_in: int, bytes_out: int) -> bool:
        def change(current: JobStatus | None) -> JobStatus | None:
            if current is None or current.state is not JobState.RUNNING or current.attempt != attempt:
                return None
            now = utc_now()
            return dataclasses.replace(
                current, chunks_done=max(current.chunks_done, chunks_done),
                chunks_total=max(current.chunks_total, chunks_total),
                bytes_in=max(current.bytes_in, bytes_in), bytes_out=max(current.bytes_out, bytes_out),
                heartbeat=now, updated=now)
        with tracing.span("status progress", job_id=job_id, attempt=attempt, chunks_done=chunks_done):
            return self._in_transaction(job_id, change) is not None

    def list_jobs(self, owner: str, state: JobState | None = None, limit: int = 50,
                  cursor: str | None = None) -> tuple[list[JobStatus], str | None]:
        direction = self._firestore.Query.DESCENDING
        query = self._jobs.where(filter=self._field("owner", "==", owner))
        if state is not None:
            query = query.where(filter=self._field("state", "==", state.value))
        query = query.order_by(_QUEUED_AT, direction=direction).order_by("job_id", direction=direction)
        if cursor is not None:
            after = self._jobs.document(cursor).get(**self._call)
            if not after.exists:
                return [], None
            query = query.start_after(after)
        # Deleted jobs are skipped here rather than in the query: documents written before the
        # field existed have no `deleted` at all, which an `== None` filter would leave out.
        # Deleted ones are few (the reconciler purges them), so one batch nearly always does.
        found: list[JobStatus] = []
        while len(found) <= limit:
            batch = list(query.limit(limit + 1).stream(**self._call))
            statuses = (JobStatus.from_dict(snapshot.to_dict()) for snapshot in batch)
            found += [status for status in statuses if not status.deleted]
            if len(batch) <= limit:
                break
            query = query.start_after(batch[-1])
        page = found[:limit]
        return page, (page[-1].job_id if len(found) > limit and page else None)

    def stale_jobs(self, queued_before: str, heartbeat_before: str) -> list[JobStatus]:
        queued = (self._jobs.where(filter=self._field("state", "==", JobState.QUEUED.value))
                  .where(filter=self._field("updated", "<", queued_before)))
        running = (self._jobs.where(filter=self._field("state", "==", JobState.RUNNING.value))
                   .where(filter=self._field("heartbeat", "<", heartbeat_before)))
        return [JobStatus.from_dict(s.to_dict())
                for query in (queued, running) for s in query.stream(**self._call)]

    def mark_deleted(self, job_id: str) -> JobStatus | None:
        return self._in_transaction(job_id, marked_deleted)

    def deleted_jobs(self, deleted_before: str) -> list[JobStatus]:
        # A range filter matches only strings: documents whose `deleted` is null (or absent) are left out.
        query = self._jobs.where(filter=self._field("deleted", "<", deleted_before))
        return [JobStatus.from_dict(s.to_dict()) for s in query.stream(**self._call)]

    def purge(self, job_id: str) -> None:
        self._jobs.document(job_id).delete(**self._call)

    def watch(self, job_id: str, callback) -> "_SnapshotWatch":
        """Calls `callback(JobStatus | None)` with the document now and after every change, on
        the listener's own thread, until the returned watch is closed (Firestore's on_snapshot)."""
        watch = _SnapshotWatch(callback, read=lambda: self.get(job_id))

        def on_snapshot(snapshots, changes, read_time) -> None:
            for snapshot in snapshots:
                watch.deliver(JobStatus.from_dict(snapshot.to_dict()) if snapshot.exists else None)
        document = self._jobs.document(job_id)
        return watch.start(lambda: document.on_snapshot(on_snapshot))

    def close(self) -> None:
        self._client.close()

    def _field(self, path: str, op: str, value: Any):
        from google.cloud.firestore_v1.base_query import FieldFilter
        return FieldFilter(path, op, value)

    def _in_transaction(self, job_id: str, change):
        """Reads the job's document, applies `change` (which may raise, or return None to write
        nothing) and writes the result, all in one transaction; returns what `change` returned."""
        reference = self._jobs.document(job_id)

        @self._firestore.transactional
        def run(transaction):
            snapshot = reference.get(transaction=transaction, **self._call)
            updated = change(JobStatus.from_dict(snapshot.to_dict()) if snapshot.exists else None)
            if updated is not None:
                transaction.set(reference, updated.to_dict())
            return updated

        return run(self._client.transaction(max_attempts=_TRANSACTION_ATTEMPTS))


class KeptListener:
    """A Firestore listener that outlives its stream, with an optional poll beside it.

    The client library ends a listener for good when the server cancels the stream (the emulator
    does so under load, with RST_STREAM): this one then subscribes again. A listener can also stay
    up and miss a change (the emulator did, in long test sessions), so `poll`, if given, runs every
    `poll_every` seconds on the same thread; whoever uses both makes their deliveries idempotent."""

    def __init__(self, subscribe, poll=None, check_every: float = 0.5, poll_every: float = 5.0):
        self._subscribe, self._poll = subscribe, poll
        self._check_every, self._poll_every = check_every, poll_every
        self._closed = threading.Event()
        self._lock = threading.Lock()  # the listener's lifecycle
        self.watch: Any = None
        self.resubscriptions = 0
        self.polls = 0

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def start(self) -> "KeptListener":
        self.watch = self._subscribe()
        threading.Thread(target=self._keep_alive, name="dcas-watch-keepalive", daemon=True).start()
        return self

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            if self.watch is not None:
                self.watch.unsubscribe()

    def _keep_alive(self) -> None:
        next_poll = time.monotonic() + self._poll_every
        while not self._closed.wait(self._check_every):
            with self._lock:
                if not self._closed.is_set() and not self.watch.is_active:
                    try:
                        self.watch = self._subscribe()
                        self.resubscriptions += 1
                    except exceptions.GoogleAPICallError:
                        pass  # the next check tries again
            if self._poll is not None and time.monotonic() >= next_poll and not self._closed.is_set():
                next_poll = time.monotonic() + self._poll_every
                try:
                    self._poll()
                except Exception:  # noqa: BLE001 - unreachable, or closed meanwhile: the next poll tries again
                    continue
                self.polls += 1


class _SnapshotWatch:
    """A job document's listener (a KeptListener) that also reads the document every `read_every`
    seconds. Either way the document is delivered as it is now; `deliver` passes on only what is
    newer than what it passed on before (by `updated`), so a reader sees the states in order, each
    once, whichever path brought them."""

    def __init__(self, callback, read, check_every: float = 0.5, read_every: float = 5.0):
        self._callback, self._read = callback, read
        self._check_every, self._read_every = check_every, read_every
        self._delivering = threading.Lock()    # one delivery at a time, in order
        self._last: str | None = None          # `updated` of the last status passed on
        self._listener: KeptListener | None = None

    @property
    def resubscriptions(self) -> int:
        return self._listener.resubscriptions if self._listener else 0

    @property
    def reads(self) -> int:
        return self._listener.polls if self._listener else 0

    @property
    def watch(self) -> Any:
        return self._listener.watch if self._listener else None

    def start(self, subscribe) -> "_SnapshotWatch":
        self._listener = KeptListener(subscribe, self._read_and_deliver, self._check_every, self._read_every)
        self._listener.start()
        return self

    def deliver(self, status: JobStatus | None) -> None:
        with self._delivering:
            if self._listener is not None and self._listener.closed:
                return
            if status is not None:
                if self._last is not None and (status.updated or "") <= self._last:
                    return
                self._last = status.updated or ""
            self._callback(status)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()

    def _read_and_deliver(self) -> None:
        status = self._read()
        if status is not None:
            self.deliver(status)


@dataclasses.dataclass(frozen=True)
class FirestoreStatusSpec:
    """What a DoFn holds instead of a Firestore client: picklable; open() in setup() builds the store."""

    project: str
    collection: str = "jobs"

    def open(self) -> FirestoreStatusStore:
        return FirestoreStatusStore(self.project, self.collection)
