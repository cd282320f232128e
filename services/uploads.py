"""Uploads into jobs: a streamed body goes to storage as it arrives (byte histogram counted on the way),
then the job is submitted; also jobs on objects already in the bucket. Limits are enforced here."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import threading
import time
import re
from typing import AsyncIterator

import anyio.to_thread
import numpy as np

from adapters.jobs import COMPRESS, JOB_ID_PATTERN, OPERATIONS, JobRequest, JobState, JobStatus, new_job_id, utc_now
from adapters.messages import encode_frequency_table
from codec.counting import byte_histogram
from codec.sizes import parse_size
from services import jobs

__all__ = ["UploadLimits", "UploadSlots", "TooManyUploads", "UploadTooLarge", "UploadStalled",
           "UploadInterrupted", "JobPaths", "job_paths", "safe_filename", "receive_upload",
           "submit_upload", "submit_stored", "submit_request", "job_prefix", "check_operation",
           "check_readable", "output_name", "FILENAME_PATTERN", "UploadIncomplete", "open_direct_upload",
           "complete_direct_upload", "pending_record", "pending_job_id", "PENDING_DIR"]

log = logging.getLogger("dcas.uploads")
SUFFIX = ".dcz"


class TooManyUploads(Exception):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UploadTooLarge(Exception):
    """The body is (or declares itself) larger than the limit."""


class UploadStalled(Exception):
    """The client sent nothing for longer than the stall timeout."""


class UploadInterrupted(Exception):
    """The client went away before the end of the body."""


class UploadIncomplete(Exception):
    """A direct upload is confirmed before its object is complete."""


@dataclasses.dataclass(frozen=True)
class UploadLimits:
    """How much one Manager accepts; `from_env` reads DCAS_MAX_UPLOAD (a size like 5G) and friends."""

    max_size: int = 5 * 2**30
    per_owner: int = 4
    total: int = 16
    stall_timeout: float = 30.0
    # One resumable-upload chunk (a multiple of 256 KiB). GCS advises 8 MiB or more; fake-gcs-server
    # copies what it holds on every chunk, so small chunks cost it dearly (docs/benchmarks.md).
    buffer_size: int = 8 * 2**20
    retry_after: int = 5

    def __post_init__(self) -> None:
        if self.buffer_size <= 0 or self.buffer_size % (256 * 1024):
            raise ValueError(f"the upload buffer must be a multiple of 256 KiB (GCS's resumable chunks), "
                             f"got {self.buffer_size}")

    @classmethod
    def from_env(cls, environ=os.environ) -> "UploadLimits":
        default = cls()
        return cls(
            max_size=parse_size(environ.get("DCAS_MAX_UPLOAD", str(default.max_size))),
            per_owner=int(environ.get("DCAS_UPLOADS_PER_OWNER", default.per_owner)),
            total=int(environ.get("DCAS_UPLOADS_TOTAL", default.total)),
            stall_timeout=float(environ.get("DCAS_UPLOAD_STALL_SECONDS", default.stall_timeout)),
            buffer_size=parse_size(environ.get("DCAS_UPLOAD_BUFFER", str(default.buffer_size))))


class UploadSlots:
    """Counts uploads in flight per owner and in total; a full count refuses at once (no queueing:
    a waiting upload would hold its connection and buffer anyway)."""

    def __init__(self, per_owner: int, total: int, retry_after: int = 5) -> None:
        self.per_owner, self.total, self.retry_after = per_owner, total, retry_after
        self._by_owner: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        with self._lock:
            return sum(self._by_owner.values())

    def acquire(self, owner: str) -> None:
        with self._lock:
            if sum(self._by_owner.values()) >= self.total:
                raise TooManyUploads(f"the server has {self.total} uploads in progress; try again later",
                                     self.retry_after)
            if self._by_owner.get(owner, 0) >= self.per_owner:
                raise TooManyUploads(f"you have {self.per_owner} uploads in progress; wait for one to finish",
                                     self.retry_after)
            self._by_owner[owner] = self._by_owner.get(owner, 0) + 1

    def release(self, owner: str) -> None:
        with self._lock:
            left = self._by_owner.get(owner, 0) - 1
            if left > 0:
                self._by_owner[owner] = left
            else:
                self._by_owner.pop(owner, None)


# What a filename may hold: no control characters (C0, DEL, C1) and no line or paragraph separators,
# and at least one character that is not a dot or a slash. The HTTP schema carries the same rule.
FILENAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*[^\x00-\x1f\x7f-\x9f\u2028\u2029./\\][^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
_MAX_NAME_BYTES = 200  # the job's object names (prefix + name + suffixes) stay far below GCS's 1024
DEFAULT_FILENAME = "upload"
# Direct uploads not yet confirmed, one record each, in a folder of their own: listing it is how
# the reconciler finds abandoned ones (services.cleanup) without listing every job's objects.
PENDING_DIR = "uploads/"


def safe_filename(name: str | None) -> str:
    """The name a file is stored under inside its job's folder, so that `../x`, `/etc/x` and `a\\b`
    cannot leave it: the last path component that is a name (not empty, `.` or `..`), cut to its
    last 200 bytes. None gives `upload`. ValueError for a name holding a control character (NUL,
    a newline, ...) or nothing but dots and slashes."""
    if name is None:
        return DEFAULT_FILENAME
    if not re.fullmatch(FILENAME_PATTERN, name):
        raise ValueError("a filename must hold no control characters (NUL, newlines, ...) and more "
                         "than dots and slashes")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts:
        raise ValueError(f"{name!r} is not a file name")
    base = parts[-1]
    while len(base.encode("utf-8")) > _MAX_NAME_BYTES:
        base = base[1:]  # keep the end: the extension says what the file is
    return base


def output_name(filename: str, operation: str) -> str:
    if operation == COMPRESS:
        return filename + SUFFIX
    stem = filename[:-len(SUFFIX)] if filename.endswith(SUFFIX) else filename + ".out"
    return stem or "out"


@dataclasses.dataclass(frozen=True)
class JobPaths:
    """Where one job's objects live: all under `jobs/<job id>/` in the bucket."""

    prefix: str
    input: str
    table: str
    output: str

    @property
    def metadata(self) -> str:
        return self.output + ".meta.json"



