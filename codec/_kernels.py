"""Numba kernels of the Huffman v1 chunk codec: block planning, bit packing and the table decoder."""
from __future__ import annotations

import numba as nb
import numpy as np

from codec.huffman import (
    DECODE_TABLE_SIZE,
    LENGTH_ALPHABET,
    LONG_RUN_BITS,
    LONG_RUN_MIN,
    MAX_CODE_LENGTH,
    SHORT_RUN_BITS,
    SHORT_RUN_MIN,
    TOKEN_COUNT,
    TOKEN_LONG_RUN,
    TOKEN_MAX_LENGTH,
    TOKEN_SHORT_RUN,
    canonical_codes,
    code_lengths_into,
    code_lengths_workspace,
    kraft_units,
    next_token,
    table_bits_into,
    table_plan,
)

# Block kinds (first byte of every block; docs/format.md "Chunk payload, codec 1").
KIND_RAW = 0
KIND_RLE = 1
KIND_SHARED = 2               # Huffman with the chunk table
KIND_REPEAT = 3               # Huffman with the previous block's local table
KIND_LOCAL_FROM_ZERO = 4      # Huffman with a new local table, lengths sent as they are
KIND_LOCAL_FROM_SHARED = 5    # ... lengths sent as deltas against the chunk table
KIND_LOCAL_FROM_PREVIOUS = 6  # ... lengths sent as deltas against the previous local table
KIND_COUNT = 7

FLAG_CHUNK_TABLE = 1
STREAMS = 4
# The encoder's bit writer stores 8 bytes at a time; the output buffer carries this much slack.
WRITE_SLACK = 16
# Bytes a block may take beyond its raw size (kind, size, stream-size fields, padding), and room
# kept free before each block is written; a table is at most 14*3 + 256*7 bits (229 bytes).
BLOCK_ROOM = 64
TABLE_ROOM = 240

# Decoder status codes (0 = success); codec/chunk.py turns them into FormatError messages.
ERR_TRUNCATED = -1
ERR_BAD_FLAGS = -2
ERR_BAD_TABLE = -3
ERR_BAD_KIND = -4
ERR_BAD_SIZE = -5
ERR_STREAM_OVERRUN = -6
ERR_STREAM_SIZE = -7
ERR_NO_TABLE = -8
ERR_TRAILING = -9

# Planner cost model (bits). A block's header is its kind byte, size and three stream sizes; a
# local table costs roughly a fixed part plus a few bits per present symbol.
BLOCK_HEADER_BITS = 8 * 6
TABLE_FIXED_BITS = 150.0
TABLE_BITS_PER_SYMBOL = 4.0
# What a new local table costs in time, priced in bits and added to its size estimate by the
# encoder's planner: each table is a code to build when encoding and a 2048-entry lookup table to
# fill when decoding, and that per-block work, not the bit packing, sets both speeds (at 0 the 1 GB
# machine-mix corpus planned ~560 blocks a 4 MiB chunk, at 450 ~330, coding 1.5x faster). 450 left
# source text and JSON elsewhere 0.1% above zlib's Huffman-only size. Measured on the 80 MiB
# corpora (CPU time, one thread, interleaved runs): going from 450 to 300 and to 200 gained 0.04-0.1%
# of size a step for 0-5% of encoding speed and ~1% of decoding speed; from 200 to 100 gained
# 0.02-0.08% more but cost 5-8% of decoding speed as well. 200 is the knee.
TABLE_TIME_BITS = 200.0


# ----------------------------------------------------------------------------------------------
# Small byte-level helpers


@nb.njit(cache=True, nogil=True, inline="always")
def _load_u64(buf, i):
    """Little-endian 8 bytes at buf[i:i+8] (caller guarantees bounds).

    Unsigned indices matter: without numba's negative-index handling LLVM fuses the 8 byte loads
    into one 64-bit load."""
    u = np.uint64(i)
    return (np.uint64(buf[u]) | (np.uint64(buf[u + np.uint64(1)]) << np.uint64(8))
            | (np.uint64(buf[u + np.uint64(2)]) << np.uint64(16))
            | (np.uint64(buf[u + np.uint64(3)]) << np.uint64(24))
            | (np.uint64(buf[u + np.uint64(4)]) << np.uint64(32))
            | (np.uint64(buf[u + np.uint64(5)]) << np.uint64(40))
            | (np.uint64(buf[u + np.uint64(6)]) << np.uint64(48))
            | (np.uint64(buf[u + np.uint64(7)]) << np.uint64(56)))


