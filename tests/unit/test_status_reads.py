"""Status reads shared by concurrent requests for one job: one store read at a time, never a stale answer."""
from __future__ import annotations

import asyncio
import threading

import pytest

from adapters.jobs import JobRequest, JobState, JobStatus
from adapters.memory import InMemoryStatusStore
from services.access import JobNotFound, StatusReads

JOB = "job-1"


class _GatedStore:
    """The in-memory store, counting reads; the first read takes its answer, then waits to be let go."""

    def __init__(self, fail_first: bool = False) -> None:
        self.inner = InMemoryStatusStore()
        self.inner.create(JobStatus.queued(JobRequest(JOB, "compress", "gs://b/in", "gs://b/in.dcz", owner="ann")))
        self.reads = 0
        self.fail_first = fail_first
        self.first_started, self.release = threading.Event(), threading.Event()

    def get(self, job_id: str) -> JobStatus | None:
        self.reads += 1
        if self.reads > 1:
            return self.inner.get(job_id)
        answer = self.inner.get(job_id)
        self.first_started.set()
        self.release.wait(10)
        if self.fail_first:
            raise ConnectionError("the store went away")
        return answer


async def _first_read_in_flight(store: _GatedStore, reads: StatusReads) -> asyncio.Future:
    first = asyncio.ensure_future(reads.owned("ann", JOB))
    await asyncio.get_running_loop().run_in_executor(None, store.first_started.wait, 10)
    return first


def test_requests_arriving_during_a_read_share_the_next_one_and_see_what_changed_meanwhile():
    store = _GatedStore()

    async def scenario():
        reads = StatusReads(store)
        first = await _first_read_in_flight(store, reads)
        store.inner.transition(JOB, JobState.RUNNING, 1)  # after the first read took its answer
        later = [asyncio.ensure_future(reads.owned("ann", JOB)) for _ in range(10)]
        await asyncio.sleep(0.05)
        store.release.set()
        return await first, await asyncio.gather(*later)

    first, later = asyncio.run(scenario())
    assert first.state is JobState.QUEUED
    assert [s.state for s in later] == [JobState.RUNNING] * 10
    assert store.reads == 2


def test_a_shared_read_answers_each_owner_for_itself():
    store = _GatedStore()

    async def scenario():
        reads = StatusReads(store)
        first = await _first_read_in_flight(store, reads)
        stranger = asyncio.ensure_future(reads.owned("bob", JOB))
        owner = asyncio.ensure_future(reads.owned("ann", JOB))
        await asyncio.sleep(0.05)
        store.release.set()
        await first
        with pytest.raises(JobNotFound):
            await stranger
        return await owner

    assert asyncio.run(scenario()).owner == "ann"
    assert store.reads == 2


def test_a_failed_read_fails_every_request_waiting_on_it_and_the_next_request_reads_again():
    store = _GatedStore(fail_first=True)

    async def scenario():
        reads = StatusReads(store)
        first = await _first_read_in_flight(store, reads)
        store.release.set()
        with pytest.raises(ConnectionError):
            await first
        return await reads.owned("ann", JOB)

    assert asyncio.run(scenario()).state is JobState.QUEUED
    assert store.reads == 2


def test_an_implausible_job_id_is_not_found_without_a_read():
    store = _GatedStore()
    with pytest.raises(JobNotFound):
        asyncio.run(StatusReads(store).owned("ann", "../etc"))
    assert store.reads == 0
