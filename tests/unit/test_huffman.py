"""Properties of the Huffman table logic: length limits, Kraft, canonical codes, table coding."""
from __future__ import annotations

import heapq
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from codec import _kernels
from codec.huffman import (
    _minimum_redundancy_lengths,
    MAX_CODE_LENGTH,
    canonical_codes,
    code_lengths,
    coded_bits,
    histogram,
    kraft_units,
    table_bits,
    table_plan,
)



def _counts(seed: int, present: int, spread: int) -> np.ndarray:
    """256 counts with `present` non-zero ones spread over up to 2^spread (spread 40: very deep trees)."""
    rng = np.random.default_rng(seed)
    counts = np.zeros(256, dtype=np.int64)
    symbols = rng.choice(256, size=present, replace=False)
    counts[symbols] = np.exp2(rng.uniform(0, spread, size=present)).astype(np.int64) + 1
    return counts


# Generating 256 integers through hypothesis is slow; a seed, a symbol count and a spread cover the
# same ground (few or all symbols, flat or extremely skewed) in a fraction of the time.
counts_strategy = st.builds(_counts, st.integers(0, 2**32), st.integers(0, 256), st.integers(0, 40))


def _unlimited_huffman_bits(counts: np.ndarray) -> int:
    """Reference cost of an unrestricted Huffman code (sum of merged weights)."""
    heap = [int(c) for c in counts if c > 0]
    if len(heap) < 2:
        return sum(heap)
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return total


def test_histogram_of_parts_sums_to_histogram_of_whole():
    data = bytes(range(256)) * 3 + b"abc" * 100
    whole = histogram(data)
    parts = histogram(data[:100]) + histogram(memoryview(data)[100:])
    assert whole.dtype == np.uint64 and whole.shape == (256,)
    assert (whole == parts).all()
    assert whole[ord("a")] == 100 + 3


def test_histogram_accepts_numpy_arrays():
    arr = np.frombuffer(b"\x00\x00\x07", dtype=np.uint8)
    hist = histogram(arr)
    assert hist[0] == 2 and hist[7] == 1 and hist.sum() == 3


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_histogram_counts_every_byte_of_any_length_like_bincount(data):
    # The counter unrolls by four: lengths that are not multiples of 4 exercise its tail loop.
    expected = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    assert (histogram(data) == expected).all()
    assert histogram(data).dtype == np.uint64


@settings(max_examples=300, deadline=None)
@given(counts_strategy)
def test_code_lengths_are_limited_and_form_a_complete_prefix_code(counts):
    lengths = code_lengths(counts, MAX_CODE_LENGTH)
    present = counts > 0
    if not present.any():
        assert not lengths.any()
        return
    assert lengths.max() <= MAX_CODE_LENGTH
    assert (lengths[present] > 0).all()
    assert kraft_units(lengths, MAX_CODE_LENGTH) == 2**MAX_CODE_LENGTH


def _reference_package_merge(weights: list[int], max_length: int) -> list[int]:
    """Package-merge as the textbook states it, on lists of (weight, leaves) items: the code length
    of each ascending weight, at most `max_length`, optimal among such codes."""
    leaves = [(w, (i,)) for i, w in enumerate(weights)]
    items = leaves
    for _ in range(max_length - 1):
        packages = [(items[k][0] + items[k + 1][0], items[k][1] + items[k + 1][1])
                    for k in range(0, len(items) - 1, 2)]
        items = sorted(leaves + packages, key=lambda item: item[0])  # stable: leaves first on ties
    depth = [0] * len(weights)
    for _, members in items[:2 * len(weights) - 2]:
        for i in members:
            depth[i] += 1
    return depth


def _folded_per_length(depth, max_length: int) -> list[int]:
    """How many codes of each length when Huffman's lengths are folded down to `max_length`: the
    repair miniz and deflate use (split the deepest shorter leaf until Kraft's sum is exactly 1)."""
    per_length = [0] * (max_length + 2)
    for d in depth:
        per_length[min(int(d), max_length)] += 1
    total = sum(per_length[d] << (max_length - d) for d in range(1, max_length + 1))
    while total != 1 << max_length:
        per_length[max_length] -= 1
        d = max(d for d in range(1, max_length) if per_length[d])
        per_length[d] -= 1
        per_length[d + 1] += 2
        total -= 1
    return per_length


