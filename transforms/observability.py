"""Job ids, Beam metrics and structured log lines, all through one helper each."""
from __future__ import annotations

import datetime
import json
import logging
import uuid

import apache_beam as beam

from adapters import tracing

__all__ = ["METRICS_NAMESPACE", "new_job_id", "inc_counter", "record_distribution", "log_event"]

# One namespace for every stage, so a caller sums a counter by name without knowing which
# transform produced it; the stage is already visible as the step in the runner's UI.
METRICS_NAMESPACE = "dcas"

_LOGGER = logging.getLogger("dcas")


def new_job_id() -> str:
    """A fresh id for one run: UTC time for sorting plus random hex for uniqueness.

    Lowercase letters, digits and hyphens only, so it is valid in object names and Dataflow job names.
    """
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"dcas-{stamp}-{uuid.uuid4().hex[:8]}"


def inc_counter(name: str, value: int = 1) -> None:
    """Adds `value` to the kebab-case counter `name` (e.g. 'bytes-in')."""
    beam.metrics.Metrics.counter(METRICS_NAMESPACE, name).inc(value)


def record_distribution(name: str, value: int) -> None:
    """Adds one sample to the distribution `name` (e.g. 'encode-time-ms')."""
    beam.metrics.Metrics.distribution(METRICS_NAMESPACE, name).update(int(value))


def log_event(event: str, job_id: str, level: int = logging.INFO, **fields) -> None:
    """Logs one JSON object per event, so log search can filter on job_id, trace_id, file or event.
    The trace id is the one given, else the current span's (none while tracing is off)."""
    if fields.get("trace_id") is None:
        fields.pop("trace_id", None)
        trace_id = tracing.current_trace_id()
        if trace_id:
            fields["trace_id"] = trace_id
    record = {"event": event, "job_id": job_id, **fields}
    _LOGGER.log(level, json.dumps(record, sort_keys=True, default=str))
