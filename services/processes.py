"""Child processes that stop with everything they started: each runs as the leader of its own process group."""
from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

__all__ = ["EmulatorProcess", "dying_with_parent", "free_port", "group_alive", "http_ready", "signal_group",
           "start_emulator", "start_process", "stop_group", "stop_process"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ready(url: str) -> Callable[[], bool]:
    """A readiness probe: True once `url` answers with any HTTP status below 500."""
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status < 500
        except urllib.error.HTTPError as e:
            return e.code < 500
        except (urllib.error.URLError, OSError):
            return False
    return probe


@dataclass
class EmulatorProcess:
    """A running emulator: the leader of its own process group, with its output in a log file.

    Emulators are often wrappers (gcloud → java, a shell script → a JVM); stopping only the process
    we started would leave the real server running, so stop() signals the whole group.
    """

    name: str
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)  # what a client sets to reach this emulator
    keep_log: bool = False  # a log the caller named is the caller's; a temp log goes with the process

    def log_tail(self, max_bytes: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-max_bytes:].decode(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the whole process group, then SIGKILL it if anything is still alive after timeout."""
        stop_process(self.process, timeout)
        if not self.keep_log:
            try:
                self.log_path.unlink()
            except OSError:
                pass

    def __enter__(self) -> "EmulatorProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_emulator(name: str, argv: Sequence[str], ready: Callable[[], bool], *,
                   env: Mapping[str, str] | None = None, client_env: Mapping[str, str] | None = None,
                   timeout: float = 30.0, log_path: Path | None = None) -> EmulatorProcess:
    """Start argv in a new session (own process group), wait until ready() or fail with its log.

    Its output goes to `log_path` (kept), else to a temp file removed by stop().
    """
    if log_path is None:
        log_fd, log_name = tempfile.mkstemp(prefix=f"{name}-", suffix=".log")
    else:
        log_fd, log_name = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), str(log_path)
    # A file, not a pipe: nobody reads a pipe while tests run, and a full pipe blocks the server.
    with os.fdopen(log_fd, "wb") as log:
        process = subprocess.Popen(
            dying_with_parent(argv, {**os.environ, **(env or {})}), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True)
    emulator = EmulatorProcess(name, process, Path(log_name), dict(client_env or {}), log_path is not None)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with status {process.returncode} before it was "
                                   f"ready; its log ends with:\n{emulator.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not ready after {timeout:.0f} s; its log ends with:\n"
                                   f"{emulator.log_tail()}")
            time.sleep(0.05)
    except BaseException:
        emulator.stop()
        raise
    return emulator


_SETPRIV = shutil.which("setpriv")  # util-linux, on every Debian system


def dying_with_parent(argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """argv run so that Linux SIGTERMs it if we die without stopping it (no finaliser runs then).

    `setpriv --pdeathsig` sets that and then execs argv, rather than a preexec_fn: a preexec_fn
    makes subprocess use plain fork() and run Python in the child, where gRPC's fork handlers
    (our Pub/Sub and Firestore clients hold gRPC threads) sometimes aborted the child with SIGABRT
    before it started; without one, subprocess uses vfork, which runs no fork handlers. Covers the
    direct child only; a wrapper's own children are still reached by stop()'s killpg. Linux sends
    it when the *thread* that started the child ends, so start long-lived children from a thread
    that lives as long as they should (the main thread, or a watcher thread).
    """
    if _SETPRIV is None:
        return list(argv)  # not Linux: the owners' stop() still runs on every normal exit
    # A program that cannot start fails here, as Popen itself would fail, not as setpriv's exit.
    path = (env if env is not None else os.environ).get("PATH")
    if shutil.which(argv[0], path=path) is None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory (or not executable)", argv[0])
    return [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]


def start_process(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                  stdout=None, stderr=None) -> subprocess.Popen:
    """Start argv as the leader of a new process group that dies with the calling thread's process."""
    env = dict(os.environ if env is None else env)
    return subprocess.Popen(dying_with_parent(argv, env), stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=stderr, env=env, start_new_session=True)


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a process started by start_process and everything in its group; reap it."""
    group = process.pid  # start_new_session=True made the child its group leader
    signal_group(group, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    # The leader may have exited while children linger: finish the group off either way.
    stop_group(group, timeout)
    if process.poll() is None:
        process.wait()


def stop_group(group: int, timeout: float = 10.0) -> None:
    """SIGTERM process group `group`, and SIGKILL what is left of it after `timeout` seconds.

    For a group whose leader is not our child (`dcas stack down` stopping what the stack started);
    a zombie leader still counts as alive until its parent reaps it, so callers reap theirs first.
    """
    signal_group(group, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_alive(group):
        signal_group(group, signal.SIGKILL)


def signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True  # note: an exited but unreaped leader (a zombie) still counts, so reap it first


def start_time(pid: int, *, running: bool = False) -> int | None:
    """When `pid` started (clock ticks since boot, Linux), to tell a process from a later one that
    reused its id; None if there is no such process (or no /proc), or with `running=True` if it
    has exited and only waits to be reaped (a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        if running and fields[0] == "Z":
            return None
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None
