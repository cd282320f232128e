"""A job from `dcas submit` to SUCCEEDED on the local stack with the real streaming pipeline."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import time

import pytest
from samples import sample_text  # tests/ is on sys.path (conftest dir)
from test_stack import RunningStack, dcas, error_line

import codec

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("pipelines.streaming") is None,
    reason="the streaming pipeline (pipelines/streaming.py) is not on this branch yet")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = RunningStack(tmp_path_factory.mktemp("flow-runtime"))
    yield running
    running.kill()


@pytest.fixture(scope="module")
def bucket(stack):
    from google.cloud import storage
    saved = dict(os.environ)
    os.environ.update(stack.exports)
    try:
        yield storage.Client(project=stack.exports["GOOGLE_CLOUD_PROJECT"]).bucket(stack.exports["DCAS_BUCKET"])
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_a_compress_and_a_decompress_job_succeed_with_exact_bytes_and_metadata(stack, bucket):
    data = sample_text(300_000)
    bucket.blob("flow/in.txt").upload_from_string(data)
    name = bucket.name
    compressed = dcas("submit", f"gs://{name}/flow/in.txt", f"gs://{name}/flow/in.txt.dcz",
                      "--chunk-size", "64K", "--wait", "--timeout", "240", env=stack.client_env(), timeout=300)
    assert compressed.returncode == 0, compressed.stderr + stack.stderr()[-3000:]
    job_id = compressed.stdout.splitlines()[-1]
    container = bucket.blob("flow/in.txt.dcz").download_as_bytes()
    assert codec.decode(container) == data
    meta = json.loads(bucket.blob("flow/in.txt.dcz.meta.json").download_as_bytes())
    assert (meta["og_size"], meta["cp_size"]) == (len(data), len(container))
    shown = dcas("status", job_id, "--json", env=stack.client_env())
    assert shown.returncode == 0, shown.stderr  # once, under heavy load, it printed nothing: say why
    status = json.loads(shown.stdout)
    assert status["state"] == "SUCCEEDED" and status["chunks_done"] == status["chunks_total"] > 1

    restored = dcas("submit", f"gs://{name}/flow/in.txt.dcz", f"gs://{name}/flow/copy.txt", "--decompress",
                    "--wait", "--timeout", "240", env=stack.client_env(), timeout=300)
    assert restored.returncode == 0, restored.stderr
    assert bucket.blob("flow/copy.txt").download_as_bytes() == data


def test_a_job_on_a_missing_input_fails_with_its_reason_and_the_next_job_still_runs(stack, bucket):
    name = bucket.name
    missing = dcas("submit", f"gs://{name}/flow/nothing-here", f"gs://{name}/flow/nothing.dcz",
                   "--wait", "--timeout", "240", env=stack.client_env(), timeout=300)
    assert missing.returncode == 1
    assert "FAILED" in error_line(missing) and "nothing-here" in missing.stderr
    bucket.blob("flow/small.txt").upload_from_string(b"hello " * 100)
    after = dcas("submit", f"gs://{name}/flow/small.txt", f"gs://{name}/flow/small.txt.dcz",
                 "--wait", "--timeout", "240", env=stack.client_env(), timeout=300)
    assert after.returncode == 0, after.stderr


def test_a_job_whose_pipeline_was_killed_is_finished_by_attempt_two(tmp_path):
    # Short limits so the reconciler acts within the test: a heartbeat older than 30 s is stale.
    # (Not much shorter: heartbeats come from a timer from the claim on, but the local runner
    # fires timers on its one thread between bundles, seconds late on a busy machine.)
    running = RunningStack(tmp_path, env={"DCAS_STALE_AFTER": "30", "DCAS_QUEUED_TIMEOUT": "60",
                                          "DCAS_RECONCILE_INTERVAL": "1"})
    try:
        from google.cloud import storage
        saved = dict(os.environ)
        os.environ.update(running.exports)
        try:
            bucket = storage.Client(project=running.exports["GOOGLE_CLOUD_PROJECT"]).bucket(
                running.exports["DCAS_BUCKET"])
            data = sample_text(4 * 2**20, seed=3)
            bucket.blob("killed/in.txt").upload_from_string(data)
            env = running.client_env()
            submitted = dcas("submit", f"gs://{bucket.name}/killed/in.txt", f"gs://{bucket.name}/killed/in.dcz",
                             "--chunk-size", "64K", env=env)
            job_id = submitted.stdout.splitlines()[-1]
            from adapters.firestore import FirestoreStatusStore
            from adapters.jobs import JobState
            store = FirestoreStatusStore(running.exports["GOOGLE_CLOUD_PROJECT"])
            deadline = time.monotonic() + 120
            while store.get(job_id).state is JobState.QUEUED:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            os.killpg(running.groups()["pipeline"], signal.SIGKILL)
            assert store.get(job_id).state is JobState.RUNNING  # killed mid-job, not after it
            deadline = time.monotonic() + 300
            while not store.get(job_id).terminal:
                assert time.monotonic() < deadline
                time.sleep(0.5)
            final = store.get(job_id).to_dict()
            assert final["state"] == "SUCCEEDED" and final["attempt"] == 2, final
            assert codec.decode(bucket.blob("killed/in.dcz").download_as_bytes()) == data
            leftovers = [b.name for b in bucket.list_blobs(prefix="killed/") if ".dcas-tmp" in b.name]
            assert leftovers == []
        finally:
            os.environ.clear()
            os.environ.update(saved)
    finally:
        running.kill()
