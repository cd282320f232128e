"""Test data shared by the CLI and service-layer tests."""
from __future__ import annotations

import random


def sample_text(size: int, seed: int = 7) -> bytes:
    """Word-salad text: compressible like real text, different for every seed."""
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"etaoinshrdlucmfwypvbgkjqxz", k=rng.randint(1, 9)))
             for _ in range(500)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + (b"\n" if rng.random() < 0.1 else b" ")
    return bytes(out[:size])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def run_container(chunk_sizes, fill: int = 0, crc: int | None = None) -> bytes:
    """A valid container whose chunks (of 16 bytes or more) are each one run block (docs/format.md, kind 1): a few bytes
    per chunk, whatever size it declares. `crc` replaces the real CRC32Cs (which cost a pass over
    the declared bytes) where a test never decodes."""
    from codec.container import (FRAME_HEADER_SIZE, ChunkEntry, crc32c, frame_header_bytes, header_bytes,
                                 seek_table_bytes)
    frames, entries = [], []
    for size in chunk_sizes:
        payload = b"\x00" + _varint(1) + b"\x01" + _varint(size) + bytes([fill])
        chunk_crc = crc32c(bytes([fill]) * size) if crc is None else crc
        frames.append(frame_header_bytes(1, size, len(payload), chunk_crc) + payload)
        entries.append(ChunkEntry(FRAME_HEADER_SIZE + len(payload), size, chunk_crc))
    return header_bytes(max(chunk_sizes, default=1)) + b"".join(frames) + seek_table_bytes(entries)
