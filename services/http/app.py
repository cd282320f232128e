"""The Manager and Status HTTP API (FastAPI): thin routes over services.uploads and services.access."""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import secrets
from pathlib import Path
from typing import Any, Optional

import anyio.to_thread
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from adapters import tracing
from adapters.jobs import JobState, TransitionRefused
from services import access, identity, jobs, keys, multipart, uploads
from services.http.tracing import TraceJobRequests

__all__ = ["HttpSettings", "create_app"]

log = logging.getLogger("dcas.http")
STATIC = Path(__file__).with_name("static")


@dataclasses.dataclass(frozen=True)
class HttpSettings:
    bucket: str
    limits: uploads.UploadLimits = uploads.UploadLimits()
    keepalive: float = 15.0  # seconds between SSE comments on a quiet event stream
    key_cache_seconds: float = 10.0  # how long a found API key's owner is remembered (bounds a missed revocation)
    # Google-signed identity tokens (behind Cloud Run) besides API keys: services.identity.IdTokens.
    id_tokens: Any = None


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong, in one sentence")
    status: int


class JobAccepted(BaseModel):
    job_id: str
    state: str
    status_url: str
    result_url: str
    events_url: str


class JobView(BaseModel):
    job_id: str
    state: str
    attempt: int
    operation: str
    filename: str
    input: str
    output: str
    metadata: Optional[str] = None
    chunks_done: int
    chunks_total: int
    bytes_in: int
    bytes_out: int
    ratio: Optional[float] = None
    error: Optional[dict[str, str]] = None
    times: dict[str, str]
    heartbeat: Optional[str] = None
    updated: Optional[str] = None
    deleted: Optional[str] = None
    owner: str
    status_url: str
    result_url: str
    events_url: str


class JobPage(BaseModel):
    jobs: list[JobView]
    next_cursor: Optional[str] = None


class DirectUpload(BaseModel):
    job_id: str
    upload_url: str = Field(description="a GCS resumable-upload session: PUT the file's bytes here")
    complete_url: str = Field(description="POST here once the upload is complete to queue the job")


class StoredInput(BaseModel):
    input: str = Field(min_length=1, max_length=1024,
                       description="gs://BUCKET/owners/OWNER/NAME, or an object of one of your jobs")
    filename: Optional[str] = Field(None, max_length=1024, pattern=uploads.FILENAME_PATTERN)


