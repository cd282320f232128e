"""One job's timeline across components (`dcas trace JOB`): status history, failure and spans, as data and as text."""
from __future__ import annotations

import datetime
from typing import Any, Iterable

from adapters.jobs import JobStatus
from adapters.tracing import read_spans, trace_id_of

__all__ = ["job_timeline", "render_timeline", "trace_job"]


def _when(iso: str | None) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(iso) if iso else None
    except ValueError:
        return None


def _depths(spans: list[dict[str, Any]]) -> dict[str, int]:
    """How deep each span sits under its trace's root (a parent missing from the file counts as a root)."""
    parents = {s.get("span_id"): s.get("parent_id") for s in spans}
    depths: dict[str, int] = {}
    for span_id in parents:
        depth, seen, current = 0, {span_id}, parents.get(span_id)
        while current in parents and current not in seen:  # `seen`: a cycle in a damaged file ends the walk
            seen.add(current)
            depth, current = depth + 1, parents[current]
        depths[span_id] = depth
    return depths


def job_timeline(status: JobStatus, spans: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """The job's story from what the system stores: its status document (every transition in
    `history`, or the last time of each state for a document written before history was kept),
    its failure record, and the spans of its trace (from the trace file). Events are in time order,
    `offset` in seconds from the first; pure."""
    trace_id = trace_id_of((status.request or {}).get("trace_context"))
    events: list[dict[str, Any]] = []
    transitions = status.history or [{"state": state, "attempt": None, "at": at}
                                     for state, at in sorted(status.times.items(), key=lambda item: item[1])]
    for entry in transitions:
        events.append({"at": entry["at"], "component": "status", "what": entry["state"],
                       "attempt": entry.get("attempt"), "duration_ms": None, "depth": 0})
    spans = [s for s in spans if trace_id is None or s.get("trace_id") == trace_id]
    depths = _depths(spans)
    for span in spans:
        attributes = span.get("attributes") or {}
        detail = ", ".join(f"{k} {attributes[k]}" for k in ("chunk", "part", "state") if k in attributes)
        events.append({"at": span.get("start"), "component": span.get("service") or "?",
                       "what": span.get("name", "?") + (f" ({detail})" if detail else ""),
                       "attempt": attributes.get("attempt"), "duration_ms": span.get("duration_ms"),
                       "depth": depths.get(span.get("span_id"), 0),
                       "error": span.get("status") == "ERROR"})
    events.sort(key=lambda e: (_when(e["at"]) or datetime.datetime.max.replace(tzinfo=datetime.timezone.utc),
                               e["depth"]))
    first = next((_when(e["at"]) for e in events if _when(e["at"])), None)
    for event in events:
        moment = _when(event["at"])
        event["offset"] = round((moment - first).total_seconds(), 6) if moment and first else None
    return {"job_id": status.job_id, "state": status.state.value, "attempt": status.attempt,
            "trace_id": trace_id, "operation": status.operation, "input": status.input, "output": status.output,
            "chunks_done": status.chunks_done, "chunks_total": status.chunks_total,
            "heartbeat": status.heartbeat, "error": status.error, "spans": len(spans), "events": events}


def render_timeline(timeline: dict[str, Any], trace_source: str | None = None) -> str:
    """The timeline as lines a person reads: a header, one line per event (spans indented under
    their parents, with their durations), the failure if any. `trace_source` says where spans
    were looked for (None: no trace file was given)."""
    header = (f"{timeline['job_id']}: {timeline['state']}, attempt {timeline['attempt']}, "
              f"{timeline['operation'] or 'job'} {timeline['input']} -> {timeline['output']}")
    lines = [header, f"trace {timeline['trace_id'] or '(none recorded)'}"]
    if timeline["chunks_total"]:
        lines[-1] += f", {timeline['chunks_done']}/{timeline['chunks_total']} chunks"
    width = max((len(e["component"]) for e in timeline["events"]), default=6)
    for event in timeline["events"]:
        offset = f"{'+%.3fs' % event['offset']:>10}" if event["offset"] is not None else " " * 10
        what = "  " * event["depth"] + event["what"]
        if event["component"] == "status" and event["attempt"] is not None:
            what += f" (attempt {event['attempt']})"
        if event["duration_ms"] is not None:
            what += f"  {event['duration_ms']:.1f} ms"
        if event.get("error"):
            what += "  ERROR"
        lines.append(f"  {offset}  {event['component']:<{width}}  {what}")
    if timeline["error"]:
        error = timeline["error"]
        lines.append(f"error: {error.get('stage', '?')}: {error.get('type', 'Error')}: {error.get('message', '')}")
    if trace_source is None:
        lines.append("spans: none read (set DCAS_TRACE_FILE or pass --trace-file to see them)")
    elif not timeline["spans"]:
        lines.append(f"spans: none of this trace in {trace_source}")
    return "\n".join(lines)


def trace_job(adapters, job_id: str, trace_file: str | None) -> dict[str, Any]:
    """The timeline of job `job_id` from the status store and, when given, the JSON-lines trace
    file; UnknownJobError for a job the store does not hold."""
    from services import jobs
    status = jobs.get_status(adapters, job_id)
    trace_id = trace_id_of((status.request or {}).get("trace_context"))
    spans = read_spans(trace_file, trace_id) if trace_file and trace_id else []
    return job_timeline(status, spans)
