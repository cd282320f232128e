"""Format version 2: the whole content's CRC32C, combined from the chunks' CRCs, in the footer."""
from __future__ import annotations

import random

import google_crc32c
import pytest
from hypothesis import given, settings, strategies as st

import codec
from codec import container
from codec.container import (FOOTER_SIZE, HEADER_SIZE, ChunkEntry, content_crc, crc32c_combine,
                             frame_offsets, read_seek_table, seek_table_bytes)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.data())
def test_combined_crc_of_two_parts_is_the_crc_of_the_whole(data, draw):
    cut = draw.draw(st.integers(0, len(data)))
    a, b = data[:cut], data[cut:]
    assert crc32c_combine(google_crc32c.value(a), google_crc32c.value(b), len(b)) == google_crc32c.value(data)


def test_content_crc_of_random_splits_is_the_crc_of_the_whole():
    rng = random.Random(5)
    for _ in range(30):
        data = rng.randbytes(rng.randint(0, 20_000))
        cuts = sorted(rng.sample(range(len(data) + 1), k=min(len(data) + 1, rng.randint(0, 8))))
        pieces = [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)]) if j > i]
        entries = [ChunkEntry(24 + len(p), len(p), google_crc32c.value(p)) for p in pieces]
        assert content_crc(entries) == google_crc32c.value(data)


def _reordered(blob: bytes, order: list[int]) -> bytes:
    """The container with its frames in `order` and a seek table rewritten consistently for them,
    its footer's content CRC left as written: what an attacker or a buggy assembler could make."""
    entries = read_seek_table(__import__("io").BytesIO(blob), len(blob))
    offsets = frame_offsets(entries)
    frames = [blob[o:o + e.frame_size] for o, e in zip(offsets, entries)]
    table = seek_table_bytes([entries[i] for i in order])
    old_footer = blob[-FOOTER_SIZE:]
    # Keep the original whole-content CRC, and recompute only the table CRC the rewrite must fix.
    content = old_footer[20:24]
    body = table[4:-FOOTER_SIZE]
    counts = table[-FOOTER_SIZE:-FOOTER_SIZE + 16]
    table_crc = google_crc32c.extend(google_crc32c.value(body), counts + content)
    footer = counts + table_crc.to_bytes(4, "little") + content + old_footer[24:]
    return blob[:HEADER_SIZE] + b"".join(frames[i] for i in order) + table[:-FOOTER_SIZE] + footer


@pytest.mark.parametrize("order", [[1, 0, 2, 3], [0, 1, 2]], ids=["reordered", "last-dropped"])
def test_frames_reordered_or_dropped_with_a_consistent_seek_table_are_caught(order):
    data = bytes(random.Random(6).choices(b"abcdefgh", k=4 * 1000))
    blob = codec.encode(data, chunk_size=1000)
    bad = _reordered(blob, order)
    for read in (codec.decode, lambda b: codec.verify(b), lambda b: codec.decode_range(b, 0, len(data)),
                 lambda b: codec.decompress_stream(__import__("io").BytesIO(b), __import__("io").BytesIO())):
        with pytest.raises(codec.FormatError, match="whole content"):
            read(bad)


def test_version_1_containers_are_still_read():
    entries = [ChunkEntry(24 + 3, 3, google_crc32c.value(b"abc"))]
    v2 = codec.encode(b"abc", chunk_size=3)
    footer = bytearray(v2[-FOOTER_SIZE:])
    body = v2[-FOOTER_SIZE - 12:-FOOTER_SIZE]
    footer[16:20] = google_crc32c.extend(google_crc32c.value(body), bytes(footer[:16])).to_bytes(4, "little")
    footer[20:24] = b"\0\0\0\0"
    header = bytearray(container.header_bytes(3))
    header[4] = 1
    header[12:16] = google_crc32c.value(bytes(header[:12])).to_bytes(4, "little")
    v1 = bytes(header) + v2[HEADER_SIZE:-FOOTER_SIZE] + bytes(footer)
    assert codec.decode(v1) == b"abc"
    assert codec.info(v1)["format_version"] == 1
    assert codec.info(v1)["content_crc32c"] == f"{content_crc(entries):08x}"
