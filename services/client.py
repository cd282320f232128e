"""The Manager and Status APIs from Python (what `dcas` uses with --server): upload, status, events, list, fetch."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx

from services.jobs import JobError

__all__ = ["ApiClient", "ClientError", "TERMINAL"]

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
_PIECE = 1 << 20
_RECONNECTS = 20


class ClientError(JobError):
    """What the server answered with an error (its own one-line reason), or why it could not be reached."""


class ApiClient:
    """One server and one API key; every failure is a ClientError with one line to show."""

    def __init__(self, server: str, key: str, timeout: float = 60.0) -> None:
        if not server:
            raise ClientError("no server: pass --server URL or set DCAS_SERVER")
        if not key:
            raise ClientError("no API key: pass --key KEY or set DCAS_API_KEY")
        self.server = server.rstrip("/")
        self._http = httpx.Client(base_url=self.server, headers={"Authorization": f"Bearer {key}"},
                                  timeout=httpx.Timeout(timeout, connect=10.0))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def upload(self, path: str | os.PathLike, operation: str,
               progress: Callable[[int], None] | None = None, filename: str | None = None) -> dict:
        """Streams the file as the body of POST /v1/jobs; returns the 202 answer (job_id, urls)."""
        path = Path(path)
        size = path.stat().st_size

        def body() -> Iterator[bytes]:
            sent = 0
            with open(path, "rb") as f:
                while piece := f.read(_PIECE):
                    sent += len(piece)
                    yield piece
                    if progress is not None:
                        progress(sent)

        params = {"operation": operation, "filename": filename or path.name}
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        with self._calling():
            response = self._http.post("/v1/jobs", params=params, content=body(), headers=headers)
        return self._json(response)

    def status(self, job_id: str) -> dict:
        with self._calling():
            return self._json(self._http.get(f"/v1/jobs/{job_id}"))

    def jobs(self, state: str | None = None, limit: int = 50) -> Iterator[dict]:
        """Every job of the key's owner, newest first, page after page."""
        cursor = None
        while True:
            params = {"limit": min(limit, 200), **({"state": state} if state else {}),
                      **({"cursor": cursor} if cursor else {})}
            with self._calling():
                page = self._json(self._http.get("/v1/jobs", params=params))
            yield from page["jobs"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def cancel(self, job_id: str) -> dict:
        with self._calling():
            return self._json(self._http.post(f"/v1/jobs/{job_id}/cancel"))

    def delete(self, job_id: str) -> dict:
        """Deletes the job and its objects (a running one is cancelled first)."""
        with self._calling():
            return self._json(self._http.delete(f"/v1/jobs/{job_id}"))

    def follow(self, job_id: str) -> Iterator[dict]:
        """The job's status after each change until it ends (Server-Sent Events; a dropped stream
        is resumed from the last event it delivered)."""
        last_id = None
        for _ in range(_RECONNECTS):
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self._http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                       timeout=httpx.Timeout(None, connect=10.0)) as response:
                    if response.status_code != 200:
                        response.read()
                        self._json(response)
                    event: dict[str, str] = {}
                    for line in response.iter_lines():
                        if line:
                            if not line.startswith(":"):
                                field, _, value = line.partition(":")
                                event[field] = value[1:] if value.startswith(" ") else value
                            continue
                        if "data" in event:
                            last_id = event.get("id", last_id)
                            status = json.loads(event["data"])
                            yield status
                            if status["state"] in TERMINAL:
                                return
                        event = {}
            except (httpx.TransportError, httpx.StreamError):
                time.sleep(1.0)
                continue  # resume after last_id
            # The stream ended without a terminal event in it: either it was sent before we
            # (re)connected, or the server went away. The status says which.
            status = self.status(job_id)
            if status["state"] in TERMINAL:
                yield status
                return
        raise ClientError(f"lost the event stream of job {job_id} {_RECONNECTS} times")

    def fetch(self, job_id: str, output: str | os.PathLike, progress: Callable[[int], None] | None = None,
              overwrite: bool = False) -> int:
        """Downloads the job's result into `output` atomically (a temp file beside it, renamed
        when complete); returns its size."""
        output = Path(output)
        if output.exists() and not overwrite:
            raise FileExistsError(f"{output} exists (use --force to overwrite)")
        fd, temp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent or ".")
        done = 0
        try:
            with os.fdopen(fd, "wb") as f, self._calling():
                with self._http.stream("GET", f"/v1/jobs/{job_id}/result") as response:
                    if response.status_code != 200:
                        response.read()
                        self._json(response)
                    for piece in response.iter_bytes(_PIECE):
                        f.write(piece)
                        done += len(piece)
                        if progress is not None:
                            progress(done)
                    expected = response.headers.get("content-length")
                if expected is not None and int(expected) != done:
                    raise ClientError(f"the result of {job_id} ended after {done} of {expected} bytes")
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, output)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return done

    @contextlib.contextmanager
    def _calling(self):
        try:
            yield
        except httpx.TransportError as e:
            raise ClientError(f"cannot reach the server at {self.server}: {e}") from None

    @staticmethod
    def _json(response: httpx.Response) -> dict:
        if response.is_success:
            return response.json()
        try:
            reason = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            reason = response.text.strip()[:200] or response.reason_phrase
        raise ClientError(f"the server answered {response.status_code}: {reason}")
