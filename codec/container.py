"""The `.dcz` container of docs/format.md: file header, chunk frames, seek table and footer."""
from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from typing import BinaryIO, Sequence

import google_crc32c
import numpy as np

from codec.chunk import CODEC_HUFFMAN, CODEC_STORED, decode_chunk, decode_chunk_into, encode_chunk_view
from codec.errors import FormatError
from codec.sizes import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE

__all__ = [
    "HEADER_SIZE", "FRAME_HEADER_SIZE", "FOOTER_SIZE", "SEEK_ENTRY_SIZE", "TABLE_MARKER_SIZE",
    "DEFAULT_CHUNK_SIZE", "MAX_CHUNK_SIZE", "FORMAT_VERSION",
    "HEADER_MAGIC", "FRAME_MAGIC", "TABLE_MAGIC", "FOOTER_MAGIC",
    "ChunkEntry", "FrameHeader",
    "crc32c", "header_bytes", "parse_header", "encode_frame", "encode_frame_parts", "frame_header_bytes",
    "parse_frame_header", "decode_payload", "decode_frame", "decode_frame_into", "seek_table_bytes", "trailer_size",
    "parse_footer", "parse_seek_table", "crc32c_combine", "content_crc", "READABLE_VERSIONS", "read_seek_table", "frame_offsets", "original_offsets",
    "read_exactly",
    "read_up_to",
]

HEADER_SIZE = 16
FRAME_HEADER_SIZE = 24
FOOTER_SIZE = 32
SEEK_ENTRY_SIZE = 12
TABLE_MARKER_SIZE = 4
FORMAT_VERSION = 2
# Versions this reader knows: 1 (no whole-content CRC) and 2 (its CRC32C in the footer).
READABLE_VERSIONS = (1, 2)

HEADER_MAGIC = b"\x89DCZ"
FRAME_MAGIC = b"DCZC"
TABLE_MAGIC = b"DCZS"
FOOTER_MAGIC = b"DCZ-END\x01"

_HEADER = struct.Struct("<4sBBHI")        # magic, version, flags, reserved, chunk_size; then CRC
_FRAME = struct.Struct("<4sBBHIII")       # magic, codec, flags, reserved, original, payload, crc; then CRC
_CRC = struct.Struct("<I")
_ENTRY = struct.Struct("<III")            # frame_size, original_size, content_crc
_FOOTER_COUNTS = struct.Struct("<QQ")     # chunk_count, total_original_size
_FOOTER_TAIL = struct.Struct("<II8s")     # table_crc, reserved, footer magic
_KNOWN_CODECS = (CODEC_STORED, CODEC_HUFFMAN)


@dataclass(frozen=True)
class ChunkEntry:
    """One seek-table entry: where a chunk's frame ends and what it decodes to."""
    frame_size: int
    original_size: int
    crc: int


@dataclass(frozen=True)
class FrameHeader:
    """The checked 24-byte header of one chunk frame."""
    codec: int
    original_size: int
    payload_size: int
    crc: int


def crc32c(data) -> int:
    """CRC32C (Castagnoli) of any bytes-like object."""
    # google_crc32c takes `bytes` or a C-contiguous numpy array as they are, but refuses other
    # buffers (memoryview, bytearray): those are viewed as an array, not copied (a copy of every
    # chunk cost more than the CRC itself).
    if type(data) is bytes:
        return google_crc32c.value(data)
    return google_crc32c.value(np.ascontiguousarray(np.frombuffer(data, dtype=np.uint8)
                                                    if not isinstance(data, np.ndarray) else data))


