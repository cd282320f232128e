"""A pipeline killed mid-job on the local stack: the watcher restarts it, the reconciler runs the job again as attempt 2."""
from __future__ import annotations

import os
import signal
import time

import pytest
import test_stack  # tests/e2e is on sys.path (pytest's rootdir-relative import of sibling test modules)
from samples import sample_text  # tests/ is on sys.path (conftest dir)

import codec
from adapters.jobs import JobRequest

pytestmark = pytest.mark.slow

# A job silent for this long is re-queued; short, so the test waits little.
STALE_AFTER = 15


@pytest.fixture
def stack(tmp_path, monkeypatch):
    clean_env = test_stack.clean_env
    monkeypatch.setattr(test_stack, "clean_env", lambda runtime: {
        **clean_env(runtime), "DCAS_STALE_AFTER": str(STALE_AFTER), "DCAS_RECONCILE_INTERVAL": "1"})
    running = test_stack.RunningStack(tmp_path)
    yield running
    running.kill()


def test_a_job_whose_pipeline_died_is_finished_by_attempt_two_with_one_output(stack):
    from google.cloud import storage as gcs

    from services.bootstrap import bootstrap
    from services.config import Settings
    from services import jobs

    saved = dict(os.environ)
    os.environ.update(stack.exports)
    try:
        settings = Settings.from_env()
        adapters = bootstrap(settings)
        bucket = gcs.Client(project=settings.project).bucket(settings.bucket)
        data = sample_text(30_000_000)
        bucket.blob("crash/in.txt").upload_from_string(data)
        request = JobRequest("job-crash", "compress", f"gs://{bucket.name}/crash/in.txt",
                             f"gs://{bucket.name}/crash/in.txt.dcz", chunk_size=256 * 1024)
        pipeline = stack.groups()["pipeline"]
        jobs.submit(adapters, request)
        deadline = time.monotonic() + 120
        while adapters.status.get(request.job_id).state.value == "QUEUED":
            assert time.monotonic() < deadline, "the pipeline never claimed the job"
            time.sleep(0.05)
        os.killpg(pipeline, signal.SIGKILL)  # mid-job: its message was acked when it was pulled

        status = jobs.wait(adapters, request.job_id, timeout=240, poll_interval=0.5)
        assert (status.state.value, status.attempt) == ("SUCCEEDED", 2), (status.error, stack.stderr()[-3000:])
        assert codec.decode(bucket.blob("crash/in.txt.dcz").download_as_bytes()) == data
        names = sorted(blob.name for blob in bucket.list_blobs(prefix="crash/"))
        assert names == ["crash/in.txt", "crash/in.txt.dcz", "crash/in.txt.dcz.meta.json"]
        adapters.close()
    finally:
        os.environ.clear()
        os.environ.update(saved)
