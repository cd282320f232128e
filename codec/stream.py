"""Whole-file API over the `.dcz` container: in memory, streaming, ranged reads, info and verify."""
from __future__ import annotations

import bisect
import io
from typing import BinaryIO, Callable

import numpy as np

from codec.chunk import CODEC_HUFFMAN, CODEC_STORED
from codec import parallel
from codec.container import (
    DEFAULT_CHUNK_SIZE, FOOTER_SIZE, FORMAT_VERSION, FRAME_HEADER_SIZE, FRAME_MAGIC, HEADER_SIZE,
    MAX_CHUNK_SIZE, SEEK_ENTRY_SIZE, TABLE_MAGIC, ChunkEntry, content_crc, decode_frame, decode_payload,
    decode_frame_into, encode_frame_parts, frame_offsets, header_bytes, original_offsets, parse_frame_header, parse_header,
    parse_seek_table, read_exactly, read_seek_table, read_up_to, seek_table_bytes, trailer_size,
)

__all__ = ["encode", "decode", "compress_stream", "decompress_stream", "decode_range", "info", "verify"]

Progress = Callable[[int], None]
# In-memory decode holds the whole output, so it refuses containers that declare more than this
# unless the caller raises the cap (max_size=None lifts it); streams write to disk and have no default.
DEFAULT_MAX_DECODE_SIZE = 4 * 2**30
_CODEC_NAMES = {CODEC_STORED: "stored", CODEC_HUFFMAN: "huffman"}


def encode(data, chunk_size: int = DEFAULT_CHUNK_SIZE, shared_histogram=None) -> bytes:
    """Compresses `data` into a whole container in memory (the same bytes `compress_stream` writes)."""
    out = io.BytesIO()
    compress_stream(io.BytesIO(data), out, chunk_size=chunk_size, shared_histogram=shared_histogram)
    return out.getvalue()


def decode(blob, max_size: int | None = DEFAULT_MAX_DECODE_SIZE,
           max_chunk_size: int = MAX_CHUNK_SIZE) -> bytes:
    """Decodes a whole container in memory; everything is checked before any byte is returned.

    Bomb guard: `max_size` caps the declared original size of the file (DEFAULT_MAX_DECODE_SIZE
    unless given; None lifts the cap) and `max_chunk_size` that of any chunk.
    """
    source = _Source.of(blob)
    entries = _checked_entries(source, max_size, max_chunk_size)
    # BytesIO.getvalue() hands over its buffer without a copy; b"".join of the chunks would copy
    # the whole output once more, and first-touching that much fresh memory is the slow part.
    out = io.BytesIO()
    for data in _decode_chunks(source, entries, range(len(entries))):
        out.write(data)
    return out.getvalue()


def compress_stream(src: BinaryIO, dst: BinaryIO, chunk_size: int = DEFAULT_CHUNK_SIZE,
                    progress: Progress | None = None, shared_histogram=None, *, threads: int = 1) -> dict:
    """Reads `src` to its end, one chunk at a time, and writes a container to `dst`.

    Neither needs to seek (pipes work). `threads` workers code chunks side by side (codec.parallel);
    the output is the same for any number, and memory holds about `threads + 2` chunks and frames.
    `progress(original_bytes_done)` is called after each chunk.
    """
    return parallel.compress_stream(src, dst, chunk_size, threads=threads, progress=progress,
                                    shared_histogram=shared_histogram)


def decompress_stream(src: BinaryIO, dst: BinaryIO, max_size: int | None = None,
                      progress: Progress | None = None, max_chunk_size: int = MAX_CHUNK_SIZE, *,
                      threads: int = 1) -> dict:
    """Reads a container from `src` and writes the original bytes to `dst`.

    Works on pipes: frames are read in order (`"DCZC"` markers) up to the `"DCZS"` seek table, which
    is then checked against the frames seen, and nothing may follow the footer. When `src` is
    seekable and at offset 0 the seek table is checked first, so a truncated or corrupt trailer
    fails before anything is written; if both are regular files, workers write each chunk at its
    final offset (see codec.parallel.decompress_stream). A chunk's bytes are written only after its
    CRC32C matched, but on a FormatError other chunks may already be in `dst`: callers that need an
    all-or-nothing output write to a temporary file and rename it on success (services does).
    `max_size` caps the total original size and `max_chunk_size` that of any chunk
    (decompression-bomb guard); memory holds about `threads + 2` frames and decoded chunks.
    """
    return parallel.decompress_stream(src, dst, max_size, threads=threads, progress=progress,
                                      max_chunk_size=max_chunk_size)


def decode_range(blob_or_file, offset: int, length: int, max_chunk_size: int = MAX_CHUNK_SIZE) -> bytes:
    """Original bytes `[offset, offset + length)` (clipped at the end, like slicing), reading and
    decoding only the chunks that overlap them, plus the header and seek table."""
    if offset < 0 or length < 0:
        raise ValueError(f"offset and length must be non-negative, got {offset} and {length}")
    source = _Source.of(blob_or_file)
    entries = _checked_entries(source, None, max_chunk_size)
    starts = original_offsets(entries)
    total = starts[-1] + entries[-1].original_size if entries else 0
    end = min(offset + length, total)
    if offset >= end:
        return b""
    first = bisect.bisect_right(starts, offset) - 1
    last = bisect.bisect_left(starts, end) - 1
    data = b"".join(_decode_chunks(source, entries, range(first, last + 1)))
    skip = offset - starts[first]
    return data[skip:skip + end - offset]


