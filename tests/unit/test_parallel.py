"""Tests for codec/parallel.py: the same bytes for every thread count, bounded memory, prompt failures."""
from __future__ import annotations

import contextlib
import errno
import io
import os
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from samples import sample_text  # tests/ is on sys.path (conftest dir)

import codec
from codec import FormatError, _fileio, parallel
from codec.chunk import shared_table_wins
from codec.container import FRAME_HEADER_SIZE, frame_offsets, read_seek_table

CHUNK = 16 * 1024
THREADS = (1, 2, 3, 8)


class Pipe(io.RawIOBase):
    """A non-seekable reader with short reads, like a pipe."""

    def __init__(self, data: bytes, step: int = 5000):
        self.data, self.step = memoryview(data), step

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.step, len(self.data))
        buffer[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


def mixed_data(size: int) -> bytes:
    """Text with a binary stretch in the middle, so chunks pick different tables and codecs."""
    rng = np.random.default_rng(7)
    third = size // 3
    return sample_text(third) + rng.integers(0, 256, third, dtype=np.uint8).tobytes() + \
        sample_text(size - 2 * third)


@pytest.fixture
def data() -> bytes:
    return mixed_data(10 * CHUNK + 777)


@pytest.fixture
def data_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path


def compress_file(path: Path, out: Path, threads: int, table=None) -> bytes:
    with open(path, "rb") as src, open(out, "wb") as dst:
        codec.compress_stream(src, dst, chunk_size=CHUNK, threads=threads, shared_histogram=table)
    return out.read_bytes()


def threads_running() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("dcz")]


def disk_full_on_write(n: int, calls: list):
    """A stand-in for _fileio.pwrite_all that notes each write's offset in `calls` and fails the
    n-th with ENOSPC (take it before patching: it calls the real one)."""
    real_pwrite_all = _fileio.pwrite_all

    def pwrite_all(fd, buffer, offset):
        calls.append(offset)
        if len(calls) == n:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_pwrite_all(fd, buffer, offset)

    return pwrite_all


def test_compressed_bytes_are_the_same_for_every_thread_count_from_files_and_pipes(data, data_file, tmp_path):
    serial = codec.encode(data, chunk_size=CHUNK)
    table = codec.histogram(data)
    with_table = codec.encode(data, chunk_size=CHUNK, shared_histogram=table)
    for threads in THREADS:
        out = io.BytesIO()
        codec.compress_stream(Pipe(data), out, chunk_size=CHUNK, threads=threads)
        assert out.getvalue() == serial, threads
        assert compress_file(data_file, tmp_path / "out.dcz", threads) == serial, threads
        assert compress_file(data_file, tmp_path / "out.dcz", threads, table) == with_table, threads
    assert codec.decode(serial) == codec.decode(with_table) == data


