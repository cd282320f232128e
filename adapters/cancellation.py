"""Stopping the work of this process on Ctrl-C or SIGTERM: a flag workers check, a wait for publications."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

__all__ = ["JobCancelled", "request_stop", "stop_requested", "check", "reset", "publication",
           "wait_for_publications", "fault_point"]


class JobCancelled(Exception):
    """The process was asked to stop: work in progress fails its file instead of going on."""


_stop = threading.Event()
_in_flight = threading.Condition()
_publications = 0


def request_stop() -> None:
    """Asks every worker of this process to stop at its next check; safe in a signal handler."""
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def check() -> None:
    """Raises JobCancelled once a stop was requested; workers call it between chunks."""
    if _stop.is_set():
        raise JobCancelled("interrupted: the job was asked to stop")


def reset() -> None:
    """A new job starts: forget an earlier stop request."""
    _stop.clear()


@contextlib.contextmanager
def publication() -> Iterator[None]:
    """Wraps one file's publication: refused once a stop was requested, and counted while it runs,
    so that whoever stops the job can wait until no publication is half done."""
    global _publications
    with _in_flight:
        check()
        _publications += 1
    try:
        yield
    finally:
        with _in_flight:
            _publications -= 1
            _in_flight.notify_all()


def wait_for_publications(timeout: float | None = None) -> bool:
    """Waits until no publication of this process is in progress; False on timeout."""
    with _in_flight:
        return _in_flight.wait_for(lambda: _publications == 0, timeout)


# Fault injection for the test suite: DCAS_FAULT="point:SIGNAL" makes the process send itself
# SIGNAL (INT, TERM or KILL) the first time it reaches `point`. Unset, it costs one dict lookup.
_FAULT = os.environ.get("DCAS_FAULT", "")
_fired: set[str] = set()


def fault_point(name: str) -> None:
    """A named point where the fault-injection tests may interrupt or kill the process."""
    if not _FAULT or name in _fired:
        return
    point, _, signal_name = _FAULT.partition(":")
    if point != name:
        return
    _fired.add(name)
    os.kill(os.getpid(), getattr(signal, "SIG" + (signal_name or "INT")))
