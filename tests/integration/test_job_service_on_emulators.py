"""The job service and the reconciler through bootstrap() on the emulators (tests/conftest.py: service_adapters)."""
from __future__ import annotations

import datetime

import pytest

from adapters.jobs import JobState
from services import jobs
from services.reconciler import Action, reconcile_once
from emulators import pull_job_messages  # tests/ is on sys.path


@pytest.fixture
def adapters(service_adapters):
    return service_adapters


def test_a_submitted_job_has_its_status_document_and_its_message(adapters):
    request = jobs.new_request("gs://b/in", "gs://b/out.dcz", owner="ann")
    jobs.submit(adapters, request)
    assert jobs.get_status(adapters, request.job_id).state is JobState.QUEUED
    assert pull_job_messages(adapters.settings.jobs_subscription, 1) == [request]
    with pytest.raises(jobs.JobExistsError):
        jobs.submit(adapters, request)


def test_a_silent_running_job_is_published_again_with_attempt_two(adapters):
    request = jobs.new_request("gs://b/in", "gs://b/out.dcz", owner="ann")
    jobs.submit(adapters, request)
    pull_job_messages(adapters.settings.jobs_subscription, 1)
    adapters.status.transition(request.job_id, JobState.RUNNING, 1)
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=61)
    assert reconcile_once(adapters, soon, 600, 60, 3) == [Action(request.job_id, "requeued", 2)]
    assert pull_job_messages(adapters.settings.jobs_subscription, 1) == [request.next_attempt()]
    status = jobs.get_status(adapters, request.job_id)
    assert (status.state, status.attempt) == (JobState.QUEUED, 2)
    assert jobs.cancel(adapters, request.job_id).state is JobState.CANCELLED