@nb.njit(cache=True, nogil=True, inline="always")
def _load_u64_safe(buf, i, end):
    """Like _load_u64 but bytes at or past `end` read as zero."""
    if i + 8 <= end:
        return _load_u64(buf, i)
    w = np.uint64(0)
    for k in range(8):
        if i + k < end:
            w |= np.uint64(buf[i + k]) << np.uint64(8 * k)
    return w


@nb.njit(cache=True, nogil=True, inline="always")
def _store_u64(buf, i, w):
    u = np.uint64(i)
    for k in range(8):
        buf[u + np.uint64(k)] = np.uint8((w >> np.uint64(8 * k)) & np.uint64(255))


@nb.njit(cache=True, nogil=True)
def _put_varint(out, op, value):
    while value >= 0x80:
        out[op] = np.uint8((value & 0x7F) | 0x80)
        op += 1
        value >>= 7
    out[op] = np.uint8(value)
    return op + 1


@nb.njit(cache=True, nogil=True)
def _get_varint(buf, pos, end):
    """(value, new_pos); new_pos < 0 on truncation or a varint over 35 bits."""
    value = 0
    shift = 0
    while True:
        if pos >= end or shift > 28:
            return 0, ERR_TRUNCATED
        b = np.int64(buf[pos])
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


# ----------------------------------------------------------------------------------------------
# Histograms and block planning

# c * log2(c) for the counts that nodes of up to 64 KiB hold; the planner's hot path is these logs.
XLOGX = np.arange(1 << 16, dtype=np.float64) * np.log2(np.maximum(np.arange(1 << 16), 1))


@nb.njit(cache=True, nogil=True)
def leaf_histograms(data, leaf_size):
    """Byte counts of each `leaf_size` (< 2^16) slice of `data`, as uint16[leaves, 256] (half the
    memory of int32). Counting goes through four int32 sub-histograms fed from one 8-byte load
    (equal neighbouring bytes then bump different counters): 1.2-1.45x the two sub-histograms with
    byte loads it replaced (e.g. 1.8 -> 2.2 GB/s on machine-mix, interleaved runs), and two
    measured ~1.7x faster than incrementing the uint16 rows directly."""
    n = data.shape[0]
    leaves = (n + leaf_size - 1) // leaf_size
    hists = np.zeros((leaves, 256), dtype=np.uint16)
    sub = np.zeros((4, 256), dtype=np.int32)
    byte = np.uint64(255)
    for leaf in range(leaves):
        sub[:] = 0
        start = leaf * leaf_size
        stop = min(start + leaf_size, n)
        i = start
        while i + 8 <= stop:
            w = _load_u64(data, i)
            sub[0, w & byte] += 1
            sub[1, (w >> np.uint64(8)) & byte] += 1
            sub[2, (w >> np.uint64(16)) & byte] += 1
            sub[3, (w >> np.uint64(24)) & byte] += 1
            sub[0, (w >> np.uint64(32)) & byte] += 1
            sub[1, (w >> np.uint64(40)) & byte] += 1
            sub[2, (w >> np.uint64(48)) & byte] += 1
            sub[3, w >> np.uint64(56)] += 1
            i += 8
        while i < stop:
            sub[0, data[np.uint64(i)]] += 1
            i += 1
        for s in range(256):
            hists[leaf, s] = sub[0, s] + sub[1, s] + sub[2, s] + sub[3, s]
    return hists


@nb.njit(cache=True, nogil=True)
def _present_symbols(counts):
    present = 0
    for s in range(256):
        if counts[s] != 0:
            present += 1
    return present


@nb.njit(cache=True, nogil=True)
def _own_cost(counts, chunk_lengths, has_chunk_table, table_fixed_bits, table_bits_per_symbol, xlogx):
    """Estimated bits of one block holding `counts`: the cheapest of raw, a local table (order-0
    entropy plus an estimated table size) and the chunk table (exact). One pass over the counts:
    this runs for every node of the planner's tree."""
    total = 0
    present = 0
    minus = 0.0
    shared = 0
    shared_ok = has_chunk_table
    limit = xlogx.shape[0]
    for s in range(256):
        c = np.int64(counts[s])
        if c != 0:
            total += c
            present += 1
            minus += xlogx[c] if c < limit else c * np.log2(np.float64(c))
            d = np.int64(chunk_lengths[s])
            shared += c * d
            if d == 0:
                shared_ok = False
    if present == 0:
        return 0.0
    if present == 1:
        return float(BLOCK_HEADER_BITS)
    plus = xlogx[total] if total < limit else total * np.log2(np.float64(total))
    best = plus - minus + table_fixed_bits + table_bits_per_symbol * present
    if shared_ok and shared < best:
        best = float(shared)
    if 8.0 * total < best:
        best = 8.0 * total
    return best + BLOCK_HEADER_BITS


