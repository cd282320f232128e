"""The job queue on Pub/Sub: publish job messages (checked by the topic's Avro schema), dead letters, and the resources they need."""
from __future__ import annotations

import dataclasses
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
# A nacked or expired job message comes back after 10 s, then later and later up to 10 min; one
# that came back this many times goes to the dead-letter topic (5..100, Pub/Sub's bounds).
DEFAULT_RETRY_BACKOFF = (10.0, 600.0)
DEFAULT_MAX_DELIVERY_ATTEMPTS = 10


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

    @classmethod
    def named(cls, project: str, topic: str, subscription: str, dead_letter_topic: str,
              dead_letter_subscription: str | None = None) -> "PubSubResources":
        return cls(schema=f"projects/{project}/schemas/{SCHEMA_ID}", topic=topic_path(project, topic),
                   subscription=subscription_path(project, subscription),
                   dead_letter_topic=topic_path(project, dead_letter_topic),
                   dead_letter_subscription=subscription_path(
                       project, dead_letter_subscription or dead_letter_topic.rsplit("/", 1)[-1]))

    def wanted(self, ack_deadline: int = DEFAULT_ACK_DEADLINE,
               retry_backoff: tuple[float, float] = DEFAULT_RETRY_BACKOFF,
               max_delivery_attempts: int = DEFAULT_MAX_DELIVERY_ATTEMPTS) -> list:
        """Each resource with the settings it must have, in the order they can be made: the job
        schema (Avro), the jobs topic bound to it (JSON encoding), the dead-letter topic, the
        pipeline's subscription (ack deadline, redelivery back-off, and a dead-letter policy for a
        message that keeps coming back undone), and the subscription where dead letters wait to
        be read or replayed. Neither subscription expires (`expires_after` None): Pub/Sub's
        default deletes one after 31 days without a reader, and a quiet month must not lose them."""
        from adapters.provisioning import Resource
        return [
            Resource("schema", self.schema, {"type": "AVRO", "definition": schema_text()}),
            Resource("topic", self.topic, {"schema": self.schema, "encoding": "JSON"}),
            Resource("topic", self.dead_letter_topic, {"schema": None, "encoding": None}),
            Resource("subscription", self.subscription, {
                "topic": self.topic, "ack_deadline_seconds": ack_deadline,
                "retry_policy": {"minimum_backoff": float(retry_backoff[0]),
                                 "maximum_backoff": float(retry_backoff[1])},
                "dead_letter_policy": {"dead_letter_topic": self.dead_letter_topic,
                                       "max_delivery_attempts": max_delivery_attempts},
                "expires_after": None}),
            Resource("subscription", self.dead_letter_subscription, {
                "topic": self.dead_letter_topic, "ack_deadline_seconds": ack_deadline,
                "retry_policy": None, "dead_letter_policy": None, "expires_after": None}),
        ]


def ensure_pubsub_resources(project: str, topic: str, subscription: str, dead_letter_topic: str,
                            dead_letter_subscription: str | None = None,
                            ack_deadline: int = DEFAULT_ACK_DEADLINE) -> PubSubResources:
    """Creates, or brings back to their settings, the resources PubSubResources.wanted() lists,
    with the code `dcas setup` runs (adapters.provisioning). Safe to run again; the same calls
    make the resources of a real project.

    Raises ProvisioningError (a RuntimeError) when a resource exists in a shape that needs a
    person, not an overwrite (a schema with another definition).
    """
    from adapters.provisioning import apply_resource
    names = PubSubResources.named(project, topic, subscription, dead_letter_topic, dead_letter_subscription)
    for resource in names.wanted(ack_deadline):
        apply_resource(resource)
    return names


def _fit_attribute(value: str) -> str:
    data = value.encode("utf-8")
    if len(data) <= _MAX_ATTRIBUTE_BYTES:
        return value
    return data[:_MAX_ATTRIBUTE_BYTES - 3].decode("utf-8", errors="ignore") + "..."


