"""Tests for codec/container.py: each piece of the .dcz layout, and what a reader rejects."""
from __future__ import annotations

import io
import os
import struct

import numpy as np
import pytest

from codec import FormatError
from codec.chunk import CODEC_STORED
from codec.container import (
    FOOTER_SIZE, FRAME_HEADER_SIZE, HEADER_SIZE, MAX_CHUNK_SIZE, SEEK_ENTRY_SIZE, ChunkEntry,
    crc32c, decode_frame, decode_frame_into, encode_frame, encode_frame_parts, frame_header_bytes, frame_offsets, header_bytes,
    original_offsets, parse_footer, parse_frame_header, parse_header, parse_seek_table,
    read_exactly, read_seek_table, seek_table_bytes, trailer_size,
)

TEXT = b"the quick brown fox jumps over the lazy dog. " * 200


def build_container(chunks: list[bytes], chunk_size: int = 4096) -> tuple[bytes, list[ChunkEntry]]:
    frames, entries = zip(*(encode_frame(c) for c in chunks)) if chunks else ((), ())
    return header_bytes(chunk_size) + b"".join(frames) + seek_table_bytes(entries), list(entries)


def flip(blob: bytes, position: int, mask: int = 0x01) -> bytes:
    return blob[:position] + bytes([blob[position] ^ mask]) + blob[position + 1:]


def test_crc32c_is_the_castagnoli_check_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(memoryview(b"0123456789")[1:]) == 0xE3069283


def test_header_is_16_bytes_with_magic_version_and_chunk_size():
    header = header_bytes(1 << 20)
    assert len(header) == HEADER_SIZE
    assert header[:5] == b"\x89DCZ\x02"
    assert struct.unpack_from("<I", header, 8)[0] == 1 << 20
    assert parse_header(header) == 1 << 20


@pytest.mark.parametrize("position, message", [(0, "magic"), (4, "version"), (6, "CRC"), (9, "CRC"),
                                               (13, "CRC")])
def test_corrupted_header_is_rejected(position, message):
    with pytest.raises(FormatError, match=message):
        parse_header(flip(header_bytes(4096), position))


def test_crc32c_is_the_same_over_every_kind_of_buffer_holding_the_same_bytes():
    data = bytes(range(256)) * 41 + b"tail"
    array = np.frombuffer(data, dtype=np.uint8)
    views = [bytearray(data), memoryview(data), array, array.copy(), memoryview(data)[0:],
             array.view(np.uint16)]
    assert {crc32c(view) for view in views} == {crc32c(data)}
    assert crc32c(array[::2]) == crc32c(data[::2])  # not contiguous: copied, still right


def test_header_with_unknown_flags_is_rejected_even_with_a_valid_crc():
    head = b"\x89DCZ\x01\x01\x00\x00" + struct.pack("<I", 4096)
    with pytest.raises(FormatError, match="flags"):
        parse_header(head + struct.pack("<I", crc32c(head)))


def test_short_header_is_truncation():
    with pytest.raises(FormatError, match="truncated"):
        parse_header(header_bytes(4096)[:15])


@pytest.mark.parametrize("chunk_size", [0, MAX_CHUNK_SIZE + 1])
def test_writer_refuses_impossible_chunk_sizes(chunk_size):
    with pytest.raises(ValueError):
        header_bytes(chunk_size)


def test_frame_round_trips_and_its_entry_describes_it():
    frame, entry = encode_frame(TEXT)
    assert entry == ChunkEntry(len(frame), len(TEXT), crc32c(TEXT))
    assert frame[:4] == b"DCZC"
    assert decode_frame(frame) == TEXT
    assert decode_frame(memoryview(frame), entry) == TEXT


def test_frame_parts_are_the_frame_split_at_its_header():
    header, payload, entry = encode_frame_parts(TEXT)
    assert (header + payload, entry) == encode_frame(TEXT)
    assert len(header) == FRAME_HEADER_SIZE


def test_incompressible_chunk_is_stored_and_grows_by_the_frame_header_only():
    data = os.urandom(5000)
    frame, entry = encode_frame(data)
    assert frame[4] == CODEC_STORED
    assert entry.frame_size == FRAME_HEADER_SIZE + len(data)
    assert frame[FRAME_HEADER_SIZE:] == data


def test_one_byte_chunk_round_trips():
    frame, entry = encode_frame(b"\x00")
    assert decode_frame(frame, entry) == b"\x00"


