"""The status document's history of transitions: kept by adapters.jobs.transitioned, bounded, read back."""
from __future__ import annotations

import json

import pytest

from adapters.jobs import HISTORY_LIMIT, JobRequest, JobState, JobStatus, transitioned
from adapters.memory import InMemoryStatusStore


def queued() -> JobStatus:
    return JobStatus.queued(JobRequest("job-1", "compress", "gs://b/in", "gs://b/in.dcz"))


def states(status: JobStatus) -> list[tuple[str, int]]:
    return [(entry["state"], entry["attempt"]) for entry in status.history]


def test_every_transition_is_kept_in_the_status_history_with_its_attempt_and_time():
    store = InMemoryStatusStore()
    store.create(queued())
    store.transition("job-1", JobState.RUNNING, 1)
    store.transition("job-1", JobState.QUEUED, 2)
    store.transition("job-1", JobState.RUNNING, 2)
    final = store.transition("job-1", JobState.SUCCEEDED, 2)
    assert states(final) == [("QUEUED", 1), ("RUNNING", 1), ("QUEUED", 2), ("RUNNING", 2), ("SUCCEEDED", 2)]
    times = [entry["at"] for entry in final.history]
    assert times == sorted(times) and final.history[-1]["at"] == final.times["SUCCEEDED"]
    assert final.times["QUEUED"] == final.history[2]["at"]  # `times` keeps only the latest re-queue


def test_a_refused_transition_leaves_the_history_as_it_was():
    store = InMemoryStatusStore()
    store.create(queued())
    store.transition("job-1", JobState.RUNNING, 1)
    with pytest.raises(Exception, match="already claimed"):
        store.transition("job-1", JobState.RUNNING, 1)
    assert states(store.get("job-1")) == [("QUEUED", 1), ("RUNNING", 1)]


def test_the_history_is_bounded_and_keeps_how_the_job_began_and_its_latest_moves():
    status = queued()
    for attempt in range(2, HISTORY_LIMIT + 5):
        status = transitioned(status, JobState.RUNNING, attempt - 1) if status.state is JobState.QUEUED else status
        status = transitioned(status, JobState.QUEUED, attempt)
    assert len(status.history) == HISTORY_LIMIT
    assert status.history[0]["state"] == "QUEUED" and status.history[0]["attempt"] == 1
    assert status.history[-1] == {"state": "QUEUED", "attempt": status.attempt, "at": status.updated}


def test_a_status_document_without_history_still_reads_back():
    data = queued().to_dict()
    del data["history"]
    assert JobStatus.from_dict(data).history == []
    status = queued()
    assert JobStatus.from_dict(json.loads(json.dumps(status.to_dict()))) == status
