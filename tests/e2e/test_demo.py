"""Tests of the `make demo` sample builder: the same bytes on every run, capped in size."""
from __future__ import annotations

from pathlib import Path

from benchmarks.demo import build_sample, generated_text


def test_demo_sample_is_capped_and_identical_on_every_build(tmp_path: Path):
    first, second = tmp_path / "a", tmp_path / "b"
    build_sample(first, size=2**20 + 7)
    build_sample(second, size=2**20 + 7)
    assert first.stat().st_size == 2**20 + 7
    assert first.read_bytes() == second.read_bytes()


def test_generated_fallback_text_is_seeded_text_of_the_asked_size():
    text = generated_text(100_000)
    assert len(text) == 100_000
    assert text == generated_text(100_000)
    assert text != generated_text(100_000, seed=1)
    assert text.count(b"\n") > 1000