def test_writer_refuses_empty_chunks():
    with pytest.raises(ValueError):
        encode_frame(b"")


def decode_frame_via_buffer(frame, entry=None) -> bytes:
    """decode_frame_into through a buffer longer than the chunk, read back as bytes."""
    out = np.full(MAX_TEST_CHUNK + 5, 0xAA, dtype=np.uint8)
    size = decode_frame_into(frame, out, entry)
    assert (out[size:] == 0xAA).all(), "decode_frame_into wrote past the chunk"
    return out[:size].tobytes()


MAX_TEST_CHUNK = len(TEXT) + 1000


@pytest.mark.parametrize("data", [TEXT, os.urandom(3000), b"z"], ids=["huffman", "stored", "one-byte"])
def test_frame_decoded_into_a_buffer_gives_the_chunk_and_its_size(data):
    frame, entry = encode_frame(data)
    assert decode_frame_via_buffer(frame, entry) == data
    assert decode_frame_via_buffer(memoryview(frame)) == data


def test_decoding_into_a_buffer_shorter_than_the_chunk_is_refused():
    frame, _ = encode_frame(TEXT)
    with pytest.raises(ValueError, match="too small"):
        decode_frame_into(frame, np.empty(len(TEXT) - 1, dtype=np.uint8))


@pytest.mark.parametrize("decode", [decode_frame, decode_frame_via_buffer], ids=["bytes", "into"])
def test_every_corrupted_frame_byte_is_detected(decode):
    frame, entry = encode_frame(TEXT[:300])
    for position in range(len(frame)):
        with pytest.raises(FormatError):
            decode(flip(frame, position), entry)


def test_frame_disagreeing_with_its_entry_is_rejected():
    frame, entry = encode_frame(TEXT)
    with pytest.raises(FormatError, match="seek-table entry"):
        decode_frame(frame, ChunkEntry(entry.frame_size, entry.original_size, entry.crc ^ 1))


@pytest.mark.parametrize("decode", [decode_frame, decode_frame_via_buffer], ids=["bytes", "into"])
def test_truncated_frame_and_frame_with_extra_bytes_are_rejected(decode):
    frame, _ = encode_frame(TEXT)
    with pytest.raises(FormatError, match="truncated"):
        decode(frame[:-1])
    with pytest.raises(FormatError, match="truncated"):
        decode(frame[:10])
    with pytest.raises(FormatError, match="left over"):
        decode(frame + b"\x00")


def test_frame_with_valid_crc_but_unknown_codec_is_rejected():
    header = frame_header_bytes(7, 10, 10, crc32c(b"0123456789"))
    with pytest.raises(FormatError, match="codec id 7"):
        decode_frame(header + b"0123456789")


@pytest.mark.parametrize("original_size, payload_size", [
    (0, 0), (MAX_CHUNK_SIZE + 1, 10), (10, 11), (2**32 - 1, 2**32 - 1)])
def test_frame_with_valid_crc_but_impossible_sizes_is_rejected_before_reading_the_payload(
        original_size, payload_size):
    header = frame_header_bytes(CODEC_STORED, original_size, payload_size, 0)
    with pytest.raises(FormatError):
        parse_frame_header(header)


def test_frame_over_the_readers_chunk_limit_is_rejected():
    frame, _ = encode_frame(TEXT)
    with pytest.raises(FormatError, match="limit"):
        decode_frame(frame, max_chunk_size=len(TEXT) - 1)


def test_stored_frame_whose_payload_size_differs_from_original_size_is_rejected():
    header = frame_header_bytes(CODEC_STORED, 10, 9, 0)
    with pytest.raises(FormatError, match="impossible"):
        parse_frame_header(header)


def test_trailer_size_counts_marker_entries_and_footer():
    assert trailer_size(0) == 4 + 32
    assert trailer_size(3) == 4 + 3 * SEEK_ENTRY_SIZE + 32
    assert len(seek_table_bytes([ChunkEntry(30, 6, 1)] * 3)) == trailer_size(3)


def test_seek_table_round_trips_through_a_file():
    chunks = [TEXT[:1000], os.urandom(700), b"x"]
    blob, entries = build_container(chunks, 1000)
    assert read_seek_table(io.BytesIO(blob), len(blob)) == entries
    assert len(blob) == HEADER_SIZE + sum(e.frame_size for e in entries) + trailer_size(3)


def test_empty_container_is_header_marker_and_footer():
    blob, _ = build_container([])
    assert len(blob) == HEADER_SIZE + 4 + FOOTER_SIZE
    assert read_seek_table(io.BytesIO(blob), len(blob)) == []
    assert blob.endswith(b"DCZ-END\x01")


