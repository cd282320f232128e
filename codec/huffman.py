"""Huffman table logic: histograms, length-limited code lengths, canonical codes, table coding, costs."""
from __future__ import annotations

# Numba's on-disk cache (cache=True) is keyed on each function's own source file only: after editing
# this module, delete codec/__pycache__/*.nbi and *.nbc, or the kernels in codec/_kernels.py that call
# these functions keep running the old compiled code.

import numba as nb
import numpy as np

from codec import _numba_compat  # noqa: F401 - patches numba's cache loader before any kernel loads

# huff0's default limit: an 11-bit decode table (2048 two-byte entries) stays in L1 cache.
MAX_CODE_LENGTH = 11
DECODE_TABLE_SIZE = 1 << MAX_CODE_LENGTH

# Code lengths of a table are sent as deltas ((length - reference) mod 12, 0 meaning "absent")
# against a reference table, coded with a small Huffman code of their own, as deflate codes its
# code lengths. Tokens 0..11 are single deltas; the run tokens repeat delta 0.
LENGTH_ALPHABET = MAX_CODE_LENGTH + 1
TOKEN_SHORT_RUN = LENGTH_ALPHABET          # 3..10 zero deltas, 3 extra bits
TOKEN_LONG_RUN = LENGTH_ALPHABET + 1       # 11..138 zero deltas, 7 extra bits
TOKEN_COUNT = LENGTH_ALPHABET + 2
TOKEN_MAX_LENGTH = 7                       # token code lengths are sent in 3 bits each
SHORT_RUN_MIN, SHORT_RUN_BITS = 3, 3
LONG_RUN_MIN, LONG_RUN_BITS = 11, 7


def histogram(data) -> np.ndarray:
    """Byte frequencies of `data` as uint64[256]; histograms of parts sum to the whole's."""
    if isinstance(data, np.ndarray):
        arr = data.reshape(-1).view(np.uint8)
    else:
        arr = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    return _count_bytes(arr)


@nb.njit(cache=True, nogil=True)
def _count_bytes(data):
    """Byte counts through four interleaved sub-histograms: consecutive equal bytes then update
    different counters, so the increments do not wait on each other. ~7x np.bincount here, and
    it releases the GIL, so pipeline threads count in parallel."""
    sub = np.zeros((4, 256), dtype=np.uint64)
    n = data.shape[0]
    i = 0
    while i + 4 <= n:
        sub[0, data[i]] += 1
        sub[1, data[i + 1]] += 1
        sub[2, data[i + 2]] += 1
        sub[3, data[i + 3]] += 1
        i += 4
    while i < n:
        sub[0, data[i]] += 1
        i += 1
    return sub[0] + sub[1] + sub[2] + sub[3]


@nb.njit(cache=True, nogil=True)
def _minimum_redundancy_lengths(a):
    """Huffman code lengths for int64 weights sorted ascending (Moffat-Katajainen, O(n)), in place:
    afterwards a[i] is the code length of the i-th (ascending) weight. Returns `a`."""
    n = a.shape[0]
    if n == 1:
        a[0] = 1
        return a
    a[0] += a[1]
    root = 0
    leaf = 2
    for nxt in range(1, n - 1):
        if leaf >= n or a[root] < a[leaf]:
            a[nxt] = a[root]
            a[root] = nxt
            root += 1
        else:
            a[nxt] = a[leaf]
            leaf += 1
        if leaf >= n or (root < nxt and a[root] < a[leaf]):
            a[nxt] += a[root]
            a[root] = nxt
            root += 1
        else:
            a[nxt] += a[leaf]
            leaf += 1
    a[n - 2] = 0
    for nxt in range(n - 3, -1, -1):
        a[nxt] = a[a[nxt]] + 1
    avbl = 1
    used = 0
    depth = 0
    root = n - 2
    nxt = n - 1
    while avbl > 0:
        while root >= 0 and a[root] == depth:
            used += 1
            root -= 1
        while avbl > used:
            a[nxt] = depth
            nxt -= 1
            avbl -= 1
        avbl = 2 * used
        depth += 1
        used = 0
    return a


# Most levels package-merge may need: code lengths are at most 32 bits.
MAX_LIMIT = 32


@nb.njit(cache=True, nogil=True)
def code_lengths_workspace(nsym):
    """Scratch memory for code_lengths_into and table_bits_into with up to `nsym` symbols."""
    return np.empty(3 * nsym + 256 + 65 + (MAX_LIMIT + 5) * (nsym + 1), dtype=np.int64)


