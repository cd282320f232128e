"""Shared pytest fixtures: the GCS, Pub/Sub and Firestore emulators, each started only when a test asks."""
from __future__ import annotations

import contextlib
import os
import uuid

import pytest

# tests/ is on sys.path (pytest puts conftest dirs there)
from emulators import (start_fake_gcs_server, start_firestore_emulator,
                       start_pubsub_emulator)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "faults: the fault-injection suite (run alone with -m faults)")


@pytest.fixture(scope="session")
def gcs_emulator():
    """fake-gcs-server for the whole session; STORAGE_EMULATOR_HOST is set in os.environ while it runs.

    Set in os.environ (not monkeypatched per test) so that Beam's multi-processing workers, which
    are started later as subprocesses, inherit it. The server runs in its own process group and the
    whole group is stopped at the end of the session, also when tests fail or are interrupted.
    """
    with _serving(start_fake_gcs_server()) as emulator:
        from adapters.storage import configure_beam_for_storage_emulator
        configure_beam_for_storage_emulator()
        yield emulator


@pytest.fixture
def spans_file(tmp_path):
    """Tracing on, to a JSON-lines file, for one test; off again afterwards."""
    from adapters import tracing
    path = tmp_path / "spans.jsonl"
    tracing.configure("file", str(path), service="dcas-test")
    yield path
    tracing.configure("none")


# One project for the session's Pub/Sub and Firestore emulators (ids of 6+ characters).
TEST_PROJECT = "dcas-test"


@pytest.fixture(scope="session")
def pubsub_emulator():
    """The Pub/Sub emulator for the session; PUBSUB_EMULATOR_HOST and GOOGLE_CLOUD_PROJECT are set
    in os.environ while it runs (for subprocesses too), like gcs_emulator."""
    with _serving(start_pubsub_emulator(TEST_PROJECT)) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def firestore_emulator():
    """The Firestore emulator for the session; FIRESTORE_EMULATOR_HOST and GOOGLE_CLOUD_PROJECT are
    set in os.environ while it runs."""
    with _serving(start_firestore_emulator(TEST_PROJECT)) as emulator:
        yield emulator


@contextlib.contextmanager
def _serving(emulator):
    """Puts the emulator's client variables in os.environ while it runs, then restores them and
    stops its whole process group, also when tests fail or are interrupted."""
    saved = {name: os.environ.get(name) for name in emulator.env}
    os.environ.update(emulator.env)
    try:
        yield emulator
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        emulator.stop()


@pytest.fixture
def service_adapters(pubsub_emulator, firestore_emulator, gcs_bucket):
    """The job service's adapters through bootstrap() on the three emulators, with a topic,
    subscriptions and status collection of the test's own."""
    from services.bootstrap import bootstrap, ensure_resources
    from services.config import Settings
    suffix = uuid.uuid4().hex[:8]
    settings = Settings.from_env({**os.environ, "DCAS_BUCKET": gcs_bucket,
                                  "DCAS_JOBS_TOPIC": f"jobs-{suffix}",
                                  "DCAS_JOBS_SUBSCRIPTION": f"jobs-{suffix}-pipeline",
                                  "DCAS_DEAD_LETTER_TOPIC": f"dead-{suffix}",
                                  "DCAS_DEAD_LETTER_SUBSCRIPTION": f"dead-{suffix}",
                                  "DCAS_STATUS_COLLECTION": f"jobs-{suffix}"})
    ensure_resources(settings)
    adapters = bootstrap(settings)
    yield adapters
    adapters.close()


@pytest.fixture(scope="session")
def gcs_bucket(gcs_emulator) -> str:
    """The name of an empty bucket in the session's fake-gcs-server."""
    from google.cloud import storage
    name = f"dcas-test-{uuid.uuid4().hex[:12]}"
    client = storage.Client(project="dcas-test")
    client.create_bucket(name)
    return name


@pytest.fixture
def gcs_dir(gcs_bucket, request) -> str:
    """A gs:// folder of its own for one test, ending in '/'."""
    return f"gs://{gcs_bucket}/{request.node.name}-{uuid.uuid4().hex[:8]}/"