def _errors(*codes: int) -> dict[int, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


# Failures of service functions -> (status, headers); the message is the exception's own.
_STATUS_OF: list[tuple[type[BaseException], int]] = [
    (keys.Unauthenticated, 401),
    (identity.CertificatesUnavailable, 503),
    (access.JobNotFound, 404),
    (PermissionError, 403),
    (LookupError, 404),
    (uploads.UploadTooLarge, 413),
    (uploads.TooManyUploads, 429),
    (uploads.UploadStalled, 408),
    (access.NotReady, 409),
    (uploads.UploadIncomplete, 409),
    (TransitionRefused, 409),
    (access.RangeNotSatisfiable, 416),
    (ValueError, 400),
    (jobs.JobError, 503),
]


def create_app(adapters, settings: HttpSettings) -> FastAPI:
    """The app over `adapters` (queue, status, blobs, keys: from services.bootstrap, or fakes)."""
    app = FastAPI(title="DCaS Manager and Status", version="1",
                  description="Upload files to compress or decompress as jobs, follow them, fetch results.")
    slots = uploads.UploadSlots(settings.limits.per_owner, settings.limits.total, settings.limits.retry_after)
    app.state.adapters, app.state.settings, app.state.slots = adapters, settings, slots
    app.add_middleware(TraceJobRequests)
    api_keys = keys.CachedKeys(adapters.keys, settings.key_cache_seconds)
    status_reads = access.StatusReads(adapters.status)
    app.router.on_shutdown.append(api_keys.close)  # its listener of revoked keys

    def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return error_response(e.status, e.message, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        return error_response(e.status_code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}")

    async def _service_error(request: Request, e: Exception):
        # Handlers are looked up by the exception's class hierarchy: the most specific one wins.
        status = next(code for kind, code in _STATUS_OF if isinstance(e, kind))
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(e, uploads.TooManyUploads):
            headers["Retry-After"] = str(e.retry_after)
        if isinstance(e, access.RangeNotSatisfiable):
            headers["Content-Range"] = f"bytes */{e.size}"
        return error_response(status, str(e), headers)

    for kind, _ in _STATUS_OF:
        app.add_exception_handler(kind, _service_error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error")

    async def owner_of(authorization: Optional[str] = Header(None, description="Bearer KEY")) -> str:
        # A known key is answered on the event loop; only a key not seen lately costs a worker
        # thread (a store read): under load, every thread hop per request counts.
        owner = keys.remembered_owner(api_keys, authorization)
        if owner is None:
            owner = await anyio.to_thread.run_sync(keys.authenticate, api_keys, authorization,
                                                   settings.id_tokens)
        return owner

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def accepted(request: Request, status) -> JSONResponse:
        view = access.public_status(status, base(request))
        body = {k: view[k] for k in ("job_id", "state", "status_url", "result_url", "events_url")}
        return JSONResponse(body, status_code=202, headers={"Location": view["status_url"]})

    upload_body = {"requestBody": {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary",
                                    "description": "the one file part; its filename names the file"}}}},
        "application/json": {"schema": StoredInput.model_json_schema()}}}}

    @app.post("/v1/jobs", status_code=202, response_model=JobAccepted, openapi_extra=upload_body,
              responses=_errors(400, 401, 403, 404, 408, 413, 422, 429), tags=["manager"])
    async def submit_job(request: Request,
                         operation: str = Query(..., pattern="^(compress|decompress)$"),
                         filename: Optional[str] = Query(None, max_length=1024, pattern=uploads.FILENAME_PATTERN,
                                                         description="the file's name (its last path component is kept)"),
                         owner: str = Depends(owner_of)):
        """Submit a job: the raw file as the body, or a multipart/form-data body with one file part
        (either streamed to storage as it arrives), or JSON naming a stored object."""
        trace = _traceparent(request.headers.get("traceparent"))
        if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
            try:
                spec = StoredInput.model_validate_json(await request.body())
            except ValueError as e:
                raise ApiError(400, f"the JSON body must be {{\"input\": \"gs://...\"}}: {_first_line(e)}")
            status = await anyio.to_thread.run_sync(
                lambda: uploads.submit_stored(adapters, settings.bucket, owner, operation, spec.input,
                                              spec.filename or filename, trace))
            return accepted(request, status)
        length = request.headers.get("content-length")
        try:
            declared = int(length) if length is not None else None
        except ValueError:
            raise ApiError(400, "Content-Length is not a number")
        try:
            body = request.stream()
            if multipart.is_multipart(request.headers.get("content-type")):
                part_name, body = await multipart.file_upload(body, request.headers["content-type"], declared,
                                                              settings.limits)
                filename, declared = filename or part_name, None
            status = await uploads.submit_upload(adapters, settings.bucket, settings.limits, slots, owner,
                                                 operation, filename, body, declared, trace)
        except ClientDisconnect:
            log.info("client of %s went away mid-upload; nothing kept", owner)
            raise ApiError(400, "the client disconnected before the end of the body")
        return accepted(request, status)

    @app.post("/v1/uploads", status_code=201, response_model=DirectUpload, responses=_errors(400, 401, 413, 422),
              tags=["manager"])
    async def open_direct_upload(request: Request,
                                 operation: str = Query(..., pattern="^(compress|decompress)$"),
                                 filename: Optional[str] = Query(None, max_length=1024, pattern=uploads.FILENAME_PATTERN),
                                 size: Optional[int] = Query(None, ge=0, le=settings.limits.max_size,
                                                             description="the file's size, if known"),
                                 owner: str = Depends(owner_of)):
        """For very large files: a resumable-upload session the client sends the bytes to
        directly (they never pass through the Manager), then POSTs `complete_url`."""
        opened = await anyio.to_thread.run_sync(
            uploads.open_direct_upload, adapters, settings.bucket, settings.limits, owner, operation, filename, size)
        return {**opened, "complete_url": f"{base(request)}/v1/uploads/{opened['job_id']}/complete"}

    @app.post("/v1/uploads/{job_id}/complete", status_code=202, response_model=JobAccepted,
              responses=_errors(401, 404, 409, 413), tags=["manager"])
    async def complete_direct_upload(request: Request, job_id: str, owner: str = Depends(owner_of)):
        """The direct upload is finished: its job is queued (202, as for POST /v1/jobs)."""
        trace = _traceparent(request.headers.get("traceparent"))
        status = await anyio.to_thread.run_sync(
            uploads.complete_direct_upload, adapters, settings.bucket, settings.limits, owner, job_id, trace)
        return accepted(request, status)

    @app.get("/v1/jobs", response_model=JobPage, responses=_errors(400, 401, 404, 422), tags=["status"])
    async def list_jobs(request: Request, state: Optional[JobState] = Query(None),
                        limit: int = Query(50, ge=1, le=200), cursor: Optional[str] = Query(None, max_length=200),
                        owner: str = Depends(owner_of)):
        """The caller's jobs, newest first; pass `next_cursor` back as `cursor` for the next page."""
        jobs, next_cursor = await anyio.to_thread.run_sync(
            access.list_owned, adapters.status, owner, state and state.value, limit, cursor or None)
        # A JSONResponse: the documents are already plain JSON, FastAPI need not validate them again.
        return JSONResponse({"jobs": [access.public_status(s, base(request)) for s in jobs],
                             "next_cursor": next_cursor})

    @app.get("/v1/jobs/{job_id}", response_model=JobView, responses=_errors(401, 404), tags=["status"])
    async def get_job(request: Request, job_id: str, owner: str = Depends(owner_of)):
        status = await status_reads.owned(owner, job_id)
        return JSONResponse(access.public_status(status, base(request)))

    @app.delete("/v1/jobs/{job_id}", response_model=JobView, responses=_errors(401, 404), tags=["manager"])
    async def delete_job(request: Request, job_id: str, owner: str = Depends(owner_of)):
        """Deletes the job: cancels it if it is queued or running, deletes its objects, and from
        then on it is gone from the list and answers 404. The answer is its last status."""
        status = await anyio.to_thread.run_sync(access.delete_owned, adapters, settings.bucket, owner, job_id)
        return access.public_status(status, base(request))

    @app.post("/v1/jobs/{job_id}/cancel", response_model=JobView, responses=_errors(401, 404, 409),
              tags=["manager"])
    async def cancel_job(request: Request, job_id: str, owner: str = Depends(owner_of)):
        """Cancels a queued or running job and keeps it (409 once it has finished)."""
        status = await anyio.to_thread.run_sync(access.cancel_owned, adapters.status, owner, job_id)
        return access.public_status(status, base(request))

    @app.get("/v1/jobs/{job_id}/result", tags=["manager"],
             responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "a byte range"},
                        **_errors(401, 404, 409, 416)})
    async def get_result(job_id: str, range: Optional[str] = Header(None), owner: str = Depends(owner_of)):
        """The output's bytes; a `Range: bytes=...` header asks for part of them."""
        result = await anyio.to_thread.run_sync(access.open_result, adapters, owner, job_id)
        span = access.parse_range(range, result.size)
        start, end = span or (0, result.size)
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start),
                   "Content-Disposition": _attachment(result.filename)}
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{result.size}"
        pieces = adapters.blobs.read_chunks(result.uri, start, end)
        return StreamingResponse(_in_thread(pieces), status_code=206 if span else 200,
                                 media_type="application/octet-stream", headers=headers)

    @app.get("/v1/jobs/{job_id}/metadata", tags=["manager"], responses=_errors(401, 404, 409))
    async def get_metadata(job_id: str, owner: str = Depends(owner_of)) -> dict[str, Any]:
        """A compress job's metadata: filename, og_size, cp_size, ratio, checksums, timings."""
        return await anyio.to_thread.run_sync(access.result_metadata, adapters, owner, job_id)

    @app.get("/v1/jobs/{job_id}/events", tags=["status"],
             responses={200: {"content": {"text/event-stream": {}}}, **_errors(401, 404)})
    async def job_events(request: Request, job_id: str, owner: str = Depends(owner_of),
                         last_event_id: Optional[str] = Header(None)):
        """Server-Sent Events: one `status` event per change, ending after a terminal state."""
        await status_reads.owned(owner, job_id)

        async def stream():
            async for status in access.status_events(adapters.status, job_id, last_event_id, settings.keepalive):
                if status is None:
                    yield ": keep-alive\n\n"
                    continue
                data = json.dumps(access.public_status(status, base(request)))
                yield f"id: {status.updated}\nevent: status\ndata: {data}\n\n"
        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/healthz", include_in_schema=False)
    async def healthz():
        return {"ok": True}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def _in_thread(pieces):
    """An iterator of blocking reads, each on a worker thread, as an async iterator."""
    done = object()
    while True:
        piece = await anyio.to_thread.run_sync(next, pieces, done)
        if piece is done:
            return
        yield piece


_TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def _traceparent(header: str | None) -> str:
    """The caller's W3C trace context, or a new one: it travels in the job message, so one job can
    be followed through Manager, queue, pipeline and status by its trace id. With tracing on, the
    context of the request's span (TraceJobRequests), which joined the caller's."""
    current = tracing.traceparent()
    if current:
        return current
    if header and _TRACEPARENT.fullmatch(header.strip()):
        return header.strip()
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def _attachment(filename: str) -> str:
    from urllib.parse import quote
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


def _first_line(e: Exception) -> str:
    return " ".join(str(e).split())[:200]

