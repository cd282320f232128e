"""Job records and the one transition rule, and the in-memory status store that follows it."""
from __future__ import annotations

import pytest

from adapters.jobs import (Failure, JobRequest, JobState, JobStatus, TransitionRefused, check_transition,
                           new_job_id)
from adapters.memory import InMemoryStatusStore


def request(**fields) -> JobRequest:
    return JobRequest(**{"job_id": "job-1", "operation": "compress", "input_uri": "gs://b/in",
                         "output_uri": "gs://b/in.dcz", **fields})


def test_a_request_survives_a_round_trip_through_a_dict():
    original = request(owner="ann", attempt=2, trace_context="00-abc-def-01")
    assert JobRequest.from_dict(original.to_dict()) == original


@pytest.mark.parametrize("fields, words", [
    ({"job_id": "Job 1"}, "job id"), ({"operation": "zip"}, "operation"), ({"chunk_size": 0}, "chunk size"),
    ({"attempt": 0}, "attempt"), ({"output_uri": "gs://b/in"}, "same object")])
def test_a_bad_request_is_refused_with_a_reason(fields, words):
    with pytest.raises(ValueError, match=words):
        request(**fields)


def test_unknown_fields_are_refused_rather_than_dropped():
    with pytest.raises(ValueError, match="unknown job field"):
        JobRequest.from_dict({**request().to_dict(), "colour": "red"})


def test_job_ids_are_unguessable_and_valid():
    ids = {new_job_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i.rsplit("-", 1)[1]) == 32 for i in ids)
    request(job_id=ids.pop())


def test_a_failure_reads_as_one_line():
    failure = Failure.of("job-1", "gs://b/in", "encode part 0", OSError("disk\nfull"))
    assert failure.reason == "encode part 0: OSError: disk full"


def status(state=JobState.QUEUED, attempt=1) -> JobStatus:
    return JobStatus("job-1", state=state, attempt=attempt)


@pytest.mark.parametrize("state, attempt, target, target_attempt", [
    (JobState.QUEUED, 1, JobState.RUNNING, 1),
    (JobState.RUNNING, 1, JobState.SUCCEEDED, 1),
    (JobState.RUNNING, 1, JobState.FAILED, 1),
    (JobState.QUEUED, 1, JobState.CANCELLED, 1),
    (JobState.RUNNING, 1, JobState.QUEUED, 2),
    (JobState.QUEUED, 2, JobState.RUNNING, 2),
])
def test_forward_transitions_are_allowed(state, attempt, target, target_attempt):
    check_transition(status(state, attempt), target, target_attempt)


@pytest.mark.parametrize("state, attempt, target, target_attempt", [
    (JobState.RUNNING, 1, JobState.RUNNING, 1),      # a duplicate claim
    (JobState.QUEUED, 2, JobState.RUNNING, 1),       # a stale attempt
    (JobState.SUCCEEDED, 1, JobState.FAILED, 1),     # a finished job
    (JobState.FAILED, 1, JobState.QUEUED, 2),
    (JobState.QUEUED, 1, JobState.SUCCEEDED, 1),     # success without a claim
    (JobState.RUNNING, 1, JobState.QUEUED, 3),       # a re-queue skipping an attempt
])
def test_backward_duplicate_and_stale_transitions_are_refused(state, attempt, target, target_attempt):
    with pytest.raises(TransitionRefused):
        check_transition(status(state, attempt), target, target_attempt)


def test_the_in_memory_store_claims_an_attempt_once_and_never_moves_a_finished_job():
    store = InMemoryStatusStore()
    assert store.create(JobStatus.queued(request()))
    assert not store.create(JobStatus.queued(request()))
    store.transition("job-1", JobState.RUNNING, 1)
    with pytest.raises(TransitionRefused):
        store.transition("job-1", JobState.RUNNING, 1)
    assert store.record_progress("job-1", 1, chunks_done=2, chunks_total=4, bytes_in=8, bytes_out=4)
    assert store.record_progress("job-1", 1, chunks_done=1, chunks_total=4, bytes_in=4, bytes_out=2)
    assert store.get("job-1").chunks_done == 2
    store.transition("job-1", JobState.SUCCEEDED, 1, ratio=0.5)
    assert not store.record_progress("job-1", 1, chunks_done=3, chunks_total=4, bytes_in=8, bytes_out=4)
    with pytest.raises(TransitionRefused):
        store.transition("job-1", JobState.FAILED, 1)
    final = store.get("job-1")
    assert final.state is JobState.SUCCEEDED and set(final.times) == {"QUEUED", "RUNNING", "SUCCEEDED"}


def test_a_job_message_round_trips_through_the_avro_json_encoding():
    from adapters.messages import decode_job_message, encode_job_message
    original = request(owner="ann", table_uri="gs://b/in.table")
    body, attributes = encode_job_message(original)
    assert attributes["job_id"] == "job-1" and attributes["attempt"] == "1"
    assert decode_job_message(body, attributes) == original


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"schema_version": 2}',
                                  b'{"schema_version": 1, "job_id": 3}'])
def test_a_malformed_job_message_is_a_value_error(body):
    from adapters.messages import decode_job_message
    with pytest.raises(ValueError, match="job message"):
        decode_job_message(body)


def test_a_queued_status_carries_its_request_for_the_reconciler():
    original = request(attempt=1, chunk_size=65536)
    status = JobStatus.queued(original)
    again = JobRequest.from_dict(JobStatus.from_dict(status.to_dict()).request).next_attempt()
    assert again.attempt == 2 and again.chunk_size == 65536 and again.job_id == original.job_id
