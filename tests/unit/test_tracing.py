"""Tracing: W3C context in and out, spans that join a job's trace (or nothing), the span file, the Manager's root span."""
from __future__ import annotations

import concurrent.futures
import json
import types

import pytest
from fastapi.testclient import TestClient

from adapters import tracing
from adapters.jobs import JobRequest
from adapters.memory import InMemoryBlobStore, InMemoryJobQueue, InMemoryKeyStore, InMemoryStatusStore
from services import keys
from services.config import Settings
from services.http import HttpSettings, create_app

PARENT = "00-" + "4bf92f3577b34da6a3ce929d0e0e4736" + "-" + "00f067aa0ba902b7" + "-01"


@pytest.fixture
def tracing_off():
    tracing.configure("none")
    yield


def test_a_traceparent_survives_extraction_and_injection_unchanged():
    context = tracing.extract(PARENT)
    assert context is not None and tracing.inject(context) == PARENT


@pytest.mark.parametrize("bad", [None, "", "garbage", "00-" + "0" * 32 + "-" + "1" * 16 + "-01",
                                 "01-" + "a" * 32 + "-" + "b" * 16 + "-01", PARENT.upper()])
def test_a_missing_or_malformed_traceparent_extracts_to_nothing(bad):
    assert tracing.extract(bad) is None


def test_the_trace_id_is_read_from_a_traceparent_without_opentelemetry():
    assert tracing.trace_id_of(PARENT) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tracing.trace_id_of("00-xyz") is None and tracing.trace_id_of(None) is None


def test_a_span_given_the_jobs_traceparent_joins_its_trace_and_children_nest_under_it(spans_file):
    with tracing.span("claim", parent=PARENT, job_id="job-1", attempt=1):
        assert tracing.current_trace_id() == tracing.trace_id_of(PARENT)
        with tracing.span("status RUNNING", job_id="job-1"):
            pass
    inner, outer = _by_name(spans_file, "status RUNNING", "claim")
    assert outer["trace_id"] == inner["trace_id"] == tracing.trace_id_of(PARENT)
    assert outer["parent_id"] == "00f067aa0ba902b7" and inner["parent_id"] == outer["span_id"]
    assert outer["attributes"] == {"job_id": "job-1", "attempt": 1} and outer["service"] == "dcas-test"
    assert outer["duration_ms"] >= inner["duration_ms"] >= 0


def _by_name(path, *names):
    found = {s["name"]: s for s in tracing.read_spans(str(path))}
    return [found[name] for name in names]


def test_a_span_with_nothing_to_join_is_not_recorded_so_heartbeats_start_no_traces(spans_file):
    with tracing.span("status progress", job_id="job-1") as span:
        assert span is None
    with tracing.span("claim", parent="not a traceparent"):
        pass
    assert tracing.read_spans(str(spans_file)) == []
    with tracing.span("claim", parent=PARENT):
        with tracing.span("publish job message", parent="not a traceparent"):  # joins the current span instead
            pass
    inner, outer = _by_name(spans_file, "publish job message", "claim")
    assert inner["parent_id"] == outer["span_id"]


def test_a_span_on_a_pool_thread_joins_the_trace_it_is_given(spans_file):
    def work(index):
        with tracing.span("encode part", parent=PARENT, part=index):
            with tracing.span("encode chunk", chunk=index):
                return tracing.current_trace_id()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert set(pool.map(work, range(4))) == {tracing.trace_id_of(PARENT)}
    spans = tracing.read_spans(str(spans_file), tracing.trace_id_of(PARENT))
    parts = {s["span_id"] for s in spans if s["name"] == "encode part"}
    assert len(parts) == 4
    assert all(s["parent_id"] in parts for s in spans if s["name"] == "encode chunk")


def test_a_failing_span_is_recorded_with_an_error_status(spans_file):
    with pytest.raises(OSError):
        with tracing.span("publish", parent=PARENT):
            raise OSError("disk full")
    with tracing.span("job failed", parent=PARENT) as span:
        tracing.mark_error(span, "encode part 0: OSError: disk full")
    assert [s["status"] for s in tracing.read_spans(str(spans_file))] == ["ERROR", "ERROR"]


def test_with_tracing_off_spans_are_shared_no_ops_and_there_is_no_context(tracing_off):
    assert tracing.span("claim", parent=PARENT) is tracing.span("x") is tracing.root_span("POST /v1/jobs")
    with tracing.root_span("POST /v1/jobs") as span:
        assert span is None and tracing.traceparent() is None and tracing.current_trace_id() is None


def test_the_span_file_skips_a_line_a_killed_writer_left_unfinished(tmp_path):
    path = tmp_path / "spans.jsonl"
    good = {"name": "plan", "trace_id": "a" * 32, "start": "2026-01-01T00:00:01+00:00"}
    other = {"name": "plan", "trace_id": "b" * 32, "start": "2026-01-01T00:00:00+00:00"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(other) + "\n" + '{"name": "encode')
    assert tracing.read_spans(str(path), "a" * 32) == [good]
    assert tracing.read_spans(str(path)) == [other, good]
    assert tracing.read_spans(str(tmp_path / "missing.jsonl")) == []


