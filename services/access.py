"""An owner's view of jobs: read, list, cancel and delete, results by byte range, status events."""
from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import AsyncIterator

import anyio.to_thread

from adapters.jobs import COMPRESS, JOB_ID_PATTERN, JobState, JobStatus, TransitionRefused
from services.uploads import job_prefix

__all__ = ["JobNotFound", "NotReady", "RangeNotSatisfiable", "Result", "StatusReads", "owned_job", "list_owned",
           "cancel_owned", "delete_owned", "parse_range", "open_result", "result_metadata", "status_events",
           "public_status"]


class JobNotFound(LookupError):
    """No such job for this owner: another owner's job looks exactly like a missing one."""


class NotReady(Exception):
    """The job has no result (yet, or any more)."""


class RangeNotSatisfiable(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"the range is outside the result's {size} bytes")
        self.size = size


def owned_job(status_store, owner: str, job_id: str, *, deleted: bool = False) -> JobStatus:
    """The owner's job; JobNotFound for another owner's, a missing one, and (unless `deleted`) a
    deleted one."""
    return _visible(status_store.get(job_id) if _plausible_id(job_id) else None, owner, job_id, deleted)


def _visible(status: JobStatus | None, owner: str, job_id: str, deleted: bool = False) -> JobStatus:
    """`status` if `owner` may see it, else JobNotFound: the one ownership rule of every route."""
    if status is None or status.owner != owner or (status.deleted and not deleted):
        raise JobNotFound(f"no such job: {job_id}")
    return status


class StatusReads:
    """Status reads for the HTTP routes, on the event loop: requests for one job that arrive while
    its document is being read share the next read, which starts when that one ends. Every answer
    comes from a read that started after its request arrived (nothing is cached), and one job
    polled by many clients costs one store read at a time instead of one per request."""

    def __init__(self, status_store) -> None:
        self._store = status_store
        self._reading: set[str] = set()
        self._next: dict[str, asyncio.Future] = {}  # the read after the one in progress
        self._tasks: set[asyncio.Task] = set()

    async def owned(self, owner: str, job_id: str) -> JobStatus:
        """owned_job(), sharing reads."""
        return _visible(await self._read(job_id) if _plausible_id(job_id) else None, owner, job_id)

    async def _read(self, job_id: str) -> JobStatus | None:
        if job_id in self._reading:
            later = self._next.get(job_id)
            if later is None:
                later = self._next[job_id] = asyncio.get_running_loop().create_future()
                later.add_done_callback(_retrieve)
            return await asyncio.shield(later)
        first = asyncio.get_running_loop().create_future()
        first.add_done_callback(_retrieve)
        self._reading.add(job_id)
        task = asyncio.ensure_future(self._reads(job_id, first))
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(first)

    async def _reads(self, job_id: str, answer: asyncio.Future | None) -> None:
        try:
            while answer is not None:
                try:
                    answer.set_result(await anyio.to_thread.run_sync(self._store.get, job_id))
                except Exception as e:  # noqa: BLE001 - every request waiting on this read gets it
                    answer.set_exception(e)
                answer = self._next.pop(job_id, None)
        finally:
            self._reading.discard(job_id)
            for left in (answer, self._next.pop(job_id, None)):  # only if this task was cancelled
                if left is not None and not left.done():
                    left.cancel()


def _retrieve(future: asyncio.Future) -> None:
    """Marks a shared read's failure as seen: its requests may all have gone away."""
    if not future.cancelled():
        future.exception()


def _plausible_id(job_id: str) -> bool:
    return bool(JOB_ID_PATTERN.fullmatch(job_id or ""))


def list_owned(status_store, owner: str, state: str | None, limit: int, cursor: str | None):
    if state is not None:
        try:
            state = JobState(state.upper())
        except ValueError:
            raise ValueError(f"state must be one of {', '.join(s.value for s in JobState)}") from None
    if not 1 <= limit <= 200:
        raise ValueError("limit must be between 1 and 200")
    if cursor is not None:
        # A cursor is a job id of this owner's; anything else would let a caller page through ids.
        # One deleted since the last page still marks the place.
        owned_job(status_store, owner, cursor, deleted=True)
    return status_store.list_jobs(owner, state, limit, cursor)


def cancel_owned(status_store, owner: str, job_id: str) -> JobStatus:
    """QUEUED or RUNNING -> CANCELLED, objects kept; TransitionRefused once the job has finished."""
    for _ in range(3):
        status = owned_job(status_store, owner, job_id)
        try:
            return status_store.transition(job_id, JobState.CANCELLED, status.attempt)
        except TransitionRefused:
            # A re-queue moved it to the next attempt meanwhile: read again (a finished job refuses again).
            if status_store.get(job_id).terminal:
                raise
    raise TransitionRefused(f"job {job_id} keeps changing attempts; try again")