def test_direct_writes_through_a_small_staging_buffer_give_the_same_file(data, data_file, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(parallel._Appender, "STAGE_SIZE", 8192)  # many stages, a partial last one
    for threads in (1, 3):
        with open(tmp_path / "prefix.dcz", "wb") as dst:
            dst.write(b"x" * 4096)  # an aligned start: direct writes begin after it
            with open(data_file, "rb") as src:
                codec.compress_stream(src, dst, chunk_size=CHUNK, threads=threads)
            assert dst.tell() == (tmp_path / "prefix.dcz").stat().st_size
        assert (tmp_path / "prefix.dcz").read_bytes() == b"x" * 4096 + codec.encode(data, chunk_size=CHUNK)


def direct_fd_or_skip(path: Path) -> int:
    path.touch()
    fd = _fileio.open_direct(str(path))
    if fd is None:
        pytest.skip("no direct I/O on this filesystem")
    return fd


def test_a_full_stage_is_written_by_its_own_thread_while_the_next_one_fills(tmp_path, monkeypatch):
    direct_fd = direct_fd_or_skip(tmp_path / "out")
    first_write_may_end = threading.Event()
    writes = []
    real_pwrite_all = _fileio.pwrite_all

    def recording_pwrite_all(fd, buffer, offset):
        writes.append((threading.current_thread().name, fd == direct_fd, offset))
        if len(writes) == 1:
            assert first_write_may_end.wait(10)
        real_pwrite_all(fd, buffer, offset)

    monkeypatch.setattr(_fileio, "pwrite_all", recording_pwrite_all)
    data = np.random.default_rng(3).integers(0, 256, 3 * 8192 + 100, dtype=np.uint8).tobytes()
    with open(tmp_path / "out", "r+b") as f:
        stage = _fileio.DirectStage(f.fileno(), direct_fd, 0, 8192)
        try:
            stage.write(data[:8192 + 4096])  # the first stage goes out, and blocks there
            assert [name.startswith("dcz-write") for name, _, _ in writes] == [True]
            first_write_may_end.set()
            stage.write(data[8192 + 4096:])
            assert stage.finish() == len(data)
        finally:
            stage.close()
    assert (tmp_path / "out").read_bytes() == data
    assert [(direct, offset) for _, direct, offset in writes] == [(True, 0), (True, 8192), (True, 16384),
                                                                 (False, 24576)]
    assert writes[-1][0] == threading.current_thread().name  # the partial last stage, by the caller
    assert threads_running() == []


def test_a_stage_write_that_fails_in_its_thread_stops_compression_and_leaves_no_thread(data, data_file, tmp_path,
                                                                                      monkeypatch):
    os.close(direct_fd_or_skip(tmp_path / "probe"))
    monkeypatch.setattr(parallel._Appender, "STAGE_SIZE", 8192)
    calls = []
    monkeypatch.setattr(_fileio, "pwrite_all", disk_full_on_write(2, calls))
    for threads in (1, 3):
        calls.clear()
        with pytest.raises(OSError) as raised:
            compress_file(data_file, tmp_path / "out.dcz", threads)
        assert raised.value.errno == errno.ENOSPC
        assert len(calls) <= 3  # stopped at the next stage, not at the end of the input
        assert threads_running() == []


def test_an_output_opened_for_appending_gets_the_container_after_what_it_held(data, tmp_path):
    # `dcas ... -o - >> log`: positional writes on an O_APPEND file would land at its end anyway,
    # so the engine must not rely on them for either direction.
    blob = codec.encode(data, chunk_size=CHUNK)
    (tmp_path / "c.dcz").write_bytes(blob)
    for threads in (1, 3):
        (tmp_path / "log").write_bytes(b"before\n")
        with open(tmp_path / "log", "ab") as dst:
            codec.compress_stream(Pipe(data), dst, chunk_size=CHUNK, threads=threads)
        assert (tmp_path / "log").read_bytes() == b"before\n" + blob
        (tmp_path / "log").write_bytes(b"")
        with open(tmp_path / "c.dcz", "rb") as src, open(tmp_path / "log", "ab") as dst:
            codec.decompress_stream(src, dst, threads=threads)
        assert (tmp_path / "log").read_bytes() == data


def test_file_histogram_is_the_whole_file_histogram_and_leaves_the_position(data, data_file):
    for threads in (1, 3):
        with open(data_file, "rb") as f:
            f.seek(100)
            counts = codec.file_histogram(f, threads, chunk_size=CHUNK)
            assert f.tell() == 100
        assert np.array_equal(counts, codec.histogram(data[100:]))
    with pytest.raises(ValueError, match="pipe"):
        codec.file_histogram(Pipe(data))


def test_compressing_a_file_from_its_middle_codes_the_rest_and_moves_to_its_end(data, data_file):
    with open(data_file, "rb") as src:
        src.seek(CHUNK + 5)
        out = io.BytesIO()
        codec.compress_stream(src, out, chunk_size=CHUNK, threads=2)
        assert src.tell() == len(data)
    assert codec.decode(out.getvalue()) == data[CHUNK + 5:]


@pytest.mark.parametrize("threads", THREADS)
def test_decompression_in_place_in_order_and_from_pipes_gives_the_original(threads, data, data_file, tmp_path):
    blob = compress_file(data_file, tmp_path / "c.dcz", 1)
    seen: list[int] = []
    with open(tmp_path / "c.dcz", "rb") as src, open(tmp_path / "in-place", "wb") as dst:
        stats = codec.decompress_stream(src, dst, threads=threads, progress=seen.append)
        assert dst.tell() == len(data)
    assert (tmp_path / "in-place").read_bytes() == data
    assert stats == {"original_size": len(data), "compressed_size": len(blob), "chunks": 11}
    assert sorted(seen) == seen and seen[-1] == len(data) and len(seen) == 11
    out = io.BytesIO()
    assert codec.decompress_stream(Pipe(blob), out, threads=threads) == stats
    assert out.getvalue() == data


def test_in_place_decompression_writes_aligned_chunks_with_direct_io(tmp_path, monkeypatch):
    chunk = 64 * 1024  # a multiple of the direct-I/O alignment, so every chunk but the last qualifies
    data = mixed_data(5 * chunk + 100)
    blob = codec.encode(data, chunk_size=chunk)
    (tmp_path / "c.dcz").write_bytes(blob)
    direct_writes = []
    real_pwrite_all = _fileio.pwrite_all

    def recording_pwrite_all(fd, buffer, offset):
        direct_writes.append(fd != dst_fd)
        real_pwrite_all(fd, buffer, offset)

    monkeypatch.setattr(_fileio, "pwrite_all", recording_pwrite_all)
    with open(tmp_path / "c.dcz", "rb") as src, open(tmp_path / "out", "wb") as dst:
        dst_fd = dst.fileno()
        codec.decompress_stream(src, dst, threads=2)
    assert (tmp_path / "out").read_bytes() == data
    probe = _fileio.open_direct(str(tmp_path / "out"))
    if probe is None:
        pytest.skip("no direct I/O on this filesystem")
    os.close(probe)
    assert sorted(direct_writes) == [False] + [True] * 5


@pytest.mark.parametrize("threads", (1, 2))
def test_in_place_decompression_decodes_further_chunks_while_a_write_waits_for_the_disk(threads, data, tmp_path,
                                                                                       monkeypatch):
    (tmp_path / "c.dcz").write_bytes(codec.encode(data, chunk_size=CHUNK))
    started: list[int] = []
    later_chunk_started = threading.Event()
    writers = set()
    real_pwrite_all = _fileio.pwrite_all

    def note_chunk(index):
        started.append(index)
        if index == threads + 1:
            later_chunk_started.set()

    def slow_first_write(fd, buffer, offset):
        writers.add(threading.current_thread().name)
        if offset == 0:  # the disk is busy: the workers must go on decoding meanwhile
            assert later_chunk_started.wait(10)
        real_pwrite_all(fd, buffer, offset)

    monkeypatch.setattr(parallel, "_before_chunk", note_chunk)
    monkeypatch.setattr(_fileio, "pwrite_all", slow_first_write)
    with open(tmp_path / "c.dcz", "rb") as src, open(tmp_path / "out", "wb") as dst:
        codec.decompress_stream(src, dst, threads=threads)
    assert (tmp_path / "out").read_bytes() == data
    assert all(name.startswith("dcz-write") for name in writers)
    assert threads_running() == []


def test_memory_stays_near_threads_plus_two_chunks_whatever_the_input_size():
    chunk = 64 * 1024
    data = mixed_data(64 * chunk)
    blob = codec.encode(data, chunk_size=chunk)
    codec.decode(blob)  # compiled kernels loaded outside the measurement
    for threads in (1, 4):
        for run in (
                lambda: codec.compress_stream(Pipe(data, 10**9), io.BytesIO(), chunk_size=chunk, threads=threads),
                lambda: codec.decompress_stream(Pipe(blob, 10**9), _Sink(), threads=threads)):
            tracemalloc.start()
            try:
                run()
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            # The compressed output is in memory too (a BytesIO) for compression: count it apart.
            assert peak < 6 * (threads + 2) * chunk + len(blob), (threads, peak)


class _Sink(io.RawIOBase):
    def writable(self):
        return True

    def write(self, b):
        return len(b)


def corrupt_chunk(blob: bytes, index: int) -> bytes:
    entries = read_seek_table(io.BytesIO(blob), len(blob))
    position = frame_offsets(entries)[index] + FRAME_HEADER_SIZE + 7
    return blob[:position] + bytes([blob[position] ^ 0x55]) + blob[position + 1:]


@pytest.mark.parametrize("threads", (1, 3))
def test_a_corrupt_frame_in_the_middle_fails_every_reader_naming_the_chunk(threads, data, tmp_path):
    bad = corrupt_chunk(codec.encode(data, chunk_size=CHUNK), 5)
    (tmp_path / "bad.dcz").write_bytes(bad)
    with pytest.raises(FormatError, match="chunk 5 "):
        with open(tmp_path / "bad.dcz", "rb") as src, open(tmp_path / "out", "wb") as dst:
            codec.decompress_stream(src, dst, threads=threads)
    out = io.BytesIO()
    with pytest.raises(FormatError, match="chunk 5 "):
        codec.decompress_stream(Pipe(bad), out, threads=threads)
    assert out.getvalue() == data[:5 * CHUNK]  # in order: the good chunks before it, nothing after
    assert threads_running() == []


class WorkerBroke(Exception):
    pass


@pytest.mark.parametrize("threads", (2, 8))
def test_an_error_in_one_worker_stops_the_others_and_reaches_the_caller(threads, data, data_file, tmp_path,
                                                                        monkeypatch):
    started: list[int] = []

    def break_chunk_three(index: int) -> None:
        started.append(index)
        if index == 3:
            raise WorkerBroke("chunk 3")

    blob = codec.encode(data, chunk_size=CHUNK)
    (tmp_path / "c.dcz").write_bytes(blob)
    monkeypatch.setattr(parallel, "_before_chunk", break_chunk_three)
    with pytest.raises(WorkerBroke):
        compress_file(data_file, tmp_path / "out.dcz", threads)
    assert threads_running() == []
    assert max(started) <= 3 + parallel.window(threads)  # no chunk far past the failure was started
    for source in (lambda: open(tmp_path / "c.dcz", "rb"), lambda: Pipe(blob)):
        started.clear()
        with pytest.raises(WorkerBroke):
            with source() as src, open(tmp_path / "out", "wb") as dst:
                codec.decompress_stream(src, dst, threads=threads)
        assert threads_running() == []
        assert max(started) <= 3 + parallel.window(threads)


def test_a_full_disk_in_an_in_place_write_stops_decompression(data, tmp_path, monkeypatch):
    (tmp_path / "c.dcz").write_bytes(codec.encode(data, chunk_size=CHUNK))
    monkeypatch.setattr(_fileio, "pwrite_all", disk_full_on_write(3, []))
    with pytest.raises(OSError) as raised:
        with open(tmp_path / "c.dcz", "rb") as src, open(tmp_path / "out", "wb") as dst:
            codec.decompress_stream(src, dst, threads=3)
    assert raised.value.errno == errno.ENOSPC
    assert threads_running() == []


def test_a_full_disk_while_writing_frames_stops_compression(data):
    class FullDisk(io.RawIOBase):
        written = 0

        def writable(self):
            return True

        def write(self, b):
            if self.written > 2 * CHUNK:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(b)
            return len(b)

    with pytest.raises(OSError, match="No space"):
        codec.compress_stream(Pipe(data), FullDisk(), chunk_size=CHUNK, threads=4)
    assert threads_running() == []


@pytest.mark.parametrize("source", ("file", "pipe"))
def test_a_slow_first_chunk_leaves_the_other_worker_chunks_to_code(source, data, data_file, monkeypatch):
    # On a busy machine the oldest chunk's thread may be descheduled for a while: the other worker
    # must find more chunks queued than the one it is coding, not sit idle until the oldest is done.
    threads = 2
    later_started = threading.Event()

    def hold_chunk_zero(index: int) -> None:
        if index == 0:
            assert later_started.wait(10), "no later chunk started while chunk 0 was held"
        elif index == 3:
            later_started.set()

    monkeypatch.setattr(parallel, "_before_chunk", hold_chunk_zero)
    out = io.BytesIO()
    with (open(data_file, "rb") if source == "file" else Pipe(data)) as src:
        codec.compress_stream(src, out, chunk_size=CHUNK, threads=threads)
    assert codec.decode(out.getvalue()) == data


def test_results_finished_out_of_order_on_many_threads_are_written_once_each_in_order():
    written: list[int] = []
    in_order = parallel._InOrder(written.append)
    order = list(range(400))
    np.random.default_rng(3).shuffle(order)
    workers = [threading.Thread(target=lambda part=order[k::4]: [in_order.put(i, i) for i in part])
               for k in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert written == list(range(400))


def test_after_a_failed_write_nothing_more_is_written():
    written: list[int] = []

    def write(item: int) -> None:
        if item == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(item)

    in_order = parallel._InOrder(write)
    for index in (1, 0, 3):
        in_order.put(index, index)
    with pytest.raises(OSError):
        in_order.put(2, 2)
    in_order.put(4, 4)
    assert written == [0, 1]


def test_compressing_from_a_pipe_widens_it_to_take_whole_chunks_in_few_reads(data):
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_GETPIPE_SZ"):
        pytest.skip("pipe sizes are a Linux call")
    read_end, write_end = os.pipe()

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), open(write_end, "wb") as f:
            f.write(data)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        with open(read_end, "rb", closefd=False) as src:
            out = io.BytesIO()
            codec.compress_stream(src, out, chunk_size=CHUNK, threads=2)
        assert fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ) == _fileio.PIPE_SIZE
    finally:
        os.close(read_end)  # a feeder still writing gets EPIPE rather than blocking the join
        feeder.join()
    assert codec.decode(out.getvalue()) == data


