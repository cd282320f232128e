"""The numba-free byte histogram the Manager counts uploads with, against the codec's kernel."""
from __future__ import annotations

import numpy as np
import pytest

import codec
from codec.counting import byte_histogram


@pytest.mark.parametrize("size", [0, 1, 255, 65535, 65536, 600_001])
def test_byte_histogram_counts_what_the_codec_kernel_counts(size):
    data = np.random.default_rng(size).geometric(0.05, size).clip(0, 255).astype(np.uint8).tobytes()
    counts = byte_histogram(data)
    assert counts.dtype == np.uint64 and counts.shape == (256,)
    assert np.array_equal(counts, codec.histogram(data))
    assert int(counts.sum()) == size


def test_byte_histogram_takes_any_bytes_like_object():
    data = bytes(range(256)) * 3 + b"\xff"
    expected = np.full(256, 3, dtype=np.uint64)
    expected[255] += 1
    for form in (data, bytearray(data), memoryview(data)):
        assert np.array_equal(byte_histogram(form), expected)