def delete_owned(adapters, bucket: str, owner: str, job_id: str) -> JobStatus:
    """Deletes the job: a queued or running one is cancelled, its objects are deleted, and from now
    on it is missing from the list and answers 404. Returns its last status.

    The document is marked, not removed, so a worker still running the job finds it CANCELLED and
    publishes nothing; the reconciler purges it (objects again, then the document) after a grace
    period, which also removes what a worker was writing at this very moment."""
    owned_job(adapters.status, owner, job_id)
    status = adapters.status.mark_deleted(job_id)
    if status is None:
        raise JobNotFound(f"no such job: {job_id}")  # deleted meanwhile by another request
    adapters.blobs.delete_prefix(job_prefix(bucket, job_id))
    return status


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=` range, None for the whole; RangeNotSatisfiable when
    it lies outside `size`. Multiple ranges are answered with the whole (as RFC 9110 allows)."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                raise RangeNotSatisfiable(size)
            return max(0, size - suffix), size
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None  # malformed: ignored, as a server may
    if start < 0 or start >= size or end <= start:
        raise RangeNotSatisfiable(size)
    return start, min(end, size)


@dataclasses.dataclass(frozen=True)
class Result:
    uri: str
    size: int
    filename: str


def open_result(adapters, owner: str, job_id: str) -> Result:
    status = owned_job(adapters.status, owner, job_id)
    if status.state is not JobState.SUCCEEDED:
        raise NotReady(f"job {job_id} is {status.state.value}, it has no result")
    size = adapters.blobs.size(status.output)
    if size is None:
        raise NotReady(f"the result of job {job_id} was deleted")
    return Result(status.output, size, status.output.rsplit("/", 1)[-1])


def result_metadata(adapters, owner: str, job_id: str) -> dict:
    """The metadata object a compress job writes beside its output (filename, sizes, ratio, CRCs)."""
    status = owned_job(adapters.status, owner, job_id)
    if status.operation != COMPRESS:
        raise NotReady(f"job {job_id} is a {status.operation} job; only compress jobs have metadata")
    if status.state is not JobState.SUCCEEDED:
        raise NotReady(f"job {job_id} is {status.state.value}, it has no metadata")
    uri = status.metadata or status.output + ".meta.json"
    try:
        data = b"".join(adapters.blobs.read_chunks(uri))
    except FileNotFoundError:
        raise NotReady(f"the metadata of job {job_id} was deleted") from None
    return json.loads(data)


_PUBLIC_FIELDS = tuple(f.name for f in dataclasses.fields(JobStatus) if f.name != "request")


def public_status(status: JobStatus, base_url: str = "") -> dict:
    """The status document as the API shows it: without the internal request copy."""
    # A shallow copy (to_dict deep-copies every field): the document is serialised at once.
    data = {name: getattr(status, name) for name in _PUBLIC_FIELDS}
    data["state"] = status.state.value
    data["filename"] = status.input.rsplit("/", 1)[-1]
    data["status_url"] = f"{base_url}/v1/jobs/{status.job_id}"
    data["result_url"] = f"{base_url}/v1/jobs/{status.job_id}/result"
    data["events_url"] = f"{base_url}/v1/jobs/{status.job_id}/events"
    return data


async def status_events(watcher, job_id: str, last_event_id: str | None = None,
                        keepalive: float = 15.0) -> AsyncIterator[JobStatus | None]:
    """The job's status after each change, from a listener, until a terminal state has been sent.

    An event's id is the document's `updated` time, so a client that reconnects with
    Last-Event-ID gets only newer states, and nothing at all if the one it saw was terminal.
    Yields None every `keepalive` seconds without a change (the route sends an SSE comment).
    """
    loop = asyncio.get_running_loop()
    changes: asyncio.Queue[JobStatus | None] = asyncio.Queue()
    watch = watcher.watch(job_id, lambda status: loop.call_soon_threadsafe(changes.put_nowait, status))
    try:
        seen = last_event_id or ""
        while True:
            try:
                status = await asyncio.wait_for(changes.get(), keepalive)
            except asyncio.TimeoutError:
                yield None
                continue
            if status is None:
                continue
            if (status.updated or "") <= seen:
                if status.terminal:
                    return
                continue
            seen = status.updated or ""
            yield status
            if status.terminal:
                return
    finally:
        watch.close()
