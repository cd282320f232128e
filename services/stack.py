"""The local stack (`dcas stack up/down`): emulators, resources, the streaming pipeline under a watcher, the reconciler, and the Manager."""
from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence, TextIO

from adapters import tracing
from services.config import Settings
from services.processes import (free_port, group_alive, http_ready, start_process, start_time, stop_group,
                               stop_process)

__all__ = ["LocalStack", "PipelineWatcher", "StackError", "STATE_FILE", "runtime_dir", "run_down", "run_up",
           "read_state", "running_state", "streaming_pipeline_command"]

log = logging.getLogger("dcas.stack")

STATE_FILE = "stack.json"
PIPELINE_MODULE = "pipelines.streaming"
DEMO_OWNER = "demo"  # the owner of the key the stack exports, and of the jobs `dcas submit` queues
_MANAGER_PORT = 8080  # when free; DCAS_HTTP_PORT chooses another


class StackError(Exception):
    """The stack cannot start or stop as asked; one line for a person."""


def runtime_dir() -> Path:
    """Where the running stack leaves its state file and logs: $DCAS_RUNTIME_DIR, else
    $XDG_RUNTIME_DIR/dcas, else /tmp/dcas-UID."""
    if os.environ.get("DCAS_RUNTIME_DIR"):
        return Path(os.environ["DCAS_RUNTIME_DIR"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "dcas"
    return Path(f"/tmp/dcas-{os.getuid()}")


def streaming_pipeline_command(settings: Settings) -> list[str]:
    """How the stack starts the streaming pipeline (pipelines/streaming.py accepts exactly these)."""
    return [sys.executable, "-m", PIPELINE_MODULE, f"--project={settings.project}",
            f"--subscription={settings.jobs_subscription}", f"--jobs_topic={settings.jobs_topic}",
            f"--dead_letter_topic={settings.dead_letter_topic}",
            f"--status_collection={settings.status_collection}", f"--max_attempts={settings.max_attempts}",
            # Four heartbeats per stale period: one late or lost write does not get a job re-queued.
            f"--heartbeat_interval={settings.stale_after / 4:g}"]


class PipelineWatcher:
    """Runs the pipeline command in its own process group and starts it again whenever it exits,
    after a back-off that grows while it keeps failing fast; stop() ends it and its group."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], on_start: Callable[[int], None],
                 min_backoff: float = 1.0, max_backoff: float = 30.0, healthy_after: float = 60.0) -> None:
        self._argv, self._env, self._on_start = list(argv), env, on_start
        self._min_backoff, self._max_backoff, self._healthy_after = min_backoff, max_backoff, healthy_after
        self._stop = threading.Event()
        self._started = threading.Event()
        # The watcher thread starts the child: Linux's parent-death signal follows the thread
        # that forked it, and this thread lives exactly as long as the child should.
        self._thread = threading.Thread(target=self._run, name="dcas-pipeline-watcher", daemon=True)
        self.process = None
        self.restarts = 0

    def start(self) -> "PipelineWatcher":
        self._thread.start()
        self._started.wait(30)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = self._min_backoff
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                # Its stdout goes to our stderr: our stdout carries only the exports.
                self.process = start_process(self._argv, env=self._env, stdout=_stderr_fd())
            except OSError as e:  # a command that cannot start: say so, and try again later
                self.process = None
                log.error(json.dumps({"event": "pipeline-not-started", "command": self._argv,
                                      "error": f"{type(e).__name__}: {e}"}))
            else:
                self._on_start(self.process.pid)
                log.info(json.dumps({"event": "pipeline-started", "pid": self.process.pid,
                                     "restarts": self.restarts}))
            self._started.set()
            if self.process is not None:
                while self.process.poll() is None and not self._stop.wait(0.2):
                    pass
                if self._stop.is_set():
                    stop_process(self.process)
                    return
                stop_process(self.process, timeout=5)  # whatever it left in its group goes too
            ran = time.monotonic() - began
            backoff = self._min_backoff if ran >= self._healthy_after else backoff
            log.warning(json.dumps({"event": "pipeline-exited", "restart_in": backoff,
                                    "status": None if self.process is None else self.process.returncode,
                                    "ran_seconds": round(ran, 1)}))
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, self._max_backoff)
            self.restarts += 1


def _stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced sys.stderr (tests): let it inherit
        return None


@dataclasses.dataclass
class _Group:
    pgid: int
    start_time: int | None


class LocalStack:
    """Everything `dcas stack up` runs; up() returns the environment that reaches it."""

    def __init__(self, settings: Settings, runtime: Path, pipeline_argv: Sequence[str] | None) -> None:
        self.base_settings = settings
        self.settings = settings
        self.runtime = runtime
        self._pipeline_argv = None if pipeline_argv is None else list(pipeline_argv)
        self._emulators: list = []
        self._groups: dict[str, _Group] = {}
        self._watcher: PipelineWatcher | None = None
        self._reconciler = None
        self._adapters = None
        self._manager = None
        self._lock = threading.Lock()
        self._exports: dict[str, str] = {}

    def up(self) -> dict[str, str]:
        from services import setup
        from services.bootstrap import bootstrap
        from services.emulators import start_fake_gcs_server, start_firestore_emulator, start_pubsub_emulator
        from services.reconciler import ReconcilerLoop

        self.runtime.mkdir(parents=True, exist_ok=True)
        self._save()
        project = self.base_settings.project
        for name, start in (("pubsub-emulator", lambda p: start_pubsub_emulator(project, log_path=p)),
                            ("firestore-emulator", lambda p: start_firestore_emulator(project, log_path=p)),
                            ("fake-gcs-server", lambda p: start_fake_gcs_server(log_path=p))):
            emulator = start(self.runtime / f"{name}.log")
            self._emulators.append(emulator)
            self._record(name, emulator.process.pid)
            os.environ.update(emulator.env)
            log.info(json.dumps({"event": "emulator-ready", "name": name, **emulator.env}))
        self.settings = Settings.from_env(os.environ)
        # The same code as `dcas setup`: one line per resource, then one that says all are there.
        outcomes = setup.apply(setup.plan(self.settings, iam=False), on_outcome=lambda o: log.info(json.dumps(
            {"event": "resource", "action": o.action, "kind": o.resource.kind, "resource": o.resource.name,
             **({"detail": o.detail} if o.detail else {})})))
        log.info(json.dumps({"event": "resources-ready", "resources": len(outcomes)}))
        self._exports = self.settings.environment()
        child_env = {**os.environ, **self._exports}
        if self._pipeline_argv is not None:
            self._watcher = PipelineWatcher(self._pipeline_argv, child_env,
                                            lambda pid: self._record("pipeline", pid)).start()
        self._adapters = bootstrap(self.settings)
        self._reconciler = ReconcilerLoop(self._adapters, self.settings.reconcile_interval,
                                          self.settings.queued_timeout, self.settings.stale_after,
                                          self.settings.max_attempts).start()
        self._exports.update(self._start_manager(child_env))
        self._save(ready=True)
        return dict(self._exports)

    def _start_manager(self, env: dict[str, str]) -> dict[str, str]:
        """The Manager and Status services (one uvicorn process), and a demo owner's key for them."""
        from services import keys
        port = int(os.environ.get("DCAS_HTTP_PORT") or 0) or _port_or_free(_MANAGER_PORT)
        url = f"http://127.0.0.1:{port}"
        self._manager = start_process([sys.executable, "-m", "services.http.main", "--port", str(port)],
                                      env=env, stdout=_stderr_fd(), stderr=_stderr_fd())
        self._record("manager", self._manager.pid)
        ready = http_ready(f"{url}/healthz")
        deadline = time.monotonic() + 60
        while not ready():
            if self._manager.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"the Manager did not start on {url} (see its log above)")
            time.sleep(0.1)
        key = keys.create_key(self._adapters.keys, DEMO_OWNER)
        log.info(json.dumps({"event": "manager-ready", "url": url}))
        return {"DCAS_SERVER": url, "DCAS_API_KEY": key, "DCAS_OWNER": DEMO_OWNER}

    def down(self) -> None:
        """Stops what up() started, the last started first; safe after a partial up()."""
        if self._manager is not None:
            stop_process(self._manager)
        if self._reconciler is not None:
            self._reconciler.stop()
        if self._watcher is not None:
            self._watcher.stop()
        if self._adapters is not None:
            try:
                self._adapters.close()
            except Exception as e:  # a client that cannot close cleanly must not keep emulators up
                log.warning(json.dumps({"event": "close-failed", "error": f"{type(e).__name__}: {e}"}))
        for emulator in reversed(self._emulators):
            emulator.stop()
            log.info(json.dumps({"event": "stopped", "name": emulator.name}))
        self._emulators.clear()
        try:
            (self.runtime / STATE_FILE).unlink()
        except FileNotFoundError:
            pass

    def _record(self, name: str, pid: int) -> None:
        with self._lock:
            self._groups[name] = _Group(pid, start_time(pid))
        self._save(ready=bool(self._exports))

    def _save(self, ready: bool = False) -> None:
        with self._lock:
            state = {"pid": os.getpid(), "start_time": start_time(os.getpid()), "ready": ready,
                     "groups": {name: dataclasses.asdict(g) for name, g in self._groups.items()},
                     "exports": self._exports}
            temp = self.runtime / f".{STATE_FILE}.{os.getpid()}"
            temp.write_text(json.dumps(state, indent=2))
            temp.replace(self.runtime / STATE_FILE)


def _port_or_free(port: int) -> int:
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            return free_port()


def read_state(runtime: Path | None = None) -> dict | None:
    """The running (or crashed) stack's state file, or None."""
    try:
        return json.loads(((runtime or runtime_dir()) / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return None


def running_state(runtime: Path | None = None) -> dict | None:
    """The state of a stack that is running and ready, or None."""
    state = read_state(runtime)
    if state is None or not state.get("ready") or not _alive(state["pid"], state.get("start_time")):
        return None
    return state


def _alive(pid: int, started: int | None) -> bool:
    """The process we recorded is still running: same start time (not a reused id), not a zombie
    (a stack that has exited but whose parent has not reaped it yet counts as stopped)."""
    now = start_time(pid, running=True)
    return now is not None and now == started


def _stop_recorded_groups(state: dict, timeout: float) -> list[str]:
    """Stops each group the state file names that is still ours: its leader is the process we
    recorded (same start time), or its leader is gone but members remain (Linux does not hand out
    the id of a live group to a new process)."""
    stopped = []
    for name, group in state.get("groups", {}).items():
        pgid, leader_start = group["pgid"], group.get("start_time")
        leader_now = start_time(pgid)
        if leader_now is not None and leader_now != leader_start:
            continue  # the id was reused by someone else's process
        if group_alive(pgid):
            stop_group(pgid, timeout)
            stopped.append(name)
    return stopped


def run_up(stdout: TextIO, stderr: TextIO, *, pipeline_command: str | None = None,
           with_pipeline: bool = True) -> int:
    """`dcas stack up`: starts the stack, prints `export NAME=value` lines and `# ready` to stdout,
    then runs until SIGINT/SIGTERM (or `dcas stack down`) and stops everything it started."""
    configure_json_logging(stderr)
    runtime = runtime_dir()
    state = read_state(runtime)
    if state is not None:
        if _alive(state["pid"], state.get("start_time")):
            raise StackError(f"a local stack is already running (pid {state['pid']}); "
                             "`dcas stack down` stops it")
        leftovers = _stop_recorded_groups(state, timeout=10)
        log.warning(json.dumps({"event": "stale-state-cleared", "stopped": leftovers}))
    settings = Settings.from_env()
    argv = None
    if pipeline_command:
        argv = shlex.split(pipeline_command)
    elif with_pipeline:
        if importlib.util.find_spec(PIPELINE_MODULE) is None:
            raise StackError(f"the streaming pipeline ({PIPELINE_MODULE}) is missing from this install; "
                             "`dcas stack up --no-pipeline` starts the rest")
        argv = streaming_pipeline_command(settings)  # names fixed by settings, hosts by the env
    stack = LocalStack(settings, runtime, argv)
    previous = {sig: signal.signal(sig, _stop_on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        exports = stack.up()
        # Logged before `# ready` is printed, so a reader of both never sees `# ready` first.
        log.info(json.dumps({"event": "ready", "runtime": str(runtime)}))
        for name, value in exports.items():
            print(f"export {name}={shlex.quote(value)}", file=stdout)
        print("# ready", file=stdout, flush=True)
        if "DCAS_SERVER" in exports:
            print(f"dcas: web page at {exports['DCAS_SERVER']}/ - sign in with the demo key "
                  f"{exports['DCAS_API_KEY']}", file=stderr, flush=True)
        while True:
            time.sleep(3600)
    except _Stop:
        log.info(json.dumps({"event": "stopping"}))
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        stack.down()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info(json.dumps({"event": "stopped"}))
    return 0


def run_down(stderr: TextIO, timeout: float = 60.0) -> int:
    """`dcas stack down`: stops the running stack (found through its state file) and anything it
    left behind."""
    runtime = runtime_dir()
    state = read_state(runtime)
    if state is None:
        raise StackError(f"no local stack is running (no {STATE_FILE} in {runtime})")
    pid = state["pid"]
    if _alive(pid, state.get("start_time")):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid, state.get("start_time")) and time.monotonic() < deadline:
            time.sleep(0.1)
    leftovers = _stop_recorded_groups(state, timeout=10)
    try:
        (runtime / STATE_FILE).unlink()
    except FileNotFoundError:
        pass
    extra = f"; stopped what it left: {', '.join(leftovers)}" if leftovers else ""
    print(f"dcas: stopped the local stack (pid {pid}){extra}", file=stderr)
    return 0


class _Stop(BaseException):
    """Raised in the main thread by SIGTERM or SIGINT: unwinds up() or the wait into the clean-up."""


def _stop_on_signal(signum, frame) -> None:
    raise _Stop()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and job_id where the record has one.
    A message that is itself a JSON object is merged in (the stack and the pipeline log events so)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
                 .isoformat(timespec="milliseconds"), "level": record.levelname, "logger": record.name}
        message = record.getMessage()
        try:
            parsed = json.loads(message)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            entry.update(parsed)
        else:
            entry["message"] = message
        if getattr(record, "job_id", None):
            entry["job_id"] = record.job_id
        if "trace_id" not in entry and tracing.current_trace_id():
            entry["trace_id"] = tracing.current_trace_id()
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_json_logging(stream: TextIO, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    dcas = logging.getLogger("dcas")
    dcas.handlers[:] = [handler]
    dcas.setLevel(level)
    dcas.propagate = False