@nb.njit(cache=True, nogil=True)
def _package_merge(weights, max_length, depth, work):
    """Optimal code lengths of at most `max_length` bits (Larmore-Hirschberg package-merge) for the
    n >= 2 ascending `weights`, n <= 2^max_length, into depth[:n] (depth[i] for weights[i]).

    Level max_length holds the leaves; each level above holds the leaves merged with the packages
    (sums of neighbouring pairs) of the level below, leaves first on equal weights. The 2n - 2
    cheapest items of the top level are chosen; a chosen package chooses the two items it was made
    of, the first ones of the level below, and a leaf's length is the number of levels it is chosen
    in. A level is kept as the number of leaves merged before each of its packages, so finding the
    leaves among the first m items is a binary search. O(n * max_length) time, `work` holds
    (max_length + 5) * (n + 1) int64 (code_lengths_workspace)."""
    n = weights.shape[0]
    stride = n + 1
    big = np.int64(1) << 62
    leaves = work[:stride]
    items = work[stride:3 * stride]  # the current level, merged
    packages = work[3 * stride:4 * stride]
    npks = work[4 * stride:5 * stride]  # packages per level
    before = work[5 * stride:]  # row per level: leaves merged before each package
    for i in range(n):
        leaves[i] = weights[i]
    leaves[n] = big
    count = n  # items of the current level; the deepest holds the leaves alone
    for i in range(n):
        items[i] = weights[i]
    for level in range(max_length - 1, 0, -1):
        npk = count // 2
        for j in range(npk):
            packages[j] = items[2 * j] + items[2 * j + 1]
        packages[npk] = big
        row = before[(level - 1) * stride:level * stride]
        i = 0
        j = 0
        for k in range(n + npk):
            leaf = leaves[i]
            package = packages[j]
            take_leaf = leaf <= package
            row[j] = i
            items[k] = leaf if take_leaf else package
            i += np.int64(take_leaf)
            j += 1 - np.int64(take_leaf)
        count = n + npk
        npks[level] = npk
    for i in range(n):
        depth[i] = 0
    # Top level (level 1) down: `chosen` items of the level, of which `taken` leaves.
    chosen = 2 * n - 2
    for level in range(1, max_length + 1):
        if level == max_length:
            taken = chosen
        else:
            row = before[(level - 1) * stride:level * stride]
            # The first `chosen` items hold the packages j with row[j] + j < chosen.
            lo = 0
            hi = npks[level]
            while lo < hi:  # the packages among them: the smallest p whose package is not
                mid = (lo + hi) // 2
                if row[mid] + mid < chosen:
                    lo = mid + 1
                else:
                    hi = mid
            taken = chosen - lo
        for i in range(taken):
            depth[i] += 1
        chosen = 2 * (chosen - taken)


@nb.njit(cache=True, nogil=True)
def code_lengths(counts, max_length):
    """Length-limited Huffman code lengths (uint8[len(counts)], 0 = absent) for symbol counts.

    Symbols with count 0 get no code. The result always satisfies Kraft's equality (a complete
    prefix code): a lone present symbol is paired with a dummy neighbour so that every bit pattern
    decodes to something. When Huffman's code would be two or more bits deeper than `max_length`,
    package-merge gives the cheapest code within the limit: the repair miniz and deflate use (fold
    long codes down) spent 0.07-0.1% more bytes on the benchmark corpora, where most blocks hit the
    11-bit limit. More frequent symbols never get longer codes. Deterministic: ties are broken by
    symbol value."""
    nsym = counts.shape[0]
    lengths = np.zeros(nsym, dtype=np.uint8)
    code_lengths_into(counts, max_length, lengths, code_lengths_workspace(nsym))
    return lengths


@nb.njit(cache=True, nogil=True)
def code_lengths_into(counts, max_length, lengths, work):
    """code_lengths writing into `lengths` (all of it) with scratch `work` (code_lengths_workspace):
    the encoder calls this for every block, where allocating the ~7 arrays it needs cost as much as
    the work."""
    nsym = counts.shape[0]
    if not 1 <= max_length <= 32:
        raise ValueError("max_length must be in 1..32")
    if nsym > 256:
        raise ValueError("code_lengths handles alphabets of at most 256 symbols")
    present = 0
    for s in range(nsym):
        lengths[s] = 0
        if counts[s] > 0:
            present += 1
    if present == 0:
        return
    if present == 1:
        for s in range(nsym):
            if counts[s] > 0:
                lengths[s] = 1
                lengths[1 if s == 0 else s - 1] = 1
        return
    if present > (1 << max_length):
        raise ValueError("more symbols than codes of max_length bits")
    weights = work[:present]
    symbols = work[nsym:nsym + present]
    spare = work[2 * nsym:2 * nsym + present]
    bins = work[3 * nsym:3 * nsym + 256]
    per_length = work[3 * nsym + 256:3 * nsym + 256 + 65]
    merge_work = work[3 * nsym + 321:]
    _sort_by_count(counts, weights, symbols, spare, bins)
    spare[:] = weights
    _minimum_redundancy_lengths(weights)
    depth = weights
    per_length[:] = 0
    if depth[0] > max_length + 1:  # the rarest symbol has the longest code
        _package_merge(spare, max_length, depth, merge_work)
        for i in range(present):
            per_length[depth[i]] += 1
    else:
        # At most one bit over: fold the long codes down, as miniz and deflate do (split the
        # deepest shorter leaf until Kraft's sum is exactly 1). On the benchmark corpora this was
        # within 0.01% of package-merge's optimum for such blocks, at a fraction of its ~3 us.
        for i in range(present):
            per_length[min(depth[i], max_length)] += 1
        total = 0
        for d in range(1, max_length + 1):
            total += per_length[d] << (max_length - d)
        while total != (1 << max_length):
            per_length[max_length] -= 1
            for d in range(max_length - 1, 0, -1):
                if per_length[d] != 0:
                    per_length[d] -= 1
                    per_length[d + 1] += 2
                    break
            total -= 1
    # Hand lengths out again, shortest to the most frequent (the end of the ascending order).
    i = present - 1
    for d in range(1, max_length + 1):
        for _ in range(per_length[d]):
            lengths[symbols[i]] = d
            i -= 1