def read_up_to(f: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes; fewer only at the end of `f` (pipes and sockets may return short reads)."""
    first = f.read(size)
    if len(first) == size or not first:
        return first
    parts = [first]
    got = len(first)
    while got < size:
        part = f.read(size - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def read_exactly(f: BinaryIO, size: int, what: str = "data") -> bytes:
    """Reads exactly `size` bytes (looping over short reads of pipes) or raises FormatError."""
    data = read_up_to(f, size)
    if len(data) != size:
        raise FormatError(f"truncated container: needed {size} bytes of {what}, got {len(data)}")
    return data


# ---------------------------------------------------------------------------------------------
# File header


def _check_chunk_size(chunk_size: int) -> None:
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE} bytes, got {chunk_size}")


def header_bytes(chunk_size: int) -> bytes:
    """The 16-byte file header of a container written with nominal chunks of `chunk_size` bytes."""
    _check_chunk_size(chunk_size)
    head = _HEADER.pack(HEADER_MAGIC, FORMAT_VERSION, 0, 0, chunk_size)
    return head + _CRC.pack(crc32c(head))


def parse_header(header) -> int:
    """Checks a 16-byte file header and returns the writer's nominal chunk size."""
    header = bytes(header)
    if len(header) != HEADER_SIZE:
        raise FormatError(f"truncated container: file header has {len(header)} of {HEADER_SIZE} bytes")
    magic, version, flags, reserved, chunk_size = _HEADER.unpack_from(header)
    if magic != HEADER_MAGIC:
        raise FormatError(f"not a .dcz container: magic is {magic!r}, expected {HEADER_MAGIC!r}")
    if version not in READABLE_VERSIONS:
        raise FormatError(f"unsupported .dcz format version {version} (this reader knows "
                          f"{', '.join(map(str, READABLE_VERSIONS))})")
    (stored_crc,) = _CRC.unpack_from(header, 12)
    if crc32c(header[:12]) != stored_crc:
        raise FormatError("file header CRC mismatch: the header is corrupted")
    if flags != 0 or reserved != 0:
        raise FormatError(f"file header has unknown flags {flags:#x} / reserved {reserved:#x}")
    return chunk_size


# ---------------------------------------------------------------------------------------------
# Chunk frames


def frame_header_bytes(codec: int, original_size: int, payload_size: int, crc: int) -> bytes:
    """The 24-byte header of one chunk frame."""
    head = _FRAME.pack(FRAME_MAGIC, codec, 0, 0, original_size, payload_size, crc)
    return head + _CRC.pack(crc32c(head))


def encode_frame(data, shared_histogram=None) -> tuple[bytes, ChunkEntry]:
    """Compresses one chunk of original bytes into a whole frame (header + payload) and its entry.

    Falls back to storing the bytes whenever the codec's payload would not be smaller, so every
    payload is at most `original_size` bytes (a rule readers enforce).
    """
    header, payload, entry = encode_frame_parts(data, shared_histogram)
    return b"".join((header, payload)), entry


def encode_frame_parts(data, shared_histogram=None, counts=None) -> tuple[bytes, object, ChunkEntry]:
    """`encode_frame` as (24-byte header, payload, entry), for writers that can skip the join;
    `counts` as in encode_chunk. The payload is bytes-like and not copied (encode_chunk_view): a
    stored chunk's is `data` itself, so a caller that reuses `data`'s buffer writes it first."""
    original_size = len(data)
    if not 1 <= original_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"a chunk holds 1 to {MAX_CHUNK_SIZE} bytes, got {original_size}")
    codec, payload = encode_chunk_view(data, shared_histogram, counts)
    if codec != CODEC_STORED and len(payload) >= original_size:
        codec, payload = CODEC_STORED, data
    crc = crc32c(data)
    header = frame_header_bytes(codec, original_size, len(payload), crc)
    return header, payload, ChunkEntry(FRAME_HEADER_SIZE + len(payload), original_size, crc)