def _reference_code_lengths(counts: np.ndarray, max_length: int) -> np.ndarray:
    """code_lengths written plainly: Python's sort by (count, symbol), Huffman's tree, then within
    the limit by folding long codes down when they are one bit too long and by package-merge when
    more, lengths handed out shortest to the most frequent. The kernel's radix sort, scratch buffers
    and package-merge by binary search must not change one length."""
    lengths = np.zeros(len(counts), dtype=np.uint8)
    order = sorted((int(c), s) for s, c in enumerate(counts) if c > 0)
    if len(order) == 1:
        s = order[0][1]
        lengths[s] = lengths[1 if s == 0 else s - 1] = 1
        return lengths
    if not order:
        return lengths
    depth = _minimum_redundancy_lengths(np.array([c for c, _ in order], dtype=np.int64))
    if depth.max() > max_length + 1:
        per_length = [0] * (max_length + 2)
        for d in _reference_package_merge([c for c, _ in order], max_length):
            per_length[d] += 1
    else:
        per_length = _folded_per_length(depth, max_length)
    symbols = [s for _, s in reversed(order)]
    handed = [d for d in range(1, max_length + 1) for _ in range(per_length[d])]
    for s, d in zip(symbols, handed):
        lengths[s] = d
    return lengths


@settings(max_examples=300, deadline=None)
@given(counts_strategy, st.sampled_from([8, MAX_CODE_LENGTH, 16]))
def test_code_lengths_equal_the_plainly_written_reference(counts, max_length):
    assert (code_lengths(counts, max_length) == _reference_code_lengths(counts, max_length)).all()


def _least_limited_bits(counts: np.ndarray, max_length: int) -> int:
    """The fewest bits any complete prefix code of lengths <= max_length spends on `counts`, by
    trying every assignment of lengths that does not give a rarer symbol a shorter code."""
    weights = sorted(int(c) for c in counts if c > 0)
    best = None

    def walk(i: int, longest: int, kraft: Fraction, bits: int) -> None:
        nonlocal best
        if i == len(weights):
            if kraft == 1 and (best is None or bits < best):
                best = bits
            return
        for d in range(1, longest + 1):
            if kraft + Fraction(1, 2**d) <= 1:
                walk(i + 1, d, kraft + Fraction(1, 2**d), bits + weights[i] * d)

    walk(0, max_length, Fraction(0), 0)
    return best


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10**6), min_size=6, max_size=9),
       st.sampled_from([3, 4]))
def test_code_lengths_are_the_cheapest_within_the_limit_when_it_binds_by_two_bits_or_more(values, limit):
    counts = np.zeros(256, dtype=np.int64)
    counts[: len(values)] = values
    if len(values) > 2**limit or code_lengths(counts, 32).max() <= limit + 1:
        return  # within a bit of the limit the encoder folds, which need not be the cheapest
    assert coded_bits(counts, code_lengths(counts, limit)) == _least_limited_bits(counts, limit)


def test_deep_codes_cost_fewer_bits_than_folding_them_down():
    # Counts growing like powers of 1.5 over 64 symbols want codes ~30 bits deep; folding them to 11
    # bits (the repair deflate encoders use) wastes bits that package-merge keeps.
    counts = np.zeros(256, dtype=np.int64)
    counts[:64] = (1.5 ** np.arange(64)).astype(np.int64) // 1000 + 1
    assert code_lengths(counts, 32).max() > MAX_CODE_LENGTH + 1
    folded = _reference_code_lengths_by_folding(counts, MAX_CODE_LENGTH)
    lengths = code_lengths(counts, MAX_CODE_LENGTH)
    assert kraft_units(lengths, MAX_CODE_LENGTH) == 2**MAX_CODE_LENGTH
    assert coded_bits(counts, lengths) < coded_bits(counts, folded)