def info(f, file_size: int | None = None) -> dict:
    """A JSON-ready description of a container: version, chunk count, sizes, ratio, codec ids and
    CRC32Cs. Reads the header, the seek table and each frame header, not the payloads."""
    source = _Source.of(f, file_size)
    f, file_size = source.file, source.size
    entries = read_seek_table(f, file_size)
    f.seek(0)
    header_bytes_read = read_exactly(f, HEADER_SIZE, "file header")
    chunk_size = parse_header(header_bytes_read)
    chunks = []
    for index, (entry, offset, original_offset) in enumerate(
            zip(entries, frame_offsets(entries), original_offsets(entries))):
        f.seek(offset)
        header = parse_frame_header(read_exactly(f, FRAME_HEADER_SIZE, "frame header"), entry)
        chunks.append({
            "index": index, "offset": offset, "frame_size": entry.frame_size,
            "original_offset": original_offset, "original_size": entry.original_size,
            "codec": header.codec, "codec_name": _CODEC_NAMES[header.codec],
            "crc32c": f"{entry.crc:08x}",
        })
    original_size = sum(e.original_size for e in entries)
    codecs = {name: sum(1 for c in chunks if c["codec"] == codec_id)
              for codec_id, name in _CODEC_NAMES.items()}
    return {
        "format": "dcz",
        "format_version": header_bytes_read[4],
        "chunk_size": chunk_size,
        "chunks": len(entries),
        "original_size": original_size,
        "compressed_size": file_size,
        # compression ratio, original / compressed: higher is better, below 1 means it grew.
        "ratio": round(original_size / file_size, 4),
        "codecs": codecs,
        # CRC32C of the whole original content: stored in the footer from version 2 on (and checked
        # against the chunks' CRCs whenever the seek table is read); combined from them for version 1.
        "content_crc32c": f"{content_crc(entries):08x}",
        "entries": chunks,
    }


def verify(f, file_size: int | None = None, max_size: int | None = None,
           progress: Progress | None = None, max_chunk_size: int = MAX_CHUNK_SIZE) -> dict:
    """Decodes every chunk and checks every CRC32C, one chunk in memory at a time; raises FormatError
    on the first fault, returns `{"ok": True, "chunks", "original_size", "compressed_size"}`."""
    source = _Source.of(f, file_size)
    entries = _checked_entries(source, max_size, max_chunk_size)
    # One buffer for every chunk: the decoded bytes are only checked, never kept.
    buffer = np.empty(max((entry.original_size for entry in entries), default=0), dtype=np.uint8)
    offsets = frame_offsets(entries)
    done = 0
    for entry, offset in zip(entries, offsets):
        done += decode_frame_into(source.frame(offset, entry.frame_size), buffer, entry, max_chunk_size)
        if progress is not None:
            progress(done)
    return {"ok": True, "chunks": len(entries), "original_size": done, "compressed_size": source.size}


class _Source:
    """A container to read frames from: an open seekable file, or bytes in memory (sliced, not read)."""

    def __init__(self, file: BinaryIO, size: int, view: memoryview | None = None):
        self.file, self.size, self.view = file, size, view

    @classmethod
    def of(cls, blob_or_file, file_size: int | None = None) -> "_Source":
        if isinstance(blob_or_file, (bytes, bytearray, memoryview)):
            view = memoryview(blob_or_file).cast("B")
            return cls(_ViewFile(view), len(view), view)
        if file_size is None:
            file_size = blob_or_file.seek(0, io.SEEK_END)
        return cls(blob_or_file, file_size)

    def frame(self, offset: int, size: int):
        """The bytes of one frame; whole, because the seek table was checked against the size."""
        if self.view is not None:
            return self.view[offset:offset + size]
        self.file.seek(offset)
        return read_exactly(self.file, size, "chunk frame")


class _ViewFile:
    """The read/seek/tell of a binary file over a memoryview, without copying it (as BytesIO would)."""

    def __init__(self, view: memoryview):
        self.view, self.position = view, 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: len(self.view)}[whence]
        self.position = max(base + offset, 0)
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytes:
        end = len(self.view) if size < 0 else self.position + size
        data = self.view[self.position:end].tobytes()
        self.position += len(data)
        return data


def _decode_chunks(source: _Source, entries: list[ChunkEntry], indexes: range):
    """Yields the checked original bytes of chunks `indexes`, one frame in memory at a time."""
    offsets = frame_offsets(entries)
    for index in indexes:
        entry = entries[index]
        yield decode_frame(source.frame(offsets[index], entry.frame_size), entry)


def _checked_entries(source: _Source, max_size: int | None, max_chunk_size: int) -> list[ChunkEntry]:
    """The checked seek table, with the bomb guard applied to the total and to every chunk."""
    return parallel.checked_entries(source.file, source.size, max_size, max_chunk_size)
