"""Tests of the emulator launcher: an emulator and everything it started are stopped together."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from emulators import free_port, http_ready, start_emulator


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not reaped it yet.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def wait_until_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while process_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not process_exists(pid)


def start_wrapper_with_a_grandchild(tmp_path):
    """Like `gcloud beta emulators ...`: a wrapper whose real server is a child of its own."""
    port = free_port()
    pid_file = tmp_path / "grandchild.pid"
    script = (f"sleep 300 & echo $! > {pid_file}; "
              f"exec {sys.executable} -m http.server {port} --bind 127.0.0.1")
    emulator = start_emulator("wrapper", ["sh", "-c", script], http_ready(f"http://127.0.0.1:{port}/"))
    return emulator, int(pid_file.read_text())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_stop_ends_the_emulator_and_every_process_it_started(tmp_path):
    emulator, grandchild = start_wrapper_with_a_grandchild(tmp_path)
    assert process_exists(grandchild)
    emulator.stop()
    assert emulator.process.poll() is not None
    assert wait_until_gone(grandchild)


def test_an_emulator_that_exits_at_once_fails_with_its_log():
    with pytest.raises(RuntimeError, match="no-such-flag"):
        start_emulator("broken", [sys.executable, "-c", "import sys; sys.exit('no-such-flag')"],
                       lambda: False, timeout=10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses prctl and /proc")
def test_the_emulator_dies_with_a_killed_test_process(tmp_path):
    # A test process killed with SIGKILL runs no finaliser; the emulator must not outlive it.
    port = free_port()
    launcher = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; sys.path.insert(0, sys.argv[1]);"
         "from emulators import start_emulator, http_ready;"
         f"e = start_emulator('s', [sys.executable, '-m', 'http.server', '{port}', '--bind', '127.0.0.1'],"
         f" http_ready('http://127.0.0.1:{port}/'));"
         "print(e.process.pid, flush=True); time.sleep(300)",
         os.path.dirname(os.path.dirname(__file__))],
        stdout=subprocess.PIPE, text=True)
    try:
        server = int(launcher.stdout.readline())
        assert process_exists(server)
    finally:
        launcher.kill()
        launcher.wait()
    assert wait_until_gone(server)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_an_exited_process_waiting_to_be_reaped_does_not_count_as_running():
    # `dcas stack down` waits for the stack to stop; a stack started by a parent that has not
    # reaped it yet (a zombie) has stopped, and waiting on it cost the whole timeout.
    from services.processes import start_time
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        assert start_time(child.pid) is not None
        assert start_time(child.pid, running=True) is None
    finally:
        child.wait()
    assert start_time(child.pid) is None
