"""multipart/form-data uploads as a stream: the one file part's name and bytes, parsed as they arrive (python-multipart)."""
from __future__ import annotations

import asyncio
from typing import AsyncIterator

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from services.uploads import UploadLimits, UploadStalled, UploadTooLarge

__all__ = ["MULTIPART", "OVERHEAD", "is_multipart", "file_part", "file_upload"]

MULTIPART = "multipart/form-data"
# What a body may hold besides the file (boundaries, part headers, small fields): a declared
# Content-Length is compared with the size limit plus this much.
OVERHEAD = 64 * 1024


def is_multipart(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == MULTIPART


class _FileParts:
    """The parser's callbacks: keeps the file part's bytes from the last write() and nothing else
    (other fields are skipped), so memory holds at most one received chunk."""

    def __init__(self, boundary: bytes) -> None:
        self.filename: str | None = None
        self.files = 0
        self.in_file = False
        self.ended = False
        self.pending: list[bytes] = []
        self._field, self._value = bytearray(), bytearray()
        self._headers: dict[bytes, bytes] = {}
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end, "on_end": self._end})

    def write(self, chunk: bytes) -> list[bytes]:
        self.parser.write(chunk)
        if self.files > 1:
            raise ValueError("a multipart upload must hold one file part, this one holds more")
        out, self.pending = self.pending, []
        return out

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._field).strip().lower()] = bytes(self._value).strip()
        self._field, self._value = bytearray(), bytearray()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"filename")
        if name is None:
            return  # a plain field: skipped
        self.files += 1
        self.in_file = self.files == 1
        if self.in_file:
            self.filename = name.decode("utf-8", "replace")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self.pending.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        self.in_file = False

    def _end(self) -> None:
        self.ended = True


async def file_part(chunks: AsyncIterator[bytes], content_type: str,
                    stall_timeout: float) -> tuple[str, AsyncIterator[bytes]]:
    """(the file part's filename, its bytes as they arrive) of a multipart/form-data body.

    The body is read up to the end of the file part's headers before this returns; the bytes
    then come as the client sends them, never more than one received chunk held here. ValueError
    for a body without a boundary, without a file part, with more than one, or cut short;
    asyncio.TimeoutError when the client sends nothing for `stall_timeout` seconds before the file.
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ValueError("a multipart/form-data body needs a boundary in its Content-Type")
    parts = _FileParts(boundary)
    iterator = chunks.__aiter__()
    first: list[bytes] = []
    before = 0
    while parts.filename is None:
        if before > OVERHEAD:
            # Fields are skipped, not kept, but a client must not hold a connection with them forever.
            raise ValueError(f"the file part must begin within the body's first {OVERHEAD} bytes")
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(), stall_timeout)
        except StopAsyncIteration:
            raise ValueError("the multipart body holds no file part (one with a filename)") from None
        before += len(chunk)
        first = parts.write(chunk)

    async def data() -> AsyncIterator[bytes]:
        for piece in first:
            yield piece
        async for chunk in iterator:
            for piece in parts.write(chunk):
                yield piece
        parts.parser.finalize()
        if not parts.ended:
            raise ValueError("the multipart body ended before its closing boundary")

    return parts.filename, data()


async def file_upload(chunks: AsyncIterator[bytes], content_type: str, declared: int | None,
                      limits: UploadLimits) -> tuple[str, AsyncIterator[bytes]]:
    """file_part() under the upload limits: UploadTooLarge when the declared Content-Length is over
    the limit (the file's, plus OVERHEAD for the framing), UploadStalled when the client stalls
    before the file's bytes (receive_upload watches them after that)."""
    if declared is not None and declared > limits.max_size + OVERHEAD:
        raise UploadTooLarge(f"the upload ({declared} bytes) is larger than the limit of {limits.max_size} bytes")
    try:
        return await file_part(chunks, content_type, limits.stall_timeout)
    except asyncio.TimeoutError:
        raise UploadStalled(f"no data for {limits.stall_timeout:g} s; upload abandoned") from None