def job_prefix(bucket: str, job_id: str) -> str:
    return f"gs://{bucket}/jobs/{job_id}/"


def pending_record(bucket: str, job_id: str) -> str:
    """A direct upload's record (owner, operation, name, session, when) until its job is submitted."""
    return f"gs://{bucket}/{PENDING_DIR}{job_id}.json"


def pending_job_id(record_uri: str) -> str:
    """The job id a pending_record() URI names."""
    return record_uri.rsplit("/", 1)[-1].removesuffix(".json")


def job_paths(bucket: str, job_id: str, filename: str, operation: str) -> JobPaths:
    prefix = job_prefix(bucket, job_id)
    return JobPaths(prefix, f"{prefix}in/{filename}", f"{prefix}in/{filename}.table.json",
                    f"{prefix}out/{output_name(filename, operation)}")


def check_operation(operation: str) -> str:
    if operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}, got {operation!r}")
    return operation


async def receive_upload(blobs, uri: str, chunks: AsyncIterator[bytes], limits: UploadLimits, *,
                         count: bool) -> tuple[int, np.ndarray | None]:
    """Streams `chunks` into a new object at `uri`; returns (size, byte histogram or None).

    Memory is one buffer of `limits.buffer_size` (one resumable-upload chunk), filled in place:
    when full it is counted and sent as it is on a worker thread, and the client waits meanwhile
    (nothing more is read). Uploads side by side keep storage busy; a second buffer per upload, to
    read while sending, would double the Manager's memory. On any error (too large, a stall, a
    client gone) the upload is aborted and nothing is left under `uri`.
    """
    upload = await anyio.to_thread.run_sync(blobs.open_upload, uri)
    histogram = np.zeros(256, dtype=np.uint64) if count else None
    size = 0

    def store(piece) -> None:
        if histogram is not None:
            histogram.__iadd__(byte_histogram(piece))
        upload.write(piece)

    try:
        buffer = bytearray(limits.buffer_size)  # allocated once: it never grows, never moves
        window = memoryview(buffer)  # assigning into a bytearray's slice copies the value first
        filled = 0
        iterator = chunks.__aiter__()
        while True:
            try:
                chunk = await asyncio.wait_for(iterator.__anext__(), limits.stall_timeout)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise UploadStalled(f"no data for {limits.stall_timeout:g} s; upload abandoned") from None
            size += len(chunk)
            if size > limits.max_size:
                raise UploadTooLarge(f"the upload is larger than the limit of {limits.max_size} bytes")
            rest = memoryview(chunk)
            while rest:
                taken = min(len(rest), limits.buffer_size - filled)
                window[filled:filled + taken] = rest[:taken]
                filled += taken
                rest = rest[taken:]
                if filled == limits.buffer_size:
                    # Whole chunks only: the resumable upload sends each as it is.
                    await anyio.to_thread.run_sync(store, window.toreadonly())
                    filled = 0
        if filled:
            await anyio.to_thread.run_sync(store, window[:filled].toreadonly())
        await anyio.to_thread.run_sync(upload.commit)
    except BaseException:
        # Shielded: a cancelled request must still not leave a session or an object behind.
        await asyncio.shield(anyio.to_thread.run_sync(upload.abort))
        raise
    return size, histogram


