"""The HTTP services on uvicorn over the real adapters: fake-gcs-server, the Pub/Sub and Firestore emulators."""
from __future__ import annotations

import json
import os
import socket
import time

import httpx
import numpy as np
import pytest

import codec
from adapters.jobs import JobState
from adapters.messages import decode_frequency_table
from services import keys
from services.http import HttpSettings, create_app
from services.uploads import UploadLimits
from emulators import pull_job_messages  # tests/ is on sys.path
from http_server import running_server


@pytest.fixture
def adapters(service_adapters):
    return service_adapters


@pytest.fixture
def server(adapters):
    limits = UploadLimits(buffer_size=512 * 1024, stall_timeout=2.0)
    app = create_app(adapters, HttpSettings(adapters.settings.bucket, limits, keepalive=1.0))
    with running_server(app) as url:
        yield url, app


def test_an_upload_lands_in_storage_with_its_table_and_its_job_is_queued(adapters, server):
    url, _ = server
    key = keys.create_key(adapters.keys, "ann")
    data = np.random.default_rng(1).integers(0, 40, 3 * 2**20 + 17, dtype=np.uint8).tobytes()
    pieces = (data[i:i + 100_000] for i in range(0, len(data), 100_000))
    response = httpx.post(f"{url}/v1/jobs", params={"operation": "compress", "filename": "r.bin"},
                          content=pieces, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    [message] = pull_job_messages(adapters.settings.jobs_subscription, 1)
    assert message.job_id == job_id and message.owner == "ann"
    assert b"".join(adapters.blobs.read_chunks(message.input_uri)) == data
    table = decode_frequency_table(b"".join(adapters.blobs.read_chunks(message.table_uri)))
    np.testing.assert_array_equal(table, codec.histogram(data))
    status = httpx.get(response.json()["status_url"], headers={"Authorization": f"Bearer {key}"}).json()
    assert status["state"] == "QUEUED" and status["filename"] == "r.bin"


def test_events_follow_the_firestore_document_to_success_and_the_result_downloads_by_range(adapters, server):
    url, _ = server
    headers = {"Authorization": f"Bearer {keys.create_key(adapters.keys, 'ann')}"}
    data = b"the quick brown fox " * 5000
    job_id = httpx.post(f"{url}/v1/jobs", params={"operation": "compress", "filename": "fox.txt"},
                        content=data, headers=headers).json()["job_id"]
    states = []
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", headers=headers, timeout=30) as events:
        for line in events.iter_lines():
            if not line.startswith("data: "):
                continue
            status = json.loads(line[6:])
            states.append(status["state"])
            if status["state"] == "QUEUED":  # play the pipeline once the stream is open
                finish_job(adapters, job_id, data)
    assert states[0] == "QUEUED" and states[-1] == "SUCCEEDED"
    whole = httpx.get(f"{url}/v1/jobs/{job_id}/result", headers=headers)
    assert codec.decode(whole.content) == data
    part = httpx.get(f"{url}/v1/jobs/{job_id}/result", headers={**headers, "Range": "bytes=5-1004"})
    assert part.status_code == 206 and part.content == whole.content[5:1005]


def test_a_direct_upload_goes_straight_to_fake_gcs_and_its_job_is_queued_when_confirmed(adapters, server):
    url, _ = server
    headers = {"Authorization": f"Bearer {keys.create_key(adapters.keys, 'ann')}"}
    data = b"straight to storage " * 50_000
    opened = httpx.post(f"{url}/v1/uploads", params={"operation": "compress", "filename": "big.txt",
                                                      "size": len(data)}, headers=headers)
    assert opened.status_code == 201, opened.text
    body = opened.json()
    assert body["upload_url"].startswith(os.environ["STORAGE_EMULATOR_HOST"])  # not the Manager
    assert httpx.post(body["complete_url"], headers=headers).status_code == 409
    put = httpx.put(body["upload_url"], content=data, timeout=60)
    assert put.status_code in (200, 201), put.text
    accepted = httpx.post(body["complete_url"], headers=headers)
    assert accepted.status_code == 202, accepted.text
    [message] = pull_job_messages(adapters.settings.jobs_subscription, 1)
    assert message.job_id == body["job_id"]
    assert b"".join(adapters.blobs.read_chunks(message.input_uri)) == data


def finish_job(adapters, job_id: str, data: bytes) -> None:
    """The pipeline's writes to storage and status for one compress job."""
    status = adapters.status.get(job_id)
    adapters.status.transition(job_id, JobState.RUNNING, 1)
    encoded = codec.encode(data)
    adapters.blobs.write_bytes(status.output, encoded)
    adapters.status.record_progress(job_id, 1, chunks_done=1, chunks_total=1, bytes_in=len(data),
                                    bytes_out=len(encoded))
    adapters.status.transition(job_id, JobState.SUCCEEDED, 1, ratio=len(encoded) / len(data))


def test_a_client_that_vanishes_mid_upload_leaves_no_object_no_job_and_no_slot(adapters, server):
    url, app = server
    key = keys.create_key(adapters.keys, "vic")
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall((f"POST /v1/jobs?operation=compress&filename=gone.bin HTTP/1.1\r\nHost: {host}\r\n"
                      f"Authorization: Bearer {key}\r\nContent-Length: {50 * 2**20}\r\n\r\n").encode())
        sock.sendall(b"g" * 3 * 2**20)  # several upload chunks already sent on to storage
        time.sleep(1.0)
    deadline = time.monotonic() + 15
    while app.state.slots.in_use and time.monotonic() < deadline:
        time.sleep(0.1)
    assert app.state.slots.in_use == 0
    assert adapters.status.list_jobs("vic")[0] == []
    bucket = adapters.settings.bucket
    leftovers = [uri for uri in _objects(bucket) if "gone.bin" in uri]
    assert leftovers == []


def test_a_client_that_stalls_mid_upload_is_cut_off(adapters, server):
    url, app = server
    key = keys.create_key(adapters.keys, "sam")
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall((f"POST /v1/jobs?operation=compress&filename=slow.bin HTTP/1.1\r\nHost: {host}\r\n"
                      f"Authorization: Bearer {key}\r\nContent-Length: 1000000\r\n\r\n").encode())
        sock.sendall(b"s" * 1000)
        sock.settimeout(15)
        reply = sock.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 408"), reply
    assert app.state.slots.in_use == 0 and adapters.status.list_jobs("sam")[0] == []


def test_a_multipart_upload_from_a_file_streams_its_part_into_storage(adapters, server, tmp_path):
    url, _ = server
    key = keys.create_key(adapters.keys, "ann")
    data = np.random.default_rng(2).integers(0, 60, 2**20 + 9, dtype=np.uint8).tobytes()
    path = tmp_path / "form.bin"
    path.write_bytes(data)
    with path.open("rb") as file:  # httpx reads the file as it sends the body
        response = httpx.post(f"{url}/v1/jobs", params={"operation": "compress"}, files={"file": ("form.bin", file)},
                              data={"note": "a field beside the file"},
                              headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert response.status_code == 202, response.text
    [message] = pull_job_messages(adapters.settings.jobs_subscription, 1)
    assert message.job_id == response.json()["job_id"] and message.input_uri.endswith("/in/form.bin")
    assert b"".join(adapters.blobs.read_chunks(message.input_uri)) == data
    table = decode_frequency_table(b"".join(adapters.blobs.read_chunks(message.table_uri)))
    np.testing.assert_array_equal(table, codec.histogram(data))


def _objects(bucket: str) -> list[str]:
    from google.cloud import storage
    return [f"gs://{bucket}/{blob.name}" for blob in storage.Client(project="dcas-test").list_blobs(bucket)]
