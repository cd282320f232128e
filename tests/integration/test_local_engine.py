"""The in-process engine against the Beam pipeline: the same container bytes for the same file."""
from __future__ import annotations

import io

import numpy as np
import pytest

import codec
from codec.container import read_seek_table
from pipelines.batch import run_job
from services.compression import LocalEngine, compress_file

CHUNK_SIZE = 4 * 1024
IN_PROCESS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def table_sensitive_bytes(size: int) -> bytes:
    """Bytes spread evenly over 128 values: the whole-file table (7 bits each) costs less to send
    than a 4 KiB chunk's own, slightly uneven optimum, so some chunks take it (checked below) and
    the comparison shows whether the local engine used the pipeline's table. (Zipf-like data no
    longer does since tables are optimal length-limited codes: a chunk's own table always wins.)"""
    return np.random.default_rng(1).integers(0, 128, size).astype(np.uint8).tobytes()


@pytest.mark.parametrize("size", [0, 1, 8 * CHUNK_SIZE + 5])
def test_local_engine_writes_the_pipelines_bytes_for_a_file_at_every_thread_count(tmp_path, size):
    data = table_sensitive_bytes(size)
    (tmp_path / "in.bin").write_bytes(data)
    stats = run_job(str(tmp_path / "in.bin"), str(tmp_path / "beam.dcz"), "compress",
                    chunk_size=CHUNK_SIZE, extra_args=IN_PROCESS)
    assert stats["files_written"] == 1
    beam = (tmp_path / "beam.dcz").read_bytes()
    for threads in (1, 2, 3, 8):
        local = tmp_path / f"local-{threads}.dcz"
        compress_file(tmp_path / "in.bin", local, chunk_size=CHUNK_SIZE, engine=LocalEngine(threads))
        assert local.read_bytes() == beam, threads
    if size > CHUNK_SIZE:  # the data is one where the whole-file table matters
        assert beam != codec.encode(data, CHUNK_SIZE)


def test_a_pipe_cannot_have_the_whole_file_table_but_keeps_chunks_and_checksums(tmp_path):
    data = table_sensitive_bytes(8 * CHUNK_SIZE + 5)
    (tmp_path / "in.bin").write_bytes(data)
    run_job(str(tmp_path / "in.bin"), str(tmp_path / "beam.dcz"), "compress",
            chunk_size=CHUNK_SIZE, extra_args=IN_PROCESS)
    beam = (tmp_path / "beam.dcz").read_bytes()
    piped = io.BytesIO()
    compress_file(io.BytesIO(data), piped, chunk_size=CHUNK_SIZE, engine=LocalEngine(2))
    piped = piped.getvalue()
    # What differs is only which table some chunks use (docs/format.md): the same chunks, the
    # same original sizes and CRC32Cs, the same decoded bytes, and every thread count agrees.
    assert piped != beam
    assert piped == codec.encode(data, CHUNK_SIZE)
    beam_entries = read_seek_table(io.BytesIO(beam), len(beam))
    piped_entries = read_seek_table(io.BytesIO(piped), len(piped))
    assert [(e.original_size, e.crc) for e in piped_entries] == [(e.original_size, e.crc) for e in beam_entries]
    assert codec.decode(piped) == codec.decode(beam) == data
