"""(Re)generates the `.dcz` test vectors that pin the container and payload formats.

Each vector is `NAME.bin` (the original bytes) and `NAME.dcz` (what `codec.encode(original,
chunk_size)` writes today). `--check` compares the committed files with today's writer.

Run it without `--check` when the writer's output changes on purpose (a better encoder choice
within a format version, or a new version). A replaced `NAME.dcz` is not thrown away: it moves with its original to
`decode_only/NAME-<crc32c>.{dcz,bin}`, because every file a version-1 writer ever produced must stay
readable, and tests/test_vectors.py decodes those too.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import codec
from codec.container import crc32c

VECTOR_DIR = Path(__file__).resolve().parent
DECODE_ONLY_DIR = VECTOR_DIR / "decode_only"

TEXT = (b"It was the best of times, it was the worst of times, it was the age of wisdom, it was "
        b"the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.\n")


def pseudo_random(size: int, seed: bytes) -> bytes:
    """Deterministic incompressible bytes (SHA-256 in counter mode), the same on every platform."""
    blocks = (hashlib.sha256(seed + i.to_bytes(8, "little")).digest() for i in range(-(-size // 32)))
    return b"".join(blocks)[:size]


def skewed_binary() -> bytes:
    """All 256 byte values, most of them rare: compressible, and every symbol needs a code."""
    noise = pseudo_random(1024, b"skewed")
    return bytes(range(256)) + bytes(b & b >> 3 & 0x3F for b in noise)


def deep_codes() -> bytes:
    """Byte s as many times as the s-th Fibonacci number, in a fixed scrambled order: Huffman's code
    would be 16 bits deep, so the 11-bit limit binds by more than one bit and package-merge, not the
    fold, sets the table."""
    fibonacci = [1, 1]
    while len(fibonacci) < 17:
        fibonacci.append(fibonacci[-1] + fibonacci[-2])
    symbols = [s for s, count in enumerate(fibonacci) for _ in range(count)]
    order = sorted(range(len(symbols)), key=lambda i: hashlib.sha256(i.to_bytes(4, "little")).digest())
    return bytes(symbols[i] for i in order)


# name -> (original bytes, chunk size the vector is written with)
VECTORS: dict[str, tuple[bytes, int]] = {
    "empty": (b"", 4096),
    "one_byte": (b"A", 4096),
    "one_symbol": (b"\x00" * 1000, 4096),
    "text": (TEXT * 4, 4096),
    "all_bytes": (skewed_binary(), 4096),
    "multi_chunk": (TEXT * 6, 256),
    "stored": (pseudo_random(300, b"stored"), 4096),
    "deep_codes": (deep_codes(), 8192),
}


def build() -> dict[str, tuple[bytes, bytes]]:
    """name -> (original, container) for every vector."""
    return {name: (original, codec.encode(original, chunk_size=chunk_size))
            for name, (original, chunk_size) in VECTORS.items()}


def keep_decode_only(name: str, old_container: bytes) -> None:
    """Moves a container the writer no longer produces to decode_only/, with its original."""
    stem = DECODE_ONLY_DIR / f"{name}-{crc32c(old_container):08x}"
    DECODE_ONLY_DIR.mkdir(exist_ok=True)
    stem.with_suffix(".dcz").write_bytes(old_container)
    stem.with_suffix(".bin").write_bytes(codec.decode(old_container))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed files, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name, (original, container) in build().items():
        for suffix, content in ((".bin", original), (".dcz", container)):
            path = VECTOR_DIR / f"{name}{suffix}"
            if path.exists() and path.read_bytes() == content:
                continue
            stale.append(path.name)
            if not args.check:
                if suffix == ".dcz" and path.exists():
                    keep_decode_only(name, path.read_bytes())
                path.write_bytes(content)
    if stale:
        print(("differs: " if args.check else "wrote: ") + ", ".join(stale))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