@nb.njit(cache=True, nogil=True)
def _sort_by_count(counts, weights, symbols, spare, bins):
    """Present symbols in ascending (count, symbol) order: their counts into `weights`, the symbols
    into `symbols` (`spare`: scratch of the same size, `bins`: 256 scratch).

    Keys pack count * 256 + symbol (alphabets of up to 256 symbols), so one array moves. Few keys:
    insertion sort (cheaper than clearing 256 bins per pass: token alphabets, sparse blocks); more:
    LSD radix on bytes (~4x numba's sort on 256 keys), skipping the low byte because the symbols
    are listed in ascending order already."""
    n = weights.shape[0]
    keys = weights
    j = 0
    for s in range(counts.shape[0]):
        if counts[s] > 0:
            keys[j] = (np.int64(counts[s]) << 8) | s
            j += 1
    if n <= 32:
        for i in range(1, n):
            key = keys[i]
            k = i - 1
            while k >= 0 and keys[k] > key:
                keys[k + 1] = keys[k]
                k -= 1
            keys[k + 1] = key
    else:
        largest = 0
        for i in range(n):
            largest = max(largest, keys[i])
        src = keys
        dst = spare
        passes = 0
        shift = 8
        while (largest >> shift) > 0:
            bins[:] = 0
            for i in range(n):
                bins[(src[i] >> shift) & 255] += 1
            total = 0
            for d in range(256):
                c = bins[d]
                bins[d] = total
                total += c
            for i in range(n):
                d = (src[i] >> shift) & 255
                dst[bins[d]] = src[i]
                bins[d] += 1
            src, dst = dst, src
            passes += 1
            shift += 8
        if passes % 2 == 1:
            keys[:] = spare
    for i in range(n):
        symbols[i] = keys[i] & 255
        keys[i] >>= 8


# Bit-reversed bytes: canonical_codes reverses codes a byte at a time instead of a bit at a time
# (the bit loop was ~2 us per 256-symbol table, paid for every block by encoder and decoder).
REVERSED_BYTES = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], dtype=np.uint64)


@nb.njit(cache=True, nogil=True)
def canonical_codes(lengths):
    """Canonical codes (deflate order: by length, then symbol), bit-reversed for LSB-first output."""
    nsym = lengths.shape[0]
    per_length = np.zeros(33, dtype=np.int64)
    for s in range(nsym):
        per_length[lengths[s]] += 1
    per_length[0] = 0
    next_code = np.zeros(33, dtype=np.int64)
    code = 0
    for d in range(1, 33):
        code = (code + per_length[d - 1]) << 1
        next_code[d] = code
    codes = np.zeros(nsym, dtype=np.uint32)
    byte = np.uint64(255)
    for s in range(nsym):
        d = np.int64(lengths[s])
        if d != 0:
            c = np.uint64(next_code[d])
            next_code[d] += 1
            reversed32 = ((REVERSED_BYTES[c & byte] << np.uint64(24))
                          | (REVERSED_BYTES[(c >> np.uint64(8)) & byte] << np.uint64(16))
                          | (REVERSED_BYTES[(c >> np.uint64(16)) & byte] << np.uint64(8))
                          | REVERSED_BYTES[(c >> np.uint64(24)) & byte])
            codes[s] = np.uint32(reversed32 >> np.uint64(32 - d))
    return codes


@nb.njit(cache=True, nogil=True)
def kraft_units(lengths, max_length):
    """Kraft sum scaled by 2^max_length (== 2^max_length for a complete code); -1 if a length is too long."""
    total = 0
    for s in range(lengths.shape[0]):
        d = lengths[s]
        if d > max_length:
            return -1
        if d != 0:
            total += 1 << (max_length - d)
    return total


