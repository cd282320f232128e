"""Emulators for tests: the package's launchers (services.processes, services.emulators), re-exported, and
what tests read back from them."""
from __future__ import annotations

from services.emulators import (fake_gcs_server_binary, start_fake_gcs_server, start_firestore_emulator,
                                start_pubsub_emulator)
from services.processes import EmulatorProcess, free_port, http_ready, start_emulator

__all__ = ["EmulatorProcess", "fake_gcs_server_binary", "free_port", "http_ready", "pull_job_messages",
           "start_emulator", "start_fake_gcs_server", "start_firestore_emulator", "start_gcp_storage_emulator",
           "start_pubsub_emulator"]


def pull_job_messages(subscription: str, expected: int) -> list:
    """Up to `expected` job messages (JobRequests) pulled and acknowledged from `subscription`,
    trying for about 50 s before returning what came."""
    from google.cloud import pubsub_v1

    from adapters.messages import decode_job_message
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


def start_gcp_storage_emulator() -> EmulatorProcess:
    """gcp-storage-emulator (in memory), the one GCS emulator that keeps bucket IAM policies
    (fake-gcs-server answers 404): only for the tests of bucket policies. .env holds its
    STORAGE_EMULATOR_HOST, for a test to set while it runs (the session's fake-gcs-server keeps
    the variable otherwise)."""
    import shutil
    import sys
    from pathlib import Path
    binary = shutil.which("gcp-storage-emulator", path=str(Path(sys.executable).parent)) or shutil.which(
        "gcp-storage-emulator")
    if binary is None:
        raise RuntimeError("gcp-storage-emulator is not installed: pip install -e '.[dev]'")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return start_emulator("gcp-storage-emulator",
                          [binary, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
                          http_ready(f"{url}/storage/v1/b"), client_env={"STORAGE_EMULATOR_HOST": url})