def two_pass_reference(data: bytes, threads: int) -> bytes:
    """What the pipeline writes: the whole-file histogram first, then every chunk coded with it."""
    out = io.BytesIO()
    codec.compress_stream(io.BytesIO(data), out, chunk_size=CHUNK, threads=threads,
                          shared_histogram=codec.histogram(data))
    return out.getvalue()


@pytest.mark.parametrize("threads", (1, 3))
def test_a_file_no_chunk_of_which_takes_the_whole_file_table_is_read_once(threads, data, data_file, tmp_path,
                                                                       monkeypatch):
    table = codec.histogram(data)
    assert not any(shared_table_wins(codec.histogram(data[i:i + CHUNK]), table) for i in range(0, len(data), CHUNK))

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the file was counted in a pass of its own")

    monkeypatch.setattr(parallel, "file_histogram", no_second_pass)
    with open(data_file, "rb") as src, open(tmp_path / "out.dcz", "wb") as dst:
        stats = codec.compress_with_file_table(src, dst, chunk_size=CHUNK, threads=threads)
    assert (tmp_path / "out.dcz").read_bytes() == two_pass_reference(data, threads)
    assert stats["frequencies"].tolist() == table.tolist() and stats["chunks"] == 11


@pytest.mark.parametrize("threads, before", ((1, b"kept before"), (3, b"kept before"), (3, b"")))
def test_when_a_chunk_takes_the_whole_file_table_the_output_is_rewound_and_coded_again(threads, before, tmp_path,
                                                                                      monkeypatch):
    # With nothing before it, the output starts aligned and is written with direct I/O where it can be.
    data = sample_text(13 * CHUNK - 100)  # text in small chunks: several take the file's table
    table = codec.histogram(data)
    assert any(shared_table_wins(codec.histogram(data[i:i + CHUNK]), table) for i in range(0, len(data), CHUNK))
    expected = before + two_pass_reference(data, threads)
    tables_used = []
    real_compress_stream = parallel._compress_stream

    def spy(src, dst, chunk_size, threads, progress, shared_histogram, counts=None):
        tables_used.append(shared_histogram is not None)
        return real_compress_stream(src, dst, chunk_size, threads, progress, shared_histogram, counts)

    monkeypatch.setattr(parallel, "_compress_stream", spy)
    (tmp_path / "in.txt").write_bytes(data)
    with open(tmp_path / "in.txt", "rb") as src, open(tmp_path / "out.dcz", "wb") as dst:
        dst.write(before)
        stats = codec.compress_with_file_table(src, dst, chunk_size=CHUNK, threads=threads)
        assert dst.tell() == len(before) + stats["compressed_size"]
    assert (tmp_path / "out.dcz").read_bytes() == expected
    assert stats["frequencies"].tolist() == table.tolist()
    assert tables_used == [False, True]  # one pass without the table, then one with it


