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
