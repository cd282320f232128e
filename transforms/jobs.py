"""The job service's edges: job messages in, claims on the status store, given tables, dead letters out."""
from __future__ import annotations

import dataclasses
import json
import logging

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from adapters import tracing
from adapters.jobs import Failure, JobRequest, JobState, TransitionRefused
from adapters.tracing import trace_id_of
from adapters.messages import decode_job_message
from transforms.failures import FAILED
from transforms.frequencies import job_key
from transforms.observability import inc_counter, log_event
from transforms.planning import FileJob

__all__ = ["parse_message", "read_table", "ParseJobMessages", "ClaimJobs", "ReadGivenTables", "ReportFailures"]

_SYMBOLS = 256
_MAX_TABLE_BYTES = 1 << 20


def _attempt_attribute(attributes) -> int:
    try:
        return max(1, int((attributes or {}).get("attempt", 1)))
    except (TypeError, ValueError):
        return 1


def parse_message(data: bytes, attributes) -> JobRequest | tuple[bytes, Failure]:
    """The JobRequest in a message, or `(data, Failure)` saying why it is not one (stage "parse").

    The failure names the job its attributes name, if any, so that job can be marked FAILED.
    """
    try:
        return decode_job_message(data, attributes)
    except Exception as e:  # noqa: BLE001 - a bad message is a dead letter, never a crash
        attributes = attributes or {}
        return data, Failure.of(str(attributes.get("job_id", "")), "", "parse", e, _attempt_attribute(attributes))


def read_table(uri: str) -> np.ndarray:
    """A stored frequency table: a JSON list of 256 counts, or a JSON object holding one under
    "frequencies" (a container's `.meta.json` is one)."""
    with FileSystems.open(uri) as f:
        data = f.read(_MAX_TABLE_BYTES + 1)
    if len(data) > _MAX_TABLE_BYTES:
        raise ValueError(f"frequency table {uri} is larger than {_MAX_TABLE_BYTES} bytes")
    value = json.loads(data.decode("utf-8"))
    if isinstance(value, dict):
        value = value.get("frequencies")
    if (not isinstance(value, list) or len(value) != _SYMBOLS
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value)):
        raise ValueError(f"frequency table {uri} is not a list of {_SYMBOLS} counts "
                         f"(nor an object with one under 'frequencies')")
    return np.array(value, dtype=np.uint64)


class _ParseJobMessageFn(beam.DoFn):
    """PubsubMessage -> JobRequest; a bad one goes to FAILED as `(data, Failure)`."""

    def process(self, message):
        parsed = parse_message(message.data, message.attributes)
        if isinstance(parsed, JobRequest):
            inc_counter("messages-parsed")
            yield parsed
            return
        data, failure = parsed
        inc_counter("messages-bad")
        log_event("message-bad", failure.job_id, level=logging.ERROR, reason=failure.reason)
        yield beam.pvalue.TaggedOutput(FAILED, parsed)


class ParseJobMessages(beam.PTransform):
    """PubsubMessages (with attributes) -> `(requests, failures)`; failures are `(data, Failure)`."""

    def expand(self, messages):
        parsed = messages | "Parse message" >> beam.ParDo(_ParseJobMessageFn()).with_outputs(FAILED, main="requests")
        return parsed.requests, parsed[FAILED]


class _ClaimJobFn(beam.DoFn):
    """JobRequest -> itself once its attempt is claimed (QUEUED -> RUNNING, in a transaction).

    A duplicate or redelivered message, a stale attempt and a finished job are refused by the
    store's transition rule: dropped, counted and logged. A store error fails the job, and so does
    an attempt after `max_attempts`.
    """

    def __init__(self, status_spec, max_attempts: int):
        self._status_spec = status_spec
        self._max_attempts = max_attempts

    def setup(self):
        self._store = self._status_spec.open()

    def process(self, request: JobRequest):
        # Outputs are made inside the span and emitted after it: a span must not stay open across a yield.
        with tracing.span("claim", parent=request.trace_context, job_id=request.job_id, attempt=request.attempt):
            outputs = list(self._claim(request))
        yield from outputs

    def _claim(self, request: JobRequest):
        if request.attempt > self._max_attempts:
            yield beam.pvalue.TaggedOutput(FAILED, (request, Failure.of(
                request.job_id, request.input_uri, "claim", RuntimeError(
                    f"attempt {request.attempt} is over the limit of {self._max_attempts}"), request.attempt)))
            return
        try:
            self._store.transition(request.job_id, JobState.RUNNING, request.attempt)
        except TransitionRefused as e:
            inc_counter("claims-refused")
            log_event("claim-refused", request.job_id, attempt=request.attempt, reason=str(e))
            return
        except Exception as e:  # noqa: BLE001 - any error fails this job only
            yield beam.pvalue.TaggedOutput(FAILED, (request, Failure.of(
                request.job_id, request.input_uri, "claim", e, request.attempt)))
            return
        inc_counter("jobs-claimed")
        log_event("job-claimed", request.job_id, attempt=request.attempt, operation=request.operation,
                  input=request.input_uri, output=request.output_uri, trace_id=trace_id_of(request.trace_context))
        yield request