def _reference_code_lengths_by_folding(counts: np.ndarray, max_length: int) -> np.ndarray:
    """Huffman's lengths folded down to `max_length` however deep they are (the earlier encoder)."""
    order = sorted((int(c), s) for s, c in enumerate(counts) if c > 0)
    depth = _minimum_redundancy_lengths(np.array([c for c, _ in order], dtype=np.int64))
    per_length = _folded_per_length(depth, max_length)
    lengths = np.zeros(len(counts), dtype=np.uint8)
    handed = [d for d in range(1, max_length + 1) for _ in range(per_length[d])]
    for (_, s), d in zip(reversed(order), handed):
        lengths[s] = d
    return lengths


def test_fibonacci_counts_that_want_deep_codes_are_limited_to_eleven_bits():
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    counts = np.zeros(256, dtype=np.int64)
    counts[:40] = fib
    lengths = code_lengths(counts, MAX_CODE_LENGTH)
    assert lengths.max() == MAX_CODE_LENGTH
    assert kraft_units(lengths, MAX_CODE_LENGTH) == 2**MAX_CODE_LENGTH
    # More frequent symbols never get longer codes than rarer ones.
    order = np.argsort(counts[:40], kind="stable")
    assert (np.diff(lengths[:40][order].astype(int)) <= 0).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10**6), min_size=2, max_size=60))
def test_code_lengths_are_optimal_when_the_limit_does_not_bind(values):
    counts = np.zeros(256, dtype=np.int64)
    counts[: len(values)] = values
    lengths = code_lengths(counts, 32)
    assert lengths.max() <= 32
    assert coded_bits(counts, lengths) == _unlimited_huffman_bits(counts)


def test_a_single_present_symbol_still_gets_a_complete_code():
    counts = np.zeros(256, dtype=np.int64)
    counts[0] = 5
    lengths = code_lengths(counts, MAX_CODE_LENGTH)
    assert lengths[0] == 1
    assert kraft_units(lengths, MAX_CODE_LENGTH) == 2**MAX_CODE_LENGTH


@settings(max_examples=200, deadline=None)
@given(counts_strategy)
def test_canonical_codes_are_prefix_free_and_ordered_by_length_then_symbol(counts):
    lengths = code_lengths(counts, MAX_CODE_LENGTH)
    codes = canonical_codes(lengths)
    words = []
    for s in range(256):
        d = int(lengths[s])
        if d:
            reversed_code = int(codes[s])
            msb_first = int(format(reversed_code, f"0{d}b")[::-1], 2)
            words.append((d, s, format(msb_first, f"0{d}b")))
    # Canonical: sorted by (length, symbol), codes are consecutive binary numbers.
    words.sort()
    for (d1, _, w1), (d2, _, w2) in zip(words, words[1:]):
        assert int(w2, 2) == (int(w1, 2) + 1) << (d2 - d1)
    strings = [w for _, _, w in words]
    for i, a in enumerate(strings):
        for b in strings[i + 1:]:
            assert not b.startswith(a) and not a.startswith(b)


@settings(max_examples=200, deadline=None)
@given(counts_strategy, counts_strategy)
def test_serialized_tables_read_back_to_the_same_lengths(counts, reference_counts):
    lengths = code_lengths(counts, MAX_CODE_LENGTH)
    reference = code_lengths(reference_counts, MAX_CODE_LENGTH)
    if kraft_units(lengths, MAX_CODE_LENGTH) != 2**MAX_CODE_LENGTH:
        return
    _, _, token_lengths, bits = table_plan(lengths, reference)
    out = np.zeros(512, dtype=np.uint8)
    end = _kernels._write_table_of(out, 0, lengths, reference, token_lengths)
    assert end == (bits + 7) // 8
    assert table_bits(lengths, reference) == bits
    back = np.zeros(256, dtype=np.uint8)
    assert _kernels._read_table(out[:end], 0, end, reference, back) == end
    assert (back == lengths).all()


def test_a_table_equal_to_its_reference_costs_a_few_bytes():
    counts = np.arange(256, dtype=np.int64) + 1
    lengths = code_lengths(counts, MAX_CODE_LENGTH)
    assert table_bits(lengths, lengths) <= 8 * 8
    assert table_bits(lengths, np.zeros(256, dtype=np.uint8)) > 8 * 64
