"""Files through the Manager on the local stack with the real streaming pipeline: the CLI client and the web page."""
from __future__ import annotations

import importlib.util
import io
import json
import time

import httpx
import pytest
from browser import (download, pick_file, row_of, screenshot, sign_in, skip_without_chromium, start_browser,
                     stop_browser, wait_for)  # tests/ is on sys.path (conftest dir)
from samples import sample_text
from test_stack import RunningStack, dcas, error_line

import codec
from adapters import tracing
from services import cli

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("pipelines.streaming") is None,
    reason="the streaming pipeline (pipelines/streaming.py) is not on this branch yet")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    runtime = tmp_path_factory.mktemp("http-flow-runtime")
    # Every component writes its spans to one file, as a developer following a job would set it up.
    running = RunningStack(runtime, env={"DCAS_TRACE_FILE": str(runtime / "spans.jsonl")})
    yield running
    running.kill()


@pytest.fixture(scope="module")
def compressed(stack, tmp_path_factory) -> tuple[str, bytes]:
    """(job id, original bytes) of one local file compressed through the Manager and the pipeline:
    the job more than one test looks at, submitted once."""
    data = sample_text(2_500_000)
    source = tmp_path_factory.mktemp("compressed") / "notes.txt"
    source.write_bytes(data)
    submitted = dcas("submit", str(source), "--wait", env=stack.client_env(), timeout=300)
    assert submitted.returncode == 0, submitted.stderr + stack.stderr()[-3000:]
    return submitted.stdout.splitlines()[-1], data


def test_a_local_file_goes_through_the_manager_and_the_pipeline_and_comes_back(stack, compressed, tmp_path):
    env = stack.client_env()
    job_id, data = compressed

    followed = dcas("status", job_id, "--follow", "--json", env=env)
    states = [json.loads(line)["state"] for line in followed.stdout.splitlines()]
    assert followed.returncode == 0 and states[-1] == "SUCCEEDED"

    packed = tmp_path / "notes.txt.dcz"
    assert dcas("fetch", job_id, "-o", str(packed), env=env).returncode == 0
    assert codec.decode(packed.read_bytes()) == data
    server, key = env["DCAS_SERVER"], env["DCAS_API_KEY"]
    meta = httpx.get(f"{server}/v1/jobs/{job_id}/metadata", headers={"Authorization": f"Bearer {key}"}).json()
    assert (meta["og_size"], meta["cp_size"]) == (len(data), packed.stat().st_size)

    restored = dcas("submit", str(packed), "--decompress", "--wait", env=env, timeout=300)
    assert restored.returncode == 0, restored.stderr
    back = tmp_path / "back.txt"
    assert dcas("fetch", restored.stdout.splitlines()[-1], "-o", str(back), env=env).returncode == 0
    assert back.read_bytes() == data

    listed = dcas("jobs", "--json", env=env)
    assert {job_id, restored.stdout.splitlines()[-1]} <= {json.loads(line)["job_id"] for line in listed.stdout.splitlines()}


def spans_of(path: str, trace_id: str, last: str, timeout: float = 20) -> list[dict]:
    """The trace's spans once its `last` span is in the file (the job's status may say SUCCEEDED
    a moment before the span around that write has ended and been written)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = tracing.read_spans(path, trace_id)
        if any(s["name"] == last for s in spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.2)


def dcas_here(monkeypatch, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`dcas ARGS` in this process, with the stack's settings (a subprocess costs seconds on a busy machine)."""
    for name, value in env.items():
        if name.startswith("DCAS_") or name.endswith("_EMULATOR_HOST") or name == "GOOGLE_CLOUD_PROJECT":
            monkeypatch.setenv(name, value)
    stdout, stderr = io.StringIO(), io.StringIO()
    return cli.main(list(args), stdout=stdout, stderr=stderr), stdout.getvalue(), stderr.getvalue()


def test_one_job_is_one_trace_from_the_manager_through_the_pipeline_and_dcas_trace_shows_it(stack, compressed,
                                                                                             monkeypatch):
    env = stack.client_env()
    job_id, _ = compressed

    code, shown, errors = dcas_here(monkeypatch, env, "trace", job_id, "--json")
    assert code == 0, errors
    trace_id = json.loads(shown)["trace_id"]
    spans = spans_of(env["DCAS_TRACE_FILE"], trace_id, last="assemble")
    [root] = [s for s in spans if s["parent_id"] is None]
    assert (root["name"], root["service"], root["attributes"]["job_id"]) == ("POST /v1/jobs", "dcas-manager", job_id)
    by_id = {s["span_id"]: s for s in spans}

    def reaches_root(span) -> bool:
        while span["parent_id"] in by_id:
            span = by_id[span["parent_id"]]
        return span is root
    assert all(reaches_root(s) for s in spans)
    pipeline = {s["name"] for s in spans if s["service"] == "dcas-pipeline"}
    # No histogram stage: the Manager counted the table during the upload.
    assert {"claim", "status RUNNING", "plan", "encode part", "encode chunk", "assemble", "publish",
            "status SUCCEEDED"} <= pipeline
    assert {"status create", "publish job message"} <= {s["name"] for s in spans if s["service"] == "dcas-manager"}

    text = dcas("trace", job_id, env=env)
    lines = text.stdout.splitlines()
    assert text.returncode == 0 and lines[0].startswith(f"{job_id}: SUCCEEDED, attempt 1, compress ")
    assert lines[1].startswith(f"trace {trace_id}")
    states = [line.split()[2] for line in lines[2:] if line.split()[1] == "status"]
    assert states == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert sum("dcas-" in line for line in lines[2:]) >= len(spans)
    assert dcas_here(monkeypatch, env, "trace", "job-nope")[1:] == ("", "dcas: error: no such job: job-nope\n")
    logged = [json.loads(line[line.index("{"):]) for line in stack.stderr().splitlines()
              if job_id in line and '"event"' in line]
    assert {"job-claimed", "job-succeeded"} <= {entry["event"] for entry in logged if entry.get("trace_id") == trace_id}


def test_a_corrupt_dcz_fails_with_the_pipelines_reason(stack, tmp_path):
    damaged = bytearray(codec.encode(sample_text(200_000)))
    damaged[len(damaged) // 2] ^= 0xFF
    bad = tmp_path / "bad.dcz"
    bad.write_bytes(bytes(damaged))
    failed = dcas("submit", str(bad), "--decompress", "--wait", env=stack.client_env(), timeout=300)
    assert "FAILED" in error_line(failed)


@skip_without_chromium
def test_the_web_page_uploads_follows_and_downloads_on_the_real_stack(stack, tmp_path):
    data = sample_text(6_000_000)
    source = tmp_path / "report.txt"
    source.write_bytes(data)
    browser = start_browser()
    try:
        sign_in(browser, stack.exports["DCAS_SERVER"], stack.exports["DCAS_API_KEY"])
        wait_for(lambda: browser.find_element("id", "app").is_displayed(), 20, "the signed-in page")
        pick_file(browser, source)
        states = []

        def state_of_report():
            row = row_of(browser, "report.txt")
            state = row.get_attribute("data-state") if row is not None else None
            if state and (not states or states[-1] != state):
                states.append(state)
            return state in ("SUCCEEDED", "FAILED")
        wait_for(state_of_report, 240, "the job to end")
        assert states[-1] == "SUCCEEDED", states
        assert states[0] == "UPLOADING" and len(states) >= 3, states  # it moved through the states live
        screenshot(browser, "6-real-stack-succeeded")
        assert codec.decode(download(browser, "report.txt", "report.txt.dcz")) == data
    finally:
        stop_browser(browser)
