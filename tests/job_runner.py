"""A stand-in for the streaming pipeline in tests of the HTTP layer on in-memory ports: it takes
jobs off an InMemoryJobQueue and runs them with the in-process codec, writing status as the
pipeline does (RUNNING, progress per chunk, SUCCEEDED with sizes, or FAILED with its reason).
It is not the pipeline: tests of the pipeline and of the real stack live with them."""
from __future__ import annotations

import io
import json
import threading
import time

import codec
from adapters.jobs import Failure, JobState


class InProcessJobRunner:
    def __init__(self, adapters, chunk_size: int = 64 * 1024, chunk_delay: float = 0.0) -> None:
        self.adapters, self.chunk_size, self.chunk_delay = adapters, chunk_size, chunk_delay
        self._done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-runner", daemon=True)

    def __enter__(self) -> "InProcessJobRunner":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            messages = self.adapters.queue.messages
            if self._done < len(messages):
                self.run_one(messages[self._done])
                self._done += 1
            else:
                time.sleep(0.02)

    def run_one(self, request) -> None:
        status = self.adapters.status
        status.transition(request.job_id, JobState.RUNNING, request.attempt)
        data = b"".join(self.adapters.blobs.read_chunks(request.input_uri))
        total = max(1, -(-len(data) // self.chunk_size))

        def progress(done: int) -> None:
            time.sleep(self.chunk_delay)
            status.record_progress(request.job_id, request.attempt, chunks_done=min(total, -(-done // self.chunk_size)),
                                   chunks_total=total, bytes_in=done, bytes_out=0)
        out = io.BytesIO()
        try:
            if request.operation == "compress":
                codec.compress_stream(io.BytesIO(data), out, self.chunk_size, progress=progress)
            else:
                codec.decompress_stream(io.BytesIO(data), out, progress=progress)
        except codec.FormatError as e:
            failure = Failure.of(request.job_id, request.input_uri, "decode", e)
            status.transition(request.job_id, JobState.FAILED, request.attempt, error=failure.to_dict())
            return
        result = out.getvalue()
        self.adapters.blobs.write_bytes(request.output_uri, result)
        ratio = len(data) / len(result) if request.operation == "compress" and result else None  # as the pipeline: original / compressed
        if request.operation == "compress":
            meta = {"filename": request.input_uri.rsplit("/", 1)[-1], "og_size": len(data), "cp_size": len(result)}
            self.adapters.blobs.write_bytes(request.output_uri + ".meta.json", json.dumps(meta).encode())
        status.transition(request.job_id, JobState.SUCCEEDED, request.attempt, bytes_in=len(data),
                          bytes_out=len(result), ratio=ratio, chunks_done=total, chunks_total=total)