def parse_frame_header(header, entry: ChunkEntry | None = None,
                       max_chunk_size: int = MAX_CHUNK_SIZE) -> FrameHeader:
    """Checks a 24-byte frame header (and its agreement with `entry` if given)."""
    header = bytes(header)
    if len(header) != FRAME_HEADER_SIZE:
        raise FormatError(f"truncated container: frame header has {len(header)} of {FRAME_HEADER_SIZE} bytes")
    magic, codec, flags, reserved, original_size, payload_size, crc = _FRAME.unpack_from(header)
    if magic != FRAME_MAGIC:
        raise FormatError(f"bad chunk frame magic {magic!r}, expected {FRAME_MAGIC!r}")
    (stored_crc,) = _CRC.unpack_from(header, 20)
    if crc32c(header[:20]) != stored_crc:
        raise FormatError("chunk frame header CRC mismatch: the frame header is corrupted")
    if flags != 0 or reserved != 0:
        raise FormatError(f"chunk frame has unknown flags {flags:#x} / reserved {reserved:#x}")
    if codec not in _KNOWN_CODECS:
        raise FormatError(f"chunk uses codec id {codec}, which this reader does not know")
    if not 1 <= original_size <= min(max_chunk_size, MAX_CHUNK_SIZE):
        raise FormatError(f"chunk declares {original_size} original bytes; the limit is "
                          f"1 to {min(max_chunk_size, MAX_CHUNK_SIZE)}")
    if payload_size > original_size or (codec == CODEC_STORED and payload_size != original_size):
        raise FormatError(f"chunk payload of {payload_size} bytes is impossible for {original_size} "
                          f"original bytes with codec {codec}")
    parsed = FrameHeader(codec, original_size, payload_size, crc)
    if entry is not None and (FRAME_HEADER_SIZE + payload_size, original_size, crc) != (
            entry.frame_size, entry.original_size, entry.crc):
        raise FormatError(f"chunk frame {parsed} disagrees with its seek-table entry {entry}")
    return parsed


def decode_payload(header: FrameHeader, payload) -> bytes:
    """Decodes a frame's payload and checks its length and content CRC32C."""
    if len(payload) != header.payload_size:
        raise FormatError(f"truncated container: chunk payload has {len(payload)} of "
                          f"{header.payload_size} bytes")
    data = decode_chunk(header.codec, payload, header.original_size)
    if len(data) != header.original_size:
        raise FormatError(f"chunk decoded to {len(data)} bytes, header says {header.original_size}")
    if crc32c(data) != header.crc:
        raise FormatError("chunk content CRC32C mismatch: the chunk is corrupted")
    return data


def decode_frame(frame, entry: ChunkEntry | None = None, max_chunk_size: int = MAX_CHUNK_SIZE) -> bytes:
    """Decodes one whole frame (header + payload, nothing more) to its checked original bytes."""
    header, payload = _split_frame(frame, entry, max_chunk_size)
    return decode_payload(header, payload)


def decode_frame_into(frame, out, entry: ChunkEntry | None = None,
                      max_chunk_size: int = MAX_CHUNK_SIZE) -> int:
    """Decodes one whole frame into the start of `out` (a uint8 numpy array at least as long as the
    chunk) and checks it as decode_frame does; returns the chunk's original size.

    For callers that write chunks from one reused buffer (an aligned one for direct I/O) instead of
    a fresh bytes object per chunk."""
    header, payload = _split_frame(frame, entry, max_chunk_size)
    if len(payload) != header.payload_size:
        raise FormatError(f"truncated container: chunk payload has {len(payload)} of "
                          f"{header.payload_size} bytes")
    if out.shape[0] < header.original_size:
        raise ValueError(f"buffer of {out.shape[0]} bytes is too small for a chunk of {header.original_size}")
    target = out[:header.original_size]
    decode_chunk_into(header.codec, payload, target)
    if crc32c(target) != header.crc:
        raise FormatError("chunk content CRC32C mismatch: the chunk is corrupted")
    return header.original_size


def _split_frame(frame, entry: ChunkEntry | None, max_chunk_size: int) -> tuple[FrameHeader, memoryview]:
    view = memoryview(frame)
    if len(view) < FRAME_HEADER_SIZE:
        raise FormatError(f"truncated container: frame has {len(view)} bytes, less than its header")
    header = parse_frame_header(view[:FRAME_HEADER_SIZE], entry, max_chunk_size)
    payload = view[FRAME_HEADER_SIZE:]
    if len(payload) > header.payload_size:
        raise FormatError(f"chunk frame has {len(payload) - header.payload_size} bytes left over")
    return header, payload


# ---------------------------------------------------------------------------------------------
# Seek table and footer


def trailer_size(chunk_count: int) -> int:
    """Bytes of seek table (marker + entries) plus footer for `chunk_count` chunks."""
    return TABLE_MARKER_SIZE + SEEK_ENTRY_SIZE * chunk_count + FOOTER_SIZE


