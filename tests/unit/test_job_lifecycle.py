"""The job service functions and the reconciler over the in-memory fakes of the queue and the status store."""
from __future__ import annotations

import datetime

import pytest

from adapters.jobs import JobRequest, JobState
from adapters.memory import InMemoryJobQueue, InMemoryStatusStore
from services import jobs
from services.bootstrap import Adapters
from services.config import Settings
from services.reconciler import Action, reconcile_once


class RefusingQueue(InMemoryJobQueue):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def publish(self, request):
        raise self.error


@pytest.fixture
def adapters() -> Adapters:
    return Adapters(InMemoryJobQueue(), InMemoryStatusStore())


def request(job_id: str = "job-1", **fields) -> JobRequest:
    return jobs.new_request("gs://b/in", "gs://b/in.dcz", job_id=job_id, owner="ann", **fields)


def later(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)


def test_submit_writes_the_queued_status_and_then_publishes_the_request(adapters):
    status = jobs.submit(adapters, request())
    assert status.state is JobState.QUEUED and status.request["input_uri"] == "gs://b/in"
    assert adapters.status.get("job-1") == status
    assert [m.job_id for m in adapters.queue.messages] == ["job-1"]


def test_a_job_id_that_exists_is_refused_and_nothing_is_published_again(adapters):
    jobs.submit(adapters, request())
    with pytest.raises(jobs.JobExistsError, match="job-1 exists"):
        jobs.submit(adapters, request())
    assert len(adapters.queue.messages) == 1


@pytest.mark.parametrize("uri", ["/tmp/in", "gs://", "gs://bucket", "gs://bucket/dir/", "s3://b/k"])
def test_only_objects_in_storage_make_a_job(uri):
    with pytest.raises(jobs.JobError, match="gs://BUCKET/NAME"):
        jobs.new_request(uri, "gs://b/out")


def test_a_message_the_queue_refuses_fails_the_job_with_the_reason():
    adapters = Adapters(RefusingQueue(LookupError("topic projects/p/topics/t does not exist")),
                        InMemoryStatusStore())
    with pytest.raises(jobs.JobError, match="does not exist"):
        jobs.submit(adapters, request())
    status = adapters.status.get("job-1")
    assert status.state is JobState.FAILED and status.error["stage"] == "submit"


def test_a_message_that_could_not_be_sent_now_leaves_the_job_queued_for_the_reconciler():
    adapters = Adapters(RefusingQueue(TimeoutError("no answer")), InMemoryStatusStore())
    with pytest.raises(jobs.JobError, match="reconciler"):
        jobs.submit(adapters, request())
    assert adapters.status.get("job-1").state is JobState.QUEUED


def test_status_of_an_unknown_job_is_an_error(adapters):
    with pytest.raises(jobs.UnknownJobError, match="no such job: nope"):
        jobs.get_status(adapters, "nope")


def test_cancel_stops_a_queued_or_running_job_but_not_a_finished_one(adapters):
    jobs.submit(adapters, request("job-1"))
    jobs.submit(adapters, request("job-2"))
    adapters.status.transition("job-2", JobState.RUNNING, 1)
    assert jobs.cancel(adapters, "job-1").state is JobState.CANCELLED
    assert jobs.cancel(adapters, "job-2").state is JobState.CANCELLED
    with pytest.raises(jobs.JobError, match="already CANCELLED"):
        jobs.cancel(adapters, "job-1")


def test_wait_returns_the_terminal_status_and_reports_each_read(adapters):
    jobs.submit(adapters, request())
    seen = []

    def sleep(_):  # the "pipeline" moves the job on while the caller waits
        state = adapters.status.get("job-1").state
        if state is JobState.QUEUED:
            adapters.status.transition("job-1", JobState.RUNNING, 1)
        else:
            adapters.status.transition("job-1", JobState.SUCCEEDED, 1)

    final = jobs.wait(adapters, "job-1", timeout=10, on_update=lambda s: seen.append(s.state), sleep=sleep)
    assert final.state is JobState.SUCCEEDED
    assert seen == [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]


