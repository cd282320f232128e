"""The Pub/Sub job queue against the real emulator: schema-checked job messages, dead letters, idempotent set-up."""
from __future__ import annotations

import json
import time
import uuid

import pytest
from google.api_core import exceptions

from adapters.jobs import Failure, JobRequest
from adapters.messages import decode_job_message
from adapters.pubsub import PubSubJobQueue, PubSubQueueSpec, ensure_pubsub_resources

PROJECT = "dcas-test"


@pytest.fixture
def resources(pubsub_emulator):
    suffix = uuid.uuid4().hex[:8]
    return ensure_pubsub_resources(PROJECT, f"jobs-{suffix}", f"jobs-{suffix}-pipeline",
                                   f"dead-{suffix}")


@pytest.fixture
def queue(resources):
    queue = PubSubQueueSpec(PROJECT, resources.topic, resources.dead_letter_topic).open()
    yield queue
    queue.close()


def request(**fields) -> JobRequest:
    return JobRequest(**{"job_id": f"job-{uuid.uuid4().hex[:12]}", "operation": "compress",
                         "input_uri": "gs://b/in", "output_uri": "gs://b/in.dcz", "owner": "ann",
                         "requested_at": "2026-12-01T09:00:00.000000+00:00", **fields})


def pull(subscription: str, expected: int, timeout: float = 30.0):
    """Up to `expected` messages from `subscription`, acked."""
    from google.cloud import pubsub_v1
    subscriber = pubsub_v1.SubscriberClient()
    received = []
    deadline = time.monotonic() + timeout
    try:
        while len(received) < expected and time.monotonic() < deadline:
            response = subscriber.pull(subscription=subscription, max_messages=expected, timeout=5)
            if response.received_messages:
                subscriber.acknowledge(subscription=subscription,
                                       ack_ids=[m.ack_id for m in response.received_messages])
                received.extend(m.message for m in response.received_messages)
    finally:
        subscriber.close()
    return received


def test_a_published_job_arrives_with_its_attributes_and_decodes_to_the_same_request(queue, resources):
    sent = request(attempt=2, table_uri="gs://b/table", trace_context="00-abc-def-01")
    message_id = queue.publish(sent)
    [message] = pull(resources.subscription, 1)
    assert message.message_id == message_id
    assert message.attributes["job_id"] == sent.job_id and message.attributes["attempt"] == "2"
    assert decode_job_message(message.data, message.attributes) == sent


def test_the_jobs_topic_rejects_a_message_that_does_not_fit_the_schema(resources):
    from google.cloud import pubsub_v1
    publisher = pubsub_v1.PublisherClient()
    try:
        with pytest.raises(exceptions.InvalidArgument):
            publisher.publish(resources.topic, json.dumps({"job_id": "x"}).encode()).result(timeout=30)
    finally:
        publisher.stop()


def test_the_queue_reports_a_message_its_topic_rejects_as_a_value_error(pubsub_emulator):
    # A topic bound to another schema (one with a field our messages lack) refuses ours.
    from google.cloud import pubsub_v1
    from google.pubsub_v1.types import Encoding, Schema
    suffix = uuid.uuid4().hex[:8]
    schema = pubsub_v1.SchemaServiceClient().create_schema(
        parent=f"projects/{PROJECT}", schema_id=f"other-{suffix}",
        schema=Schema(type_=Schema.Type.AVRO, definition=json.dumps(
            {"type": "record", "name": "Other", "fields": [{"name": "colour", "type": "string"}]})))
    topic = f"projects/{PROJECT}/topics/other-{suffix}"
    pubsub_v1.PublisherClient().create_topic(request={
        "name": topic, "schema_settings": {"schema": schema.name, "encoding": Encoding.JSON}})
    queue = PubSubJobQueue(PROJECT, topic, f"dead-{suffix}")
    try:
        with pytest.raises(ValueError, match="rejected"):
            queue.publish(request())
    finally:
        queue.close()


def test_publishing_to_a_missing_topic_says_which_topic_is_missing(pubsub_emulator):
    queue = PubSubJobQueue(PROJECT, "no-such-topic", "no-such-dead-letters")
    try:
        with pytest.raises(LookupError, match="projects/dcas-test/topics/no-such-topic"):
            queue.publish(request())
    finally:
        queue.close()


def test_dead_letters_carry_the_failure_and_wait_on_their_own_subscription(queue, resources):
    job = request()
    failure = Failure.of(job.job_id, job.input_uri, "decode part 3", ValueError("bad\nchunk " + "x" * 2000))
    queue.publish_dead_letter(job, failure)
    queue.publish_dead_letter(b"\xffnot a job", Failure.of("", "pubsub", "parse", "not JSON", attempt=2))
    first, second = sorted(pull(resources.dead_letter_subscription, 2),
                           key=lambda m: m.attributes["stage"])
    assert first.attributes["stage"] == "decode part 3"
    assert first.attributes["error_type"] == "ValueError"
    assert first.attributes["job_id"] == job.job_id and first.attributes["source"] == "gs://b/in"
    assert first.attributes["message"].startswith("bad chunk xxx")
    assert len(first.attributes["message"].encode()) <= 1024
    assert decode_job_message(first.data) == job  # the request itself, ready to be replayed
    assert second.data == b"\xffnot a job" and second.attributes["stage"] == "parse"
    assert (first.attributes["attempt"], second.attributes["attempt"]) == ("1", "2")


def test_setting_up_the_resources_twice_changes_nothing(resources):
    again = ensure_pubsub_resources(PROJECT, resources.topic, resources.subscription,
                                    resources.dead_letter_topic)
    assert again == resources
    from google.cloud import pubsub_v1
    assert pubsub_v1.PublisherClient().get_topic(topic=resources.topic).schema_settings.schema == resources.schema
