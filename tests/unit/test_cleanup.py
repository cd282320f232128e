"""The reconciler's cleanup over in-memory fakes: abandoned direct uploads expire, deleted jobs are purged after their grace."""
from __future__ import annotations

import datetime
import types

import pytest
from fastapi.testclient import TestClient

from adapters.jobs import JobState
from adapters.memory import InMemoryBlobStore, InMemoryJobQueue, InMemoryKeyStore, InMemoryStatusStore
from services import cleanup, keys
from services.config import Settings
from services.http import HttpSettings, create_app
from services.uploads import UploadLimits

BUCKET = "bkt"
TTL, GRACE = 600.0, 60.0


@pytest.fixture
def adapters():
    return types.SimpleNamespace(queue=InMemoryJobQueue(), status=InMemoryStatusStore(), blobs=InMemoryBlobStore(),
                                 keys=InMemoryKeyStore(),
                                 settings=Settings(bucket=BUCKET, upload_ttl=TTL, deleted_grace=GRACE))


@pytest.fixture
def client(adapters):
    return TestClient(create_app(adapters, HttpSettings(BUCKET, UploadLimits(buffer_size=256 * 1024))))


def after(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)


def open_upload(client, headers, filename="big.log") -> dict:
    response = client.post("/v1/uploads", params={"operation": "compress", "filename": filename}, headers=headers)
    assert response.status_code == 201, response.text
    body = response.json()
    body["complete_url"] = body["complete_url"].removeprefix("http://testserver")
    return body


def test_a_direct_upload_never_confirmed_expires_with_its_object_and_session(adapters, client):
    headers = {"Authorization": f"Bearer {keys.create_key(adapters.keys, 'ann')}"}
    sent = open_upload(client, headers, "sent.log")     # bytes uploaded, never confirmed
    idle = open_upload(client, headers, "idle.log")     # nothing ever sent
    adapters.blobs.finish_session(sent["upload_url"], b"data that nobody confirmed")
    assert cleanup.sweep(adapters, after(TTL - 5)) == {"expired_uploads": [], "purged_jobs": []}
    assert len(adapters.blobs.objects) == 3  # two records and one object, all younger than the ttl
    swept = cleanup.sweep(adapters, after(TTL + 5))
    assert sorted(swept["expired_uploads"]) == sorted([sent["job_id"], idle["job_id"]])
    assert adapters.blobs.objects == {} and adapters.blobs.sessions == set()
    with pytest.raises(FileNotFoundError):  # the client can no longer finish the idle one
        adapters.blobs.finish_session(idle["upload_url"], b"late")
    late = client.post(sent["complete_url"], headers=headers)
    assert late.status_code == 404 and "expired" in late.json()["error"]
    assert adapters.queue.messages == []


def test_a_confirmed_direct_upload_is_left_to_its_job(adapters, client):
    headers = {"Authorization": f"Bearer {keys.create_key(adapters.keys, 'ann')}"}
    opened = open_upload(client, headers)
    adapters.blobs.finish_session(opened["upload_url"], b"confirmed")
    assert client.post(opened["complete_url"], headers=headers).status_code == 202
    assert cleanup.sweep(adapters, after(TTL + 5))["expired_uploads"] == []
    [message] = adapters.queue.messages
    assert adapters.blobs.objects[message.input_uri] == b"confirmed"


def test_an_upload_confirmed_while_it_expires_keeps_its_input(adapters, client):
    headers = {"Authorization": f"Bearer {keys.create_key(adapters.keys, 'ann')}"}
    opened = open_upload(client, headers)
    adapters.blobs.finish_session(opened["upload_url"], b"just in time")
    list_prefix = adapters.blobs.list_prefix

    def confirm_after_listing(prefix):  # the confirmation lands while the sweep is under way
        found = list(list_prefix(prefix))
        assert client.post(opened["complete_url"], headers=headers).status_code == 202
        return iter(found)
    adapters.blobs.list_prefix = confirm_after_listing
    assert cleanup.sweep(adapters, after(TTL + 5))["expired_uploads"] == []
    [message] = adapters.queue.messages
    assert adapters.blobs.objects[message.input_uri] == b"just in time"


def test_a_deleted_job_is_purged_after_its_grace_with_what_a_late_worker_wrote(adapters, client):
    headers = {"Authorization": f"Bearer {keys.create_key(adapters.keys, 'ann')}"}
    job_id = client.post("/v1/jobs", params={"operation": "compress", "filename": "a"}, content=b"abc",
                         headers=headers).json()["job_id"]
    status = adapters.status.get(job_id)
    adapters.status.transition(job_id, JobState.RUNNING, 1)
    assert client.delete(f"/v1/jobs/{job_id}", headers=headers).json()["state"] == "CANCELLED"
    adapters.blobs.write_bytes(status.output, b"published by a worker that had not noticed")
    assert cleanup.sweep(adapters, after(GRACE - 5))["purged_jobs"] == []
    assert adapters.status.get(job_id).deleted and status.output in adapters.blobs.objects
    assert cleanup.sweep(adapters, after(GRACE + 5))["purged_jobs"] == [job_id]
    assert adapters.status.get(job_id) is None and adapters.blobs.objects == {}


def test_the_job_service_without_a_blob_store_has_nothing_to_sweep():
    adapters = types.SimpleNamespace(blobs=None, status=InMemoryStatusStore(), settings=Settings())
    assert cleanup.sweep(adapters, after(0)) == {}
