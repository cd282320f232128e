"""Encode and decode one chunk's payload (PROVISIONAL stub: stores raw; replaced by the Huffman codec)."""
from __future__ import annotations

import numpy as np

from codec.errors import FormatError

CODEC_STORED = 0
CODEC_HUFFMAN = 1


def histogram(data) -> np.ndarray:
    """Byte frequencies of `data` as uint64[256]; histograms of parts sum to the whole's."""
    arr = np.frombuffer(memoryview(data), dtype=np.uint8)
    return np.bincount(arr, minlength=256).astype(np.uint64)


def encode_chunk(data, shared_histogram: np.ndarray | None = None) -> tuple[int, bytes]:
    """Returns (codec_id, payload) for one chunk of original bytes."""
    return CODEC_STORED, bytes(data)


def decode_chunk(codec_id: int, payload, original_size: int) -> bytes:
    """Decodes one chunk payload to exactly `original_size` bytes or raises FormatError."""
    if codec_id == CODEC_STORED:
        if len(payload) != original_size:
            raise FormatError(f"stored chunk holds {len(payload)} bytes, header says {original_size}")
        return bytes(payload)
    raise FormatError(f"unknown chunk codec id {codec_id}")
