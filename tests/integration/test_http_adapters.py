"""The HTTP layer's adapters against their emulators: GCS uploads and reads, API keys and status listeners on Firestore."""
from __future__ import annotations

import threading
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