def test_wait_gives_up_after_its_timeout(adapters):
    jobs.submit(adapters, request())
    ticks = iter(range(100))
    with pytest.raises(jobs.JobTimeoutError, match="still QUEUED after 3 s"):
        jobs.wait(adapters, "job-1", timeout=3, clock=lambda: next(ticks), sleep=lambda _: None)


def test_a_job_queued_too_long_is_published_again_with_the_same_attempt(adapters):
    jobs.submit(adapters, request())
    assert reconcile_once(adapters, later(0), 60, 60, 3) == []  # not stale yet
    memo = {}
    assert reconcile_once(adapters, later(61), 60, 60, 3, memo) == [Action("job-1", "republished", 1)]
    assert [m.attempt for m in adapters.queue.messages] == [1, 1]
    # The next pass soon after leaves it alone; once queued_for has passed again, it goes again.
    assert reconcile_once(adapters, later(70), 60, 60, 3, memo) == []
    assert reconcile_once(adapters, later(122), 60, 60, 3, memo) == [Action("job-1", "republished", 1)]


def test_a_running_job_without_heartbeat_is_requeued_with_the_next_attempt(adapters):
    jobs.submit(adapters, request())
    adapters.status.transition("job-1", JobState.RUNNING, 1)
    assert reconcile_once(adapters, later(30), 600, 60, 3) == []
    assert reconcile_once(adapters, later(61), 600, 60, 3) == [Action("job-1", "requeued", 2)]
    status = adapters.status.get("job-1")
    assert (status.state, status.attempt, status.request["attempt"]) == (JobState.QUEUED, 2, 2)
    assert adapters.queue.messages == [adapters.queue.messages[0], adapters.queue.messages[0].next_attempt()]


def test_a_job_out_of_attempts_fails_with_a_clear_reason(adapters):
    jobs.submit(adapters, request())
    adapters.status.transition("job-1", JobState.RUNNING, 1)
    adapters.status.transition("job-1", JobState.QUEUED, 2)
    adapters.status.transition("job-1", JobState.RUNNING, 2)
    assert reconcile_once(adapters, later(61), 600, 60, 2) == [Action("job-1", "failed", 2)]
    status = adapters.status.get("job-1")
    assert status.state is JobState.FAILED
    assert status.error["type"] == "AttemptsExhausted" and "attempt 2 of 2" in status.error["message"]
    assert len(adapters.queue.messages) == 1  # nothing published for a job that gave up


def test_finished_and_fresh_jobs_are_left_alone(adapters):
    for job_id in ("job-1", "job-2"):
        jobs.submit(adapters, request(job_id))
        adapters.status.transition(job_id, JobState.RUNNING, 1)
    adapters.status.transition("job-1", JobState.SUCCEEDED, 1)
    adapters.status.record_progress("job-2", 1, chunks_done=1, chunks_total=2, bytes_in=1, bytes_out=1)
    assert reconcile_once(adapters, later(30), 600, 60, 3) == []


def test_settings_come_from_the_environment_with_local_defaults():
    settings = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "my-project", "DCAS_JOBS_TOPIC": "t",
                                  "DCAS_DEAD_LETTER_TOPIC": "projects/other/topics/d",
                                  "DCAS_MAX_ATTEMPTS": "5"})
    assert settings.jobs_topic == "projects/my-project/topics/t"
    assert settings.dead_letter_topic == "projects/other/topics/d"
    assert settings.max_attempts == 5 and settings.status_collection == "jobs"
    assert Settings.from_env({}).project == "dcas-local"
    assert Settings.from_env(settings.environment()) == settings
    with pytest.raises(ValueError, match="DCAS_STALE_AFTER"):
        Settings.from_env({"DCAS_STALE_AFTER": "soon"})

