"""Fuzz test: mutated containers decode to the original exactly or raise FormatError, nothing else."""
from __future__ import annotations

import io
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import codec
from codec import FormatError
from codec.container import (
    FOOTER_SIZE, FRAME_HEADER_SIZE, HEADER_SIZE, SEEK_ENTRY_SIZE, crc32c, frame_offsets,
    read_seek_table, trailer_size,
)

# 300 examples keep `make test` fast; DCAS_FUZZ_EXAMPLES=20000 runs a deeper search by hand.
FUZZ = settings(max_examples=int(os.environ.get("DCAS_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# Originals: compressible text-like bytes, skewed binary, raw random bytes (stored chunks), runs.
originals = st.one_of(
    st.binary(max_size=600),
    st.lists(st.sampled_from(b"etaoin shrdlu\n"), max_size=800).map(bytes),
    st.lists(st.integers(0, 255).map(lambda x: x * x // 255), max_size=800).map(bytes),
    st.builds(lambda byte, n: bytes([byte]) * n, st.integers(0, 255), st.integers(1, 700)),
)
chunk_sizes = st.sampled_from([1, 7, 64, 200, 4096])
# Values that sit at the edges of what the size fields may hold.
FIELD_VALUES = [0, 1, 2, 23, 24, 25, 255, 2**16, 2**30, 2**30 + 1, 2**31, 2**32 - 1]


def container_fields(blob: bytes) -> list[tuple[int, str, int, int]]:
    """Every integer field as (offset, struct format, start of the bytes its CRC covers, CRC offset).

    A structured mutation rewrites one field and re-signs the CRC over it, so the mutation reaches
    the size checks behind the CRC instead of stopping at it.
    """
    entries = read_seek_table(io.BytesIO(blob), len(blob))
    fields = [(8, "<I", 0, 12)]  # header chunk_size, CRC of bytes 0..11 at 12
    for offset in frame_offsets(entries):
        for field in (4, 8, 12, 16):  # codec byte, original_size, payload_size, content_crc
            fields.append((offset + field, "<B" if field == 4 else "<I", offset, offset + 20))
    table = len(blob) - trailer_size(len(entries)) + 4
    footer = len(blob) - FOOTER_SIZE
    for index in range(len(entries)):
        for field in (0, 4, 8):
            fields.append((table + index * SEEK_ENTRY_SIZE + field, "<I", table, footer + 16))
    fields += [(footer, "<Q", table, footer + 16), (footer + 8, "<Q", table, footer + 16)]
    return fields


def rewrite_field(blob: bytes, field: tuple[int, str, int, int], value: int) -> bytes:
    offset, fmt, signed_from, crc_at = field
    value &= (1 << (8 * struct.calcsize(fmt))) - 1
    out = bytearray(blob)
    struct.pack_into(fmt, out, offset, value)
    struct.pack_into("<I", out, crc_at, crc32c(bytes(out[signed_from:crc_at])))
    return bytes(out)


@st.composite
def mutated(draw, blob: bytes) -> bytes:
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite", "field"]))
        position = draw(st.integers(0, max(len(blob) - 1, 0)))
        if kind == "flip" and blob:
            blob = blob[:position] + bytes([blob[position] ^ (1 << draw(st.integers(0, 7)))]) + \
                blob[position + 1:]
        elif kind == "truncate":
            blob = blob[:position]
        elif kind == "insert":
            blob = blob[:position] + draw(st.binary(min_size=1, max_size=16)) + blob[position:]
        elif kind == "delete":
            blob = blob[:position] + blob[position + draw(st.integers(1, 16)):]
        elif kind == "overwrite" and blob:
            blob = blob[:position] + bytes([draw(st.integers(0, 255))]) + blob[position + 1:]
        elif kind == "field":
            try:
                fields = container_fields(blob)
            except FormatError:  # an earlier mutation already broke the layout
                continue
            field = draw(st.sampled_from(fields))
            (old,) = struct.unpack_from(field[1], blob, field[0])
            value = draw(st.sampled_from(FIELD_VALUES + [old - 1, old + 1, old * 2]))
            blob = rewrite_field(blob, field, value)
    return blob


class Pipe(io.RawIOBase):
    def __init__(self, data: bytes):
        self.data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, buffer):
        return self.data.readinto(buffer)


def outcomes(blob: bytes, original: bytes):
    """Runs every reader over `blob`; yields (reader name, output or FormatError, partial output)."""
    readers = {
        "decode": lambda out: out.write(codec.decode(blob)),
        "decompress_stream(pipe)": lambda out: codec.decompress_stream(Pipe(blob), out),
        "decompress_stream(file)": lambda out: codec.decompress_stream(io.BytesIO(blob), out),
        "verify": lambda out: codec.verify(blob) and out.write(original),
        "decode_range": lambda out: out.write(codec.decode_range(blob, 3, 100)),
    }
    for name, read in readers.items():
        out = io.BytesIO()
        try:
            read(out)
            yield name, out.getvalue(), None
        except FormatError as e:
            yield name, e, out.getvalue()


@FUZZ
@given(st.data(), originals, chunk_sizes)
def test_mutated_containers_decode_exactly_or_raise_format_error(data, original, chunk_size):
    blob = codec.encode(original, chunk_size=chunk_size)
    bad = data.draw(mutated(blob), label="mutated container")
    for name, result, partial in outcomes(bad, original):
        if isinstance(result, FormatError):
            assert str(result), name
            # Only whole chunks that passed their CRC may have been written before the fault.
            assert original.startswith(partial), name
        elif name == "decode_range":
            assert result == original[3:103], name
        else:
            assert result == original, name


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_after_a_valid_magic_never_crash_a_reader(tail):
    blob = b"\x89DCZ\x01" + tail
    for name, result, _ in outcomes(blob, b""):
        assert isinstance(result, FormatError) or result == b"", name


@pytest.mark.parametrize("chunk_size", [1, 64])
def test_every_single_bit_flip_of_a_small_container_is_caught(chunk_size):
    original = b"abracadabra, abracadabra!"
    blob = codec.encode(original, chunk_size=chunk_size)
    for position in range(len(blob)):
        for bit in range(8):
            bad = blob[:position] + bytes([blob[position] ^ (1 << bit)]) + blob[position + 1:]
            with pytest.raises(FormatError):
                codec.decode(bad)


def test_structured_field_rewrites_reach_the_checks_behind_the_crcs():
    original = b"hello world " * 40
    blob = codec.encode(original, chunk_size=128)
    fields = container_fields(blob)
    assert len(fields) == 1 + 4 * 4 + 3 * 4 + 2
    # The header's chunk_size is informational (format.md): readers do not depend on it.
    assert codec.decode(rewrite_field(blob, fields[0], 2**32 - 1)) == original
    for field in fields[1:]:
        (old,) = struct.unpack_from(field[1], blob, field[0])
        for value in FIELD_VALUES:
            if value & ((1 << (8 * struct.calcsize(field[1]))) - 1) == old:
                continue  # not a change (the codec byte keeps only the low 8 bits)
            with pytest.raises(FormatError):
                codec.decode(rewrite_field(blob, field, value))


def test_field_helpers_locate_the_real_fields():
    blob = codec.encode(b"x" * 300, chunk_size=128)
    assert rewrite_field(blob, container_fields(blob)[0], 128) == blob
    assert container_fields(blob)[1][0] == HEADER_SIZE + 4
    assert container_fields(blob)[1][3] == HEADER_SIZE + FRAME_HEADER_SIZE - 4
