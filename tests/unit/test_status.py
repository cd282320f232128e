"""Coalesced progress: at most one status write per interval per job, counts that never go down."""
from __future__ import annotations

from adapters.jobs import JobRequest, JobState, JobStatus
from adapters.memory import InMemoryStatusStore
from adapters.status import CoalescedProgress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def running_job(store: InMemoryStatusStore, job_id: str = "job-1") -> None:
    store.create(JobStatus.queued(JobRequest(job_id, "compress", "gs://b/in", "gs://b/out")))
    store.transition(job_id, JobState.RUNNING, 1)


def test_many_updates_within_an_interval_make_one_write_and_flush_writes_the_last():
    store, clock = InMemoryStatusStore(), Clock()
    running_job(store)
    progress = CoalescedProgress(store, "job-1", 1, min_interval=1.0, clock=clock)
    before = store.writes
    wrote = [progress.update(i, 100, i * 10, i * 5) for i in range(1, 51)]
    assert wrote == [True] + [False] * 49
    assert store.writes == before + 1 and store.get("job-1").chunks_done == 1
    assert progress.flush()
    assert store.get("job-1").chunks_done == 50 and store.get("job-1").bytes_out == 250
    assert not progress.flush()  # nothing pending any more
    assert store.writes == before + 2


def test_a_write_happens_again_once_the_interval_has_passed():
    store, clock = InMemoryStatusStore(), Clock()
    running_job(store)
    progress = CoalescedProgress(store, "job-1", 1, min_interval=1.0, clock=clock)
    progress.update(1, 10, 1, 1)
    clock.now += 0.5
    assert not progress.update(2, 10, 2, 2)
    clock.now += 0.5
    assert progress.update(3, 10, 3, 3)
    assert store.get("job-1").chunks_done == 3


def test_counts_reported_out_of_order_never_go_down():
    store, clock = InMemoryStatusStore(), Clock()
    running_job(store)
    progress = CoalescedProgress(store, "job-1", 1, min_interval=0.0, clock=clock)
    progress.update(7, 10, 70, 35)
    progress.update(4, 10, 40, 20)
    status = store.get("job-1")
    assert (status.chunks_done, status.bytes_in, status.bytes_out) == (7, 70, 35)


def test_unchanged_counts_are_written_again_only_as_a_keepalive():
    store, clock = InMemoryStatusStore(), Clock()
    running_job(store)
    progress = CoalescedProgress(store, "job-1", 1, min_interval=1.0, keepalive=10.0, clock=clock)
    progress.update(1, 10, 1, 1)
    clock.now += 5
    assert not progress.update(1, 10, 1, 1)
    clock.now += 5
    assert progress.update(1, 10, 1, 1)


def test_a_writer_whose_attempt_was_replaced_learns_it_is_no_longer_current():
    store, clock = InMemoryStatusStore(), Clock()
    running_job(store)
    progress = CoalescedProgress(store, "job-1", 1, min_interval=0.0, clock=clock)
    progress.update(1, 10, 1, 1)
    assert progress.current
    store.transition("job-1", JobState.QUEUED, 2)
    progress.update(2, 10, 2, 2)
    assert not progress.current
    assert store.get("job-1").chunks_done == 1
