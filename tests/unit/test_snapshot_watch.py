"""The Firestore watch's own logic (re-subscription, re-reads, ordered delivery), with a listener of our own making."""
from __future__ import annotations

import threading
import time

from adapters.firestore import _SnapshotWatch
from adapters.jobs import JobRequest, JobState, JobStatus, transitioned


class _Listener:
    """What the client library's on_snapshot returns, as far as the watch uses it."""

    def __init__(self, active: bool = True):
        self.is_active, self.unsubscribed = active, False

    def unsubscribe(self) -> None:
        self.unsubscribed = True


def _states() -> list[JobStatus]:
    queued = JobStatus.queued(JobRequest("job-1", "compress", "gs://b/in", "gs://b/in.dcz", owner="ann"))
    time.sleep(0.001)
    running = transitioned(queued, JobState.RUNNING, 1)
    time.sleep(0.001)
    return [queued, running, transitioned(running, JobState.SUCCEEDED, 1)]


def _wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_watch_passes_on_each_state_once_and_in_order_whichever_path_brings_it():
    queued, running, succeeded = _states()
    seen: list[JobStatus] = []
    watch = _SnapshotWatch(seen.append, read=lambda: None)
    for status in (queued, running, queued, running, succeeded, running, succeeded):
        watch.deliver(status)
    assert [s.state for s in seen] == [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]


def test_a_watch_whose_listener_stays_silent_still_sees_the_document_by_reading_it():
    *_, succeeded = _states()
    seen: list[JobStatus] = []
    done = threading.Event()
    watch = _SnapshotWatch(lambda s: (seen.append(s), done.set()), read=lambda: succeeded,
                           check_every=0.01, read_every=0.05)
    watch.start(_Listener)
    try:
        assert done.wait(5)
        assert _wait_for(lambda: watch.reads >= 3)
    finally:
        watch.close()
    assert seen == [succeeded]  # read again and again, passed on once


def test_a_watch_subscribes_again_when_its_listener_has_ended_and_stops_when_closed():
    listeners: list[_Listener] = []

    def subscribe() -> _Listener:
        listeners.append(_Listener(active=len(listeners) >= 1))  # the first one ends at once
        return listeners[-1]

    watch = _SnapshotWatch(lambda s: None, read=lambda: None, check_every=0.01, read_every=60)
    watch.start(subscribe)
    assert _wait_for(lambda: watch.resubscriptions == 1)
    watch.close()
    assert len(listeners) == 2 and listeners[-1].unsubscribed
    time.sleep(0.05)
    assert len(listeners) == 2


class _Key:
    def __init__(self, key_id: str):
        self.id = key_id


def test_a_key_watch_reports_a_key_removed_while_its_listener_was_subscribing_again():
    from adapters.apikeys import _KeyWatch
    removed: list[str] = []
    listeners: list[tuple[_Listener, object]] = []

    def on_snapshot(callback) -> _Listener:
        listeners.append((_Listener(active=bool(listeners)), callback))  # the first stream ends at once
        return listeners[-1][0]

    watch = _KeyWatch(removed.append)
    watch.start(on_snapshot)
    watch.listener._check_every = 0.01
    try:
        first_callback = listeners[0][1]
        first_callback([_Key("a"), _Key("b"), _Key("c")], [], None)
        assert removed == []
        assert _wait_for(lambda: len(listeners) == 2)
        # The new subscription's first snapshot lists what is there now, with every key "added":
        # what went missing in between was removed.
        listeners[1][1]([_Key("c")], [], None)
        assert removed == ["a", "b"]
        listeners[1][1]([], [], None)
        assert removed == ["a", "b", "c"]
    finally:
        watch.close()
    assert listeners[-1][0].unsubscribed
