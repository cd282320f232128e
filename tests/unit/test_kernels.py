"""The codec's numba kernels against plain numpy: per-leaf histograms and the encoder's bit packer."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from codec import _kernels


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from([1, 7, 8, 64, 2048]))
def test_leaf_histograms_count_every_byte_of_every_leaf_like_bincount(data, leaf_size):
    # 8-byte loads feed the counters: lengths and leaf sizes off multiples of 8 exercise the tails.
    arr = np.frombuffer(data, dtype=np.uint8)
    hists = _kernels.leaf_histograms(arr, leaf_size)
    assert hists.shape == (-(-len(data) // leaf_size), 256)
    for leaf, row in enumerate(hists):
        expected = np.bincount(arr[leaf * leaf_size:(leaf + 1) * leaf_size], minlength=256)
        assert (row == expected).all()