def seek_table_bytes(entries: Sequence[ChunkEntry]) -> bytes:
    """The `"DCZS"` seek table and the 32-byte footer that end a container.

    Version 2: the footer holds the CRC32C of the whole original content, combined from the
    entries' CRCs and sizes (so parallel writers need nothing more than the entries), and the table
    CRC covers it too."""
    body = b"".join(_ENTRY.pack(e.frame_size, e.original_size, e.crc) for e in entries)
    counts = _FOOTER_COUNTS.pack(len(entries), sum(e.original_size for e in entries))
    content = _CRC.pack(content_crc(entries))
    table_crc = google_crc32c.extend(crc32c(body), counts + content)
    return b"".join((TABLE_MAGIC, body, counts, _FOOTER_TAIL.pack(table_crc, 0, FOOTER_MAGIC)[:4],
                     content, FOOTER_MAGIC))


# CRC32C combination (zlib's crc32_combine: multiplication modulo the generator polynomial in
# GF(2), reflected), with the Castagnoli polynomial: CRC(A + B) from CRC(A), CRC(B) and len(B).
_CASTAGNOLI_REFLECTED = 0x82F63B78


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the polynomial, both reflected (bit 31 is x^0)."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if (a & (m - 1)) == 0:
                break
        m >>= 1
        b = (b >> 1) ^ _CASTAGNOLI_REFLECTED if b & 1 else b >> 1
    return p


_X2N = [1 << 30]  # x^(2^k) modulo the polynomial, k = 0..31
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def _x8nmodp(n: int) -> int:
    """x^(8n): the factor that moves a CRC past n zero bytes."""
    p = 1 << 31  # x^0
    k = 3
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return p


def crc32c_combine(crc1: int, crc2: int, length2: int) -> int:
    """CRC32C of the concatenation A + B, given crc32c(A), crc32c(B) and len(B)."""
    return _multmodp(_x8nmodp(length2), crc1) ^ (crc2 & 0xFFFFFFFF)


def content_crc(entries: Sequence[ChunkEntry]) -> int:
    """CRC32C of the whole original content, combined from the chunks' CRCs in order."""
    crc = 0
    factors: dict[int, int] = {}  # most chunks share one size: one factor for all of them
    for e in entries:
        factor = factors.get(e.original_size)
        if factor is None:
            factor = factors[e.original_size] = _x8nmodp(e.original_size)
        crc = _multmodp(factor, crc) ^ e.crc
    return crc


def parse_footer(footer, file_size: int | None = None) -> tuple[int, int]:
    """Checks the 32-byte footer's magic and bounds; returns (chunk_count, total_original_size).

    The table CRC is checked by `parse_seek_table`, which has the entries it covers.
    """
    footer = bytes(footer)
    if len(footer) != FOOTER_SIZE:
        raise FormatError(f"truncated container: footer has {len(footer)} of {FOOTER_SIZE} bytes")
    chunk_count, total = _FOOTER_COUNTS.unpack_from(footer)
    _, _, magic = _FOOTER_TAIL.unpack_from(footer, 16)
    if magic != FOOTER_MAGIC:
        raise FormatError(f"bad footer magic {magic!r} (truncated or not a .dcz container)")
    if file_size is not None and HEADER_SIZE + trailer_size(chunk_count) > file_size:
        raise FormatError(f"footer declares {chunk_count} chunks, impossible in a {file_size}-byte file")
    return chunk_count, total


