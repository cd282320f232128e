"""OpenTelemetry tracing for every component: one switch, W3C trace context in and out, spans that cost ~nothing when off."""
from __future__ import annotations

import contextlib
import datetime
import functools
import json
import logging
import os
import re
import sys
import threading
from typing import Any, Iterator, Mapping

__all__ = ["EXPORTERS", "EXPORTER_VARIABLE", "FILE_VARIABLE", "exporter_from_env", "configure", "configure_from_env",
           "enabled", "span", "root_span", "mark_error", "traceparent", "extract", "inject", "trace_id_of", "current_trace_id",
           "span_record", "JsonLinesSpanExporter", "read_spans"]

# Where spans go: nowhere, stderr, a JSON-lines file (one span a line, what `dcas trace` reads),
# or Cloud Trace (opentelemetry-exporter-gcp-trace, imported only when chosen).
EXPORTERS = ("none", "console", "file", "gcp")
EXPORTER_VARIABLE = "DCAS_TRACE_EXPORTER"
FILE_VARIABLE = "DCAS_TRACE_FILE"
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

_lock = threading.Lock()
_tracer = None          # an SDK Tracer while tracing is on
_provider = None
_configured = False     # configure() ran (or the environment was read): no more lazy set-up
_NOOP = contextlib.nullcontext()


def exporter_from_env(environ: Mapping[str, str]) -> tuple[str, str | None]:
    """(exporter, file) from DCAS_TRACE_EXPORTER and DCAS_TRACE_FILE: a file alone means "file".
    ValueError names a value that is not one of EXPORTERS, or "file" without a path."""
    path = environ.get(FILE_VARIABLE) or None
    exporter = (environ.get(EXPORTER_VARIABLE) or ("file" if path else "none")).strip().lower()
    if exporter not in EXPORTERS:
        raise ValueError(f"{EXPORTER_VARIABLE}={exporter!r} is not one of {', '.join(EXPORTERS)}")
    if exporter == "file" and not path:
        raise ValueError(f"{EXPORTER_VARIABLE}=file needs {FILE_VARIABLE}, the JSON-lines file to write spans to")
    return exporter, path


def configure(exporter: str = "none", path: str | None = None, service: str = "dcas",
              project: str | None = None) -> None:
    """Turns tracing on with `exporter` for this process (or off with "none"), replacing any earlier
    set-up. Our own provider, not the global one: the SDK lets the global one be set only once."""
    global _tracer, _provider, _configured
    if exporter not in EXPORTERS:
        raise ValueError(f"trace exporter {exporter!r} is not one of {', '.join(EXPORTERS)}")
    with _lock:
        old, _tracer, _provider, _configured = _provider, None, None, True
        if old is not None:
            old.shutdown()
        if exporter == "none":
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
        if exporter == "file":
            if not path:
                raise ValueError("the file trace exporter needs a path")
            # Written as each span ends: a killed local process loses none of them.
            processor = SimpleSpanProcessor(JsonLinesSpanExporter(path))
        elif exporter == "console":
            processor = SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
        else:
            cloud_trace = _cloud_trace_exporter(project)
            if cloud_trace is None:
                return
            processor = BatchSpanProcessor(cloud_trace)
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(processor)
        _provider, _tracer = provider, provider.get_tracer("dcas")


def _cloud_trace_exporter(project: str | None):
    """Cloud Trace's exporter, or None (and one warning) where there are no Google credentials:
    the image sets DCAS_TRACE_EXPORTER=gcp for GCP, and the same image run elsewhere (a laptop,
    CI) must still start, untraced."""
    try:
        from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter
    except ImportError:
        raise ValueError("the gcp trace exporter needs the opentelemetry-exporter-gcp-trace package "
                         "(pip install 'dcas[cloudtrace]')") from None
    from google.auth import exceptions
    try:
        return CloudTraceSpanExporter(project_id=project)
    except exceptions.GoogleAuthError as e:
        logging.getLogger("dcas.tracing").warning(
            "tracing is off: %s=gcp needs Google credentials and a project (%s)",
            EXPORTER_VARIABLE, " ".join(str(e).split()))
        return None


def configure_from_env(service: str, environ: Mapping[str, str] | None = None, project: str | None = None) -> None:
    """configure() as DCAS_TRACE_EXPORTER / DCAS_TRACE_FILE say (tracing off when neither is set)."""
    exporter, path = exporter_from_env(os.environ if environ is None else environ)
    configure(exporter, path, service, project or os.environ.get("GOOGLE_CLOUD_PROJECT"))


def _active_tracer():
    # A process nobody configured (a runner's worker) reads the environment once, on first use.
    if not _configured:
        try:
            configure_from_env("dcas")
        except ValueError:
            configure("none")
    return _tracer


def enabled() -> bool:
    return _active_tracer() is not None