def submit_request(adapters, request: JobRequest) -> JobStatus:
    """services.jobs.submit (QUEUED status first, then the message). A job whose message could not
    be sent now is still accepted: it stays QUEUED and the reconciler publishes it again."""
    try:
        return jobs.submit(adapters, request)
    except jobs.JobError:
        status = adapters.status.get(request.job_id)
        if status is not None and status.state is JobState.QUEUED:
            return status
        raise


async def submit_upload(adapters, bucket: str, limits: UploadLimits, slots: UploadSlots, owner: str,
                        operation: str, filename: str | None, chunks: AsyncIterator[bytes],
                        content_length: int | None = None, trace_context: str | None = None) -> JobStatus:
    """A streamed body -> stored input (+ its frequency table for compress) -> submitted job."""
    check_operation(operation)
    name = safe_filename(filename)
    if content_length is not None and content_length > limits.max_size:
        raise UploadTooLarge(f"the upload ({content_length} bytes) is larger than the limit of "
                             f"{limits.max_size} bytes")
    slots.acquire(owner)
    try:
        job_id = new_job_id()
        paths = job_paths(bucket, job_id, name, operation)
        began = time.perf_counter()
        size, histogram = await receive_upload(adapters.blobs, paths.input, chunks, limits,
                                               count=operation == COMPRESS)
        received = time.perf_counter()
        try:
            table_uri = None
            if histogram is not None:
                await anyio.to_thread.run_sync(adapters.blobs.write_bytes, paths.table,
                                               encode_frequency_table(histogram, size), "application/json")
                table_uri = paths.table
            request = JobRequest(job_id, operation, paths.input, paths.output, owner=owner,
                                 table_uri=table_uri, requested_at=utc_now(), trace_context=trace_context)
            status = await anyio.to_thread.run_sync(submit_request, adapters, request)
            log.info(json.dumps({"event": "upload-accepted", "job_id": job_id, "owner": owner, "bytes": size,
                                 "trace": trace_context,
                                 "receive_s": round(received - began, 3),
                                 "submit_s": round(time.perf_counter() - received, 3)}),
                     extra={"job_id": job_id})
            return status
        except BaseException:
            await asyncio.shield(anyio.to_thread.run_sync(adapters.blobs.delete_prefix, paths.prefix))
            raise
    finally:
        slots.release(owner)


def open_direct_upload(adapters, bucket: str, limits: UploadLimits, owner: str, operation: str,
                       filename: str | None, size: int | None = None) -> dict:
    """For files too large to pass through us: a resumable-upload session the client sends the
    bytes to itself, and a record of what it is for. No job exists until complete_direct_upload()."""
    check_operation(operation)
    name = safe_filename(filename)
    if size is not None and size > limits.max_size:
        raise UploadTooLarge(f"the upload ({size} bytes) is larger than the limit of {limits.max_size} bytes")
    job_id = new_job_id()
    paths = job_paths(bucket, job_id, name, operation)
    url = adapters.blobs.start_session(paths.input, size=size)
    # The session is kept so that an upload never confirmed can be ended when it expires.
    record = {"owner": owner, "operation": operation, "filename": name, "size": size, "opened": utc_now(),
              "session": url}
    adapters.blobs.write_bytes(pending_record(bucket, job_id), json.dumps(record).encode(), "application/json")
    return {"job_id": job_id, "upload_url": url}


