"""The Manager's root span: each job-creating request starts (or joins) the trace its job carries."""
from __future__ import annotations

import re

from adapters import tracing

__all__ = ["TraceJobRequests"]

# The requests that create a job: its message carries the context of the span opened here.
_JOB_ROUTES = re.compile(r"/v1/jobs/?|/v1/uploads/[^/]+/complete")
_JOB_LOCATION = re.compile(rb"/v1/jobs/([a-z0-9-]+)$")


class TraceJobRequests:
    """ASGI middleware: a SERVER span around POST /v1/jobs and the direct-upload completion,
    joining the caller's `traceparent` header or starting a new trace, with the job id (from the
    response's Location) and the status code as attributes. Other requests, and every request
    while tracing is off, pass straight through."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if (scope["type"] != "http" or scope["method"] != "POST" or not _JOB_ROUTES.fullmatch(scope["path"])
                or not tracing.enabled()):
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"traceparent", b"").decode("latin-1")
        route = "/v1/jobs" if scope["path"].startswith("/v1/jobs") else "/v1/uploads/{job_id}/complete"
        with tracing.root_span(f"POST {route}", parent=header or None, component="manager") as span:
            async def traced_send(message):
                if message["type"] == "http.response.start":
                    span.set_attribute("http.status_code", message["status"])
                    for name, value in message.get("headers", []):
                        found = _JOB_LOCATION.search(value) if name.lower() == b"location" else None
                        if found:
                            span.set_attribute("job_id", found.group(1).decode())
                await send(message)
            await self.app(scope, receive, traced_send)