def test_offsets_locate_each_frame_and_its_original_bytes():
    chunks = [TEXT[:1000], TEXT[1000:1500], TEXT[1500:1501]]
    blob, entries = build_container(chunks, 1000)
    frames = frame_offsets(entries)
    assert frames[0] == HEADER_SIZE
    assert original_offsets(entries) == [0, 1000, 1500]
    for chunk, entry, offset in zip(chunks, entries, frames):
        assert decode_frame(blob[offset:offset + entry.frame_size], entry) == chunk
    assert frame_offsets([]) == [] and original_offsets([]) == []


def test_every_corrupted_trailer_byte_is_detected():
    blob, entries = build_container([TEXT[:500], TEXT[500:900]], 500)
    trailer_start = len(blob) - trailer_size(len(entries))
    for position in list(range(HEADER_SIZE)) + list(range(trailer_start, len(blob))):
        with pytest.raises(FormatError):
            read_seek_table(io.BytesIO(flip(blob, position)), len(blob))


@pytest.mark.parametrize("cut", [1, 31, 32, 40])
def test_truncated_container_is_rejected(cut):
    blob, _ = build_container([TEXT[:500], TEXT[500:900]], 500)
    with pytest.raises(FormatError):
        read_seek_table(io.BytesIO(blob[:-cut]), len(blob) - cut)


def test_bytes_appended_after_the_footer_are_rejected():
    blob, _ = build_container([TEXT[:500]], 500)
    with pytest.raises(FormatError):
        read_seek_table(io.BytesIO(blob + b"\x00" * 12), len(blob) + 12)


def test_tiny_files_are_truncation_not_crashes():
    for size in range(0, 60):
        with pytest.raises(FormatError):
            read_seek_table(io.BytesIO(b"\x89DCZ" + b"\x00" * size), 4 + size)


def test_declared_total_above_the_limit_is_a_format_error():
    blob, entries = build_container([TEXT[:500], TEXT[500:900]], 500)
    assert read_seek_table(io.BytesIO(blob), len(blob), max_total_size=900) == entries
    with pytest.raises(FormatError, match="limit"):
        read_seek_table(io.BytesIO(blob), len(blob), max_total_size=899)


def forge_trailer(entries_fields: list[tuple[int, int, int]], total: int | None = None,
                  count: int | None = None) -> tuple[bytes, bytes]:
    """A seek table and footer with a valid CRC over whatever (possibly impossible) values."""
    body = b"".join(struct.pack("<III", *fields) for fields in entries_fields)
    counts = struct.pack("<QQ", len(entries_fields) if count is None else count,
                         sum(f[1] for f in entries_fields) if total is None else total)
    footer = counts + struct.pack("<II8s", crc32c(body + counts), 0, b"DCZ-END\x01")
    return b"DCZS" + body, footer


@pytest.mark.parametrize("fields, total, message", [
    ([(24 + 5, 0, 0)], None, "original bytes"),
    ([(24 + 5, MAX_CHUNK_SIZE + 1, 0)], None, "original bytes"),
    ([(23, 5, 0)], None, "frame size"),
    ([(24 + 6, 5, 0)], None, "frame size"),
    ([(24 + 5, 5, 0)], 6, "add up"),
])
def test_seek_table_with_valid_crc_but_impossible_sizes_is_rejected(fields, total, message):
    table, footer = forge_trailer(fields, total)
    with pytest.raises(FormatError, match=message):
        parse_seek_table(table, footer)


def test_footer_declaring_more_chunks_than_fit_in_the_file_is_rejected_before_reading_them():
    _, footer = forge_trailer([], count=2**60)
    with pytest.raises(FormatError, match="impossible"):
        parse_footer(footer, file_size=10_000)
    blob = header_bytes(4096) + b"DCZS" + footer
    with pytest.raises(FormatError):
        read_seek_table(io.BytesIO(blob), len(blob))


def test_read_exactly_loops_over_short_reads_and_reports_truncation():
    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self.data = data

        def readable(self):
            return True

        def read(self, size=-1):
            piece, self.data = self.data[:min(size, 3)], self.data[min(size, 3):]
            return piece

    assert read_exactly(Trickle(b"abcdefgh"), 8) == b"abcdefgh"
    with pytest.raises(FormatError, match="truncated"):
        read_exactly(Trickle(b"abc"), 4)