@dataclasses.dataclass
class ClaimJobs(beam.PTransform):
    """JobRequests -> `(claimed, failures)`: only requests whose attempt this pipeline now runs."""

    status_spec: object
    max_attempts: int = 3

    def expand(self, requests):
        claimed = requests | "Claim job" >> beam.ParDo(_ClaimJobFn(self.status_spec, self.max_attempts)).with_outputs(
            FAILED, main="claimed")
        return claimed.claimed, claimed[FAILED]


class _ReadGivenTableFn(beam.DoFn):
    """FileJob with a table_uri -> (job_key, table); an unreadable table fails the job."""

    def process(self, job: FileJob):
        try:
            table = read_table(job.table_uri)
        except Exception as e:  # noqa: BLE001 - any error fails this job only
            yield beam.pvalue.TaggedOutput(FAILED, job.failure("read table", e))
            return
        yield job_key(job), table


class ReadGivenTables(beam.PTransform):
    """FileJobs whose request names a table -> `(tables, failures)`, tables as `(job_key, table)`."""

    def expand(self, jobs):
        read = jobs | "Read table" >> beam.ParDo(_ReadGivenTableFn()).with_outputs(FAILED, main="tables")
        return read.tables, read[FAILED]


class _ReportFailureFn(beam.DoFn):
    """Failure, or `(message data or request, Failure)` -> the job FAILED with the failure's fields,
    and the message with the reason on the dead-letter topic; emits the Failure.

    Only the first failure of an attempt moves the job (the transition rule refuses the others),
    and only that one is dead-lettered, with the request kept in the job's status document. A bad
    message is always dead-lettered. Errors of the store or the queue are logged, never raised.
    """

    def __init__(self, status_spec, queue_spec):
        self._status_spec = status_spec
        self._queue_spec = queue_spec

    def setup(self):
        self._store = self._status_spec.open()
        self._queue = self._queue_spec.open()

    def process(self, element):
        payload, failure = element if isinstance(element, tuple) else (None, element)
        trace_context = failure.trace_context or (payload.trace_context if isinstance(payload, JobRequest) else None)
        # The Failure is emitted after the span: a span must not stay open across a yield.
        with tracing.span("report failure", parent=trace_context, job_id=failure.job_id, attempt=failure.attempt,
                          stage=failure.stage, error_type=failure.error_type, message=failure.message) as span:
            reported = self._report(payload, failure, trace_context)
            if reported:
                tracing.mark_error(span, failure.reason)
        if reported:
            yield failure

    def _report(self, payload, failure: Failure, trace_context: str | None) -> bool:
        """Marks the job FAILED and dead-letters it; False when the failure was not the job's first."""
        status = None
        if failure.job_id:
            try:
                status = self._store.transition(failure.job_id, JobState.FAILED, failure.attempt,
                                                error=failure.to_dict())
            except TransitionRefused as e:
                log_event("failure-not-recorded", failure.job_id, attempt=failure.attempt,
                          stage=failure.stage, reason=str(e))
                if not isinstance(payload, bytes):  # the job already failed or finished: its dead letter is out
                    return False
            except Exception as e:  # noqa: BLE001 - still dead-letter it
                log_event("failure-not-recorded", failure.job_id, level=logging.ERROR,
                          attempt=failure.attempt, error=repr(e))
        inc_counter("jobs-failed")
        if payload is None and status is not None and status.request:
            payload = _request_or_none(status.request)
        if trace_context is None and isinstance(payload, JobRequest):
            trace_context = payload.trace_context
        log_event("job-failed", failure.job_id, level=logging.ERROR, attempt=failure.attempt, source=failure.source,
                  stage=failure.stage, error_type=failure.error_type, message=failure.message,
                  trace_id=trace_id_of(trace_context))
        self._dead_letter(payload, failure)
        return True

    def _dead_letter(self, payload, failure: Failure) -> None:
        if payload is None:
            log_event("dead-letter-not-sent", failure.job_id, level=logging.ERROR, reason="no request to send")
        else:
            try:
                self._queue.publish_dead_letter(payload, failure)
            except Exception as e:  # noqa: BLE001 - the status document holds the failure anyway
                log_event("dead-letter-not-sent", failure.job_id, level=logging.ERROR, error=repr(e))


def _request_or_none(data) -> JobRequest | None:
    try:
        return JobRequest.from_dict(data)
    except ValueError:
        return None


@dataclasses.dataclass
class ReportFailures(beam.PTransform):
    """Failure PCollections (or `(payload, Failure)` ones) -> the Failures that failed their job."""

    status_spec: object
    queue_spec: object

    def expand(self, failures):
        return (failures
                | "Flatten failures" >> beam.Flatten()
                | "Fail job" >> beam.ParDo(_ReportFailureFn(self.status_spec, self.queue_spec)))
