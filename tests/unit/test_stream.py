"""Tests for codec/stream.py: whole-file encode/decode, streams, ranged reads, info and verify."""
from __future__ import annotations

import io
import json
import os
import tracemalloc

import pytest

import codec
from codec import FormatError
from codec.chunk import CODEC_STORED
from codec.container import (
    FRAME_HEADER_SIZE, HEADER_SIZE, crc32c, encode_frame, frame_offsets, header_bytes,
    read_seek_table, seek_table_bytes, trailer_size,
)

CHUNK = 1024
TEXT = b"".join(b"line %d: the quick brown fox jumps over the lazy dog\n" % i for i in range(400))


class Pipe(io.RawIOBase):
    """A non-seekable reader that returns at most `step` bytes per read, like a pipe or socket."""

    def __init__(self, data: bytes, step: int = 1000):
        self.data = memoryview(data)
        self.step = step

    def readable(self):
        return True

    def readinto(self, buffer):
        size = min(len(buffer), self.step, len(self.data))
        buffer[:size] = self.data[:size]
        self.data = self.data[size:]
        return size


class Sink(io.RawIOBase):
    """A non-seekable writer that keeps what it is given (or only counts it)."""

    def __init__(self, keep: bool = True):
        self.parts: list[bytes] = []
        self.size = 0
        self.keep = keep

    def writable(self):
        return True

    def write(self, data):
        self.size += len(data)
        if self.keep:
            self.parts.append(bytes(data))
        return len(data)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class CountingFile(io.BytesIO):
    """A seekable file that records every read as (offset, bytes returned)."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.reads: list[tuple[int, int]] = []

    def read(self, size=-1):
        offset = self.tell()
        data = super().read(size)
        self.reads.append((offset, len(data)))
        return data


def sizes_to_try() -> list[int]:
    return [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 7]


@pytest.mark.parametrize("size", sizes_to_try())
def test_encode_and_decode_round_trip_every_size_around_the_chunk_size(size):
    data = (TEXT * 2)[:size]
    blob = codec.encode(data, chunk_size=CHUNK)
    assert codec.decode(blob) == data
    assert len(read_seek_table(io.BytesIO(blob), len(blob))) == -(-size // CHUNK)


@pytest.mark.parametrize("size", sizes_to_try())
def test_streams_round_trip_through_pipes_and_write_the_same_bytes_as_encode(size):
    data = (TEXT * 2)[:size]
    compressed = Sink()
    stats = codec.compress_stream(Pipe(data, step=333), compressed, chunk_size=CHUNK)
    blob = compressed.getvalue()
    assert blob == codec.encode(data, chunk_size=CHUNK)
    assert stats == {"original_size": size, "compressed_size": len(blob), "chunks": -(-size // CHUNK)}
    restored = Sink()
    assert codec.decompress_stream(Pipe(blob, step=333), restored) == stats
    assert restored.getvalue() == data


def test_seekable_streams_round_trip():
    src, dst, out = io.BytesIO(TEXT), io.BytesIO(), io.BytesIO()
    codec.compress_stream(src, dst, chunk_size=CHUNK)
    dst.seek(0)
    codec.decompress_stream(dst, out)
    assert out.getvalue() == TEXT


def test_many_small_chunks_round_trip():
    data = os.urandom(500) + TEXT[:2000]
    blob = codec.encode(data, chunk_size=7)
    assert codec.info(blob)["chunks"] == -(-len(data) // 7)
    assert codec.decode(blob) == data
    restored = Sink()
    codec.decompress_stream(Pipe(blob, step=5), restored)
    assert restored.getvalue() == data


def test_one_repeated_symbol_and_all_256_symbols_round_trip():
    for data in (b"\x00" * 5000, b"z" * 3 * CHUNK, bytes(range(256)) * 9):
        assert codec.decode(codec.encode(data, chunk_size=CHUNK)) == data


def test_chunks_are_cut_at_the_chunk_size_and_the_header_records_it():
    blob = codec.encode(TEXT, chunk_size=CHUNK)
    described = codec.info(blob)
    assert described["chunk_size"] == CHUNK
    assert [c["original_size"] for c in described["entries"]][:-1] == [CHUNK] * (len(TEXT) // CHUNK)


def test_progress_reports_original_bytes_after_each_chunk():
    seen_compress, seen_decompress = [], []
    data = TEXT[:3 * CHUNK + 5]
    out = io.BytesIO()
    codec.compress_stream(io.BytesIO(data), out, chunk_size=CHUNK, progress=seen_compress.append)
    codec.decompress_stream(io.BytesIO(out.getvalue()), io.BytesIO(), progress=seen_decompress.append)
    assert seen_compress == seen_decompress == [CHUNK, 2 * CHUNK, 3 * CHUNK, 3 * CHUNK + 5]


def test_compress_stream_never_asks_for_more_than_one_chunk():
    class RecordingPipe(Pipe):
        def __init__(self, data):
            super().__init__(data, step=10**9)
            self.requests = []

        def read(self, size=-1):
            self.requests.append(size)
            return super().read(size)

    src = RecordingPipe(TEXT)
    codec.compress_stream(src, Sink(keep=False), chunk_size=CHUNK)
    assert src.requests and max(src.requests) <= CHUNK


def peak_traced_bytes(function) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_stream_memory_is_bounded_by_the_chunk_size_not_the_file_size():
    chunk_size = 256 * 1024
    data = (TEXT * 300)[:24 * chunk_size]
    assert len(data) == 24 * chunk_size
    blob = codec.encode(data, chunk_size=chunk_size)
    codec.decode(blob)  # warm any compiled kernels outside the measurement
    compress_peak = peak_traced_bytes(
        lambda: codec.compress_stream(Pipe(data, step=10**9), Sink(keep=False), chunk_size=chunk_size))
    decompress_peak = peak_traced_bytes(lambda: codec.decompress_stream(Pipe(blob, step=10**9),
                                                                        Sink(keep=False)))
    assert compress_peak < 8 * chunk_size, compress_peak
    assert decompress_peak < 8 * chunk_size, decompress_peak


def two_chunk_container() -> tuple[bytes, bytes]:
    data = TEXT[:2 * CHUNK]
    return codec.encode(data, chunk_size=CHUNK), data


def corrupt_second_payload(blob: bytes) -> bytes:
    entries = read_seek_table(io.BytesIO(blob), len(blob))
    position = frame_offsets(entries)[1] + FRAME_HEADER_SIZE + 3
    return blob[:position] + bytes([blob[position] ^ 0x40]) + blob[position + 1:]


def test_bad_chunk_is_never_written_and_earlier_good_chunks_are():
    blob, data = two_chunk_container()
    bad = corrupt_second_payload(blob)
    out = Sink()
    with pytest.raises(FormatError):
        codec.decompress_stream(Pipe(bad), out)
    assert out.getvalue() == data[:CHUNK]


def test_seekable_source_with_a_broken_trailer_fails_before_writing_anything():
    blob, _ = two_chunk_container()
    out = Sink()
    with pytest.raises(FormatError):
        codec.decompress_stream(io.BytesIO(blob[:-1]), out)
    assert out.getvalue() == b""


@pytest.mark.parametrize("cut", [1, 20, 40, 100, 1500, 2100])
def test_truncated_stream_is_a_format_error(cut):
    blob, _ = two_chunk_container()
    for src in (Pipe(blob[:-cut]), io.BytesIO(blob[:-cut])):
        with pytest.raises(FormatError):
            codec.decompress_stream(src, Sink())
    with pytest.raises(FormatError):
        codec.decode(blob[:-cut])


def test_bytes_after_the_footer_are_a_format_error_for_pipes_and_files():
    blob, _ = two_chunk_container()
    for src in (Pipe(blob + b"\x00"), io.BytesIO(blob + b"\x00")):
        with pytest.raises(FormatError):
            codec.decompress_stream(src, Sink())


def test_garbage_where_a_frame_should_start_is_a_format_error():
    blob, _ = two_chunk_container()
    with pytest.raises(FormatError, match="expected a chunk frame"):
        codec.decompress_stream(Pipe(blob[:HEADER_SIZE] + b"XXXX" + blob[HEADER_SIZE + 4:]), Sink())


def test_seek_table_that_describes_other_frames_is_a_format_error():
    first, second = os.urandom(300), os.urandom(300)
    (frame_a, entry_a), (frame_b, entry_b) = encode_frame(first), encode_frame(second)
    assert entry_a.frame_size == entry_b.frame_size
    blob = header_bytes(300) + frame_a + frame_b + seek_table_bytes([entry_b, entry_a])
    with pytest.raises(FormatError, match="does not describe"):
        codec.decompress_stream(Pipe(blob), Sink())
    with pytest.raises(FormatError, match="seek-table entry"):
        codec.decompress_stream(io.BytesIO(blob), Sink())
    with pytest.raises(FormatError):
        codec.decode(blob)


def test_size_limit_rejects_a_container_before_decoding_over_it():
    blob, data = two_chunk_container()
    assert codec.decode(blob, max_size=len(data)) == data
    with pytest.raises(FormatError, match="limit"):
        codec.decode(blob, max_size=len(data) - 1)
    out = Sink()
    with pytest.raises(FormatError, match="limit"):
        codec.decompress_stream(Pipe(blob), out, max_size=CHUNK + 1)
    assert out.getvalue() == data[:CHUNK]
    with pytest.raises(FormatError, match="limit"):
        codec.verify(blob, max_size=len(data) - 1)


def test_per_chunk_limit_rejects_chunks_above_it_in_every_reader():
    blob, data = two_chunk_container()
    assert codec.decode(blob, max_chunk_size=CHUNK) == data
    calls = {
        "decode": lambda: codec.decode(blob, max_chunk_size=CHUNK - 1),
        "verify": lambda: codec.verify(blob, max_chunk_size=CHUNK - 1),
        "decode_range": lambda: codec.decode_range(blob, 0, 1, max_chunk_size=CHUNK - 1),
        "decompress_stream(file)": lambda: codec.decompress_stream(io.BytesIO(blob), Sink(),
                                                                   max_chunk_size=CHUNK - 1),
        "decompress_stream(pipe)": lambda: codec.decompress_stream(Pipe(blob), Sink(),
                                                                   max_chunk_size=CHUNK - 1),
    }
    for name, call in calls.items():
        with pytest.raises(FormatError, match="limit"):
            call()


def test_decode_range_matches_slicing_for_offsets_across_chunk_boundaries():
    data = TEXT[:4 * CHUNK + 100]
    blob = codec.encode(data, chunk_size=CHUNK)
    cases = [(0, 0), (0, 1), (5, 10), (CHUNK - 1, 2), (CHUNK, CHUNK), (CHUNK - 3, 2 * CHUNK + 6),
             (0, len(data)), (len(data) - 1, 1), (len(data) - 10, 100), (len(data), 5),
             (len(data) + 10, 5), (4 * CHUNK, 100)]
    for offset, length in cases:
        expected = data[offset:offset + length]
        assert codec.decode_range(blob, offset, length) == expected
        assert codec.decode_range(io.BytesIO(blob), offset, length) == expected


def test_decode_range_of_an_empty_container_is_empty():
    assert codec.decode_range(codec.encode(b""), 0, 10) == b""


def test_decode_range_rejects_negative_arguments():
    with pytest.raises(ValueError):
        codec.decode_range(codec.encode(b"abc"), -1, 2)
    with pytest.raises(ValueError):
        codec.decode_range(codec.encode(b"abc"), 0, -2)


def test_decode_range_reads_only_the_frames_it_needs():
    data = TEXT[:10 * CHUNK]
    blob = codec.encode(data, chunk_size=CHUNK)
    entries = read_seek_table(io.BytesIO(blob), len(blob))
    offsets = frame_offsets(entries)
    f = CountingFile(blob)
    assert codec.decode_range(f, 3 * CHUNK + 10, CHUNK) == data[3 * CHUNK + 10:4 * CHUNK + 10]
    frames_read = [offset for offset, _ in f.reads if offset in offsets]
    assert frames_read == [offsets[3], offsets[4]]
    needed = HEADER_SIZE + trailer_size(len(entries)) + entries[3].frame_size + entries[4].frame_size
    assert sum(size for _, size in f.reads) <= needed
    assert needed < len(blob) / 3


def test_info_describes_chunks_sizes_ratio_codecs_and_checksums():
    data = TEXT[:2 * CHUNK] + os.urandom(CHUNK)
    blob = codec.encode(data, chunk_size=CHUNK)
    described = codec.info(io.BytesIO(blob), len(blob))
    assert json.loads(json.dumps(described)) == described
    assert described["format_version"] == 2
    assert described["content_crc32c"] == f"{crc32c(data):08x}"
    assert described["chunks"] == 3
    assert described["original_size"] == len(data)
    assert described["compressed_size"] == len(blob)
    assert described["ratio"] == round(len(data) / len(blob), 4)
    assert sum(described["codecs"].values()) == 3
    assert described["entries"][2]["codec"] == CODEC_STORED
    for index, entry in enumerate(described["entries"]):
        piece = data[index * CHUNK:(index + 1) * CHUNK]
        assert entry["crc32c"] == f"{crc32c(piece):08x}"
        assert entry["original_offset"] == index * CHUNK
        assert blob[entry["offset"]:entry["offset"] + 4] == b"DCZC"


def test_info_of_an_empty_container():
    described = codec.info(codec.encode(b""))
    assert (described["chunks"], described["original_size"], described["ratio"]) == (0, 0, 0.0)


def test_verify_passes_a_good_container_and_catches_a_corrupted_payload_that_info_does_not_read():
    blob, data = two_chunk_container()
    assert codec.verify(io.BytesIO(blob), len(blob)) == {
        "ok": True, "chunks": 2, "original_size": len(data), "compressed_size": len(blob)}
    bad = corrupt_second_payload(blob)
    assert codec.info(bad)["chunks"] == 2
    with pytest.raises(FormatError):
        codec.verify(bad)
    with pytest.raises(FormatError):
        codec.decode(bad)


def test_not_a_container_is_a_format_error_everywhere():
    junk = b"PK\x03\x04" + bytes(100)
    for call in (lambda: codec.decode(junk), lambda: codec.info(junk), lambda: codec.verify(junk),
                 lambda: codec.decode_range(junk, 0, 1),
                 lambda: codec.decompress_stream(Pipe(junk), Sink())):
        with pytest.raises(FormatError, match="magic"):
            call()


def test_bytearray_and_memoryview_containers_are_read_like_bytes():
    data = TEXT[:3 * CHUNK]
    blob = codec.encode(data, chunk_size=CHUNK)
    for container in (bytearray(blob), memoryview(blob), memoryview(bytearray(blob))):
        assert codec.decode(container) == data
        assert codec.decode_range(container, CHUNK - 5, 10) == data[CHUNK - 5:CHUNK + 5]
        assert codec.info(container) == codec.info(blob)
        assert codec.verify(container)["ok"]
    assert codec.encode(bytearray(data), chunk_size=CHUNK) == blob
    assert codec.encode(memoryview(data), chunk_size=CHUNK) == blob


def test_in_memory_decode_refuses_a_bomb_over_the_default_cap_before_allocating_it():
    # Five 1 GiB chunks of zeros compress to a few hundred bytes each: a 5 GiB "bomb" of ~1 KB.
    # decode() holds its output in memory, so by default it must refuse it from the seek table alone.
    frame, entry = encode_frame(bytes(2**30))
    assert entry.frame_size < 4096
    blob = header_bytes(2**30) + frame * 5 + seek_table_bytes([entry] * 5)
    assert 5 * 2**30 > codec.stream.DEFAULT_MAX_DECODE_SIZE
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="limit"):
            codec.decode(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20
