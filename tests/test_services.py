"""Tests of services.compression called directly: round trips, stats, atomic outputs, input checks."""
from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest

from codec import FormatError
from codec.container import FRAME_HEADER_SIZE, HEADER_SIZE
from services import compression
from services.compression import (InputError, OutputError, OutputExistsError, compress_file,
                                  decompress_file, file_info, original_size, source_size,
                                  verify_file)

CHUNK = 64 * 1024


def sample_text(size: int, seed: int = 7) -> bytes:
    """Word-salad text: compressible like real text, different for every seed."""
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"etaoinshrdlucmfwypvbgkjqxz", k=rng.randint(1, 9)))
             for _ in range(500)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + (b"\n" if rng.random() < 0.1 else b" ")
    return bytes(out[:size])


@pytest.fixture
def original(tmp_path: Path) -> Path:
    path = tmp_path / "sample.txt"
    path.write_bytes(sample_text(3 * CHUNK + 123))
    return path


@pytest.fixture
def container(original: Path) -> Path:
    dst = original.with_name(original.name + ".dcz")
    compress_file(original, dst, chunk_size=CHUNK)
    return dst


def corrupt(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


class ExplodingEngine:
    """Writes some output, then fails the way a full disk or a Ctrl-C would."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def compress(self, src, dst, *, chunk_size, progress):
        dst.write(b"partial output")
        raise self.error

    def decompress(self, src, dst, *, max_size, progress):
        dst.write(b"partial output")
        raise self.error


def test_compress_then_decompress_round_trips_and_reports_stats(original: Path, tmp_path: Path):
    packed, unpacked = tmp_path / "out.dcz", tmp_path / "out.txt"
    stats = compress_file(original, packed, chunk_size=CHUNK)
    assert stats["original_size"] == original.stat().st_size
    assert stats["compressed_size"] == packed.stat().st_size
    assert stats["chunks"] == 4
    assert stats["seconds"] >= 0
    back = decompress_file(packed, unpacked)
    assert unpacked.read_bytes() == original.read_bytes()
    assert back["original_size"] == original.stat().st_size


def test_empty_file_round_trips(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    compress_file(empty, tmp_path / "empty.dcz", chunk_size=CHUNK)
    decompress_file(tmp_path / "empty.dcz", tmp_path / "again")
    assert (tmp_path / "again").read_bytes() == b""


def test_open_binary_files_work_as_source_and_destination(original: Path):
    packed = io.BytesIO()
    with open(original, "rb") as src:
        compress_file(src, packed, chunk_size=CHUNK)
    packed.seek(0)
    unpacked = io.BytesIO()
    decompress_file(packed, unpacked)
    assert unpacked.getvalue() == original.read_bytes()


def test_progress_is_reported_up_to_the_total(original: Path, tmp_path: Path):
    seen: list[int] = []
    compress_file(original, tmp_path / "p.dcz", chunk_size=CHUNK, progress=seen.append)
    assert seen == sorted(seen)
    assert seen[-1] == original.stat().st_size
    seen.clear()
    decompress_file(tmp_path / "p.dcz", tmp_path / "p.txt", progress=seen.append)
    assert seen and seen[-1] == original.stat().st_size


def test_progress_totals_are_the_input_size_and_the_declared_original_size(original, container):
    assert source_size(original) == original.stat().st_size
    assert original_size(container) == original.stat().st_size
    assert source_size(io.BytesIO(b"abc")) is None
    assert original_size(original) is None  # not a container: decompression will say why


def test_existing_output_is_refused_and_left_untouched(original: Path, tmp_path: Path):
    dst = tmp_path / "taken.dcz"
    dst.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        compress_file(original, dst, chunk_size=CHUNK)
    assert dst.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


def test_overwrite_replaces_existing_output(original: Path, tmp_path: Path):
    dst = tmp_path / "taken.dcz"
    dst.write_bytes(b"old")
    compress_file(original, dst, chunk_size=CHUNK, overwrite=True)
    decompress_file(dst, tmp_path / "back.txt")
    assert (tmp_path / "back.txt").read_bytes() == original.read_bytes()


def test_output_gets_the_permissions_a_plain_open_would_give(original: Path, tmp_path: Path):
    old_mask = os.umask(0o027)
    try:
        compress_file(original, tmp_path / "perm.dcz", chunk_size=CHUNK)
    finally:
        os.umask(old_mask)
    assert (tmp_path / "perm.dcz").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failure_mid_write_removes_the_temp_file_and_creates_no_output(original, tmp_path, error):
    dst = tmp_path / "never.dcz"
    with pytest.raises(type(error)):
        compress_file(original, dst, chunk_size=CHUNK, engine=ExplodingEngine(error))
    assert not dst.exists()
    assert leftovers(tmp_path) == []


def test_failure_mid_write_leaves_an_existing_output_untouched(container: Path, tmp_path: Path):
    dst = tmp_path / "keep.txt"
    dst.write_bytes(b"precious")
    with pytest.raises(KeyboardInterrupt):
        decompress_file(container, dst, overwrite=True, engine=ExplodingEngine(KeyboardInterrupt()))
    assert dst.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


def test_corrupt_container_raises_format_error_and_writes_nothing(container: Path, tmp_path: Path):
    corrupt(container, HEADER_SIZE + FRAME_HEADER_SIZE + 100)
    dst = tmp_path / "out.txt"
    with pytest.raises(FormatError):
        decompress_file(container, dst)
    assert not dst.exists()
    assert leftovers(tmp_path) == []


def test_missing_input_is_an_input_error(tmp_path: Path):
    with pytest.raises(InputError, match="not found"):
        compress_file(tmp_path / "nope", tmp_path / "nope.dcz", chunk_size=CHUNK)
    assert not (tmp_path / "nope.dcz").exists()


def test_directory_input_is_an_input_error(tmp_path: Path):
    with pytest.raises(InputError, match="directory"):
        compress_file(tmp_path, tmp_path / "dir.dcz", chunk_size=CHUNK)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_input_is_an_input_error(original: Path, tmp_path: Path):
    original.chmod(0)
    with pytest.raises(InputError, match="cannot read"):
        compress_file(original, tmp_path / "x.dcz", chunk_size=CHUNK)


def test_output_in_a_missing_directory_is_an_output_error(original: Path, tmp_path: Path):
    with pytest.raises(OutputError, match="does not exist"):
        compress_file(original, tmp_path / "no" / "such" / "x.dcz", chunk_size=CHUNK)


def test_output_that_is_the_input_is_refused(original: Path):
    before = original.read_bytes()
    with pytest.raises(OutputError, match="same file"):
        compress_file(original, original, chunk_size=CHUNK, overwrite=True)
    assert original.read_bytes() == before


def test_file_info_describes_the_container(container: Path, original: Path):
    info = file_info(container)
    assert info["file"] == str(container)
    assert info["chunks"] == 4
    assert info["original_size"] == original.stat().st_size
    assert info["compressed_size"] == container.stat().st_size


def test_verify_passes_an_intact_file_and_fails_a_corrupted_one(container: Path):
    assert verify_file(container)["chunks"] == 4
    corrupt(container, HEADER_SIZE + FRAME_HEADER_SIZE + 5)
    with pytest.raises(FormatError):
        verify_file(container)


def test_the_engine_is_chosen_in_one_place():
    assert isinstance(compression.DEFAULT_ENGINE, compression.StreamEngine)
