"""Encode and decode one chunk's payload: stored (codec 0) or block-adaptive canonical Huffman (codec 1)."""
from __future__ import annotations

import numpy as np

from codec import _kernels
from codec.errors import FormatError
from codec.huffman import MAX_CODE_LENGTH, code_lengths, histogram

__all__ = ["CODEC_STORED", "CODEC_HUFFMAN", "histogram", "encode_chunk", "decode_chunk"]

CODEC_STORED = 0
CODEC_HUFFMAN = 1

# Histograms are taken per leaf; blocks are runs of 2^k leaves chosen by the planner, so a leaf is
# the smallest block a table can be fitted to.
LEAF_SIZE = 4096
MAX_ORIGINAL_SIZE = 2**30

_ERRORS = {
    _kernels.ERR_TRUNCATED: "Huffman chunk payload is truncated",
    _kernels.ERR_BAD_FLAGS: "Huffman chunk payload has unknown flags",
    _kernels.ERR_BAD_TABLE: "Huffman chunk payload holds an invalid code table",
    _kernels.ERR_BAD_KIND: "Huffman chunk payload holds an unknown block kind",
    _kernels.ERR_BAD_SIZE: "Huffman chunk payload's block sizes do not add up to the chunk size",
    _kernels.ERR_STREAM_OVERRUN: "Huffman chunk payload has a bit stream that runs past its end",
    _kernels.ERR_STREAM_SIZE: "Huffman chunk payload has a bit stream whose size does not match its bits",
    _kernels.ERR_NO_TABLE: "Huffman chunk payload refers to a code table it does not hold",
    _kernels.ERR_TRAILING: "Huffman chunk payload has bytes left over after its last block",
}


def _as_bytes_array(data) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


def encode_chunk(data, shared_histogram: np.ndarray | None = None) -> tuple[int, bytes]:
    """Returns (codec_id, payload) for one chunk of original bytes; stored when Huffman is not smaller.

    `shared_histogram` (e.g. the file-level histogram) seeds the chunk table that blocks may share;
    blocks holding a byte it gives no code fall back to their own tables."""
    arr = _as_bytes_array(data)
    n = arr.shape[0]
    if n == 0:
        return CODEC_STORED, b""
    hists = _kernels.leaf_histograms(arr, LEAF_SIZE)
    if shared_histogram is not None:
        chunk_counts = np.asarray(shared_histogram).astype(np.int64)
        if chunk_counts.shape != (256,) or (chunk_counts < 0).any():
            raise ValueError(f"shared_histogram must hold 256 non-negative counts, got shape {chunk_counts.shape}")
    else:
        chunk_counts = hists.sum(axis=0, dtype=np.int64)
    chunk_lengths = code_lengths(chunk_counts, MAX_CODE_LENGTH)
    has_chunk_table = bool(chunk_lengths.any())
    bounds = _kernels.plan_blocks(hists, chunk_lengths, has_chunk_table, _kernels.XLOGX)
    # Room for every block stored raw with its header, plus the scratch a block's streams use
    # before they are packed together (at most 11/8 of the largest block).
    largest_block = int(np.diff(bounds).max()) * LEAF_SIZE
    capacity = n + 64 * (bounds.shape[0] + 16) + _kernels.stream_area_bytes(min(largest_block, n))
    out = np.empty(capacity, dtype=np.uint8)
    size, chunk_table_uses = _kernels.encode_payload(
        arr, LEAF_SIZE, hists, bounds, chunk_lengths, has_chunk_table, out)
    if has_chunk_table and chunk_table_uses == 0:
        # No block needed the chunk table: leave it out rather than pay for it.
        size, _ = _kernels.encode_payload(arr, LEAF_SIZE, hists, bounds, chunk_lengths, False, out)
    if size >= n:
        return CODEC_STORED, arr.tobytes()
    return CODEC_HUFFMAN, out[:size].tobytes()


def decode_chunk(codec_id: int, payload, original_size: int) -> bytes:
    """Decodes one chunk payload to exactly `original_size` bytes or raises FormatError."""
    if not 0 < original_size <= MAX_ORIGINAL_SIZE:
        raise FormatError(f"chunk original size {original_size} is outside 1..{MAX_ORIGINAL_SIZE}")
    buf = _as_bytes_array(payload)
    if codec_id == CODEC_STORED:
        if buf.shape[0] != original_size:
            raise FormatError(f"stored chunk holds {buf.shape[0]} bytes, header says {original_size}")
        return buf.tobytes()
    if codec_id != CODEC_HUFFMAN:
        raise FormatError(f"unknown chunk codec id {codec_id}")
    out = np.empty(original_size, dtype=np.uint8)
    status = _kernels.decode_payload(buf, out)
    if status != 0:
        raise FormatError(_ERRORS.get(status, f"Huffman chunk payload is invalid (status {status})"))
    return out.tobytes()
