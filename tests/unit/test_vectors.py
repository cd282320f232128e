"""The committed test vectors pin the format: they decode byte-exact and re-encode to the same bytes."""
from __future__ import annotations

from pathlib import Path

import pytest

import codec

VECTOR_DIR = Path(__file__).resolve().parent.parent / "vectors"
VECTOR_NAMES = sorted(path.stem for path in VECTOR_DIR.glob("*.dcz"))
# Containers an earlier version-1 writer produced (see make_vectors.py): decoded, not re-encoded.
DECODE_ONLY = sorted(str(path.relative_to(VECTOR_DIR).with_suffix(""))
                     for path in VECTOR_DIR.glob("decode_only/*.dcz"))


def test_the_vector_set_is_complete():
    assert set(VECTOR_NAMES) >= {"empty", "one_byte", "one_symbol", "text", "all_bytes",
                                 "multi_chunk", "stored"}
    for name in VECTOR_NAMES:
        assert (VECTOR_DIR / f"{name}.bin").exists(), name


@pytest.mark.parametrize("name", VECTOR_NAMES + DECODE_ONLY)
def test_vector_decodes_to_its_original_byte_exact(name):
    container = (VECTOR_DIR / f"{name}.dcz").read_bytes()
    original = (VECTOR_DIR / f"{name}.bin").read_bytes()
    assert codec.decode(container) == original
    assert codec.verify(container)["original_size"] == len(original)


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_encoding_the_original_again_writes_the_same_container(name):
    """If this fails the writer's output changed: a format change needs a new version and vectors."""
    container = (VECTOR_DIR / f"{name}.dcz").read_bytes()
    original = (VECTOR_DIR / f"{name}.bin").read_bytes()
    chunk_size = codec.info(container)["chunk_size"]
    assert codec.encode(original, chunk_size=chunk_size) == container


def test_vectors_cover_both_chunk_codecs_and_several_chunks():
    described = [codec.info((VECTOR_DIR / f"{name}.dcz").read_bytes()) for name in VECTOR_NAMES]
    assert any(d["codecs"]["stored"] for d in described)
    assert any(d["codecs"]["huffman"] for d in described)
    assert any(d["codecs"]["huffman"] and d["codecs"]["stored"] for d in described)
    assert any(d["chunks"] > 1 for d in described)
    assert any(d["chunks"] == 0 for d in described)
