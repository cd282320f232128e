"""The reconciler: jobs whose message was lost or whose worker went silent are published again, until they run out of attempts."""
from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from typing import Callable

from adapters.jobs import Failure, JobRequest, JobState, JobStatus, TransitionRefused
from services import cleanup
from services.bootstrap import Adapters

__all__ = ["Action", "ReconcilerLoop", "reconcile_once", "run_reconciler"]

log = logging.getLogger("dcas.reconciler")


@dataclasses.dataclass(frozen=True)
class Action:
    """What one pass did to one job: `republished` (same attempt), `requeued` (next attempt) or `failed`."""

    job_id: str
    action: str
    attempt: int


def reconcile_once(adapters: Adapters, now: datetime.datetime, queued_for: float, heartbeat_stale: float,
                   max_attempts: int, recently_published: dict[str, datetime.datetime] | None = None
                   ) -> list[Action]:
    """One pass over the stale jobs.

    - QUEUED for more than `queued_for` seconds: its message may be lost, so the same request is
      published again (same attempt: if both copies arrive, the claim takes one). A job published
      by an earlier pass less than `queued_for` ago (`recently_published`, kept by the caller
      between passes) waits, so a long backlog is not flooded with copies.
    - RUNNING with no heartbeat for `heartbeat_stale` seconds: its worker is gone; the job is
      re-queued for attempt + 1 (which makes the old attempt's writes stale) and that request is
      published. A job already on attempt `max_attempts` is FAILED instead, with the reason.

    A transition refused meanwhile (the job moved on) is skipped. Returns what was done.
    """
    memo = {} if recently_published is None else recently_published
    queued_before = _iso(now - datetime.timedelta(seconds=queued_for))
    heartbeat_before = _iso(now - datetime.timedelta(seconds=heartbeat_stale))
    actions: list[Action] = []
    for status in adapters.status.stale_jobs(queued_before, heartbeat_before):
        try:
            action = _reconcile(adapters, status, now, queued_for, heartbeat_stale, max_attempts, memo)
        except TransitionRefused as e:
            log.info("job %s moved on meanwhile: %s", status.job_id, e, extra={"job_id": status.job_id})
            continue
        except Exception as e:  # one job's trouble must not stop the pass (the next pass retries)
            log.warning("job %s: reconcile failed: %s: %s", status.job_id, type(e).__name__, e,
                        extra={"job_id": status.job_id})
            continue
        if action is not None:
            log.info("job %s %s for attempt %d", status.job_id, action.action, action.attempt,
                     extra={"job_id": status.job_id})
            actions.append(action)
    for job_id, when in list(memo.items()):
        if (now - when).total_seconds() > queued_for:
            del memo[job_id]
    return actions


def _reconcile(adapters: Adapters, status: JobStatus, now: datetime.datetime, queued_for: float,
               heartbeat_stale: float, max_attempts: int, memo: dict) -> Action | None:
    if status.request is None:
        return _fail(adapters, status, "Unrecoverable",
                     "the status document holds no request to publish again")
    request = JobRequest.from_dict(status.request)
    if status.state is JobState.QUEUED:
        last = memo.get(status.job_id)
        if last is not None and (now - last).total_seconds() < queued_for:
            return None
        if request.attempt != status.attempt:
            request = dataclasses.replace(request, attempt=status.attempt)
        adapters.queue.publish(request)
        memo[status.job_id] = now
        return Action(status.job_id, "republished", status.attempt)
    if status.attempt >= max_attempts:
        return _fail(adapters, status, "AttemptsExhausted",
                     f"attempt {status.attempt} of {max_attempts} stopped sending heartbeats for over "
                     f"{heartbeat_stale:g} s; no attempts left")
    retry = dataclasses.replace(request, attempt=status.attempt).next_attempt()
    adapters.status.transition(status.job_id, JobState.QUEUED, retry.attempt, request=retry.to_dict())
    # Published after the transition: if this publish is lost, the job is QUEUED and a later
    # pass publishes it again.
    adapters.queue.publish(retry)
    memo[status.job_id] = now
    return Action(status.job_id, "requeued", retry.attempt)


def _fail(adapters: Adapters, status: JobStatus, error_type: str, why: str) -> Action:
    failure = Failure(status.job_id, status.input, "reconcile", error_type, why, status.attempt)
    adapters.status.transition(status.job_id, JobState.FAILED, status.attempt, error=failure.to_dict())
    return Action(status.job_id, "failed", status.attempt)


def _iso(moment: datetime.datetime) -> str:
    # The format of adapters.jobs.utc_now, so that the store compares like with like.
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="microseconds")


class ReconcilerLoop:
    """reconcile_once, then services.cleanup.sweep, every `interval` seconds on a thread, until stop()."""

    def __init__(self, adapters: Adapters, interval: float, queued_for: float, heartbeat_stale: float,
                 max_attempts: int) -> None:
        self._adapters, self._interval = adapters, interval
        self._limits = (queued_for, heartbeat_stale, max_attempts)
        self._stop = threading.Event()
        self._memo: dict[str, datetime.datetime] = {}
        self._thread = threading.Thread(target=self._run, name="dcas-reconciler", daemon=True)
        self.passes = 0

    def start(self) -> "ReconcilerLoop":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            _one_pass(self._adapters, self._limits, self._memo, keep_going=True)
            self.passes += 1


def _one_pass(adapters: Adapters, limits: tuple, memo: dict, keep_going: bool) -> list[Action]:
    """reconcile_once, then services.cleanup.sweep. With `keep_going` (a loop), a step the store
    fails is logged and left to the next pass; without (a cron run), it raises, so the run reports it."""
    actions: list[Action] = []
    try:
        actions = reconcile_once(adapters, datetime.datetime.now(datetime.timezone.utc), *limits,
                                 recently_published=memo)
    except Exception as e:  # noqa: BLE001 - the store unreachable for a while
        if not keep_going:
            raise
        log.warning("reconciler pass failed: %s: %s", type(e).__name__, e)
    try:
        cleanup.sweep(adapters, datetime.datetime.now(datetime.timezone.utc))
    except Exception as e:  # noqa: BLE001 - same: the next pass sweeps again
        if not keep_going:
            raise
        log.warning("cleanup pass failed: %s: %s", type(e).__name__, e)
    return actions


def run_reconciler(adapters: Adapters, *, loop: bool = False, interval: float | None = None,
                   on_action: Callable[[Action], None] | None = None,
                   stop: threading.Event | None = None) -> int:
    """`dcas reconcile`: one pass (reconcile, then sweep) with the limits of `adapters.settings` (a
    cron job's run), or with `loop` a pass every `interval` seconds (default: the settings') until
    `stop` is set. Returns
    the number of passes. A pass the store fails is logged and, in a loop, tried again next time;
    a single pass lets it raise, so that a cron run reports it."""
    settings = adapters.settings
    limits = (settings.queued_timeout, settings.stale_after, settings.max_attempts)
    stop = stop or threading.Event()
    memo: dict[str, datetime.datetime] = {}
    passes = 0
    while True:
        actions = _one_pass(adapters, limits, memo, keep_going=loop)
        passes += 1
        for action in actions:
            if on_action is not None:
                on_action(action)
        if not loop or stop.wait(settings.reconcile_interval if interval is None else interval):
            return passes
