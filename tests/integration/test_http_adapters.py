"""The HTTP layer's adapters against their emulators: GCS uploads and reads, API keys and status listeners on Firestore."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from adapters.jobs import JobRequest, JobState, JobStatus


@pytest.fixture
def blobs(gcs_emulator):
    from adapters.blobs import GcsBlobStore
    return GcsBlobStore(project="dcas-test", chunk_size=256 * 1024)


def test_a_resumable_upload_in_chunks_appears_only_when_committed(blobs, gcs_dir):
    uri = gcs_dir + "in/big.bin"
    data = bytes(range(256)) * 4096 + b"end"  # 1 MiB + 3: four full chunks and a short last one
    upload = blobs.open_upload(uri)
    for offset in range(0, len(data), 100_000):
        upload.write(data[offset:offset + 100_000])
    assert blobs.size(uri) is None
    assert upload.commit() == len(data)
    assert blobs.size(uri) == len(data)
    assert b"".join(blobs.read_chunks(uri)) == data
    assert b"".join(blobs.read_chunks(uri, 1000, 300_000)) == data[1000:300_000]


def test_an_aborted_upload_leaves_no_object(blobs, gcs_dir):
    uri = gcs_dir + "in/partial.bin"
    upload = blobs.open_upload(uri)
    upload.write(b"x" * 600_000)  # two chunks already sent to the session
    upload.abort()
    upload.abort()
    assert blobs.size(uri) is None
    assert blobs.delete_prefix(gcs_dir) == 0


def test_an_empty_upload_makes_an_empty_object(blobs, gcs_dir):
    upload = blobs.open_upload(gcs_dir + "empty")
    assert upload.commit() == 0 and blobs.size(gcs_dir + "empty") == 0


def test_delete_prefix_removes_a_job_folder_and_nothing_beside_it(blobs, gcs_dir):
    for name in ("job-1/in/a", "job-1/out/a.dcz", "job-10/in/b"):
        blobs.write_bytes(gcs_dir + name, b"data")
    assert blobs.delete_prefix(gcs_dir + "job-1/") == 2
    assert blobs.size(gcs_dir + "job-10/in/b") == 4 and blobs.size(gcs_dir + "job-1/in/a") is None


def test_reading_a_missing_object_raises_file_not_found(blobs, gcs_dir):
    with pytest.raises(FileNotFoundError):
        list(blobs.read_chunks(gcs_dir + "nothing"))


def test_api_keys_on_firestore_map_hashes_to_owners(firestore_emulator):
    from adapters.apikeys import FirestoreKeyStore
    from services import keys
    store = FirestoreKeyStore("dcas-test", f"keys-{uuid.uuid4().hex[:8]}")
    key = keys.create_key(store, "ann")
    assert keys.authenticate(store, f"Bearer {key}") == "ann"
    with pytest.raises(keys.Unauthenticated):
        keys.authenticate(store, f"Bearer {key}x")
    store.close()


def test_a_key_revoked_by_another_process_is_forgotten_by_a_managers_cache_at_once(firestore_emulator):
    from adapters.apikeys import FirestoreKeyStore
    from services import keys
    collection = f"keys-{uuid.uuid4().hex[:8]}"
    manager, admin = FirestoreKeyStore("dcas-test", collection), FirestoreKeyStore("dcas-test", collection)
    key, kept = keys.create_key(admin, "ann"), keys.create_key(admin, "bob")
    cached = keys.CachedKeys(manager, ttl=3600)  # the listener, not the ttl, must make it forget
    try:
        assert keys.authenticate(cached, f"Bearer {key}") == "ann"
        assert [k.owner for k in keys.list_keys(admin)] == ["ann", "bob"]
        [revoked] = keys.revoke(admin, keys.key_id(keys.hash_key(key)))
        assert revoked.owner == "ann" and admin.owner_of(keys.hash_key(key)) is None
        deadline = time.monotonic() + 5
        while cached.owner_of(keys.hash_key(key)) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cached.owner_of(keys.hash_key(key)) is None
        assert keys.authenticate(cached, f"Bearer {kept}") == "bob"
    finally:
        cached.close()
        manager.close()
        admin.close()


def test_a_key_revoked_while_the_key_listeners_stream_was_down_is_still_forgotten(firestore_emulator):
    from adapters.apikeys import FirestoreKeyStore
    from services import keys
    collection = f"keys-{uuid.uuid4().hex[:8]}"
    manager, admin = FirestoreKeyStore("dcas-test", collection), FirestoreKeyStore("dcas-test", collection)
    key = keys.create_key(admin, "ann")
    cached = keys.CachedKeys(manager, ttl=3600)
    try:
        assert keys.authenticate(cached, f"Bearer {key}") == "ann"
        deadline = time.monotonic() + 30  # the listener's first snapshot, which lists the key
        while keys.hash_key(key) not in (cached._watch._present or ()) and time.monotonic() < deadline:
            time.sleep(0.02)
        cached._watch.listener.watch.close()  # what the library does when the stream is cancelled
        keys.revoke(admin, "ann")
        deadline = time.monotonic() + 10
        while cached.remembered(keys.hash_key(key)) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cached.remembered(keys.hash_key(key)) is None
        assert cached._watch.listener.resubscriptions >= 1
    finally:
        cached.close()
        manager.close()
        admin.close()


def test_a_firestore_listener_sees_each_state_of_a_job(firestore_emulator):
    from adapters.firestore import FirestoreStatusSpec
    store = FirestoreStatusSpec("dcas-test", f"jobs-{uuid.uuid4().hex[:12]}").open()
    request = JobRequest("job-w", "compress", "gs://b/in", "gs://b/in.dcz", owner="ann")
    seen: list[JobStatus | None] = []
    finished = threading.Event()

    def callback(status):
        seen.append(status)
        if status is not None and status.terminal:
            finished.set()

    watch = store.watch("job-w", callback)
    store.create(JobStatus.queued(request))
    store.transition("job-w", JobState.RUNNING, 1)
    store.transition("job-w", JobState.SUCCEEDED, 1, bytes_out=5)
    assert finished.wait(30)
    watch.close()
    states = [s.state for s in seen if s is not None]
    assert states[-1] is JobState.SUCCEEDED
    assert states == sorted(states, key=list(JobState).index)
    store.close()


def test_a_firestore_listener_whose_stream_ended_goes_on_seeing_the_job(firestore_emulator):
    # The client library closes a listener for good when the server cancels its stream, as the
    # emulator does under load; the watch must subscribe again and not miss the final state.
    from adapters.firestore import FirestoreStatusSpec
    store = FirestoreStatusSpec("dcas-test", f"jobs-{uuid.uuid4().hex[:12]}").open()
    request = JobRequest("job-r", "compress", "gs://b/in", "gs://b/in.dcz", owner="ann")
    store.create(JobStatus.queued(request))
    seen: list[JobState] = []
    queued, finished = threading.Event(), threading.Event()

    def callback(status):
        if status is not None:
            seen.append(status.state)
            (finished if status.terminal else queued).set()

    watch = store.watch("job-r", callback)
    assert queued.wait(30)
    watch.watch.close()  # what the library does when the stream is cancelled
    store.transition("job-r", JobState.RUNNING, 1)
    store.transition("job-r", JobState.SUCCEEDED, 1, bytes_out=5)
    assert finished.wait(30)
    watch.close()
    assert seen[-1] is JobState.SUCCEEDED
    assert watch.resubscriptions >= 1
    store.close()


def test_an_upload_written_in_whole_chunks_holds_about_one_chunk_and_sends_it_uncopied(gcs_emulator, gcs_dir):
    import tracemalloc

    from adapters.blobs import GcsBlobStore
    chunk = 2 * 2**20  # large beside what other threads of the test session allocate meanwhile
    blobs = GcsBlobStore(project="dcas-test", chunk_size=chunk)
    pieces = [bytes([i]) * chunk for i in range(4)]  # made before tracing: only the upload's own memory counts
    uri = gcs_dir + "in/whole-chunks.bin"
    tracemalloc.start()
    try:
        upload = blobs.open_upload(uri)
        for piece in pieces:
            upload.write(piece)
        assert upload.commit() == 4 * chunk  # the size is a multiple of the chunk: an empty last request
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert b"".join(blobs.read_chunks(uri)) == b"".join(pieces)
    # google-cloud-storage's BlobWriter copies each chunk into its buffer and out again (>= 2 chunks).
    assert peak < chunk / 2, f"the upload allocated {peak} bytes at its peak for {chunk}-byte chunks"


def test_the_cleanup_ends_an_abandoned_direct_upload_and_purges_a_deleted_job_on_the_emulators(
        blobs, gcs_bucket, firestore_emulator):
    import datetime
    import types
    from adapters.firestore import FirestoreStatusSpec
    from services import access, cleanup, uploads
    from services.config import Settings
    status = FirestoreStatusSpec("dcas-test", f"jobs-{uuid.uuid4().hex[:12]}").open()
    adapters = types.SimpleNamespace(blobs=blobs, status=status, queue=None,
                                     settings=Settings(bucket=gcs_bucket, upload_ttl=60, deleted_grace=60))
    limits = uploads.UploadLimits(buffer_size=256 * 1024)
    opened = uploads.open_direct_upload(adapters, gcs_bucket, limits, "ann", "compress", "abandoned.log")
    job_id = opened["job_id"]
    import httpx
    assert httpx.put(opened["upload_url"], content=b"sent, never confirmed", timeout=30).is_success
    assert list(blobs.list_prefix(uploads.job_prefix(gcs_bucket, job_id)))  # the client's object
    record = uploads.pending_record(gcs_bucket, job_id)
    assert record in list(blobs.list_prefix(f"gs://{gcs_bucket}/{uploads.PENDING_DIR}"))
    deleted = JobRequest(f"job-del-{uuid.uuid4().hex[:8]}", "compress", "gs://b/in", f"gs://{gcs_bucket}/x.dcz",
                         owner="ann")
    status.create(JobStatus.queued(deleted))
    blobs.write_bytes(uploads.job_prefix(gcs_bucket, deleted.job_id) + "out/x.dcz", b"late output")
    access.delete_owned(adapters, gcs_bucket, "ann", deleted.job_id)
    blobs.write_bytes(uploads.job_prefix(gcs_bucket, deleted.job_id) + "out/x.dcz", b"later still")
    try:
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=120)
        swept = cleanup.sweep(adapters, later)
        assert job_id in swept["expired_uploads"] and swept["purged_jobs"] == [deleted.job_id]
        assert blobs.size(record) is None and status.get(deleted.job_id) is None
        assert list(blobs.list_prefix(uploads.job_prefix(gcs_bucket, deleted.job_id))) == []
        assert list(blobs.list_prefix(uploads.job_prefix(gcs_bucket, job_id))) == []
        # The session was cancelled too (DELETE on its URL), which on GCS makes a late PUT fail;
        # fake-gcs-server does not implement that cancellation, so it is not asserted here.
    finally:
        status.close()


def test_a_buffer_written_into_an_upload_may_be_reused_once_write_returns(blobs, gcs_dir):
    chunk = 256 * 1024
    uri = gcs_dir + "in/reused.bin"
    buffer = bytearray(chunk)
    upload = blobs.open_upload(uri)
    expected = b""
    for i in range(3):
        buffer[:] = bytes([i + 1]) * chunk
        upload.write(memoryview(buffer).toreadonly())  # a whole chunk: sent from the buffer itself
        expected += bytes(buffer)
    buffer[:1000] = b"x" * 1000
    upload.write(memoryview(buffer)[:1000])  # less than a chunk: kept past write(), so copied
    expected += b"x" * 1000
    buffer[:1000] = b"y" * 1000
    assert upload.commit() == len(expected)
    assert b"".join(blobs.read_chunks(uri)) == expected
