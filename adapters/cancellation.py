"""Stopping the work of this process on Ctrl-C or SIGTERM: a flag workers check, a wait for publications."""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
from typing import Iterator

__all__ = ["JobCancelled", "request_stop", "stop_on_write_error", "WRITE_ERRNOS", "stop_requested", "check", "reset", "publication",
           "wait_for_publications", "fault_point"]


class JobCancelled(Exception):
    """The process was asked to stop: work in progress fails its file instead of going on."""


_stop = threading.Event()
_in_flight = threading.Condition()
_publications = 0


_reason = ["interrupted: the job was asked to stop"]
# Errors after which no other worker can succeed: the disk (or quota) is full, or it fails.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})


def request_stop(reason: str | None = None) -> None:
    """Asks every worker of this process to stop at its next check; safe in a signal handler."""
    if reason and not _stop.is_set():
        _reason[0] = reason
    _stop.set()


def stop_on_write_error(error: BaseException) -> None:
    """After a write error no other worker can get past (a full disk), stop them all: the job fails
    now instead of decoding on for nothing."""
    if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
        request_stop(f"stopped after a write error: {error.strerror or error}")


def stop_requested() -> bool:
    return _stop.is_set()


def check() -> None:
    """Raises JobCancelled once a stop was requested; workers call it between chunks."""
    if _stop.is_set():
        raise JobCancelled(_reason[0])


def reset() -> None:
    """A new job starts: forget an earlier stop request."""
    _stop.clear()
    _reason[0] = "interrupted: the job was asked to stop"


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