def test_settings_choose_the_exporter_and_a_trace_file_alone_means_the_file_exporter():
    assert (Settings.from_env({}).trace_exporter, Settings.from_env({}).trace_file) == ("none", None)
    chosen = Settings.from_env({"DCAS_TRACE_FILE": "/tmp/s.jsonl"})
    assert (chosen.trace_exporter, chosen.trace_file) == ("file", "/tmp/s.jsonl")
    assert Settings.from_env(chosen.environment()) == chosen
    assert Settings.from_env({"DCAS_TRACE_EXPORTER": "GCP"}).trace_exporter == "gcp"
    with pytest.raises(ValueError, match="DCAS_TRACE_EXPORTER='jaeger' is not one of"):
        Settings.from_env({"DCAS_TRACE_EXPORTER": "jaeger"})
    with pytest.raises(ValueError, match="needs DCAS_TRACE_FILE"):
        Settings.from_env({"DCAS_TRACE_EXPORTER": "file"})



def test_cloud_trace_without_google_credentials_is_one_warning_and_tracing_off_not_a_crash(tmp_path, monkeypatch,
                                                                                          caplog):
    # What the image (DCAS_TRACE_EXPORTER=gcp) meets when run off GCP: no metadata server, no key file.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    caplog.set_level("WARNING", logger="dcas.tracing")
    try:
        tracing.configure_from_env("dcas-manager", {"DCAS_TRACE_EXPORTER": "gcp"}, project="dcas-prod")
        assert not tracing.enabled()
        with tracing.root_span("POST /v1/jobs") as span:
            assert span is None
    finally:
        tracing.configure("none")
    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith("tracing is off: DCAS_TRACE_EXPORTER=gcp needs Google credentials")
    assert "no-such-key.json" in record.getMessage()


def manager():
    adapters = types.SimpleNamespace(queue=InMemoryJobQueue(), status=InMemoryStatusStore(),
                                     blobs=InMemoryBlobStore(), keys=InMemoryKeyStore())
    client = TestClient(create_app(adapters, HttpSettings("bkt")))
    return adapters, client, {"Authorization": f"Bearer {keys.create_key(adapters.keys, 'ann')}"}


def test_the_manager_joins_the_callers_trace_and_the_job_message_carries_its_own_span(spans_file):
    adapters, client, headers = manager()
    answer = client.post("/v1/jobs", params={"operation": "compress", "filename": "t"}, content=b"x",
                         headers={**headers, "traceparent": PARENT})
    [request] = adapters.queue.messages
    [root] = _by_name(spans_file, "POST /v1/jobs")
    assert root["trace_id"] == tracing.trace_id_of(request.trace_context) == tracing.trace_id_of(PARENT)
    assert root["parent_id"] == "00f067aa0ba902b7" and request.trace_context.split("-")[2] == root["span_id"]
    assert root["attributes"]["job_id"] == answer.json()["job_id"] == request.job_id
    assert root["attributes"]["http.status_code"] == 202


def test_the_manager_starts_a_new_trace_for_a_caller_without_one(spans_file):
    adapters, client, headers = manager()
    client.post("/v1/jobs", params={"operation": "compress", "filename": "t"}, content=b"x", headers=headers)
    client.get("/v1/jobs", headers=headers)  # not a job-creating request: no span
    [request] = adapters.queue.messages
    [root] = tracing.read_spans(str(spans_file))
    assert root["name"] == "POST /v1/jobs" and root["parent_id"] is None
    assert root["trace_id"] == tracing.trace_id_of(request.trace_context)


def test_a_job_request_keeps_its_trace_context_through_planning_and_into_its_failures():
    from transforms.planning import FileJob, for_request
    request = JobRequest("job-1", "compress", "gs://b/in", "gs://b/out.dcz", trace_context=PARENT)
    job = for_request(FileJob("gs://b/in", 3, "gs://b/out.dcz"), request)
    assert job.trace_context == PARENT
    assert job.failure("encode part 0", OSError("disk full")).trace_context == PARENT  # reported in the job's trace


def test_log_lines_carry_the_trace_id_of_the_span_they_are_written_in(spans_file):
    import io
    import logging

    from services.stack import JsonFormatter
    from transforms.observability import log_event
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())  # what the stack, the Manager and the pipeline log through
    logger = logging.getLogger("dcas")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        with tracing.span("claim", parent=PARENT):
            log_event("job-claimed", "job-1")
            logging.getLogger("dcas.http").info("job %s queued", "job-1", extra={"job_id": "job-1"})
        log_event("job-succeeded", "job-1", trace_id="f" * 32)
        log_event("heartbeat-not-written", "job-1")
    finally:
        logger.removeHandler(handler)
        logger.level = level
    claimed, queued, succeeded, outside = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert claimed["trace_id"] == queued["trace_id"] == tracing.trace_id_of(PARENT)
    assert queued["job_id"] == "job-1" and succeeded["trace_id"] == "f" * 32 and "trace_id" not in outside
