"""A job's timeline as `dcas trace` shows it: status history, failure and the spans of its trace, in time order."""
from __future__ import annotations

from adapters.jobs import JobRequest, JobState, JobStatus
from services.timeline import job_timeline, render_timeline

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CONTEXT = f"00-{TRACE}-00f067aa0ba902b7-01"


def queued(**fields) -> JobStatus:
    return JobStatus.queued(JobRequest("job-1", "compress", "gs://b/in", "gs://b/in.dcz", trace_context=CONTEXT,
                                       **fields))


def span(name, start, span_id, parent=None, service="dcas-pipeline", status="UNSET", trace=TRACE, **attributes):
    return {"name": name, "trace_id": trace, "span_id": span_id, "parent_id": parent, "service": service,
            "start": f"2026-01-01T00:00:{start:09.6f}+00:00", "duration_ms": 1.5, "status": status,
            "attributes": attributes}


def finished_job() -> JobStatus:
    status = queued()
    history = [{"state": "QUEUED", "attempt": 1, "at": "2026-01-01T00:00:00.500000+00:00"},
               {"state": "RUNNING", "attempt": 1, "at": "2026-01-01T00:00:02.000000+00:00"},
               {"state": "FAILED", "attempt": 1, "at": "2026-01-01T00:00:05.000000+00:00"}]
    status.history, status.state = history, JobState.FAILED
    status.error = {"stage": "encode part 0", "type": "OSError", "message": "disk full"}
    return status


SPANS = [span("POST /v1/jobs", 0.0, "a" * 16, service="dcas-manager"),
         span("claim", 1.9, "b" * 16, parent="a" * 16, attempt=1),
         span("status RUNNING", 1.95, "c" * 16, parent="b" * 16, state="RUNNING"),
         span("encode part", 3.0, "d" * 16, parent="a" * 16, part=0, status="ERROR"),
         span("plan", 0.1, "e" * 16, trace="f" * 32)]  # another job's trace


def test_the_timeline_puts_status_changes_and_spans_of_the_jobs_trace_in_time_order():
    timeline = job_timeline(finished_job(), SPANS)
    assert timeline["trace_id"] == TRACE and timeline["spans"] == 4
    assert [(e["component"], e["what"]) for e in timeline["events"]] == [
        ("dcas-manager", "POST /v1/jobs"), ("status", "QUEUED"), ("dcas-pipeline", "claim"),
        ("dcas-pipeline", "status RUNNING (state RUNNING)"), ("status", "RUNNING"),
        ("dcas-pipeline", "encode part (part 0)"), ("status", "FAILED")]
    assert [e["offset"] for e in timeline["events"]] == [0.0, 0.5, 1.9, 1.95, 2.0, 3.0, 5.0]
    assert [e["depth"] for e in timeline["events"]] == [0, 0, 1, 2, 0, 1, 0]


def test_the_rendered_timeline_reads_as_one_line_per_event_with_the_failure_last():
    text = render_timeline(job_timeline(finished_job(), SPANS), "spans.jsonl")
    lines = text.splitlines()
    assert lines[0] == "job-1: FAILED, attempt 1, compress gs://b/in -> gs://b/in.dcz"
    assert lines[1] == f"trace {TRACE}"
    assert lines[2].split() == ["+0.000s", "dcas-manager", "POST", "/v1/jobs", "1.5", "ms"]
    assert "    status RUNNING (state RUNNING)  1.5 ms" in lines[5]  # two levels under the root
    assert lines[3].split()[1:] == ["status", "QUEUED", "(attempt", "1)"]
    assert lines[7].endswith("ERROR")
    assert lines[-1] == "error: encode part 0: OSError: disk full"


def test_without_a_trace_file_the_timeline_is_the_status_history_and_says_where_spans_would_be():
    text = render_timeline(job_timeline(finished_job()), None)
    assert [line.split()[1] for line in text.splitlines()[2:5]] == ["status"] * 3
    assert text.splitlines()[-1].startswith("spans: none read (set DCAS_TRACE_FILE")
    assert render_timeline(job_timeline(finished_job()), "x.jsonl").splitlines()[-1] == \
        "spans: none of this trace in x.jsonl"


def test_a_document_from_before_the_history_shows_the_time_of_each_state():
    status = finished_job()
    status.history = []
    status.times = {"RUNNING": "2026-01-01T00:00:02+00:00", "QUEUED": "2026-01-01T00:00:01+00:00"}
    assert [(e["what"], e["offset"]) for e in job_timeline(status)["events"]] == [("QUEUED", 0.0), ("RUNNING", 1.0)]
