"""The stack's pipeline watcher with real child processes: restarts, back-off, a command that cannot start, stop."""
from __future__ import annotations

import os
import sys
import time

from services.processes import group_alive
from services.stack import PipelineWatcher


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_a_pipeline_that_keeps_exiting_is_started_again_each_time():
    started: list[int] = []
    watcher = PipelineWatcher([sys.executable, "-c", "pass"], dict(os.environ), started.append,
                              min_backoff=0.05, max_backoff=0.2).start()
    try:
        assert wait_for(lambda: len(started) >= 3)
    finally:
        watcher.stop()
    assert len(set(started)) == len(started) and watcher.restarts >= 2


def test_a_command_that_cannot_start_is_tried_again_without_killing_the_watcher():
    started: list[int] = []
    watcher = PipelineWatcher(["/nonexistent/pipeline"], dict(os.environ), started.append,
                              min_backoff=0.05, max_backoff=0.1).start()
    try:
        assert wait_for(lambda: watcher.restarts >= 2)
    finally:
        watcher.stop()
    assert started == []


def test_stop_ends_the_running_pipeline_and_its_whole_group():
    started: list[int] = []
    script = "import subprocess, sys, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    watcher = PipelineWatcher([sys.executable, "-c", script], dict(os.environ), started.append).start()
    assert wait_for(lambda: started)
    assert group_alive(started[0])
    watcher.stop()
    assert wait_for(lambda: not group_alive(started[0]), timeout=15)
    assert watcher.restarts == 0