def complete_direct_upload(adapters, bucket: str, limits: UploadLimits, owner: str, job_id: str,
                           trace_context: str | None = None) -> JobStatus:
    """The client says its direct upload is done: check the object, then submit its job. The
    pipeline counts the frequency table itself (the bytes never passed through here)."""
    prefix = job_prefix(bucket, job_id)
    if not JOB_ID_PATTERN.fullmatch(job_id or ""):
        raise LookupError(f"no such upload: {job_id}")
    try:
        record = json.loads(b"".join(adapters.blobs.read_chunks(pending_record(bucket, job_id))))
    except FileNotFoundError:
        record = None
    if record is None or record.get("owner") != owner:
        # Another owner's looks like none at all; so does one that expired unconfirmed.
        raise LookupError(f"no such upload: {job_id} (never opened, already confirmed or expired)")
    paths = job_paths(bucket, job_id, record["filename"], record["operation"])
    size = adapters.blobs.size(paths.input)
    if size is None:
        raise UploadIncomplete(f"the upload of {job_id} has not finished: send the rest to its upload_url")
    if size > limits.max_size:
        adapters.blobs.delete_prefix(prefix)
        adapters.blobs.delete_prefix(pending_record(bucket, job_id))
        raise UploadTooLarge(f"the upload ({size} bytes) is larger than the limit of {limits.max_size} bytes")
    request = JobRequest(job_id, record["operation"], paths.input, paths.output, owner=owner,
                         requested_at=utc_now(), trace_context=trace_context)
    status = submit_request(adapters, request)
    adapters.blobs.delete_prefix(pending_record(bucket, job_id))
    return status


def submit_stored(adapters, bucket: str, owner: str, operation: str, input_uri: str,
                  filename: str | None = None, trace_context: str | None = None) -> JobStatus:
    """A job on an object already in the bucket: the owner's own job folders, or `owners/<owner>/`."""
    check_operation(operation)
    if not isinstance(input_uri, str) or not input_uri:
        raise ValueError("'input' must name an object, e.g. gs://BUCKET/owners/OWNER/file")
    if not input_uri.startswith("gs://"):
        input_uri = f"gs://{bucket}/{input_uri.lstrip('/')}"
    check_readable(adapters, bucket, owner, input_uri)
    size = adapters.blobs.size(input_uri)
    if size is None:
        raise LookupError(f"no such object: {input_uri}")
    name = safe_filename(filename or input_uri.rsplit("/", 1)[-1])
    job_id = new_job_id()
    paths = job_paths(bucket, job_id, name, operation)
    request = JobRequest(job_id, operation, input_uri, paths.output, owner=owner,
                         requested_at=utc_now(), trace_context=trace_context)
    return submit_request(adapters, request)


def check_readable(adapters, bucket: str, owner: str, uri: str) -> None:
    """PermissionError unless `owner` may name `uri` as an input (LookupError hides other owners'
    jobs the same way a missing one is hidden)."""
    own = f"gs://{bucket}/owners/{owner}/"
    jobs = f"gs://{bucket}/jobs/"
    if any(part in ("", ".", "..") for part in uri[len("gs://"):].split("/")[1:]):
        # Literal names on GCS, but tools that normalise paths would read them as a way out.
        raise PermissionError(f"{uri!r} is not a plain object name (no empty, '.' or '..' parts)")
    if uri.startswith(own) and len(uri) > len(own):
        return
    if uri.startswith(jobs):
        job_id = uri[len(jobs):].split("/", 1)[0]
        status = adapters.status.get(job_id)
        if status is not None and status.owner == owner:
            return
        raise LookupError(f"no such object: {uri}")
    raise PermissionError(f"inputs must be under gs://{bucket}/owners/{owner}/ or in one of your jobs")
