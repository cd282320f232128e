"""The job queue on Pub/Sub: publish job messages (checked by the topic's Avro schema), dead letters, and the resources they need."""
from __future__ import annotations

import dataclasses
import json
import logging

from fastavro.validation import ValidationError
from google.api_core import exceptions

from adapters import tracing
from adapters.jobs import Failure, JobRequest
from adapters.messages import SCHEMA_ID, encode_job_message, schema_text
from adapters.retries import CALL_TIMEOUT, RETRY_DEADLINE, pubsub_retry

__all__ = ["PubSubJobQueue", "PubSubQueueSpec", "PubSubResources", "ensure_pubsub_resources",
           "subscription_path", "topic_path"]

log = logging.getLogger("dcas.pubsub")

# Pub/Sub refuses attribute values over 1024 bytes; a failure message is cut to fit.
_MAX_ATTRIBUTE_BYTES = 1024
DEFAULT_ACK_DEADLINE = 60


def topic_path(project: str, topic: str) -> str:
    """`projects/P/topics/T` for a short name; a full path is returned as it is."""
    return topic if topic.startswith("projects/") else f"projects/{project}/topics/{topic}"


def subscription_path(project: str, subscription: str) -> str:
    """`projects/P/subscriptions/S` for a short name; a full path is returned as it is."""
    if subscription.startswith("projects/"):
        return subscription
    return f"projects/{project}/subscriptions/{subscription}"


def _publisher():
    from google.cloud import pubsub_v1
    # One message per publish call: no batching delay (a submit waits for its message id).
    return pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_messages=1))


class PubSubJobQueue:
    """The JobQueue port on Pub/Sub. The client honours PUBSUB_EMULATOR_HOST."""

    def __init__(self, project: str, topic: str, dead_letter_topic: str) -> None:
        self.topic = topic_path(project, topic)
        self.dead_letter_topic = topic_path(project, dead_letter_topic)
        self._client = _publisher()

    def publish(self, request: JobRequest) -> str:
        try:
            data, attributes = encode_job_message(request)
        except (ValueError, ValidationError) as e:  # fastavro's ValidationError is no ValueError
            raise ValueError(f"job {request.job_id} does not fit the job message schema: {e}") from None
        try:
            with tracing.span("publish job message", parent=request.trace_context, job_id=request.job_id,
                              attempt=request.attempt, topic=self.topic):
                return self._publish(self.topic, data, attributes)
        except exceptions.InvalidArgument as e:
            raise ValueError(f"{self.topic} rejected job {request.job_id}: {e.message}") from None

    def publish_dead_letter(self, request: JobRequest | bytes, failure: Failure) -> str:
        if isinstance(request, JobRequest):
            data, attributes = encode_job_message(request)
        else:
            data, attributes = bytes(request), {}
        attributes = {**attributes, "job_id": failure.job_id, "attempt": str(failure.attempt),
                      "source": failure.source, "stage": failure.stage,
                      "error_type": failure.error_type, "message": failure.message}
        return self._publish(self.dead_letter_topic, data,
                             {k: _fit_attribute(v) for k, v in attributes.items()})

    def close(self) -> None:
        self._client.stop()

    def _publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        future = self._client.publish(topic, data, retry=pubsub_retry(), timeout=CALL_TIMEOUT, **attributes)
        try:
            return future.result(timeout=RETRY_DEADLINE + CALL_TIMEOUT)
        except exceptions.NotFound:
            raise LookupError(f"Pub/Sub topic {topic} does not exist (create it with `dcas stack up` "
                              "locally, or services.bootstrap.ensure_resources on a project)") from None


@dataclasses.dataclass(frozen=True)
class PubSubQueueSpec:
    """What a DoFn holds instead of a publisher: picklable; open() in setup() builds the queue."""

    project: str
    topic: str
    dead_letter_topic: str

    def open(self) -> PubSubJobQueue:
        return PubSubJobQueue(self.project, self.topic, self.dead_letter_topic)


@dataclasses.dataclass(frozen=True)
class PubSubResources:
    """The full names of what ensure_pubsub_resources made sure of."""

    schema: str
    topic: str
    subscription: str
    dead_letter_topic: str
    dead_letter_subscription: str


def ensure_pubsub_resources(project: str, topic: str, subscription: str, dead_letter_topic: str,
                            dead_letter_subscription: str | None = None,
                            ack_deadline: int = DEFAULT_ACK_DEADLINE) -> PubSubResources:
    """Creates, where missing, the job schema (SCHEMA_ID, Avro), the jobs topic bound to it with
    JSON encoding, the pipeline's subscription, the dead-letter topic and a subscription on it
    (where dead letters wait to be read or replayed). Safe to run again; the same calls make the
    resources of a real project.

    Raises RuntimeError when a resource exists but differs (the topic bound to another schema):
    that needs a person, not an overwrite.
    """
    from google.cloud import pubsub_v1
    from google.pubsub_v1.types import Encoding, Schema

    names = PubSubResources(
        schema=f"projects/{project}/schemas/{SCHEMA_ID}",
        topic=topic_path(project, topic),
        subscription=subscription_path(project, subscription),
        dead_letter_topic=topic_path(project, dead_letter_topic),
        dead_letter_subscription=subscription_path(
            project, dead_letter_subscription or dead_letter_topic.rsplit("/", 1)[-1]))
    call = {"retry": pubsub_retry(), "timeout": CALL_TIMEOUT}
    schemas = pubsub_v1.SchemaServiceClient()
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    try:
        _create(names.schema, lambda: schemas.create_schema(
            parent=f"projects/{project}", schema_id=SCHEMA_ID,
            schema=Schema(name=names.schema, type_=Schema.Type.AVRO, definition=schema_text()), **call))
        _check_schema(schemas.get_schema(name=names.schema, **call).definition, names.schema)
        _create(names.topic, lambda: publisher.create_topic(request={
            "name": names.topic,
            "schema_settings": {"schema": names.schema, "encoding": Encoding.JSON}}, **call))
        bound = publisher.get_topic(topic=names.topic, **call).schema_settings
        if bound.schema != names.schema:
            raise RuntimeError(f"topic {names.topic} exists but is bound to schema {bound.schema!r}, "
                               f"not {names.schema}: job messages would not be checked")
        _create(names.dead_letter_topic, lambda: publisher.create_topic(name=names.dead_letter_topic, **call))
        _create(names.subscription, lambda: subscriber.create_subscription(
            name=names.subscription, topic=names.topic, ack_deadline_seconds=ack_deadline, **call))
        _create(names.dead_letter_subscription, lambda: subscriber.create_subscription(
            name=names.dead_letter_subscription, topic=names.dead_letter_topic,
            ack_deadline_seconds=ack_deadline, **call))
    finally:
        subscriber.close()
        publisher.stop()
    return names


def _create(name: str, create) -> None:
    try:
        create()
        log.info(json.dumps({"event": "created", "resource": name}))
    except exceptions.AlreadyExists:
        pass


def _check_schema(definition: str, name: str) -> None:
    # A version is never edited: a changed definition needs a new SCHEMA_ID (and topic binding).
    if definition and json.loads(definition) != json.loads(schema_text()):
        raise RuntimeError(f"schema {name} exists with another definition; a new message version "
                           "needs a new schema id (adapters.messages.SCHEMA_VERSION)")


def _fit_attribute(value: str) -> str:
    data = value.encode("utf-8")
    if len(data) <= _MAX_ATTRIBUTE_BYTES:
        return value
    return data[:_MAX_ATTRIBUTE_BYTES - 3].decode("utf-8", errors="ignore") + "..."


