"""`dcas stack up/down` and the job commands as real processes: exports, live services, a watched pipeline, nothing left behind."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.processes import group_alive

REPO = Path(__file__).absolute().parent.parent.parent
REQUIRED = ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT",
            "DCAS_BUCKET", "DCAS_JOBS_TOPIC")
# A stand-in for the streaming pipeline: records the environment it was given, then waits.
STAND_IN = (f"{sys.executable} -c 'import json, os, sys, time; "
            "open(sys.argv[1], \"a\").write(json.dumps(dict(os.environ)) + \"\\n\"); time.sleep(600)'")

pytestmark = pytest.mark.slow


def clean_env(runtime: Path) -> dict[str, str]:
    """Our environment without any emulator or DCAS settings (a session fixture may have set some)."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_EMULATOR_HOST") and not k.startswith("DCAS_") and k != "GOOGLE_CLOUD_PROJECT"}
    return {**env, "DCAS_RUNTIME_DIR": str(runtime),
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def dcas(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def in_process(*args: str) -> tuple[int, str, str]:
    from services.cli import main
    out, err = io.StringIO(), io.StringIO()
    return main(list(args), stdout=out, stderr=err), out.getvalue(), err.getvalue()


def error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("dcas: error: ")
    return line


class RunningStack:
    def __init__(self, runtime: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.runtime = runtime
        self.env = {**clean_env(runtime), **(env or {})}
        self.process = subprocess.Popen([sys.executable, "-m", "services.cli", "stack", "up", *args],
                                        stdout=subprocess.PIPE, stderr=open(runtime / "stack.err", "w"),
                                        text=True, env=self.env)
        self.exports: dict[str, str] = {}
        deadline = time.monotonic() + 180
        for line in self.process.stdout:
            if line.strip() == "# ready":
                break
            assert line.startswith("export "), line
            name, _, value = line[len("export "):].strip().partition("=")
            self.exports[name] = value
            assert time.monotonic() < deadline
        else:
            raise AssertionError(f"the stack ended before it was ready:\n{self.stderr()}")
        self.state = json.loads((runtime / "stack.json").read_text())

    def stderr(self) -> str:
        return (self.runtime / "stack.err").read_text()

    def client_env(self) -> dict[str, str]:
        return {**self.env, **self.exports}

    def groups(self) -> dict[str, int]:
        return {name: g["pgid"] for name, g in
                json.loads((self.runtime / "stack.json").read_text())["groups"].items()}

    def kill(self) -> None:
        if self.process.poll() is None:
            dcas("stack", "down", env=self.env)
            self.process.wait(timeout=60)


def processes_in_groups(groups) -> list[str]:
    """Live (not zombie) processes whose process group is one of `groups`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) in groups:
            found.append(stat.split(" ", 2)[1])
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    runtime = tmp_path_factory.mktemp("stack-runtime")
    running = RunningStack(runtime, "--pipeline-command", f"{STAND_IN} {runtime / 'pipeline-env.jsonl'}")
    yield running
    running.kill()


def test_stack_up_prints_the_environment_that_reaches_it(stack):
    assert set(REQUIRED) <= set(stack.exports)
    assert stack.exports["DCAS_JOBS_TOPIC"] == f"projects/{stack.exports['GOOGLE_CLOUD_PROJECT']}/topics/dcas-jobs"
    assert stack.state["ready"] and set(stack.state["groups"]) == {
        "pubsub-emulator", "firestore-emulator", "fake-gcs-server", "pipeline", "manager"}
    logs = [json.loads(line) for line in stack.stderr().splitlines() if line.startswith("{")]
    assert any(entry.get("event") == "ready" for entry in logs)


def test_every_service_of_the_stack_answers(stack, monkeypatch):
    for name, value in stack.exports.items():
        monkeypatch.setenv(name, value)
    from google.cloud import pubsub_v1, storage
    topic = pubsub_v1.PublisherClient().get_topic(topic=stack.exports["DCAS_JOBS_TOPIC"])
    assert topic.schema_settings.schema.endswith("/schemas/dcas-job-v1")
    assert storage.Client(project=stack.exports["GOOGLE_CLOUD_PROJECT"]).get_bucket(
        stack.exports["DCAS_BUCKET"]).name == stack.exports["DCAS_BUCKET"]
    from adapters.firestore import FirestoreStatusStore
    assert FirestoreStatusStore(stack.exports["GOOGLE_CLOUD_PROJECT"]).get("no-such-job") is None


def test_the_manager_answers_with_the_demo_key_the_stack_exports(stack, monkeypatch):
    import httpx
    server, key = stack.exports["DCAS_SERVER"], stack.exports["DCAS_API_KEY"]
    assert httpx.get(f"{server}/v1/jobs", headers={"Authorization": f"Bearer {key}"}).json()["jobs"] == []
    assert httpx.get(f"{server}/v1/jobs").status_code == 401
    made = dcas("keys", "create", "eve", env=stack.client_env())
    assert made.returncode == 0, made.stderr
    other = made.stdout.strip()
    assert other.startswith("dcas_") and other != key
    assert httpx.get(f"{server}/v1/jobs", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    # Listing and revoking in this process (a `dcas` subprocess costs seconds), against the
    # stack's Firestore; the Manager had the key in its cache, its listener must make it forget.
    for name, value in stack.exports.items():
        monkeypatch.setenv(name, value)
    code, listed, _ = in_process("keys", "list", "eve")
    [line] = listed.splitlines()
    assert code == 0 and line.split()[1] == "eve" and other not in listed
    assert in_process("keys", "revoke", line.split()[0]) == (0, f"revoked {line.split()[0]} of eve\n", "")
    # At once by the Manager's listener; within its 10 s key cache if the listener missed it.
    deadline = time.monotonic() + 15
    while httpx.get(f"{server}/v1/jobs", headers={"Authorization": f"Bearer {other}"}).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.05)
    code, _, err = in_process("keys", "revoke", "eve")
    assert code == 1 and err.startswith("dcas: error: no key has the id 'eve'") and len(err.splitlines()) == 1


def test_the_pipeline_gets_the_stacks_environment(stack):
    seen = json.loads((stack.runtime / "pipeline-env.jsonl").read_text().splitlines()[0])
    assert {name: seen.get(name) for name in REQUIRED} == {name: stack.exports[name] for name in REQUIRED}


def test_submit_prints_the_job_id_and_status_shows_its_document(stack):
    env = stack.client_env()
    bucket = stack.exports["DCAS_BUCKET"]
    submitted = dcas("submit", f"gs://{bucket}/in.txt", f"gs://{bucket}/in.txt.dcz", env=env)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.splitlines()[-1]
    shown = dcas("status", job_id, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert {"state", "attempt", "chunks_done", "chunks_total", "error", "output"} <= set(document)
    assert (document["state"], document["attempt"], document["output"]) == (
        "QUEUED", 1, f"gs://{bucket}/in.txt.dcz")
    again = dcas("submit", f"gs://{bucket}/in.txt", f"gs://{bucket}/x.dcz", "--job-id", job_id, env=env)
    assert "exists" in error_line(again)


def test_bad_job_requests_are_one_line_errors(stack):
    env = stack.client_env()
    assert "gs://BUCKET/NAME" in error_line(dcas("submit", "/etc/hostname", "gs://b/out", env=env))
    assert "no such job: nope" in error_line(dcas("status", "nope", env=env))
    missing = dcas("submit", "gs://b/in", "gs://b/out", env={**env, "DCAS_JOBS_TOPIC": "no-such-topic"})
    assert "topics/no-such-topic does not exist" in error_line(missing)


def pipeline_events(stack) -> list[dict]:
    """The watcher's log lines (starts, exits with their status), for a failure message."""
    return [entry for entry in (json.loads(line) for line in stack.stderr().splitlines() if line.startswith("{"))
            if str(entry.get("event", "")).startswith("pipeline-")]


def test_the_watcher_restarts_a_pipeline_that_stopped(stack):
    env_lines = stack.runtime / "pipeline-env.jsonl"

    def runs() -> int:  # every stand-in that got as far as running appended its environment
        return len(env_lines.read_text().splitlines()) if env_lines.exists() else 0

    deadline = time.monotonic() + 30
    while runs() == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    first, before = stack.groups()["pipeline"], runs()
    os.killpg(first, signal.SIGKILL)
    while (stack.groups()["pipeline"] == first or runs() == before) and time.monotonic() < deadline + 30:
        time.sleep(0.2)
    restarted = stack.groups()["pipeline"]
    why = f"pipeline events: {pipeline_events(stack)}"
    assert restarted != first and runs() > before, why
    assert group_alive(restarted), why
    assert any(e["event"] == "pipeline-exited" and e["status"] == -signal.SIGKILL for e in pipeline_events(stack))


def test_a_second_stack_is_refused_while_one_runs_and_stack_env_repeats_the_exports(stack):
    assert "already running" in error_line(dcas("stack", "up", "--no-pipeline", env=stack.env))
    repeated = dcas("stack", "env", env=stack.env)
    assert repeated.returncode == 0
    assert repeated.stdout.splitlines() == [
        f"export {name}={value}" for name, value in stack.exports.items()]


def test_stack_down_stops_every_process_the_stack_started(stack):
    # Runs last in this module: it takes down the module's stack.
    groups = set(stack.groups().values())
    assert processes_in_groups(groups)  # the emulators' Java servers among them
    down = dcas("stack", "down", env=stack.env)
    assert down.returncode == 0, down.stderr
    assert stack.process.wait(timeout=60) == 0
    assert processes_in_groups(groups) == []
    assert not (stack.runtime / "stack.json").exists()


def test_ctrl_c_stops_the_stack_and_everything_it_started(tmp_path):
    running = RunningStack(tmp_path, "--no-pipeline")
    try:
        groups = set(running.groups().values())
        running.process.send_signal(signal.SIGINT)
        assert running.process.wait(timeout=60) == 0
        assert processes_in_groups(groups) == []
    finally:
        running.kill()


def test_stack_down_without_a_stack_says_so(tmp_path):
    assert "no local stack is running" in error_line(dcas("stack", "down", env=clean_env(tmp_path)))
