"""The BlobStore port on GCS: resumable uploads in chunks, ranged reads, deletes by prefix."""
from __future__ import annotations

import threading

from adapters.retries import gcs_retry

__all__ = ["GcsBlobStore", "UPLOAD_CHUNK_MULTIPLE"]

# Resumable-upload chunks must be multiples of 256 KiB (all but the last).
UPLOAD_CHUNK_MULTIPLE = 256 * 1024
_READ_PIECE = 4 * 2**20


class GcsBlobStore:
    """google-cloud-storage under the port; honours STORAGE_EMULATOR_HOST (fake-gcs-server)."""

    def __init__(self, project: str | None = None, chunk_size: int = 8 * 2**20, client=None) -> None:
        if chunk_size % UPLOAD_CHUNK_MULTIPLE:
            raise ValueError(f"the upload chunk size must be a multiple of {UPLOAD_CHUNK_MULTIPLE}")
        if client is None:
            from adapters.storage import configure_beam_for_storage_emulator
            from google.cloud import storage
            configure_beam_for_storage_emulator()
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
    """One resumable upload: each full chunk is sent as it fills; the object appears at commit()."""

    def __init__(self, blob, chunk_size: int, content_type: str) -> None:
        # if_generation_match=0: an upload never replaces an object (job folders are new anyway),
        # which also makes the library's retries of the final request safe.
        self._writer = blob.open("wb", chunk_size=chunk_size, ignore_flush=True, content_type=content_type,
                                 if_generation_match=0, retry=gcs_retry())
        self._size = 0
        self._lock = threading.Lock()
        self._done = False

    def write(self, data: bytes) -> None:
        self._writer.write(data)
        self._size += len(data)

    def commit(self) -> int:
        with self._lock:
            self._done = True
            self._writer.close()
        return self._size

    def abort(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            try:
                self._writer.terminate()  # DELETE on the session URL: GCS drops what it received
            except Exception:  # noqa: BLE001 - an unfinished session holds no object anyway
                pass


def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, name = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"gs:// URI without a bucket: {uri!r}")
    return bucket, name
