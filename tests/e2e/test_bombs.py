"""Decompression bombs: a few bytes that declare gigabytes are refused before any work, decoding
memory stays under a stated bound, and a write error stops every worker."""
from __future__ import annotations

import errno
import os
import shutil
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from samples import run_container  # tests/ is on sys.path (conftest dir)
from test_cli import dcas, error_line

import codec
from adapters import storage
from codec import container
from pipelines import batch
from services import compression

GIB = 2**30
ENGINES = {"in-process": [], "pipeline": ["--workers", "1"]}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_container_declaring_more_than_the_free_space_writes_nothing(tmp_path: Path, engine):
    free = shutil.disk_usage(tmp_path).free
    chunks = free // GIB + 2  # a chunk table of some KB that declares more than the disk holds
    (tmp_path / "bomb.dcz").write_bytes(run_container([GIB] * chunks, crc=0))
    started = time.monotonic()
    result = dcas("decompress", "bomb.dcz", "-o", "out", "--max-chunk-size", "1G", *ENGINES[engine],
                  cwd=tmp_path)
    assert result.returncode == 1
    assert "free" in error_line(result)
    assert sorted(os.listdir(tmp_path)) == ["bomb.dcz"]
    assert time.monotonic() - started < 60


def test_the_pipeline_fails_a_container_that_does_not_fit_before_decoding_it(tmp_path: Path):
    free = shutil.disk_usage(tmp_path).free
    (tmp_path / "bomb.dcz").write_bytes(run_container([GIB] * (free // GIB + 2), crc=0))
    stats = batch.run_job(str(tmp_path / "bomb.dcz"), str(tmp_path / "out"), mode="decompress", workers=1)
    assert stats["files_written"] == 0
    assert "No space" in stats["failures"][0][1] or "free" in stats["failures"][0][1]
    assert not (tmp_path / "out").exists()


def test_verify_takes_max_size(tmp_path: Path):
    (tmp_path / "x.dcz").write_bytes(run_container([4096] * 4))
    result = dcas("verify", "x.dcz", "--max-size", "10K", cwd=tmp_path)
    assert result.returncode == 1
    assert "above the limit of 10240" in error_line(result)
    assert dcas("verify", "x.dcz", "--max-size", "16K", "-q", cwd=tmp_path).returncode == 0


def test_verify_refuses_a_chunk_over_the_decoding_bound_by_default_without_allocating_it(tmp_path: Path):
    (tmp_path / "x.dcz").write_bytes(run_container([GIB], crc=0))  # 97 bytes, one 1 GiB chunk
    tracemalloc.start()
    try:
        with pytest.raises(codec.FormatError, match="per chunk"):
            compression.verify_file(tmp_path / "x.dcz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


def test_a_legitimate_very_compressible_file_is_not_refused(tmp_path: Path):
    (tmp_path / "zeros.dcz").write_bytes(run_container([4 * 2**20] * 8))  # 32 MiB in a few hundred bytes
    result = dcas("decompress", "zeros.dcz", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "zeros").stat().st_size == 32 * 2**20


def test_a_write_error_stops_every_decoder_of_the_pipeline(tmp_path: Path, monkeypatch):
    chunks = 200
    (tmp_path / "x.dcz").write_bytes(run_container([4096] * chunks, fill=7))
    decoded = []
    real_decode = container.decode_frame_into

    def counting_decode(*args, **kwargs):
        decoded.append(1)
        return real_decode(*args, **kwargs)

    def disk_full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(container, "decode_frame_into", counting_decode)
    monkeypatch.setattr(storage, "pwrite_all", disk_full)
    stats = batch.run_job(str(tmp_path / "x.dcz"), str(tmp_path / "out"), mode="decompress", workers=2,
                          extra_args=["--direct_running_mode=multi_threading"])
    assert stats["files_written"] == 0
    assert "No space left on device" in stats["failures"][0][1]
    assert len(decoded) <= 10, f"{len(decoded)} of {chunks} chunks decoded after the disk was full"
    assert not (tmp_path / "out").exists()


BOUND = 4 * 2**20  # the decoding bound these property runs set (max_chunk_size)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=16, max_value=3 * BOUND), min_size=1, max_size=6), st.integers(0, 255))
def test_decoding_memory_stays_under_the_bound_whatever_sizes_a_container_declares(sizes, fill):
    blob = run_container(sizes, fill=fill, crc=None if max(sizes) <= BOUND else 0)
    codec.decode(codec.encode(b"warm"))  # modules imported and kernels loaded outside the measurement
    tracemalloc.start()
    try:
        try:
            codec.verify(blob, len(blob), max_chunk_size=BOUND)
            refused = False
        except codec.FormatError:
            refused = True
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused == (max(sizes) > BOUND)
    # One chunk and its copy as bytes, plus the frame and small change: never the declared total.
    assert peak <= 2 * BOUND + 2**20
