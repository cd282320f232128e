"""The ports: what service functions and DoFns ask of the queue, the status store, blobs, API keys and IAM, as small Protocols."""
from __future__ import annotations

from typing import Callable, Iterator, Protocol

from adapters.jobs import Failure, JobRequest, JobState, JobStatus

__all__ = ["AdapterSpec", "BlobStore", "BlobUpload", "IamAdmin", "JobQueue", "KeyStore", "StatusStore", "StatusWatcher",
           "Watch"]


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
        """The owner's jobs, newest first, and the cursor of the next page (None at the end).
        Deleted jobs are left out."""

    def mark_deleted(self, job_id: str) -> JobStatus | None:
        """Marks the job deleted (adapters.jobs.marked_deleted: a queued or running job is cancelled
        in the same transaction); returns the new status, None if it is missing or already deleted."""

    def deleted_jobs(self, deleted_before: str) -> list[JobStatus]:
        """Jobs marked deleted before `deleted_before` (an ISO time): what purge() may remove."""

    def purge(self, job_id: str) -> None:
        """Removes the job's document for good (after its objects are gone)."""

    def stale_jobs(self, queued_before: str, heartbeat_before: str) -> list[JobStatus]:
        """Jobs QUEUED since before `queued_before`, or RUNNING with a heartbeat (or claim)
        older than `heartbeat_before` (ISO times, as adapters.jobs.utc_now writes them)."""


class AdapterSpec(Protocol):
    """What a DoFn holds instead of a client: small, picklable settings whose `open()` (called in
    the DoFn's setup()) builds the adapter, e.g. adapters.memory.MemorySpec in unit tests."""

    def open(self): ...


class Watch(Protocol):
    """A running listener; close() stops it (no callback runs after close() returns)."""

    def close(self) -> None: ...


class StatusWatcher(Protocol):
    """Real-time readers of one job's status document (Firestore's on_snapshot)."""

    def watch(self, job_id: str, callback: Callable[[JobStatus | None], None]) -> Watch:
        """Calls `callback` with the document now and after every change, on another thread
        (None while the document does not exist) until the returned Watch is closed."""


class BlobUpload(Protocol):
    """One object being written in pieces: nothing is visible under its name before commit()."""

    def write(self, data: bytes) -> None: ...

    def commit(self) -> int:
        """Finishes the upload; returns the object's size. The object exists only after this."""

    def abort(self) -> None:
        """Gives the upload up; no object is left. Safe to call after a failed write or twice."""


class BlobStore(Protocol):
    """Objects the services read and write directly (uploads, tables, results), by gs:// URI."""

    def open_upload(self, uri: str, content_type: str = "application/octet-stream") -> BlobUpload: ...

    def write_bytes(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    def size(self, uri: str) -> int | None:
        """The object's size, None when it does not exist."""

    def read_chunks(self, uri: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes [start, end) (to the end when None) in pieces of bounded size."""

    def delete_prefix(self, prefix: str) -> int:
        """Deletes every object whose URI starts with `prefix`; returns how many."""

    def start_session(self, uri: str, content_type: str = "application/octet-stream",
                      size: int | None = None) -> str:
        """A resumable-upload session for a new object at `uri`, as a URL a client sends the bytes
        to itself (they never pass through us); the object exists once the client has finished."""

    def cancel_session(self, url: str) -> None:
        """Ends a session start_session() opened: the client can no longer finish it (a session
        that finished or is gone already is not an error)."""

    def list_prefix(self, prefix: str) -> Iterator[str]:
        """The URIs of the objects whose URI starts with `prefix`."""


class KeyStore(Protocol):
    """API keys by their SHA-256 (the keys themselves are never stored), one owner each."""

    def add(self, key_hash: str, owner: str) -> None: ...

    def owner_of(self, key_hash: str) -> str | None: ...

    def records(self, owner: str | None = None) -> list[dict]:
        """Every key (or `owner`'s): dicts of `hash`, `owner`, `created`."""

    def remove(self, key_hash: str) -> bool:
        """Forgets the key (it authenticates no one from now on); False if it was not there."""

    def watch_removals(self, callback: Callable[[str], None]) -> Watch:
        """Calls `callback(key_hash)` for each key removed from now on (by any process), on another
        thread, until the returned Watch is closed: how a cache of found keys forgets them at once."""


class IamAdmin(Protocol):
    """Service accounts, and the IAM policies of what `dcas setup` grants roles on. A policy is the
    JSON shape of getIamPolicy (version, etag, bindings of role, members and condition); a
    resource is `projects/P`, `projects/P/serviceAccounts/EMAIL`, `gs://BUCKET`, a topic or a
    subscription. Failures raise google.api_core exceptions (Forbidden, NotFound, Aborted...)."""

    def service_account(self, email: str) -> dict | None:
        """The service account, or None if it does not exist."""

    def create_service_account(self, project: str, account_id: str, display_name: str) -> dict:
        """Creates it; raises Conflict (AlreadyExists) if it exists."""

    def project_number(self, project: str) -> str: ...

    def get_policy(self, resource: str) -> dict:
        """The resource's policy, with conditions (requested policy version 3)."""

    def set_policy(self, resource: str, policy: dict) -> dict:
        """Replaces the policy; refused (Aborted, Conflict or PreconditionFailed) when its etag is
        not the current one, so a concurrent change is never overwritten."""