def span(name: str, parent: str | None = None, **attributes: Any):
    """A span joining `parent` (a W3C traceparent) or, without a valid one, the current span; a
    no-op when tracing is off or there is nothing to join, so heartbeats and batch runs start no traces."""
    tracer = _active_tracer()
    if tracer is None:
        return _NOOP
    context = extract(parent) if parent else None
    if context is not None:
        return _started(tracer, name, context, attributes)
    from opentelemetry import trace
    if not trace.get_current_span().get_span_context().is_valid:
        return _NOOP
    return _started(tracer, name, None, attributes)


def root_span(name: str, parent: str | None = None, kind: str = "SERVER", **attributes: Any):
    """A span joining `parent` when it is a valid traceparent, else the root of a new trace (where a
    request enters the system); a no-op when tracing is off."""
    tracer = _active_tracer()
    if tracer is None:
        return _NOOP
    from opentelemetry import trace
    from opentelemetry.context import Context
    context = (extract(parent) if parent else None) or Context()
    return _started(tracer, name, context, attributes, getattr(trace.SpanKind, kind))


@contextlib.contextmanager
def _started(tracer, name, context, attributes, kind=None) -> Iterator[Any]:
    from opentelemetry import trace
    values = {k: v for k, v in attributes.items() if v is not None}
    with tracer.start_as_current_span(name, context=context, kind=kind or trace.SpanKind.INTERNAL,
                                      attributes=values) as current:
        yield current


def mark_error(span, description: str) -> None:
    """Sets an open span's status to ERROR (a failure that was handled, so raised nothing); no-op
    for the None a disabled span() yields."""
    if span is not None:
        from opentelemetry.trace import Status, StatusCode
        span.set_status(Status(StatusCode.ERROR, description))


def extract(traceparent: str | None):
    """The OpenTelemetry Context a W3C traceparent names, or None for a missing or malformed one."""
    if not traceparent or not _TRACEPARENT.fullmatch(traceparent.strip()):
        return None
    return _extract(traceparent.strip())


@functools.lru_cache(maxsize=256)
def _extract(traceparent: str):
    # Contexts are immutable: every chunk of a job joins the same one, parsed once.
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    context = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def inject(context=None) -> str | None:
    """The W3C traceparent of `context`'s span (the current one by default), or None without one."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=context)
    return carrier.get("traceparent")


def traceparent() -> str | None:
    """The current span's traceparent (what a job message carries), None when tracing is off."""
    return inject() if _active_tracer() is not None else None


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32-hex trace id in a W3C traceparent; None for a missing or malformed one. Pure."""
    match = _TRACEPARENT.fullmatch((traceparent or "").strip())
    return match.group(1) if match else None


def current_trace_id() -> str | None:
    """The current span's trace id (for log lines), None when tracing is off or no span is open."""
    if _tracer is None:
        return None
    from opentelemetry import trace
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _iso(nanoseconds: int | None) -> str | None:
    if nanoseconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(nanoseconds / 1e9, datetime.timezone.utc)
    return moment.isoformat(timespec="microseconds")


def span_record(span) -> dict[str, Any]:
    """One finished span as the JSON object a line of the trace file holds."""
    context, parent = span.context, span.parent
    start, end = span.start_time, span.end_time
    return {
        "name": span.name,
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_id": format(parent.span_id, "016x") if parent is not None else None,
        "service": span.resource.attributes.get("service.name", ""),
        "start": _iso(start),
        "end": _iso(end),
        "duration_ms": round((end - start) / 1e6, 3) if start is not None and end is not None else None,
        "status": span.status.status_code.name,
        "attributes": {k: (v if isinstance(v, (str, int, float, bool)) else str(v))
                       for k, v in (span.attributes or {}).items()},
    }


class JsonLinesSpanExporter:
    """An OpenTelemetry SpanExporter appending one JSON object per span to a file. The file stays
    open in append mode and each export is one flushed write, so processes sharing the file (the
    local stack's Manager and pipeline) do not interleave inside a line, and a killed process has
    lost no span it ended."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._file = None

    def export(self, spans):
        from opentelemetry.sdk.trace.export import SpanExportResult
        text = "".join(json.dumps(span_record(s), sort_keys=True) + "\n" for s in spans)
        with self._lock:
            try:
                if self._file is None:
                    self._file = open(self._path, "a", encoding="utf-8")
                self._file.write(text)
                self._file.flush()
            except OSError:
                self._close()
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    def shutdown(self) -> None:
        with self._lock:
            self._close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def read_spans(path: str, trace_id: str | None = None) -> list[dict[str, Any]]:
    """The spans in a JSON-lines trace file (of one trace when `trace_id` is given), by start time;
    a line a killed writer left unfinished is skipped. A missing file holds no spans."""
    found = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and (trace_id is None or record.get("trace_id") == trace_id):
                    found.append(record)
    except FileNotFoundError:
        return []
    return sorted(found, key=lambda r: r.get("start") or "")
