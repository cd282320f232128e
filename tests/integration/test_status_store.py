"""The status store's rules, the same tests against Firestore (emulator) and the in-memory fake that stands in for it."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from adapters.jobs import JobRequest, JobState, JobStatus, TransitionRefused, utc_now
from adapters.memory import InMemoryStatusStore


@pytest.fixture(params=["memory", "firestore"])
def store(request):
    if request.param == "memory":
        yield InMemoryStatusStore()
        return
    request.getfixturevalue("firestore_emulator")
    from adapters.firestore import FirestoreStatusSpec
    # A collection per test: the emulator keeps documents for the whole session.
    store = FirestoreStatusSpec("dcas-test", f"jobs-{uuid.uuid4().hex[:12]}").open()
    yield store
    store.close()


def queued(store, job_id: str = "job-1", owner: str = "ann") -> JobStatus:
    status = JobStatus.queued(JobRequest(job_id, "compress", f"gs://b/{job_id}", f"gs://b/{job_id}.dcz",
                                         owner=owner))
    assert store.create(status)
    return status


def test_a_job_id_is_created_once_and_the_first_document_stays(store):
    first = queued(store)
    other = JobStatus.queued(JobRequest("job-1", "decompress", "gs://b/x.dcz", "gs://b/x", owner="bob"))
    assert not store.create(other)
    assert store.get("job-1") == first
    assert store.get("no-such-job") is None


def test_racing_writers_claim_an_attempt_exactly_once(store):
    queued(store)
    results: list[object] = []
    start = threading.Barrier(4)

    def claim():
        start.wait()
        try:
            results.append(store.transition("job-1", JobState.RUNNING, 1))
        except TransitionRefused as e:
            results.append(e)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    winners = [r for r in results if isinstance(r, JobStatus)]
    assert len(results) == 4 and len(winners) == 1
    assert store.get("job-1").state is JobState.RUNNING


def test_a_duplicate_claim_is_refused(store):
    queued(store)
    claimed = store.transition("job-1", JobState.RUNNING, 1)
    assert claimed.heartbeat and JobState.RUNNING.value in claimed.times
    with pytest.raises(TransitionRefused, match="already claimed"):
        store.transition("job-1", JobState.RUNNING, 1)


def test_a_stale_attempt_is_refused_and_the_new_one_claims(store):
    queued(store)
    store.transition("job-1", JobState.RUNNING, 1)
    store.transition("job-1", JobState.QUEUED, 2)
    with pytest.raises(TransitionRefused, match="stale"):
        store.transition("job-1", JobState.RUNNING, 1)
    with pytest.raises(TransitionRefused, match="stale"):
        store.transition("job-1", JobState.SUCCEEDED, 1)
    assert store.transition("job-1", JobState.RUNNING, 2).attempt == 2


def test_a_finished_job_never_moves_again(store):
    queued(store)
    store.transition("job-1", JobState.RUNNING, 1)
    done = store.transition("job-1", JobState.SUCCEEDED, 1, output="gs://b/job-1.dcz", ratio=1.5)
    for state, attempt in ((JobState.FAILED, 1), (JobState.CANCELLED, 1), (JobState.QUEUED, 2),
                           (JobState.RUNNING, 1), (JobState.SUCCEEDED, 1)):
        with pytest.raises(TransitionRefused, match="already SUCCEEDED"):
            store.transition("job-1", state, attempt)
    assert not store.record_progress("job-1", 1, chunks_done=9, chunks_total=9, bytes_in=9, bytes_out=9)
    assert store.get("job-1") == done and done.ratio == 1.5


def test_a_failure_is_stored_with_its_fields_and_the_time_of_each_state(store):
    queued(store)
    store.transition("job-1", JobState.RUNNING, 1)
    failed = store.transition("job-1", JobState.FAILED, 1,
                              error={"stage": "decode part 0", "type": "FormatError", "message": "bad"})
    again = store.get("job-1")
    assert again.error == {"stage": "decode part 0", "type": "FormatError", "message": "bad"}
    assert set(again.times) == {"QUEUED", "RUNNING", "FAILED"}
    assert again.times["QUEUED"] <= again.times["RUNNING"] <= again.times["FAILED"] == failed.updated


def test_progress_never_goes_down_and_only_the_running_attempt_writes_it(store):
    queued(store)
    assert not store.record_progress("job-1", 1, chunks_done=1, chunks_total=4, bytes_in=1, bytes_out=1)
    store.transition("job-1", JobState.RUNNING, 1)
    assert store.record_progress("job-1", 1, chunks_done=3, chunks_total=4, bytes_in=30, bytes_out=15)
    assert store.record_progress("job-1", 1, chunks_done=2, chunks_total=4, bytes_in=20, bytes_out=10)
    assert not store.record_progress("job-1", 2, chunks_done=4, chunks_total=4, bytes_in=40, bytes_out=20)
    status = store.get("job-1")
    assert (status.chunks_done, status.chunks_total, status.bytes_in, status.bytes_out) == (3, 4, 30, 15)


def test_an_owners_jobs_come_newest_first_a_page_at_a_time(store):
    for i in range(5):
        queued(store, f"ann-{i}", owner="ann")
        time.sleep(0.002)  # distinct queued times
    queued(store, "bob-0", owner="bob")
    pages, cursor = [], None
    while True:
        page, cursor = store.list_jobs("ann", limit=2, cursor=cursor)
        pages.append([s.job_id for s in page])
        if cursor is None:
            break
    assert pages == [["ann-4", "ann-3"], ["ann-2", "ann-1"], ["ann-0"]]
    store.transition("ann-2", JobState.CANCELLED, 1)
    cancelled, cursor = store.list_jobs("ann", state=JobState.CANCELLED)
    assert [s.job_id for s in cancelled] == ["ann-2"] and cursor is None
    assert store.list_jobs("carol") == ([], None)


def test_stale_jobs_are_the_long_queued_and_the_running_without_a_recent_heartbeat(store):
    queued(store, "queued-long")
    store.transition(queued(store, "running-silent").job_id, JobState.RUNNING, 1)
    store.transition(queued(store, "done").job_id, JobState.CANCELLED, 1)
    cut = utc_now()
    time.sleep(0.002)
    queued(store, "queued-recent")
    store.transition(queued(store, "running-beating").job_id, JobState.RUNNING, 1)
    stale = {s.job_id: s.state for s in store.stale_jobs(queued_before=cut, heartbeat_before=cut)}
    assert stale == {"queued-long": JobState.QUEUED, "running-silent": JobState.RUNNING}
    # A heartbeat after the cut takes the silent job off the list.
    store.record_progress("running-silent", 1, chunks_done=1, chunks_total=2, bytes_in=1, bytes_out=1)
    stale = {s.job_id for s in store.stale_jobs(queued_before=cut, heartbeat_before=cut)}
    assert stale == {"queued-long"}


def test_a_deleted_running_job_is_cancelled_and_hidden_from_the_list_until_purged(store):
    queued(store, "run")
    store.transition("run", JobState.RUNNING, 1)
    queued(store, "done")
    store.transition("done", JobState.RUNNING, 1)
    store.transition("done", JobState.SUCCEEDED, 1, output="gs://b/done.dcz")
    queued(store, "kept")
    deleted = store.mark_deleted("run")
    assert deleted.state is JobState.CANCELLED and deleted.deleted and JobState.CANCELLED.value in deleted.times
    assert store.mark_deleted("done").state is JobState.SUCCEEDED  # a finished job keeps how it ended
    assert store.mark_deleted("run") is None and store.mark_deleted("missing") is None
    with pytest.raises(TransitionRefused):  # the worker still running it finds it finished
        store.transition("run", JobState.SUCCEEDED, 1)
    assert [s.job_id for s in store.list_jobs("ann")[0]] == ["kept"]
    assert store.list_jobs("ann", state=JobState.SUCCEEDED) == ([], None)
    assert store.get("run").deleted == deleted.deleted
    cut = utc_now()
    assert sorted(s.job_id for s in store.deleted_jobs(cut)) == ["done", "run"]
    assert store.deleted_jobs(deleted.deleted) == []  # strictly before
    store.purge("run")
    assert store.get("run") is None and [s.job_id for s in store.deleted_jobs(cut)] == ["done"]


def test_a_page_of_jobs_skips_deleted_ones_and_still_fills_up(store):
    for i in range(6):
        queued(store, f"ann-{i}")
        time.sleep(0.002)
    for i in (5, 4, 3):
        store.mark_deleted(f"ann-{i}")
    page, cursor = store.list_jobs("ann", limit=2)
    assert [s.job_id for s in page] == ["ann-2", "ann-1"] and cursor == "ann-1"
    assert [s.job_id for s in store.list_jobs("ann", limit=2, cursor=cursor)[0]] == ["ann-0"]


def test_a_cursor_keeps_its_place_after_its_job_was_deleted(store):
    for i in range(3):
        queued(store, f"ann-{i}")
        time.sleep(0.002)
    page, cursor = store.list_jobs("ann", limit=1)
    assert cursor == "ann-2"
    store.mark_deleted("ann-2")
    assert [s.job_id for s in store.list_jobs("ann", cursor=cursor)[0]] == ["ann-1", "ann-0"]