@nb.njit(cache=True, nogil=True)
def coded_bits(counts, lengths):
    """Exact payload bits of symbols with `counts` under code `lengths`; -1 if a present symbol has no code."""
    total = 0
    for s in range(counts.shape[0]):
        if counts[s] != 0:
            if lengths[s] == 0:
                return -1
            total += np.int64(counts[s]) * lengths[s]
    return total


@nb.njit(cache=True, nogil=True, inline="always")
def _length_delta(length, reference):
    """(length - reference) mod 12 for lengths 0..11, without the slower signed modulo."""
    delta = np.int64(length) - np.int64(reference)
    return delta + LENGTH_ALPHABET if delta < 0 else delta


@nb.njit(cache=True, nogil=True, inline="always")
def _zero_run(lengths, reference, i):
    """How many symbols from i on (at most 138, a long run's limit) equal their reference."""
    n = lengths.shape[0]
    run = 1
    while i + run < n and run < 138 and lengths[i + run] == reference[i + run]:
        run += 1
    return run


@nb.njit(cache=True, nogil=True, inline="always")
def next_token(lengths, reference, i):
    """The token that describes lengths[i:] against `reference`: (token, extra-bits value, symbols
    it covers). The one tokenizing rule for listing, pricing and writing tables."""
    delta = _length_delta(lengths[i], reference[i])
    if delta == 0:
        run = _zero_run(lengths, reference, i)
        if run >= LONG_RUN_MIN:
            return TOKEN_LONG_RUN, run - LONG_RUN_MIN, run
        if run >= SHORT_RUN_MIN:
            return TOKEN_SHORT_RUN, run - SHORT_RUN_MIN, run
    return delta, 0, 1


@nb.njit(cache=True, nogil=True)
def _length_tokens(lengths, reference):
    """Tokens (and their extra-bit values) that describe `lengths` as deltas against `reference`."""
    n = lengths.shape[0]
    tokens = np.empty(n, dtype=np.int64)
    extras = np.empty(n, dtype=np.int64)
    count = 0
    i = 0
    while i < n:
        token, extra, covered = next_token(lengths, reference, i)
        tokens[count] = token
        extras[count] = extra
        count += 1
        i += covered
    return tokens[:count], extras[:count]


@nb.njit(cache=True, nogil=True)
def _token_extra_bits(token):
    if token == TOKEN_SHORT_RUN:
        return SHORT_RUN_BITS
    if token == TOKEN_LONG_RUN:
        return LONG_RUN_BITS
    return 0


@nb.njit(cache=True, nogil=True)
def table_plan(lengths, reference):
    """How `lengths` would be sent against `reference`: (tokens, extras, token_lengths, bits).

    `bits` is the exact size of the serialized table: 3 bits per token code length, then the
    tokens with their extra bits."""
    tokens, extras = _length_tokens(lengths, reference)
    token_counts = np.zeros(TOKEN_COUNT, dtype=np.int64)
    for t in tokens:
        token_counts[t] += 1
    token_lengths = code_lengths(token_counts, TOKEN_MAX_LENGTH)
    bits = 3 * TOKEN_COUNT
    for t in range(TOKEN_COUNT):
        bits += token_counts[t] * (np.int64(token_lengths[t]) + _token_extra_bits(t))
    return tokens, extras, token_lengths, bits


@nb.njit(cache=True, nogil=True)
def table_bits(lengths, reference):
    """Exact serialized size in bits of table `lengths` sent against `reference`."""
    return table_bits_into(lengths, reference, code_lengths_workspace(256),
                           np.empty(TOKEN_COUNT, dtype=np.uint8))


@nb.njit(cache=True, nogil=True)
def table_bits_into(lengths, reference, work, token_lengths):
    """table_bits with scratch `work` (code_lengths_workspace(256)), also filling `token_lengths`
    (uint8[TOKEN_COUNT]) as table_plan would: counts the tokens without listing them, so the encoder
    can price candidate tables per block cheaply."""
    token_counts = work[work.shape[0] - TOKEN_COUNT:]
    token_counts[:] = 0
    n = lengths.shape[0]
    i = 0
    while i < n:
        token, _, covered = next_token(lengths, reference, i)
        token_counts[token] += 1
        i += covered
    code_lengths_into(token_counts, TOKEN_MAX_LENGTH, token_lengths, work[:work.shape[0] - TOKEN_COUNT])
    bits = 3 * TOKEN_COUNT
    for t in range(TOKEN_COUNT):
        bits += token_counts[t] * (np.int64(token_lengths[t]) + _token_extra_bits(t))
    return bits
