"""The job lifecycle through the ports: submit (status first, then the message), status, cancel, wait."""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

from adapters.jobs import Failure, JobRequest, JobState, JobStatus, TransitionRefused, new_job_id, utc_now
from codec.sizes import DEFAULT_CHUNK_SIZE
from services.bootstrap import Adapters

__all__ = ["JobError", "JobExistsError", "JobTimeoutError", "UnknownJobError", "cancel", "get_status",
           "new_request", "submit", "wait"]

log = logging.getLogger("dcas.jobs")


class JobError(Exception):
    """A job request the service cannot take or answer; the message is one line for a person."""


class UnknownJobError(JobError):
    pass


class JobExistsError(JobError):
    pass


class JobTimeoutError(JobError):
    pass


def new_request(src: str, dst: str, *, decompress: bool = False, job_id: str | None = None,
                chunk_size: int = DEFAULT_CHUNK_SIZE, owner: str = "") -> JobRequest:
    """A job request for objects in storage; JobError says what is wrong with the arguments."""
    for name, uri in (("input", src), ("output", dst)):
        bucket, _, key = uri.removeprefix("gs://").partition("/")
        if not uri.startswith("gs://") or not bucket or not key or key.endswith("/"):
            raise JobError(f"the job service reads and writes objects in storage: the {name} must be "
                           f"gs://BUCKET/NAME, got {uri!r} (use `dcas compress` for local files)")
    try:
        return JobRequest(job_id or new_job_id(), "decompress" if decompress else "compress", src, dst,
                          owner=owner, chunk_size=chunk_size, requested_at=utc_now())
    except ValueError as e:
        raise JobError(str(e)) from None


def submit(adapters: Adapters, request: JobRequest) -> JobStatus:
    """Writes the job's QUEUED status document, then publishes its message.

    The document comes first so that a published job always has one to claim; a job id that
    exists is refused. A message the queue refuses (schema, missing topic) fails the job with the
    reason; one that could not be sent for another reason leaves the job QUEUED, for the
    reconciler to publish again.
    """
    if not request.requested_at:
        request = dataclasses.replace(request, requested_at=utc_now())
    status = JobStatus.queued(request)
    if not adapters.status.create(status):
        existing = adapters.status.get(request.job_id)
        state = f" ({existing.state.value})" if existing else ""
        raise JobExistsError(f"job {request.job_id} exists{state}: pick another --job-id")
    try:
        adapters.queue.publish(request)
    except (ValueError, LookupError) as e:
        failure = Failure.of(request.job_id, request.input_uri, "submit", e)
        status = adapters.status.transition(request.job_id, JobState.FAILED, request.attempt,
                                            error=failure.to_dict())
        raise JobError(f"job {request.job_id} could not be queued: {e}") from None
    except Exception as e:
        log.warning("job %s stays QUEUED: publish failed: %s", request.job_id, e,
                    extra={"job_id": request.job_id})
        raise JobError(f"job {request.job_id} is recorded but its message could not be sent now "
                       f"({type(e).__name__}: {e}); the reconciler will send it again") from None
    log.info("job %s queued", request.job_id, extra={"job_id": request.job_id})
    return status


def get_status(adapters: Adapters, job_id: str) -> JobStatus:
    status = adapters.status.get(job_id)
    if status is None:
        raise UnknownJobError(f"no such job: {job_id}")
    return status


def cancel(adapters: Adapters, job_id: str) -> JobStatus:
    """QUEUED or RUNNING -> CANCELLED; a finished job stays as it is (JobError says why)."""
    current = get_status(adapters, job_id)
    try:
        return adapters.status.transition(job_id, JobState.CANCELLED, current.attempt)
    except TransitionRefused as e:
        raise JobError(f"job {job_id} cannot be cancelled: {e}") from None


def wait(adapters: Adapters, job_id: str, timeout: float | None = None, *, poll_interval: float = 0.5,
         on_update: Callable[[JobStatus], None] | None = None,
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> JobStatus:
    """Polls the job's status until it is terminal and returns it; `on_update` sees each read.
    JobTimeoutError after `timeout` seconds (None: no limit)."""
    deadline = None if timeout is None else clock() + timeout
    while True:
        status = get_status(adapters, job_id)
        if on_update is not None:
            on_update(status)
        if status.terminal:
            return status
        if deadline is not None and clock() >= deadline:
            raise JobTimeoutError(f"job {job_id} is still {status.state.value} after {timeout:g} s")
        sleep(poll_interval)
