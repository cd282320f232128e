"""Encode and decode one chunk's payload: stored (codec 0) or block-adaptive canonical Huffman (codec 1)."""
from __future__ import annotations

import numpy as np

from codec import _kernels
from codec.errors import FormatError
from codec.huffman import MAX_CODE_LENGTH, code_lengths, coded_bits, histogram, table_bits

__all__ = ["CODEC_STORED", "CODEC_HUFFMAN", "histogram", "encode_chunk", "encode_chunk_view", "decode_chunk",
           "decode_chunk_into", "shared_table_wins"]

CODEC_STORED = 0
CODEC_HUFFMAN = 1

# Histograms are taken per leaf; blocks are runs of 2^k leaves chosen by the planner, so a leaf is
# the smallest block a table can be fitted to. 2 KiB leaves measured 0.1% (text) to 0.4% (binaries)
# smaller than 4 KiB ones; 1 KiB gained another 0.1% on binaries only, at twice the planning time.
LEAF_SIZE = 2048
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


def _chunk_table(own_counts: np.ndarray, shared_histogram: np.ndarray | None) -> tuple[np.ndarray, bool]:
    """Code lengths of the chunk table, and whether they are the shared histogram's: from the shared
    histogram when that is estimated at least as small for this chunk (table included), else from
    the chunk's own histogram.

    Measured on the benchmark corpora, the chunk's own table nearly always wins (it is stored in the
    chunk either way and fits it best); checking keeps a shared histogram from making chunks larger."""
    own = code_lengths(own_counts, MAX_CODE_LENGTH)
    if shared_histogram is None:
        return own, False
    shared_counts = np.asarray(shared_histogram)
    if shared_counts.shape != (256,) or (shared_counts < 0).any():
        raise ValueError(f"shared_histogram must hold 256 non-negative counts, got {shared_counts!r}")
    shared = code_lengths(shared_counts.astype(np.int64), MAX_CODE_LENGTH)
    shared_bits = coded_bits(own_counts, shared)
    if shared_bits < 0:  # some byte of this chunk has no code in the shared table
        return own, False
    zero = np.zeros(256, dtype=np.uint8)
    if shared_bits + table_bits(shared, zero) <= coded_bits(own_counts, own) + table_bits(own, zero):
        return shared, True
    return own, False


def shared_table_wins(counts: np.ndarray, shared_histogram: np.ndarray) -> bool:
    """Whether a chunk with byte `counts` is coded with `shared_histogram`'s table; when it is not,
    encode_chunk(data, shared_histogram) gives the bytes of encode_chunk(data) without one."""
    return _chunk_table(np.asarray(counts, dtype=np.int64), shared_histogram)[1]


def encode_chunk(data, shared_histogram: np.ndarray | None = None,
                 counts: np.ndarray | None = None) -> tuple[int, bytes]:
    """Returns (codec_id, payload) for one chunk of original bytes; stored when Huffman is not smaller.

    `shared_histogram` (e.g. the file-level histogram) may seed the chunk table that blocks share
    (see _chunk_table); a block holding a byte that a table gives no code never uses that table.
    `counts` (256 integers), if given, receives the chunk's byte histogram, which the encoder
    counts anyway."""
    codec_id, payload = encode_chunk_view(data, shared_histogram, counts)
    return codec_id, _as_bytes_array(payload).tobytes()


def encode_chunk_view(data, shared_histogram: np.ndarray | None = None,
                      counts: np.ndarray | None = None) -> tuple[int, object]:
    """encode_chunk without copying the payload out: a Huffman payload is a memoryview of the
    encoder's own output buffer, a stored one is `data` itself.

    Why: the copy into a new bytes object held the GIL for ~1.3 ms of a 4 MiB chunk's ~15 ms,
    and the engines copy the payload into their output anyway."""
    arr = _as_bytes_array(data)
    n = arr.shape[0]
    if n == 0:
        if counts is not None:
            counts[:] = 0
        return CODEC_STORED, b""
    if n > MAX_ORIGINAL_SIZE:
        raise ValueError(f"a chunk holds at most {MAX_ORIGINAL_SIZE} bytes, got {n}: use a smaller chunk size")
    hists = _kernels.leaf_histograms(arr, LEAF_SIZE)
    own_counts = hists.sum(axis=0, dtype=np.int64)
    if counts is not None:
        counts[:] = own_counts
    chunk_lengths = _chunk_table(own_counts, shared_histogram)[0]
    has_chunk_table = bool(chunk_lengths.any())
    bounds = _kernels.plan_blocks(hists, chunk_lengths, has_chunk_table, _kernels.XLOGX,
                                  _kernels.TABLE_FIXED_BITS + _kernels.TABLE_TIME_BITS)
    # A block is written as Huffman only when that is smaller than raw, so the payload never needs
    # more than the raw bytes plus a few header bytes per block and the chunk table.
    capacity = n + _kernels.BLOCK_ROOM * (bounds.shape[0] + 16) + _kernels.WRITE_SLACK
    out = np.empty(capacity, dtype=np.uint8)
    size, chunk_table_uses = _kernels.encode_payload(
        arr, LEAF_SIZE, hists, bounds, chunk_lengths, has_chunk_table, out)
    if size < 0:
        raise RuntimeError("Huffman encoder ran out of output room (a bug: please report it)")
    if has_chunk_table and chunk_table_uses == 0:
        # No block needed the chunk table: leave it out rather than pay for it.
        size, _ = _kernels.encode_payload(arr, LEAF_SIZE, hists, bounds, chunk_lengths, False, out)
    if size >= n:
        return CODEC_STORED, data
    return CODEC_HUFFMAN, memoryview(out)[:size]


def decode_chunk(codec_id: int, payload, original_size: int) -> bytes:
    """Decodes one chunk payload to exactly `original_size` bytes or raises FormatError."""
    if not 0 < original_size <= MAX_ORIGINAL_SIZE:
        raise FormatError(f"chunk original size {original_size} is outside 1..{MAX_ORIGINAL_SIZE}")
    out = np.empty(original_size, dtype=np.uint8)
    decode_chunk_into(codec_id, payload, out)
    return out.tobytes()


def decode_chunk_into(codec_id: int, payload, out: np.ndarray) -> None:
    """Decodes one chunk payload into all of `out` (uint8, its length the chunk's original size),
    or raises FormatError; for callers that reuse one buffer, e.g. an aligned one for direct I/O."""
    original_size = out.shape[0]
    if not 0 < original_size <= MAX_ORIGINAL_SIZE:
        raise FormatError(f"chunk original size {original_size} is outside 1..{MAX_ORIGINAL_SIZE}")
    buf = _as_bytes_array(payload)
    if codec_id == CODEC_STORED:
        if buf.shape[0] != original_size:
            raise FormatError(f"stored chunk holds {buf.shape[0]} bytes, header says {original_size}")
        out[:] = buf
        return
    if codec_id != CODEC_HUFFMAN:
        raise FormatError(f"unknown chunk codec id {codec_id}")
    status = _kernels.decode_payload(buf, out)
    if status != 0:
        raise FormatError(_ERRORS.get(status, f"Huffman chunk payload is invalid (status {status})"))