def test_an_output_that_cannot_be_rewound_gets_the_file_counted_first(data, data_file):
    out = io.BytesIO()
    with open(data_file, "rb") as src:
        stats = codec.compress_with_file_table(src, out, chunk_size=CHUNK, threads=2)
    assert out.getvalue() == two_pass_reference(data, 2)
    assert stats["frequencies"].tolist() == codec.histogram(data).tolist()


def test_thread_count_must_be_positive(data):
    with pytest.raises(ValueError, match="threads"):
        codec.compress_stream(io.BytesIO(data), io.BytesIO(), threads=0)


def test_thread_buffers_give_each_thread_one_buffer_that_it_reuses():
    buffers = _fileio.ThreadBuffers()
    first = buffers.get(1000)
    assert first.shape == (1000,) and first.dtype == np.uint8
    assert np.shares_memory(buffers.get(600), first)  # smaller: the same memory again
    other = []
    thread = threading.Thread(target=lambda: other.append(buffers.get(1000)))
    thread.start()
    thread.join()
    assert not np.shares_memory(other[0], first)
    assert buffers.get(2000).shape == (2000,)  # larger: a new buffer, kept from now on


def test_thread_buffers_do_not_keep_a_buffer_above_their_limit():
    buffers = _fileio.ThreadBuffers(keep_up_to=1000)
    kept = buffers.get(1000)
    large = buffers.get(1001)
    assert large.shape == (1001,) and not np.shares_memory(large, kept)
    assert not np.shares_memory(buffers.get(1001), large)  # made again each time
    assert np.shares_memory(buffers.get(10), kept)