@nb.njit(cache=True, nogil=True)
def plan_blocks(hists, chunk_lengths, has_chunk_table, xlogx, table_fixed_bits=TABLE_FIXED_BITS,
                table_bits_per_symbol=TABLE_BITS_PER_SYMBOL):
    """Block boundaries (in leaves) that minimise the estimated size over dyadic groupings of leaves.

    Bottom-up over a binary tree of leaves: a node becomes one block when that is estimated cheaper
    than the best split of its two halves. Returns int64 leaf indices [0, ..., leaves]."""
    leaves = hists.shape[0]
    width = 1
    while width < leaves:
        width *= 2
    # Heap layout: node 1 is the root, leaves are width..2*width-1.
    best = np.zeros(2 * width, dtype=np.float64)
    is_block = np.zeros(2 * width, dtype=np.bool_)
    for i in range(leaves):
        best[width + i] = _own_cost(hists[i], chunk_lengths, has_chunk_table, table_fixed_bits,
                                    table_bits_per_symbol, xlogx)
        is_block[width + i] = True
    # Counts of the current level's nodes, overwritten level by level (chunks are <= 2^30 bytes);
    # the first parent level is summed straight from the leaves.
    level = np.zeros((max(width // 2, 1), 256), dtype=np.int32)
    count = width
    first = width
    while count > 1:
        count //= 2
        first //= 2
        for j in range(count):
            node = first + j
            if count == width // 2:
                for s in range(256):
                    left = np.int32(hists[2 * j, s]) if 2 * j < leaves else np.int32(0)
                    right = np.int32(hists[2 * j + 1, s]) if 2 * j + 1 < leaves else np.int32(0)
                    level[j, s] = left + right
            else:
                for s in range(256):
                    level[j, s] = level[2 * j, s] + level[2 * j + 1, s]
            split = best[2 * node] + best[2 * node + 1]
            own = _own_cost(level[j], chunk_lengths, has_chunk_table, table_fixed_bits,
                            table_bits_per_symbol, xlogx)
            if own <= split:
                best[node] = own
                is_block[node] = True
            else:
                best[node] = split
    bounds = np.empty(leaves + 1, dtype=np.int64)
    nb_bounds = 0
    bounds[nb_bounds] = 0
    nb_bounds += 1
    stack = np.empty(64, dtype=np.int64)
    stack[0] = 1
    depth = 1
    while depth > 0:
        depth -= 1
        node = stack[depth]
        span = 1
        n = node
        while n < width:
            n *= 2
            span *= 2
        first_leaf = n - width
        if first_leaf >= leaves:
            continue
        if is_block[node]:
            last = min(first_leaf + span, leaves)
            bounds[nb_bounds] = last
            nb_bounds += 1
        else:
            stack[depth] = 2 * node + 1
            stack[depth + 1] = 2 * node
            depth += 2
    return bounds[:nb_bounds]


# ----------------------------------------------------------------------------------------------
# Table serialization


@nb.njit(cache=True, nogil=True)
def _write_table_of(out, op, lengths, reference, token_lengths):
    """Writes table `lengths` against `reference` with the token code `token_lengths` (from
    table_bits_into or table_plan) at out[op:]; returns the new byte offset. The tokens come from
    next_token as they are written, so they are never listed."""
    acc = 0
    nbits = 0
    for t in range(TOKEN_COUNT):
        acc |= np.int64(token_lengths[t]) << nbits
        nbits += 3
        while nbits >= 8:
            out[op] = np.uint8(acc & 255)
            op += 1
            acc >>= 8
            nbits -= 8
    token_codes = canonical_codes(token_lengths)
    i = 0
    while i < 256:
        t, extra, covered = next_token(lengths, reference, i)
        i += covered
        acc |= np.int64(token_codes[t]) << nbits
        nbits += np.int64(token_lengths[t])
        if t == TOKEN_SHORT_RUN:
            acc |= extra << nbits
            nbits += SHORT_RUN_BITS
        elif t == TOKEN_LONG_RUN:
            acc |= extra << nbits
            nbits += LONG_RUN_BITS
        while nbits >= 8:
            out[op] = np.uint8(acc & 255)
            op += 1
            acc >>= 8
            nbits -= 8
    if nbits > 0:
        out[op] = np.uint8(acc & 255)
        op += 1
    return op


@nb.njit(cache=True, nogil=True)
def _read_table(buf, pos, end, reference, lengths):
    """Reads a table written by _write_table_of into `lengths`; returns the new byte offset or an error.

    Rejects any table that is not a complete prefix code of at least two symbols with lengths
    <= MAX_CODE_LENGTH, so every 11-bit pattern decodes to a symbol afterwards."""
    acc = 0
    nbits = 0
    token_lengths = np.zeros(TOKEN_COUNT, dtype=np.uint8)
    for t in range(TOKEN_COUNT):
        while nbits < 3:
            if pos >= end:
                return ERR_TRUNCATED
            acc |= np.int64(buf[pos]) << nbits
            pos += 1
            nbits += 8
        token_lengths[t] = acc & 7
        acc >>= 3
        nbits -= 3
    if kraft_units(token_lengths, TOKEN_MAX_LENGTH) != (1 << TOKEN_MAX_LENGTH):
        return ERR_BAD_TABLE
    token_codes = canonical_codes(token_lengths)
    token_table = np.zeros(1 << TOKEN_MAX_LENGTH, dtype=np.int64)
    for t in range(TOKEN_COUNT):
        d = np.int64(token_lengths[t])
        if d != 0:
            step = 1 << d
            for k in range(np.int64(token_codes[t]), 1 << TOKEN_MAX_LENGTH, step):
                token_table[k] = (d << 8) | t
    i = 0
    virtual = 0  # zero bytes loaded past `end`; fine unless their bits end up consumed
    while i < 256:
        while nbits < TOKEN_MAX_LENGTH + LONG_RUN_BITS:
            if pos < end:
                acc |= np.int64(buf[pos]) << nbits
                pos += 1
            else:
                virtual += 1
            nbits += 8
        entry = token_table[acc & ((1 << TOKEN_MAX_LENGTH) - 1)]
        d = entry >> 8
        t = entry & 255
        acc >>= d
        nbits -= d
        if t < LENGTH_ALPHABET:
            lengths[i] = np.uint8((np.int64(reference[i]) + t) % LENGTH_ALPHABET)
            i += 1
        else:
            if t == TOKEN_SHORT_RUN:
                run = SHORT_RUN_MIN + (acc & ((1 << SHORT_RUN_BITS) - 1))
                acc >>= SHORT_RUN_BITS
                nbits -= SHORT_RUN_BITS
            else:
                run = LONG_RUN_MIN + (acc & ((1 << LONG_RUN_BITS) - 1))
                acc >>= LONG_RUN_BITS
                nbits -= LONG_RUN_BITS
            if i + run > 256:
                return ERR_BAD_TABLE
            for k in range(i, i + run):
                lengths[k] = reference[k]
            i += run
    pos = pos + virtual - nbits // 8
    if pos > end:
        return ERR_TRUNCATED
    if kraft_units(lengths, MAX_CODE_LENGTH) != DECODE_TABLE_SIZE:
        return ERR_BAD_TABLE
    return pos


# ----------------------------------------------------------------------------------------------
# Encoder


@nb.njit(cache=True, nogil=True, inline="always")
def _put_symbol(data, i, codes, lens, acc, nbits):
    s = data[np.uint64(i)]
    return acc | (codes[s] << nbits), nbits + lens[s]


@nb.njit(cache=True, nogil=True, inline="always")
def _flush(out, op, acc, nbits):
    """Stores the accumulator's whole bytes (8-byte store, so `out` needs slack)."""
    _store_u64(out, op, acc)
    return op + np.int64(nbits >> np.uint64(3)), acc >> (nbits & np.uint64(56)), nbits & np.uint64(7)


@nb.njit(cache=True, nogil=True)
def _finish_stream(data, i, stop, codes, lens, out, op, acc, nbits):
    """Packs data[i:stop] after a stream's current state and pads the last byte with zero bits."""
    while i < stop:
        acc, nbits = _put_symbol(data, i, codes, lens, acc, nbits)
        op, acc, nbits = _flush(out, op, acc, nbits)
        i += 1
    if nbits > 0:
        out[op] = np.uint8(acc & np.uint64(255))
        op += 1
    return op


@nb.njit(cache=True, nogil=True)
def _encode_stream(data, start, stop, codes, lens, out, op):
    """Packs data[start:stop] LSB-first at out[op:]; returns the byte offset after the stream.

    One stream at a time measured faster than 4 interleaved ones (register pressure), 5 symbols
    (<= 55 bits) per 8-byte store."""
    acc = np.uint64(0)
    nbits = np.uint64(0)
    i = start
    while i + 5 <= stop:
        for _ in range(5):
            acc, nbits = _put_symbol(data, i, codes, lens, acc, nbits)
            i += 1
        op, acc, nbits = _flush(out, op, acc, nbits)
    return _finish_stream(data, i, stop, codes, lens, out, op, acc, nbits)


@nb.njit(cache=True, nogil=True)
def stream_size_width(n):
    """Bytes of each stream-size field of an n-byte block: enough for the longest possible stream
    (a quarter of the block at 11 bits a symbol), so sizes can be filled in after the streams."""
    longest = ((n + STREAMS - 1) // STREAMS * MAX_CODE_LENGTH + 7) // 8
    width = 1
    while longest >= (1 << (8 * width)):
        width += 1
    return width


@nb.njit(cache=True, nogil=True)
def _put_fixed(out, op, value, width):
    for k in range(width):
        out[op + k] = np.uint8((value >> (8 * k)) & 255)


@nb.njit(cache=True, nogil=True)
def _stream_bounds(start, n):
    """Symbol ranges of a block's 4 streams: quarters of ceil(n/4), the last one shorter."""
    q = (n + STREAMS - 1) // STREAMS
    bounds = np.empty(STREAMS + 1, dtype=np.int64)
    for k in range(STREAMS + 1):
        bounds[k] = start + min(k * q, n)
    return bounds


@nb.njit(cache=True, nogil=True)
def _fill_codes(lengths, codes, lens):
    """The bit writer's tables of code `lengths`: bit-reversed canonical codes and their lengths."""
    codes32 = canonical_codes(lengths)
    for s in range(256):
        codes[s] = np.uint64(codes32[s])
        lens[s] = np.uint64(lengths[s])


@nb.njit(cache=True, nogil=True)
def _write_huffman_block(data, start, n, codes, lens, out, op):
    """Writes stream sizes and the 4 streams of one block; returns the new byte offset."""
    q = (n + STREAMS - 1) // STREAMS
    width = stream_size_width(n)
    sp = op + (STREAMS - 1) * width
    for k in range(STREAMS):
        end = _encode_stream(data, start + min(k * q, n), start + min((k + 1) * q, n), codes, lens, out, sp)
        if k < STREAMS - 1:
            _put_fixed(out, op + k * width, end - sp, width)
        sp = end
    return sp


@nb.njit(cache=True, nogil=True)
def _block_counts(hists, first_leaf, last_leaf, counts):
    """Byte counts of leaves [first_leaf, last_leaf) into `counts` (int64[256])."""
    for s in range(256):
        counts[s] = hists[first_leaf, s]
    for leaf in range(first_leaf + 1, last_leaf):
        for s in range(256):
            counts[s] += hists[leaf, s]


@nb.njit(cache=True, nogil=True)
def _huffman_bytes(payload_bits, n):
    """Bytes of a Huffman block's streams and sizes, from its exact bit count (padding estimated)."""
    return (payload_bits + 7) // 8 + STREAMS // 2 + 3 * stream_size_width(n)


@nb.njit(cache=True, nogil=True)
def encode_payload(data, leaf_size, hists, bounds, chunk_lengths, use_chunk_table, out):
    """Writes a whole codec-1 payload into `out` and returns its size.

    `bounds` are the planned block boundaries in leaves; each block picks the smallest of: raw,
    single-symbol run, the chunk table, the previous local table, or a new local table (sent as
    lengths or as deltas against the chunk table or the previous local table). Returns
    (payload size, number of blocks that used the chunk table).

    Per-block work reuses buffers allocated once here and prices candidate tables without listing
    their tokens (table_bits_into). Blocks average ~6 KiB, and choosing a block's table costs
    ~8-11 us (code_lengths 2-5 us, the more when package-merge runs; each table_bits_into ~1.4 us),
    about what packing its bits costs: a 4 MiB chunk encodes at ~1 GB/s as one block and ~440 MB/s
    as its ~680 planned blocks."""
    chunk_table_uses = 0
    n_total = data.shape[0]
    zero = np.zeros(256, dtype=np.uint8)
    previous = np.zeros(256, dtype=np.uint8)
    local = np.zeros(256, dtype=np.uint8)
    counts = np.zeros(256, dtype=np.int64)
    work = code_lengths_workspace(256)
    token_lengths = np.zeros(TOKEN_COUNT, dtype=np.uint8)
    previous_token_lengths = np.zeros(TOKEN_COUNT, dtype=np.uint8)
    chunk_codes = np.zeros(256, dtype=np.uint64)
    chunk_lens = np.zeros(256, dtype=np.uint64)
    previous_codes = np.zeros(256, dtype=np.uint64)
    previous_lens = np.zeros(256, dtype=np.uint64)
    has_previous = False
    op = 0
    out[op] = np.uint8(FLAG_CHUNK_TABLE if use_chunk_table else 0)
    op += 1
    op = _put_varint(out, op, bounds.shape[0] - 1)
    if use_chunk_table:
        token_lengths = table_plan(chunk_lengths, zero)[2]
        op = _write_table_of(out, op, chunk_lengths, zero, token_lengths)
        _fill_codes(chunk_lengths, chunk_codes, chunk_lens)
    for b in range(bounds.shape[0] - 1):
        start = bounds[b] * leaf_size
        stop = min(bounds[b + 1] * leaf_size, n_total)
        n = stop - start
        if op + n + BLOCK_ROOM + TABLE_ROOM + WRITE_SLACK > out.shape[0]:
            return -1, chunk_table_uses  # cannot happen with the caller's capacity; never write past it
        _block_counts(hists, bounds[b], bounds[b + 1], counts)
        # One pass for what the chunk and previous tables would cost (coded_bits of each; a
        # present symbol without a code rules a table out).
        present = 0
        chunk_bits = 0
        chunk_missing = 0
        previous_bits = 0
        previous_missing = 0
        for s in range(256):
            c = counts[s]
            nonzero = np.int64(c != 0)
            present += nonzero
            chunk_bits += c * np.int64(chunk_lengths[s])
            chunk_missing += nonzero & np.int64(chunk_lengths[s] == 0)
            previous_bits += c * np.int64(previous[s])
            previous_missing += nonzero & np.int64(previous[s] == 0)
        if present == 1:
            out[op] = KIND_RLE
            op = _put_varint(out, op + 1, n)
            out[op] = data[start]
            op += 1
            continue
        best_kind = KIND_RAW
        best_bytes = n
        if use_chunk_table and chunk_missing == 0 and _huffman_bytes(chunk_bits, n) < best_bytes:
            best_kind = KIND_SHARED
            best_bytes = _huffman_bytes(chunk_bits, n)
        if has_previous and previous_missing == 0 and _huffman_bytes(previous_bits, n) < best_bytes:
            best_kind = KIND_REPEAT
            best_bytes = _huffman_bytes(previous_bits, n)
        code_lengths_into(counts, MAX_CODE_LENGTH, local, work)
        local_bits = 0
        for s in range(256):
            local_bits += counts[s] * np.int64(local[s])
        # Against the chunk table when there is one (deltas are cheaper than plain lengths
        # almost always; skipping the plain plan saves time per block).
        if use_chunk_table:
            local_kind = KIND_LOCAL_FROM_SHARED
            table_cost = table_bits_into(local, chunk_lengths, work, token_lengths)
        else:
            local_kind = KIND_LOCAL_FROM_ZERO
            table_cost = table_bits_into(local, zero, work, token_lengths)
        if has_previous:
            candidate = table_bits_into(local, previous, work, previous_token_lengths)
            if candidate < table_cost:
                table_cost = candidate
                local_kind = KIND_LOCAL_FROM_PREVIOUS
        local_bytes = _huffman_bytes(local_bits, n) + (table_cost + 7) // 8
        if local_bytes < best_bytes:
            best_kind = local_kind
            best_bytes = local_bytes
        if best_kind == KIND_SHARED or best_kind == KIND_LOCAL_FROM_SHARED:
            chunk_table_uses += 1
        out[op] = np.uint8(best_kind)
        op = _put_varint(out, op + 1, n)
        if best_kind == KIND_RAW:
            out[op:op + n] = data[start:stop]
            op += n
        elif best_kind == KIND_SHARED:
            op = _write_huffman_block(data, start, n, chunk_codes, chunk_lens, out, op)
        elif best_kind == KIND_REPEAT:
            op = _write_huffman_block(data, start, n, previous_codes, previous_lens, out, op)
        else:
            if best_kind == KIND_LOCAL_FROM_SHARED:
                op = _write_table_of(out, op, local, chunk_lengths, token_lengths)
            elif best_kind == KIND_LOCAL_FROM_ZERO:
                op = _write_table_of(out, op, local, zero, token_lengths)
            else:
                op = _write_table_of(out, op, local, previous, previous_token_lengths)
            previous[:] = local
            _fill_codes(previous, previous_codes, previous_lens)
            has_previous = True
            op = _write_huffman_block(data, start, n, previous_codes, previous_lens, out, op)
    return op, chunk_table_uses


# ----------------------------------------------------------------------------------------------
# Decoder


@nb.njit(cache=True, nogil=True)
def _build_decode_table(lengths, table):
    """Fills the 2^11-entry lookup table: entry = (code length << 8) | symbol."""
    codes = canonical_codes(lengths)
    for s in range(256):
        d = np.int64(lengths[s])
        if d != 0:
            entry = np.uint16((d << 8) | s)
            for k in range(np.int64(codes[s]), DECODE_TABLE_SIZE, 1 << d):
                table[k] = entry


@nb.njit(cache=True, nogil=True, inline="always")
def _get_fixed(buf, pos, width):
    value = 0
    for j in range(width):
        value |= np.int64(buf[pos + j]) << (8 * j)
    return value


@nb.njit(cache=True, nogil=True)
def _finish_decode_stream(buf, end, table, out, b, o, e, first, size, size_known):
    """Decodes symbols o..e of one stream from bit b on, one at a time with every bound checked;
    returns the byte offset after the stream (first + its size) or an error."""
    mask = np.uint64(DECODE_TABLE_SIZE - 1)
    stream_end_bits = (first + size) * 8
    while o < e:
        if b >= stream_end_bits:
            return ERR_STREAM_OVERRUN
        w = _load_u64_safe(buf, b >> 3, end) >> np.uint64(b & 7)
        x = table[w & mask]
        out[o] = np.uint8(x & 255)
        b += np.int64(x >> 8)
        o += 1
    if b > stream_end_bits:
        return ERR_STREAM_OVERRUN
    used = (b - first * 8 + 7) // 8
    if size_known and used != size:
        return ERR_STREAM_SIZE
    return first + used


@nb.njit(cache=True, nogil=True)
def _decode_huffman_block(buf, pos, end, table, out, start, n):
    """Decodes one block's 4 interleaved streams; returns the offset after the block or an error.

    Scalars instead of small per-block arrays: ~700 blocks per 4 MiB chunk, and five np.empty per
    block were a measurable part of the per-block cost."""
    width = stream_size_width(n)
    if (STREAMS - 1) * width > end - pos:
        return ERR_TRUNCATED
    size0 = _get_fixed(buf, pos, width)
    size1 = _get_fixed(buf, pos + width, width)
    size2 = _get_fixed(buf, pos + 2 * width, width)
    first0 = pos + (STREAMS - 1) * width
    first1 = first0 + size0
    first2 = first1 + size1
    first3 = first2 + size2
    if first3 > end:
        return ERR_TRUNCATED
    # The last stream's size is implied by the bits it consumes.
    size3 = end - first3
    q = (n + STREAMS - 1) // STREAMS
    mask = np.uint64(DECODE_TABLE_SIZE - 1)
    o0 = start
    o1 = start + min(q, n)
    o2 = start + min(2 * q, n)
    o3 = start + min(3 * q, n)
    e0 = o1
    e1 = o2
    e2 = o3
    e3 = start + n
    b0 = first0 * 8
    b1 = first1 * 8
    b2 = first2 * 8
    b3 = first3 * 8
    # Fast loop: 5 symbols (<= 55 bits) per stream from one 8-byte load; loads stay inside buf.
    limit = (end - 8) * 8
    while (o0 + 5 <= e0 and o1 + 5 <= e1 and o2 + 5 <= e2 and o3 + 5 <= e3
           and b0 <= limit and b1 <= limit and b2 <= limit and b3 <= limit):
        w0 = _load_u64(buf, b0 >> 3) >> np.uint64(b0 & 7)
        w1 = _load_u64(buf, b1 >> 3) >> np.uint64(b1 & 7)
        w2 = _load_u64(buf, b2 >> 3) >> np.uint64(b2 & 7)
        w3 = _load_u64(buf, b3 >> 3) >> np.uint64(b3 & 7)
        for _ in range(5):
            x0 = table[w0 & mask]
            x1 = table[w1 & mask]
            x2 = table[w2 & mask]
            x3 = table[w3 & mask]
            out[np.uint64(o0)] = np.uint8(x0 & 255)
            out[np.uint64(o1)] = np.uint8(x1 & 255)
            out[np.uint64(o2)] = np.uint8(x2 & 255)
            out[np.uint64(o3)] = np.uint8(x3 & 255)
            d0 = np.uint64(x0 >> 8)
            d1 = np.uint64(x1 >> 8)
            d2 = np.uint64(x2 >> 8)
            d3 = np.uint64(x3 >> 8)
            w0 >>= d0
            w1 >>= d1
            w2 >>= d2
            w3 >>= d3
            b0 += np.int64(d0)
            b1 += np.int64(d1)
            b2 += np.int64(d2)
            b3 += np.int64(d3)
            o0 += 1
            o1 += 1
            o2 += 1
            o3 += 1
    pos = _finish_decode_stream(buf, end, table, out, b0, o0, e0, first0, size0, True)
    if pos < 0:
        return pos
    pos = _finish_decode_stream(buf, end, table, out, b1, o1, e1, first1, size1, True)
    if pos < 0:
        return pos
    pos = _finish_decode_stream(buf, end, table, out, b2, o2, e2, first2, size2, True)
    if pos < 0:
        return pos
    return _finish_decode_stream(buf, end, table, out, b3, o3, e3, first3, size3, False)


@nb.njit(cache=True, nogil=True)
def decode_payload(buf, out):
    """Decodes a whole codec-1 payload into `out` (exactly its length); returns 0 or an error code."""
    end = buf.shape[0]
    size = out.shape[0]
    if end < 2:
        return ERR_TRUNCATED
    flags = buf[0]
    if flags & ~FLAG_CHUNK_TABLE:
        return ERR_BAD_FLAGS
    block_count, pos = _get_varint(buf, 1, end)
    if pos < 0:
        return pos
    if block_count > size:
        return ERR_BAD_SIZE
    zero = np.zeros(256, dtype=np.uint8)
    chunk_lengths = np.zeros(256, dtype=np.uint8)
    previous = np.zeros(256, dtype=np.uint8)
    local = np.zeros(256, dtype=np.uint8)
    chunk_table = np.zeros(DECODE_TABLE_SIZE, dtype=np.uint16)
    previous_table = np.zeros(DECODE_TABLE_SIZE, dtype=np.uint16)
    has_chunk_table = (flags & FLAG_CHUNK_TABLE) != 0
    has_previous = False
    if has_chunk_table:
        pos = _read_table(buf, pos, end, zero, chunk_lengths)
        if pos < 0:
            return pos
        _build_decode_table(chunk_lengths, chunk_table)
    op = 0
    for _ in range(block_count):
        if pos >= end:
            return ERR_TRUNCATED
        kind = buf[pos]
        if kind >= KIND_COUNT:
            return ERR_BAD_KIND
        n, pos = _get_varint(buf, pos + 1, end)
        if pos < 0:
            return pos
        if n < 1 or n > size - op:
            return ERR_BAD_SIZE
        if kind == KIND_RAW:
            if n > end - pos:
                return ERR_TRUNCATED
            out[op:op + n] = buf[pos:pos + n]
            pos += n
        elif kind == KIND_RLE:
            if pos >= end:
                return ERR_TRUNCATED
            out[op:op + n] = buf[pos]
            pos += 1
        else:
            if kind == KIND_SHARED:
                if not has_chunk_table:
                    return ERR_NO_TABLE
                table = chunk_table
            elif kind == KIND_REPEAT:
                if not has_previous:
                    return ERR_NO_TABLE
                table = previous_table
            else:
                if kind == KIND_LOCAL_FROM_ZERO:
                    reference = zero
                elif kind == KIND_LOCAL_FROM_SHARED:
                    if not has_chunk_table:
                        return ERR_NO_TABLE
                    reference = chunk_lengths
                else:
                    if not has_previous:
                        return ERR_NO_TABLE
                    reference = previous
                pos = _read_table(buf, pos, end, reference, local)
                if pos < 0:
                    return pos
                previous[:] = local
                # No clearing first: _read_table accepted only complete codes, which fill every entry.
                _build_decode_table(previous, previous_table)
                has_previous = True
                table = previous_table
            pos = _decode_huffman_block(buf, pos, end, table, out, op, n)
            if pos < 0:
                return pos
        op += n
    if op != size:
        return ERR_BAD_SIZE
    if pos != end:
        return ERR_TRAILING
    return 0
