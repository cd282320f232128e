"""The BlobStore port on GCS: resumable uploads in chunks, ranged reads, deletes by prefix."""
from __future__ import annotations

import base64
import collections
import threading

import google_crc32c

from adapters.retries import gcs_retry

__all__ = ["GcsBlobStore", "UPLOAD_CHUNK_MULTIPLE"]

# Resumable-upload chunks must be multiples of 256 KiB (all but the last).
UPLOAD_CHUNK_MULTIPLE = 256 * 1024
_READ_PIECE = 4 * 2**20
_CRC_PIECE = 256 * 1024  # google_crc32c takes bytes only: a chunk is counted a copied piece at a time


class GcsBlobStore:
    """google-cloud-storage under the port; honours STORAGE_EMULATOR_HOST (fake-gcs-server)."""

    def __init__(self, project: str | None = None, chunk_size: int = 8 * 2**20, client=None) -> None:
        if chunk_size % UPLOAD_CHUNK_MULTIPLE:
            raise ValueError(f"the upload chunk size must be a multiple of {UPLOAD_CHUNK_MULTIPLE}")
        if client is None:
            from google.cloud import storage  # it connects anonymously under STORAGE_EMULATOR_HOST
            client = storage.Client(project=project)
        self._client = client
        self._chunk_size = chunk_size

    def open_upload(self, uri: str, content_type: str = "application/octet-stream") -> "_GcsUpload":
        return _GcsUpload(self._blob(uri), self._chunk_size, content_type)

    def write_bytes(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._blob(uri).upload_from_string(data, content_type=content_type, retry=gcs_retry())

    def size(self, uri: str) -> int | None:
        bucket, name = _split(uri)
        blob = self._client.bucket(bucket).get_blob(name, retry=gcs_retry())
        return None if blob is None else blob.size

    def read_chunks(self, uri: str, start: int = 0, end: int | None = None):
        from google.api_core.exceptions import NotFound
        blob = self._blob(uri)
        if end is None:
            end = self.size(uri)
            if end is None:
                raise FileNotFoundError(f"no such object: {uri}")
        for offset in range(start, end, _READ_PIECE):
            last = min(end, offset + _READ_PIECE) - 1  # `end` of a ranged download is inclusive
            try:
                yield blob.download_as_bytes(start=offset, end=last, checksum=None, raw_download=True,
                                             retry=gcs_retry())
            except NotFound:
                raise FileNotFoundError(f"no such object: {uri}") from None

    def delete_prefix(self, prefix: str) -> int:
        from google.api_core.exceptions import NotFound
        bucket, name = _split(prefix)
        count = 0
        for blob in self._client.list_blobs(bucket, prefix=name, retry=gcs_retry()):
            try:
                blob.delete(retry=gcs_retry())
                count += 1
            except NotFound:
                pass  # deleted meanwhile (a retried delete, a racing cancel): the goal is met
        return count

    def start_session(self, uri: str, content_type: str = "application/octet-stream",
                      size: int | None = None) -> str:
        # if_generation_match=0: the session can only create the object, never replace one.
        return self._blob(uri).create_resumable_upload_session(content_type=content_type, size=size,
                                                               if_generation_match=0)

    def cancel_session(self, url: str) -> None:
        # DELETE on the session URL (what BlobWriter.terminate does): GCS answers 499 and the
        # session accepts nothing more; a finished or expired one answers 4xx, also fine.
        self._client._http.delete(url, timeout=60)

    def list_prefix(self, prefix: str):
        bucket, name = _split(prefix)
        for blob in self._client.list_blobs(bucket, prefix=name, retry=gcs_retry()):
            yield f"gs://{bucket}/{blob.name}"

    def _blob(self, uri: str):
        bucket, name = _split(uri)
        return self._client.bucket(bucket).blob(name)


class _GcsUpload:
    """One resumable upload: each full chunk is sent as it fills; the object appears at commit().

    Driven below google-cloud-storage's BlobWriter, which copies every byte twice on the way (into
    its buffer, then out of it): a chunk written whole is sent from the caller's own buffer before
    write() returns, so an upload holds no chunk of its own (the Manager's memory target). The
    library's CRC32C wants bytes objects, so the content's CRC32C is counted here, in small
    pieces, and checked against the object's when it is made."""

    def __init__(self, blob, chunk_size: int, content_type: str) -> None:
        self._blob, self._chunk_size, self._content_type = blob, chunk_size, content_type
        self._pieces: collections.deque = collections.deque()  # written, not yet sent (bytes or views)
        self._held = 0
        self._stream = _ChunkStream()
        self._session = None  # (ResumableUpload, transport), opened with the first chunk
        self._size = 0
        self._crc = 0
        self._lock = threading.Lock()
        self._done = False

    def write(self, data: bytes) -> None:
        if self._done:
            raise ValueError("the upload is finished")
        if not self._pieces and len(data) == self._chunk_size:
            self._size += len(data)
            self._send(data if isinstance(data, bytes) else memoryview(data).toreadonly())
            return
        if len(data):  # kept past write(): copied, the caller may reuse its buffer
            self._pieces.append(data if isinstance(data, bytes) else bytes(data))
            self._held += len(data)
            self._size += len(data)
        while self._held >= self._chunk_size:
            self._send(self._take(self._chunk_size))

    def commit(self) -> int:
        with self._lock:
            self._done = True
            # Shorter than a chunk (empty if the size is a multiple of it): the request that
            # declares the total and makes the object.
            response = self._send(self._take(self._held))
            upload, transport = self._session
            if not upload.finished:
                raise RuntimeError("the resumable upload did not finish with its last chunk")
            stored = response.json().get("crc32c")
            sent = base64.b64encode(self._crc.to_bytes(4, "big")).decode()
            if stored is not None and stored != sent:
                raise IOError(f"the stored object's CRC32C ({stored}) is not the uploaded bytes' ({sent})")
        return self._size

    def abort(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            self._pieces.clear()
            if self._session is None:
                return
            upload, transport = self._session
            try:
                transport.delete(upload.resumable_url)  # GCS drops what the session received
            except Exception:  # noqa: BLE001 - an unfinished session holds no object anyway
                pass

    def _take(self, size: int) -> bytes:
        """The next `size` written bytes as one object: the written object itself when it is
        exactly that, else one join."""
        if self._pieces and len(self._pieces[0]) == size and isinstance(self._pieces[0], bytes):
            self._held -= size
            return self._pieces.popleft()
        parts, wanted = [], size
        while wanted:
            piece = self._pieces.popleft()
            if len(piece) > wanted:
                view = memoryview(piece)
                self._pieces.appendleft(view[wanted:])
                piece = view[:wanted]
            parts.append(piece)
            wanted -= len(piece)
        self._held -= size
        return b"".join(parts)

    def _send(self, chunk):
        """Sends one chunk (bytes or a read-only view); the response to its request."""
        if self._session is None:
            # The call BlobWriter makes (google-cloud-storage 3.17): the library's upload URL,
            # headers and retries. if_generation_match=0: an upload never replaces an object (job
            # folders are new anyway), which also makes retrying its last request safe.
            self._session = self._blob._initiate_resumable_upload(
                self._blob.bucket.client, self._stream, self._content_type, None,
                chunk_size=self._chunk_size, if_generation_match=0, retry=gcs_retry(), checksum=None)
        upload, transport = self._session
        view = memoryview(chunk)
        for offset in range(0, len(view), _CRC_PIECE):
            self._crc = google_crc32c.extend(self._crc, bytes(view[offset:offset + _CRC_PIECE]))
        self._stream.hold(chunk)
        try:
            return upload.transmit_next_chunk(transport)
        finally:
            self._stream.release()


class _ChunkStream:
    """The stream a ResumableUpload reads its chunks from: the one chunk being sent, at its offset
    in the object. read() hands out the chunk itself (no copy); seek() moves within it, which is all
    the library's recovery of a failed chunk needs."""

    def __init__(self) -> None:
        self._chunk = b""
        self._start = 0  # the chunk's offset in the object
        self._at = 0     # the position, relative to the chunk

    def hold(self, chunk: bytes) -> None:
        self._start += len(self._chunk)
        self._chunk, self._at = chunk, 0

    def release(self) -> None:
        """Drops the chunk's bytes once sent (positions stay)."""
        self._start += len(self._chunk)
        self._chunk, self._at = b"", 0

    def tell(self) -> int:
        return self._start + self._at

    def seek(self, position: int, whence: int = 0) -> int:
        if whence != 0 or not self._start <= position <= self._start + len(self._chunk):
            raise ValueError(f"cannot seek to {position}: only bytes {self._start}-"
                             f"{self._start + len(self._chunk)} are held")
        self._at = position - self._start
        return position

    def read(self, size: int = -1) -> bytes:
        end = len(self._chunk) if size is None or size < 0 else min(len(self._chunk), self._at + size)
        data = self._chunk if (self._at, end) == (0, len(self._chunk)) else self._chunk[self._at:end]
        self._at = end
        return data


def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, name = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"gs:// URI without a bucket: {uri!r}")
    return bucket, name