def parse_seek_table(table, footer, file_size: int | None = None,
                     max_total_size: int | None = None) -> list[ChunkEntry]:
    """Checks the seek table (`"DCZS"` + entries) against its footer and returns the entries.

    With `file_size` the frame sizes must add up to the whole file; `max_total_size` is the
    decompression-bomb guard on the declared original size.
    """
    chunk_count, total = parse_footer(footer, file_size)
    table = bytes(table)
    if len(table) != TABLE_MARKER_SIZE + SEEK_ENTRY_SIZE * chunk_count:
        raise FormatError(f"seek table has {len(table)} bytes, {chunk_count} chunks need "
                          f"{TABLE_MARKER_SIZE + SEEK_ENTRY_SIZE * chunk_count}")
    if table[:TABLE_MARKER_SIZE] != TABLE_MAGIC:
        raise FormatError(f"bad seek table marker {table[:TABLE_MARKER_SIZE]!r}, expected {TABLE_MAGIC!r}")
    body = table[TABLE_MARKER_SIZE:]
    footer = bytes(footer)
    table_crc, content = _FOOTER_TAIL.unpack_from(footer, 16)[:2]
    body_crc = crc32c(body)
    # Version 2 covers the whole-content CRC (bytes 20..23) too; version 1 has 0 there, uncovered.
    has_content_crc = google_crc32c.extend(body_crc, footer[:16] + footer[20:24]) == table_crc
    if not has_content_crc:
        if google_crc32c.extend(body_crc, footer[:16]) != table_crc:
            raise FormatError("seek table CRC mismatch: the seek table or footer is corrupted")
        if content != 0:
            raise FormatError(f"footer reserved field is {content:#x}, expected 0")
    if max_total_size is not None and total > max_total_size:
        raise FormatError(f"container declares {total} original bytes, above the limit of {max_total_size}")
    entries = [ChunkEntry(*fields) for fields in _ENTRY.iter_unpack(body)]
    for index, e in enumerate(entries):
        if not 1 <= e.original_size <= MAX_CHUNK_SIZE:
            raise FormatError(f"seek table entry {index} declares {e.original_size} original bytes; "
                              f"the limit is 1 to {MAX_CHUNK_SIZE}")
        if not FRAME_HEADER_SIZE <= e.frame_size <= FRAME_HEADER_SIZE + e.original_size:
            raise FormatError(f"seek table entry {index} has impossible frame size {e.frame_size} "
                              f"for {e.original_size} original bytes")
    if sum(e.original_size for e in entries) != total:
        raise FormatError(f"seek table original sizes add up to {sum(e.original_size for e in entries)}, "
                          f"footer says {total}")
    if has_content_crc and content_crc(entries) != content:
        raise FormatError("the chunks' CRC32Cs do not combine to the whole content's CRC32C in the "
                          "footer: chunks are missing, reordered or altered")
    expected_file_size = HEADER_SIZE + sum(e.frame_size for e in entries) + trailer_size(chunk_count)
    if file_size is not None and expected_file_size != file_size:
        raise FormatError(f"seek table describes a {expected_file_size}-byte file, the file has "
                          f"{file_size} bytes (truncated or extra bytes)")
    return entries


def read_seek_table(f: BinaryIO, file_size: int, max_total_size: int | None = None) -> list[ChunkEntry]:
    """Reads and checks the header, footer and seek table of the container in seekable `f`.

    `f` holds the container from offset 0 to `file_size`; reads three small pieces, never a frame.
    """
    if file_size < HEADER_SIZE + trailer_size(0):
        raise FormatError(f"truncated container: {file_size} bytes is less than the smallest "
                          f"container ({HEADER_SIZE + trailer_size(0)} bytes)")
    f.seek(0)
    parse_header(read_exactly(f, HEADER_SIZE, "file header"))
    f.seek(file_size - FOOTER_SIZE)
    footer = read_exactly(f, FOOTER_SIZE, "footer")
    chunk_count, _ = parse_footer(footer, file_size)
    f.seek(file_size - trailer_size(chunk_count))
    table = read_exactly(f, TABLE_MARKER_SIZE + SEEK_ENTRY_SIZE * chunk_count, "seek table")
    return parse_seek_table(table, footer, file_size, max_total_size)


def frame_offsets(entries: Sequence[ChunkEntry]) -> list[int]:
    """Byte offset of each chunk's frame in the container file."""
    return list(itertools.accumulate((e.frame_size for e in entries[:-1]), initial=HEADER_SIZE))[
        :len(entries)]


def original_offsets(entries: Sequence[ChunkEntry]) -> list[int]:
    """Offset of each chunk's first byte in the original stream."""
    return list(itertools.accumulate((e.original_size for e in entries[:-1]), initial=0))[:len(entries)]
