"""The one composition root: Settings -> the queue, status, blob and key adapters (and the specs pipelines get)."""
from __future__ import annotations

import dataclasses

from adapters.ports import AdapterSpec, BlobStore, JobQueue, KeyStore, StatusStore
from services.config import Settings

__all__ = ["Adapters", "bootstrap", "configure_tracing", "ensure_resources"]


@dataclasses.dataclass
class Adapters:
    """What service functions work through. The specs are what a pipeline's DoFns open in setup()."""

    queue: JobQueue
    status: StatusStore
    queue_spec: AdapterSpec | None = None
    status_spec: AdapterSpec | None = None
    settings: Settings = dataclasses.field(default_factory=Settings)
    blobs: BlobStore | None = None  # uploads and results, for the HTTP services
    keys: KeyStore | None = None    # API keys, for the HTTP services

    def close(self) -> None:
        for adapter in (self.queue, self.status, self.keys):
            close = getattr(adapter, "close", None)
            if close is not None:
                close()


def bootstrap(settings: Settings) -> Adapters:
    """Pub/Sub and Firestore adapters for `settings` (their clients find emulators through the
    *_EMULATOR_HOST variables, which `settings` was read with)."""
    from adapters.firestore import FirestoreStatusSpec
    from adapters.pubsub import PubSubQueueSpec
    queue_spec = PubSubQueueSpec(settings.project, settings.jobs_topic, settings.dead_letter_topic)
    status_spec = FirestoreStatusSpec(settings.project, settings.status_collection)
    from adapters.apikeys import FirestoreKeyStore
    from adapters.blobs import GcsBlobStore
    from services.uploads import UploadLimits
    # An upload's resumable chunks are its receive buffer: one size bounds an upload's memory.
    blobs = GcsBlobStore(settings.project, chunk_size=UploadLimits.from_env().buffer_size)
    return Adapters(queue_spec.open(), status_spec.open(), queue_spec, status_spec, settings,
                    blobs, FirestoreKeyStore(settings.project))


def ensure_resources(settings: Settings, on_outcome=None) -> list:
    """Creates, or brings back to their settings, the schema, topics and subscriptions `settings`
    name (locally or in a real project), with the code of `dcas setup` (services/setup.py), of
    which this is the Pub/Sub part. Returns each resource's Outcome."""
    from services import setup
    return setup.apply([r for r in setup.plan(settings, iam=False) if r.kind in setup.PUBSUB_KINDS],
                       on_outcome=on_outcome)


def configure_tracing(settings: Settings, service: str) -> None:
    """Where this process's spans go, as `settings` say (DCAS_TRACE_EXPORTER / DCAS_TRACE_FILE):
    nowhere, the console, a JSON-lines file (`dcas trace` reads it) or Cloud Trace. `service`
    names the component in every span (dcas-manager, dcas-pipeline)."""
    from adapters import tracing
    tracing.configure(settings.trace_exporter, settings.trace_file, service, settings.project)
