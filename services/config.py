"""Settings.from_env(): project, bucket, queue and status names, emulator hosts, limits and tracing, read from the environment."""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping

from adapters.tracing import EXPORTER_VARIABLE, FILE_VARIABLE, exporter_from_env

__all__ = ["DEFAULT_PROJECT", "Settings"]

DEFAULT_PROJECT = "dcas-local"  # the local stack's project (Pub/Sub ids need 6+ characters)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where the job service's resources are and how patient it is. Names are full paths."""

    project: str = DEFAULT_PROJECT
    bucket: str = DEFAULT_PROJECT
    jobs_topic: str = f"projects/{DEFAULT_PROJECT}/topics/dcas-jobs"
    jobs_subscription: str = f"projects/{DEFAULT_PROJECT}/subscriptions/dcas-jobs-pipeline"
    dead_letter_topic: str = f"projects/{DEFAULT_PROJECT}/topics/dcas-dead-letters"
    dead_letter_subscription: str = f"projects/{DEFAULT_PROJECT}/subscriptions/dcas-dead-letters"
    status_collection: str = "jobs"
    owner: str = ""
    pubsub_emulator_host: str | None = None
    firestore_emulator_host: str | None = None
    storage_emulator_host: str | None = None
    max_attempts: int = 3
    stale_after: float = 120.0        # seconds without a heartbeat before a RUNNING job is re-queued
    queued_timeout: float = 120.0     # seconds QUEUED before its message is published again
    reconcile_interval: float = 10.0  # seconds between the reconciler's passes
    trace_exporter: str = "none"      # adapters.tracing.EXPORTERS: none, console, file, gcp
    trace_file: str | None = None     # the JSON-lines span file of the "file" exporter
    upload_ttl: float = 86400.0       # seconds a direct upload may stay unconfirmed before it is removed
    deleted_grace: float = 3600.0     # seconds a deleted job's document stays (marked) before it is purged

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Reads GOOGLE_CLOUD_PROJECT, DCAS_* and the *_EMULATOR_HOST variables; defaults are the
        local stack's names. ValueError names a variable that does not parse."""
        env = os.environ if environ is None else environ
        project = env.get("GOOGLE_CLOUD_PROJECT") or DEFAULT_PROJECT
        trace_exporter, trace_file = exporter_from_env(env)

        def path(variable: str, kind: str, default: str) -> str:
            value = env.get(variable) or default
            return value if value.startswith("projects/") else f"projects/{project}/{kind}/{value}"

        return cls(
            project=project,
            bucket=env.get("DCAS_BUCKET") or project,
            jobs_topic=path("DCAS_JOBS_TOPIC", "topics", "dcas-jobs"),
            jobs_subscription=path("DCAS_JOBS_SUBSCRIPTION", "subscriptions", "dcas-jobs-pipeline"),
            dead_letter_topic=path("DCAS_DEAD_LETTER_TOPIC", "topics", "dcas-dead-letters"),
            dead_letter_subscription=path("DCAS_DEAD_LETTER_SUBSCRIPTION", "subscriptions",
                                          "dcas-dead-letters"),
            status_collection=env.get("DCAS_STATUS_COLLECTION") or "jobs",
            owner=env.get("DCAS_OWNER") or env.get("USER") or "",
            pubsub_emulator_host=env.get("PUBSUB_EMULATOR_HOST") or None,
            firestore_emulator_host=env.get("FIRESTORE_EMULATOR_HOST") or None,
            storage_emulator_host=env.get("STORAGE_EMULATOR_HOST") or None,
            max_attempts=_number(env, "DCAS_MAX_ATTEMPTS", int, cls.max_attempts, minimum=1),
            stale_after=_number(env, "DCAS_STALE_AFTER", float, cls.stale_after, minimum=1),
            queued_timeout=_number(env, "DCAS_QUEUED_TIMEOUT", float, cls.queued_timeout, minimum=1),
            reconcile_interval=_number(env, "DCAS_RECONCILE_INTERVAL", float, cls.reconcile_interval,
                                       minimum=0.1),
            trace_exporter=trace_exporter,
            trace_file=trace_file,
            upload_ttl=_number(env, "DCAS_UPLOAD_TTL", float, cls.upload_ttl, minimum=1),
            deleted_grace=_number(env, "DCAS_DELETED_GRACE", float, cls.deleted_grace, minimum=0),
        )

    def environment(self) -> dict[str, str]:
        """The variables from_env() reads back into these settings (what `dcas stack up` exports)."""
        hosts = {"PUBSUB_EMULATOR_HOST": self.pubsub_emulator_host,
                 "FIRESTORE_EMULATOR_HOST": self.firestore_emulator_host,
                 "STORAGE_EMULATOR_HOST": self.storage_emulator_host}
        return {**{k: v for k, v in hosts.items() if v},
                "GOOGLE_CLOUD_PROJECT": self.project, "DCAS_BUCKET": self.bucket,
                "DCAS_JOBS_TOPIC": self.jobs_topic, "DCAS_JOBS_SUBSCRIPTION": self.jobs_subscription,
                "DCAS_DEAD_LETTER_TOPIC": self.dead_letter_topic,
                "DCAS_DEAD_LETTER_SUBSCRIPTION": self.dead_letter_subscription,
                "DCAS_STATUS_COLLECTION": self.status_collection,
                "DCAS_MAX_ATTEMPTS": str(self.max_attempts), "DCAS_STALE_AFTER": str(self.stale_after),
                "DCAS_QUEUED_TIMEOUT": str(self.queued_timeout),
                "DCAS_RECONCILE_INTERVAL": str(self.reconcile_interval),
                "DCAS_UPLOAD_TTL": str(self.upload_ttl), "DCAS_DELETED_GRACE": str(self.deleted_grace),
                **self._trace_environment()}

    def _trace_environment(self) -> dict[str, str]:
        if self.trace_exporter == "none":
            return {}
        return {EXPORTER_VARIABLE: self.trace_exporter, **({FILE_VARIABLE: self.trace_file} if self.trace_file else {})}


def _number(env: Mapping[str, str], name: str, kind, default, minimum):
    text = env.get(name)
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a {'whole ' if kind is int else ''}number") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {text}")
    return value
