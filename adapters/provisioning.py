"""Cloud resources read and made to match what is wanted: Pub/Sub schema, topics, subscriptions, buckets, Firestore indexes, IAM."""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time
from typing import Any, Callable, Mapping

from google.api_core import exceptions

from adapters.retries import CALL_TIMEOUT, gcs_retry, pubsub_retry

__all__ = ["CREATED", "FAILED", "IAM_KINDS", "MANUAL", "OK", "Outcome", "ProvisioningError", "Resource", "SKIPPED",
           "UPDATED", "WOULD_CREATE", "WOULD_UPDATE", "apply_resource", "iam_command", "index_fields"]

log = logging.getLogger("dcas.provisioning")

CREATED, UPDATED, OK = "created", "updated", "ok"
WOULD_CREATE, WOULD_UPDATE = "would create", "would update"
SKIPPED, MANUAL, FAILED = "skipped", "manual", "failed"
# Applied through an IamAdmin (adapters.ports); the others through the cloud clients directly.
IAM_KINDS = ("service-account", "iam-binding")


class ProvisioningError(RuntimeError):
    """A resource exists in a shape that cannot be changed into the wanted one without a person
    (a schema with another definition, a subscription on another topic)."""


@dataclasses.dataclass(frozen=True)
class Resource:
    """One thing the system needs: its kind, full name and the settings it must have.

    `settings` holds only what we care about, in the shape read_*() returns for what exists, so
    that wanted and found compare with ==.
    """

    kind: str
    name: str
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What apply_resource did (or, in a dry run, would do) to one resource, with why."""

    resource: Resource
    action: str
    detail: str = ""


def apply_resource(resource: Resource, dry_run: bool = False, iam=None) -> Outcome:
    """Reads `resource` where it lives and creates it, or updates the settings that drifted;
    in a dry run nothing is changed and the outcome says what would be. IAM kinds go through
    `iam` (an adapters.ports.IamAdmin; a GoogleIam when None)."""
    if resource.kind in IAM_KINDS:
        if resource.settings.get("emulator"):
            return Outcome(resource, SKIPPED, "skipped on the emulator (no IAM there)")
        own = None
        if iam is None:
            from adapters.iam import GoogleIam
            iam = own = GoogleIam()
        try:
            outcome = _IAM_APPLIERS[resource.kind](resource, dry_run, iam)
        finally:
            if own is not None:
                own.close()
    else:
        try:
            apply = _APPLIERS[resource.kind]
        except KeyError:
            raise ValueError(f"no way to apply a resource of kind {resource.kind!r}") from None
        outcome = apply(resource, dry_run)
    if outcome.action in (CREATED, UPDATED):
        log.info(json.dumps({"event": outcome.action, "kind": resource.kind, "resource": resource.name,
                             "detail": outcome.detail}))
    return outcome


def _changes(wanted: Mapping[str, Any], found: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {key: (found.get(key), value) for key, value in wanted.items() if found.get(key) != value}


def _describe(changes: Mapping[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{key}: {_short(old)} -> {_short(new)}" for key, (old, new) in changes.items())


def _short(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":")) if isinstance(value, (dict, list)) else str(value)


def _call() -> dict:
    return {"retry": pubsub_retry(), "timeout": CALL_TIMEOUT}


# ---------------------------------------------------------------------------------------------
# Pub/Sub: the schema, topics (bound to the schema or not), subscriptions


def _schema(resource: Resource, dry_run: bool) -> Outcome:
    from google.cloud import pubsub_v1
    from google.pubsub_v1.types import Schema
    client = pubsub_v1.SchemaServiceClient()
    wanted = resource.settings["definition"]
    try:
        found = client.get_schema(name=resource.name, **_call())
    except exceptions.NotFound:
        if dry_run:
            return Outcome(resource, WOULD_CREATE)
        project, _, schema_id = resource.name.removeprefix("projects/").partition("/schemas/")
        try:
            client.create_schema(parent=f"projects/{project}", schema_id=schema_id,
                                 schema=Schema(name=resource.name, type_=Schema.Type.AVRO, definition=wanted),
                                 **_call())
        except exceptions.AlreadyExists:  # created meanwhile by another run: check it below
            found = client.get_schema(name=resource.name, **_call())
        else:
            return Outcome(resource, CREATED)
    # A version is never edited: a changed definition needs a new schema id (and topic binding).
    if found.definition and json.loads(found.definition) != json.loads(wanted):
        raise ProvisioningError(f"schema {resource.name} exists with another definition; a new message "
                                "version needs a new schema id (adapters.messages.SCHEMA_VERSION)")
    return Outcome(resource, OK)


def _read_topic(topic) -> dict:
    bound = topic.schema_settings
    return {"schema": bound.schema or None, "encoding": bound.encoding.name if bound.schema else None}


def _topic_request(resource: Resource) -> dict:
    request: dict = {"name": resource.name}
    if resource.settings.get("schema"):
        request["schema_settings"] = {"schema": resource.settings["schema"],
                                      "encoding": resource.settings["encoding"]}
    return request


def _topic(resource: Resource, dry_run: bool) -> Outcome:
    from google.cloud import pubsub_v1
    publisher = pubsub_v1.PublisherClient()
    try:
        try:
            found = _read_topic(publisher.get_topic(topic=resource.name, **_call()))
        except exceptions.NotFound:
            if dry_run:
                return Outcome(resource, WOULD_CREATE)
            try:
                publisher.create_topic(request=_topic_request(resource), **_call())
                return Outcome(resource, CREATED)
            except exceptions.AlreadyExists:
                found = _read_topic(publisher.get_topic(topic=resource.name, **_call()))
        changes = _changes(resource.settings, found)
        if not changes:
            return Outcome(resource, OK)
        if dry_run:
            return Outcome(resource, WOULD_UPDATE, _describe(changes))
        publisher.update_topic(request={"topic": _topic_request(resource),
                                        "update_mask": {"paths": ["schema_settings"]}}, **_call())
        return Outcome(resource, UPDATED, _describe(changes))
    finally:
        publisher.stop()


def _seconds(duration) -> float:
    if isinstance(duration, datetime.timedelta):
        return duration.total_seconds()
    return duration.seconds + duration.nanos / 1e9  # a protobuf Duration


def _read_subscription(subscription) -> dict:
    from google.pubsub_v1.types import Subscription
    raw = Subscription.pb(subscription)
    retry = None
    if raw.HasField("retry_policy"):
        retry = {"minimum_backoff": _seconds(raw.retry_policy.minimum_backoff),
                 "maximum_backoff": _seconds(raw.retry_policy.maximum_backoff)}
    dead_letter = None
    if raw.HasField("dead_letter_policy") and raw.dead_letter_policy.dead_letter_topic:
        dead_letter = {"dead_letter_topic": raw.dead_letter_policy.dead_letter_topic,
                       "max_delivery_attempts": raw.dead_letter_policy.max_delivery_attempts}
    expires_after = None  # never: no ttl (Pub/Sub's default is 31 days without a subscriber)
    if raw.HasField("expiration_policy") and raw.expiration_policy.HasField("ttl"):
        expires_after = _seconds(raw.expiration_policy.ttl)
    return {"topic": raw.topic, "ack_deadline_seconds": raw.ack_deadline_seconds, "retry_policy": retry,
            "dead_letter_policy": dead_letter, "expires_after": expires_after}


# Wanted settings that are not named as the Subscription field they set.
_SUBSCRIPTION_FIELDS = {"expires_after": "expiration_policy"}


def _subscription_fields(settings: Mapping[str, Any], names) -> dict:
    fields = {}
    for name in names:
        value = settings.get(name)
        if name == "retry_policy" and value is not None:
            value = {key: datetime.timedelta(seconds=seconds) for key, seconds in value.items()}
        if name == "expires_after":
            value = {} if value is None else {"ttl": datetime.timedelta(seconds=value)}
        fields[_SUBSCRIPTION_FIELDS.get(name, name)] = value
    return fields


def _subscription(resource: Resource, dry_run: bool) -> Outcome:
    from google.cloud import pubsub_v1
    subscriber = pubsub_v1.SubscriberClient()
    wanted = resource.settings
    try:
        try:
            found = _read_subscription(subscriber.get_subscription(subscription=resource.name, **_call()))
        except exceptions.NotFound:
            if dry_run:
                return Outcome(resource, WOULD_CREATE)
            fields = {k: v for k, v in _subscription_fields(wanted, wanted).items() if v is not None}
            try:
                subscriber.create_subscription(request={"name": resource.name, **fields}, **_call())
                return Outcome(resource, CREATED)
            except exceptions.AlreadyExists:
                found = _read_subscription(subscriber.get_subscription(subscription=resource.name, **_call()))
        changes = _changes(wanted, found)
        if "topic" in changes:
            raise ProvisioningError(f"subscription {resource.name} reads {found['topic']}, not {wanted['topic']}: "
                                    "a subscription cannot change topics; delete it (its backlog goes with it) "
                                    "and run again")
        if not changes:
            return Outcome(resource, OK)
        if dry_run:
            return Outcome(resource, WOULD_UPDATE, _describe(changes))
        fields = _subscription_fields(wanted, changes)
        subscriber.update_subscription(request={"subscription": {"name": resource.name, **fields},
                                                "update_mask": {"paths": sorted(_SUBSCRIPTION_FIELDS.get(k, k) for k in changes)}}, **_call())
        return Outcome(resource, UPDATED, _describe(changes))
    finally:
        subscriber.close()


# ---------------------------------------------------------------------------------------------
# GCS: buckets and their lifecycle rules


# fake-gcs-server accepts lifecycle rules and keeps none (nor labels): checked against 0.1.1 of its wheel.
_NO_LIFECYCLE = "lifecycle rules skipped on the emulator: fake-gcs-server keeps none"


def _read_rules(bucket) -> list[dict]:
    return [json.loads(json.dumps(dict(rule))) for rule in bucket.lifecycle_rules]


def _bucket(resource: Resource, dry_run: bool) -> Outcome:
    from google.cloud import storage

    from adapters.storage import configure_beam_for_storage_emulator
    configure_beam_for_storage_emulator()
    client = storage.Client(project=resource.settings.get("project"))
    name = resource.name.removeprefix("gs://")
    wanted = {"lifecycle_rules": list(resource.settings["lifecycle_rules"])}
    emulator = bool(resource.settings.get("emulator"))
    bucket = client.lookup_bucket(name, retry=gcs_retry())
    if bucket is None:
        if dry_run:
            return Outcome(resource, WOULD_CREATE, _NO_LIFECYCLE if emulator else "")
        bucket = client.bucket(name)
        bucket.lifecycle_rules = wanted["lifecycle_rules"]
        # Access by IAM alone (no object ACLs), as the roles in docs/operations.md assume.
        bucket.iam_configuration.uniform_bucket_level_access_enabled = True
        location = resource.settings.get("location")
        try:
            client.create_bucket(bucket, location=location, retry=gcs_retry())
            return Outcome(resource, CREATED, _NO_LIFECYCLE if emulator else "")
        except exceptions.Conflict:  # created meanwhile by another run: check it below
            bucket = client.get_bucket(name, retry=gcs_retry())
    if emulator:
        return Outcome(resource, OK, _NO_LIFECYCLE)
    changes = _changes(wanted, {"lifecycle_rules": _read_rules(bucket)})
    if not changes:
        return Outcome(resource, OK)
    if dry_run:
        return Outcome(resource, WOULD_UPDATE, _describe(changes))
    bucket.lifecycle_rules = wanted["lifecycle_rules"]
    # Conditional on the metageneration read: a concurrent change is not silently overwritten.
    bucket.patch(if_metageneration_match=bucket.metageneration, retry=gcs_retry())
    return Outcome(resource, UPDATED, _describe(changes))


# ---------------------------------------------------------------------------------------------
# Firestore: composite indexes (a real project only: the emulator needs and keeps none)


def index_fields(index) -> tuple[tuple[str, str], ...]:
    """An index as (field path, ASCENDING|DESCENDING) pairs, without the `__name__` Firestore adds."""
    return tuple((field.field_path, field.order.name) for field in index.fields if field.field_path != "__name__")


def _firestore_indexes(resource: Resource, dry_run: bool) -> Outcome:
    if resource.settings.get("emulator"):
        return Outcome(resource, SKIPPED, "skipped on the emulator (it needs no indexes)")
    from google.cloud import firestore_admin_v1
    from google.cloud.firestore_admin_v1.types import Index
    wanted = [tuple(tuple(pair) for pair in index) for index in resource.settings["indexes"]]
    client = firestore_admin_v1.FirestoreAdminClient()
    found = {index_fields(index) for index in client.list_indexes(parent=resource.name, timeout=CALL_TIMEOUT)
             if index.query_scope == Index.QueryScope.COLLECTION}
    missing = [index for index in wanted if index not in found]
    if not missing:
        return Outcome(resource, OK)
    detail = "; ".join(", ".join(f"{path} {order.lower()}" for path, order in index) for index in missing)
    if dry_run:
        return Outcome(resource, WOULD_CREATE, detail)
    for index in missing:
        # Not waited for: an index builds for minutes; queries that need it fail until it is READY.
        client.create_index(parent=resource.name, index=Index(
            query_scope=Index.QueryScope.COLLECTION,
            fields=[Index.IndexField(field_path=path, order=Index.IndexField.Order[order]) for path, order in index]),
            timeout=CALL_TIMEOUT)
    return Outcome(resource, CREATED, f"{detail} (building)")


# ---------------------------------------------------------------------------------------------
# IAM: service accounts and role bindings, read-modify-write of each policy (adapters.iam)


def iam_command(resource: Resource) -> Outcome:
    """The gcloud command that applies an IAM resource by hand (`dcas setup --print-iam`)."""
    if resource.settings.get("emulator"):
        return Outcome(resource, SKIPPED, "skipped on the emulator (no IAM there)")
    return Outcome(resource, MANUAL, "run: " + resource.settings["command"])


def _service_account(resource: Resource, dry_run: bool, iam) -> Outcome:
    if iam.service_account(resource.name) is not None:
        return Outcome(resource, OK)
    if dry_run:
        return Outcome(resource, WOULD_CREATE)
    settings = resource.settings
    try:
        iam.create_service_account(settings["project"], settings["account_id"], settings["display_name"])
    except exceptions.Conflict:  # created meanwhile by another run
        return Outcome(resource, OK)
    return Outcome(resource, CREATED)


# Waits before reading and writing a policy again: after a concurrent change (a stale etag), or
# while IAM does not see yet a service account created seconds ago (it takes up to a minute).
IAM_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)


def _retryable(error: Exception) -> bool:
    if isinstance(error, (exceptions.Aborted, exceptions.Conflict, exceptions.PreconditionFailed)):
        return True
    return isinstance(error, exceptions.BadRequest) and "does not exist" in str(error)


def _iam_binding(resource: Resource, dry_run: bool, iam) -> Outcome:
    from adapters.iam import Binding, add_bindings
    settings = resource.settings
    member = settings["member"]
    if "{project_number}" in member:  # a Google service agent, named by the project's number
        member = member.format(project_number=iam.project_number(settings["project"]))
    binding = Binding(settings["role"], member)
    delays = iter(IAM_RETRY_DELAYS)
    while True:
        policy, added = add_bindings(iam.get_policy(settings["resource"]), [binding])
        if not added:
            return Outcome(resource, OK)
        if dry_run:
            return Outcome(resource, WOULD_CREATE)
        try:
            iam.set_policy(settings["resource"], policy)
            return Outcome(resource, CREATED)
        except exceptions.GoogleAPICallError as e:
            delay = next(delays, None)
            if delay is None or not _retryable(e):
                raise
            time.sleep(delay)


_IAM_APPLIERS: dict[str, Callable[[Resource, bool, Any], Outcome]] = {
    "service-account": _service_account, "iam-binding": _iam_binding,
}

_APPLIERS: dict[str, Callable[[Resource, bool], Outcome]] = {
    "schema": _schema, "topic": _topic, "subscription": _subscription, "bucket": _bucket,
    "firestore-indexes": _firestore_indexes,
}
