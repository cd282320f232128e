"""The job service and the reconciler through bootstrap() on the Pub/Sub and Firestore emulators."""
from __future__ import annotations

import datetime
import os
import uuid

import pytest

from adapters.jobs import JobState
from adapters.messages import decode_job_message
from services import jobs
from services.bootstrap import bootstrap, ensure_resources
from services.config import Settings
from services.reconciler import Action, reconcile_once


@pytest.fixture
def adapters(pubsub_emulator, firestore_emulator):
    suffix = uuid.uuid4().hex[:8]
    settings = Settings.from_env({**os.environ, "DCAS_JOBS_TOPIC": f"jobs-{suffix}",
                                  "DCAS_JOBS_SUBSCRIPTION": f"jobs-{suffix}-pipeline",
                                  "DCAS_DEAD_LETTER_TOPIC": f"dead-{suffix}",
                                  "DCAS_DEAD_LETTER_SUBSCRIPTION": f"dead-{suffix}",
                                  "DCAS_STATUS_COLLECTION": f"jobs-{suffix}"})
    ensure_resources(settings)
    adapters = bootstrap(settings)
    yield adapters
    adapters.close()


def pull(subscription: str, expected: int):
    from google.cloud import pubsub_v1
    subscriber = pubsub_v1.SubscriberClient()
    messages = []
    try:
        for _ in range(10):
            response = subscriber.pull(subscription=subscription, max_messages=expected, timeout=5)
            if response.received_messages:
                subscriber.acknowledge(subscription=subscription,
                                       ack_ids=[m.ack_id for m in response.received_messages])
                messages += [decode_job_message(m.message.data) for m in response.received_messages]
            if len(messages) >= expected:
                break
    finally:
        subscriber.close()
    return messages


def test_a_submitted_job_has_its_status_document_and_its_message(adapters):
    request = jobs.new_request("gs://b/in", "gs://b/out.dcz", owner="ann")
    jobs.submit(adapters, request)
    assert jobs.get_status(adapters, request.job_id).state is JobState.QUEUED
    assert pull(adapters.settings.jobs_subscription, 1) == [request]
    with pytest.raises(jobs.JobExistsError):
        jobs.submit(adapters, request)


def test_a_silent_running_job_is_published_again_with_attempt_two(adapters):
    request = jobs.new_request("gs://b/in", "gs://b/out.dcz", owner="ann")
    jobs.submit(adapters, request)
    pull(adapters.settings.jobs_subscription, 1)
    adapters.status.transition(request.job_id, JobState.RUNNING, 1)
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=61)
    assert reconcile_once(adapters, soon, 600, 60, 3) == [Action(request.job_id, "requeued", 2)]
    assert pull(adapters.settings.jobs_subscription, 1) == [request.next_attempt()]
    status = jobs.get_status(adapters, request.job_id)
    assert (status.state, status.attempt) == (JobState.QUEUED, 2)
    assert jobs.cancel(adapters, request.job_id).state is JobState.CANCELLED
