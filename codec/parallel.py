"""The in-process engine: N threads run the nogil kernels over the chunks of one file or pipe."""
from __future__ import annotations

import collections
import io
import os
import queue
import stat
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import BinaryIO, Callable

import numpy as np

from codec import _fileio
from codec.container import (
    DEFAULT_CHUNK_SIZE, FOOTER_SIZE, FRAME_HEADER_SIZE, FRAME_MAGIC, HEADER_SIZE, MAX_CHUNK_SIZE,
    SEEK_ENTRY_SIZE, TABLE_MAGIC, ChunkEntry, decode_frame_into, decode_payload, encode_frame_parts,
    frame_offsets, header_bytes, original_offsets, parse_frame_header, parse_header, parse_seek_table,
    read_exactly, read_seek_table, read_up_to, seek_table_bytes, trailer_size,
)
from codec.errors import FormatError
from codec.chunk import shared_table_wins
from codec.huffman import histogram

__all__ = ["default_threads", "compress_stream", "compress_with_file_table", "decompress_stream",
           "file_histogram"]

Progress = Callable[[int], None]


def default_threads() -> int:
    """One thread per core this process may run on."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# Running tasks: a thread pool, or inline for one thread


def window(threads: int) -> int:
    """Chunks in flight at most (queued, being coded, or coded and waiting for their turn to be
    written): one per worker and as many again queued, so that a worker finishing a chunk finds
    the next one ready even while the oldest chunk is still running (a slower chunk, or its thread
    descheduled on a busy machine). With one spare task, py-spy showed both workers idle ~30% of a
    1 GB compress at load average 6. Inline (one thread), one at a time."""
    return 1 if threads == 1 else 2 * threads


class _InOrder:
    """Hands results to `write` in index order, from whichever worker finishes the one that is due.

    The calling thread used to write every chunk itself, woken once per chunk; on a loaded machine
    that wake-up and the write after it stood between the workers and their next chunks. Here the
    worker that finishes chunk k writes k and every later chunk already done, and a worker whose
    chunk is not due yet leaves it and takes its next task (the window bounds how many wait).
    `write` is called under a lock, one chunk at a time, in order; after a failed write, none."""

    def __init__(self, write: Callable[[object], None]):
        self._write = write
        self._ready: dict[int, object] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._broken = False

    def run(self, fn: Callable, index: int, *args) -> None:
        """Runs `fn(index, *args)` (in a worker) and puts its result in line."""
        self.put(index, fn(index, *args))

    def put(self, index: int, result) -> None:
        self._ready[index] = result
        # The lock holder looks again after releasing it: a result left while it wrote is never stranded.
        while self._next in self._ready and not self._broken:
            if not self._lock.acquire(blocking=False):
                return  # the holder writes this one too
            try:
                while self._next in self._ready and not self._broken:
                    item = self._ready.pop(self._next)
                    try:
                        self._write(item)
                    except BaseException:
                        self._broken = True
                        raise
                    self._next += 1
            finally:
                self._lock.release()


class _Inline:
    """The executor for threads=1: runs each task as it is submitted, in the calling thread."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to whoever asks for the result
            future.set_exception(e)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


class _Tasks:
    """A bounded window of tasks in flight over `threads` workers.

    Leaving the `with` block, normally or by any exception (a worker's, a FormatError, a full disk,
    KeyboardInterrupt), cancels the tasks not started and waits for the running ones, each of which
    finishes the one chunk it holds: no thread outlives the call, and the caller's cleanup (the
    temp output's removal) runs after the last write."""

    def __init__(self, threads: int):
        if threads < 1:
            raise ValueError(f"threads must be 1 or more, got {threads}")
        self.threads = threads
        self.window = window(threads)
        self._pool = _Inline() if threads == 1 else ThreadPoolExecutor(threads, thread_name_prefix="dcz")
        self._futures: set[Future] = set()

    def submit(self, fn, *args) -> Future:
        future = self._pool.submit(fn, *args)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        return future

    def __enter__(self) -> "_Tasks":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for future in list(self._futures):
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


# Test hook: called with the chunk index before a worker codes a chunk (tests raise from it).
_before_chunk: Callable[[int], None] | None = None


def _hook(index: int) -> None:
    if _before_chunk is not None:
        _before_chunk(index)


# ---------------------------------------------------------------------------------------------
# Compression


def _regular_fd(f) -> int | None:
    """The fd of `f` if it is an open regular file (positional reads work), else None."""
    try:
        fd = f.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _writable_at_end(f) -> tuple[int, int] | None:
    """(fd, offset) when `f` is a regular file that positional writes can extend from `offset`,
    its current position and end (stdout redirected with `>` qualifies; `>>` does not: pwrite on
    an O_APPEND fd appends wherever it is told to write)."""
    fd = _regular_fd(f)
    if fd is None:
        return None
    try:
        import fcntl
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:
            return None
        f.flush()
        offset = f.tell()
    except (ImportError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return (fd, offset) if os.fstat(fd).st_size == offset else None


class _Appender:
    """Appends frames to `dst`. A regular file that allows direct I/O gets them through an aligned
    staging buffer written with O_DIRECT, bypassing the page cache (filling it costs more CPU than
    the coding on the benchmark machine, see codec._fileio.open_direct; _fileio.DirectStage).
    Anything else (a pipe, a BytesIO) gets plain writes."""

    STAGE_SIZE = 8 * 2**20

    def __init__(self, dst: BinaryIO):
        self.dst = dst
        self.stage = None
        at_end = _writable_at_end(dst)
        if at_end is not None and at_end[1] % _fileio.DIRECT_IO_ALIGNMENT == 0:
            fd, position = at_end
            direct_fd = _fileio.reopen_direct(fd)
            if direct_fd is not None:
                self.stage = _fileio.DirectStage(fd, direct_fd, position, self.STAGE_SIZE)

    def write(self, data) -> None:
        if self.stage is None:
            self.dst.write(data)
        else:
            self.stage.write(data)

    def finish(self) -> None:
        """Writes what is staged and leaves `dst` positioned at its end; call once, on success."""
        if self.stage is not None:
            self.dst.seek(self.stage.finish())

    def close(self) -> None:
        if self.stage is not None:
            self.stage.close()


def _encode(index: int, data, shared_histogram, counts=None):
    _hook(index)
    # A file that grew since its chunks were counted has more of them: compress_with_file_table
    # notices by the number of chunks.
    row = counts[index] if counts is not None and index < counts.shape[0] else None
    header, payload, entry = encode_frame_parts(data, shared_histogram, row)
    if payload is data:  # stored: the payload is the input buffer, which the reader reuses
        payload = bytes(data)
    return header, payload, entry


def _read_and_encode(index: int, fd: int, offset: int, length: int, shared_histogram, buffers, counts):
    data = buffers.get(length)
    if _fileio.pread_into(fd, data, offset) != length:
        raise _input_changed()
    return _encode(index, data, shared_histogram, counts)


def _input_changed() -> OSError:
    return OSError("input file changed while it was read (it is shorter than when it was opened)")


def file_histogram(src: BinaryIO, threads: int = 1, chunk_size: int = DEFAULT_CHUNK_SIZE):
    """The byte histogram (uint64[256]) of a regular file from its current position to its end,
    counted by `threads` threads with positional reads; the position does not move.

    This is the whole-file table the Beam pipelines code with: given as `shared_histogram`, it
    makes `compress_stream` write the pipeline's bytes."""
    fd = _regular_fd(src)
    if fd is None:
        raise ValueError("file_histogram needs a regular file it can read twice (not a pipe)")
    start = src.tell()
    size = os.fstat(fd).st_size - start
    buffers = _fileio.ThreadBuffers()

    def count(offset: int, length: int):
        data = buffers.get(length)
        if _fileio.pread_into(fd, data, offset) != length:
            raise _input_changed()
        return histogram(data)

    total = np.zeros(256, dtype=np.uint64)
    with _Tasks(threads) as tasks:
        pending: collections.deque[Future] = collections.deque()
        for offset in range(start, start + size, chunk_size):
            pending.append(tasks.submit(count, offset, min(chunk_size, start + size - offset)))
            while len(pending) >= tasks.window:
                total += pending.popleft().result()
        while pending:
            total += pending.popleft().result()
    return total


def compress_stream(src: BinaryIO, dst: BinaryIO, chunk_size: int = DEFAULT_CHUNK_SIZE, *,
                    threads: int = 1, progress: Progress | None = None, shared_histogram=None) -> dict:
    """Reads `src` to its end and writes a container to `dst`, `threads` chunks coded at a time.

    Frames are written in order, so `dst` may be a pipe, and the bytes are the same for every
    `threads`. A regular file is read by the workers with positional reads (no reader thread);
    anything else (a pipe) by this thread, one chunk at a time. At most `window(threads)` chunks are
    in flight, so memory stays within a few chunks per thread whatever the input size.
    `progress(original_bytes_done)` is called from this thread as chunks are written (workers write
    them, in order: _InOrder).
    """
    return _compress_stream(src, dst, chunk_size, threads, progress, shared_histogram)


def _compress_stream(src: BinaryIO, dst: BinaryIO, chunk_size: int, threads: int, progress: Progress | None,
                     shared_histogram, counts: np.ndarray | None = None) -> dict:
    """compress_stream; with `counts` (uint32[chunks, 256], a regular `src` only) each chunk's byte
    histogram goes into its row."""
    header = header_bytes(chunk_size)
    _fileio.widen_pipe(dst)
    out = _Appender(dst)
    try:
        stats = _compress(src, out, header, chunk_size, threads, progress, shared_histogram, counts)
        out.finish()
    finally:
        out.close()
    return stats


def _compress(src: BinaryIO, out: _Appender, header: bytes, chunk_size: int, threads: int,
              progress: Progress | None, shared_histogram, counts: np.ndarray | None) -> dict:
    out.write(header)
    entries: list[ChunkEntry] = []
    done = [0, len(header)]  # original, compressed

    def write(frame) -> None:  # in a worker, in order (_InOrder)
        frame_header, payload, entry = frame
        out.write(frame_header)
        out.write(payload)
        entries.append(entry)
        done[0] += entry.original_size
        done[1] += entry.frame_size

    in_order = _InOrder(write)
    reported = 0

    def finish_oldest() -> None:
        nonlocal reported
        pending.popleft().result()  # re-raises a worker's error here, in the calling thread
        if progress is not None and done[0] != reported:
            reported = done[0]
            progress(reported)

    fd = _regular_fd(src)
    pending: collections.deque[Future] = collections.deque()
    with _Tasks(threads) as tasks:
        if fd is not None:
            start = src.tell()
            end = os.fstat(fd).st_size
            buffers = _fileio.ThreadBuffers()
            for index, offset in enumerate(range(start, end, chunk_size)):
                pending.append(tasks.submit(in_order.run, _read_and_encode, index, fd, offset,
                                            min(chunk_size, end - offset), shared_histogram, buffers, counts))
                while len(pending) >= tasks.window:
                    finish_oldest()
            src.seek(end)
        else:
            _fileio.widen_pipe(src)
            index = 0
            while True:
                chunk = read_up_to(src, chunk_size)
                if not chunk:
                    break
                pending.append(tasks.submit(in_order.run, _encode, index, chunk, shared_histogram))
                del chunk
                index += 1
                while len(pending) >= tasks.window:
                    finish_oldest()
        while pending:
            finish_oldest()
    trailer = seek_table_bytes(entries)
    out.write(trailer)
    return {"original_size": done[0], "compressed_size": done[1] + len(trailer), "chunks": len(entries)}


# Chunks whose byte counts compress_with_file_table keeps until the end, 1 KiB each (4 MiB for 16 GiB
# of 4 MiB chunks); an input with more chunks is counted in a pass of its own first.
MAX_CHECKED_CHUNKS = 4096


def compress_with_file_table(src: BinaryIO, dst: BinaryIO, chunk_size: int = DEFAULT_CHUNK_SIZE, *,
                             threads: int = 1, progress: Progress | None = None) -> dict:
    """compress_stream of a regular file with its whole-file byte histogram as the shared table,
    as the Beam pipelines code a file: the pipeline's bytes.
    Returns the stats with `"frequencies"`, that histogram (uint64[256]).

    The shared table changes only the chunks it beats their own table for, which on real data is
    almost none (none in the 1 GB benchmark input): so the chunks are coded without it, in one pass
    over `src`, keeping each chunk's byte counts (the encoder counts them anyway). Their sum is the
    file's histogram; if a chunk would have taken the shared table after all, `dst` is truncated
    back to where it stood and the file coded again with the table (`progress` then counts from 0
    again). Where `dst` cannot be rewound (a pipe), or the file has more than MAX_CHECKED_CHUNKS
    chunks, the file is counted first (file_histogram), a second read of every byte.
    """
    fd = _regular_fd(src)
    if fd is None:
        raise ValueError("compress_with_file_table needs a regular file (a pipe has no whole-file table)")
    start = src.tell()
    chunks = -(-max(os.fstat(fd).st_size - start, 0) // chunk_size)
    at_end = _writable_at_end(dst)
    if at_end is None or chunks > MAX_CHECKED_CHUNKS:
        table = file_histogram(src, threads, chunk_size)
        stats = _compress_stream(src, dst, chunk_size, threads, progress, table)
        return {**stats, "frequencies": table}
    counts = np.zeros((chunks, 256), dtype=np.uint32)
    stats = _compress_stream(src, dst, chunk_size, threads, progress, None, counts)
    if stats["chunks"] != chunks:
        raise OSError("input file changed while it was read (its size changed)")
    table = counts.sum(axis=0, dtype=np.uint64)
    if not any(shared_table_wins(row, table) for row in counts):
        return {**stats, "frequencies": table}
    dst.seek(at_end[1])
    dst.truncate()
    src.seek(start)
    stats = _compress_stream(src, dst, chunk_size, threads, progress, table)
    return {**stats, "frequencies": table}


# ---------------------------------------------------------------------------------------------
# Decompression


def decompress_stream(src: BinaryIO, dst: BinaryIO, max_size: int | None = None, *, threads: int = 1,
                      progress: Progress | None = None, max_chunk_size: int = MAX_CHUNK_SIZE) -> dict:
    """Reads a container from `src` and writes the original bytes to `dst`, `threads` chunks at a time.

    When `src` is a regular file at offset 0 and `dst` a regular file ending where it stands, the
    seek table is read first and each worker reads its frame, decodes it and writes it at its
    final offset (direct I/O where the filesystem and alignment allow): no in-order queue.
    Otherwise frames are read in order (`"DCZC"` markers, pipes work) and written in order, up to
    the `"DCZS"` seek table, which is then checked against the frames seen; nothing may follow the
    footer. Either way a seekable `src` has its seek table checked before anything is written, and
    a chunk's bytes are written only after its CRC32C matched; on a FormatError other chunks may
    already be in `dst`: callers that need an all-or-nothing output write to a temporary file and
    rename it on success (services does). `max_size` caps the total original size and
    `max_chunk_size` that of any chunk (decompression-bomb guard).
    """
    expected = seek_table_if_seekable(src, max_size, max_chunk_size)
    src_fd = _regular_fd(src)
    at_end = _writable_at_end(dst) if expected is not None and src_fd is not None else None
    if at_end is not None:
        return _decompress_in_place(src_fd, dst, *at_end, expected, threads, progress)
    _fileio.widen_pipe(src)
    _fileio.widen_pipe(dst)
    return _decompress_in_order(src, dst, expected, max_size, threads, progress, max_chunk_size)


def _damaged_chunk(index: int, offset: int, error: FormatError) -> FormatError:
    return FormatError(f"chunk {index} (frame at byte {offset}): {error}")


class _WriteBehind:
    """Decoded chunks written at their places by a thread of its own, from a pool of aligned buffers.

    A direct write waits for the disk; made by the worker that decoded the chunk, it left that core
    idle for a third of a 1 GB decompress. Workers take a buffer, decode into it and hand it over;
    the writer gives it back once written. `count` buffers at most are allocated (as needed), so a
    worker waits for one only while the disk is behind. After a failed write no other is made, and
    `raise_if_failed` (called by workers before each chunk, and by `finish`) raises its error."""

    def __init__(self, writer: _fileio.DirectWriter, count: int, size: int):
        self._writer, self._count, self._size = writer, count, size
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._allocated = 0
        self._lock = threading.Lock()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="dcz-write")
        self._error: BaseException | None = None
        self._stopping = False

    def buffer(self) -> np.ndarray:
        self.raise_if_failed()
        with self._lock:
            if self._free.empty() and self._allocated < self._count:
                self._allocated += 1
                return _fileio.aligned_buffer(self._size)
        return self._free.get()

    def give_back(self, buffer: np.ndarray) -> None:
        self._free.put(buffer)

    def write(self, buffer: np.ndarray, size: int, position: int) -> None:
        """Writes buffer[:size] at `position`, later; the buffer then goes back to the pool."""
        self._thread.submit(self._write, buffer, size, position)

    def _write(self, buffer: np.ndarray, size: int, position: int) -> None:
        try:
            if self._error is None and not self._stopping:
                self._writer.write(buffer[:size], position)
        except BaseException as e:  # noqa: BLE001 - raised in the workers and the caller
            self._error = e
        finally:
            self.give_back(buffer)

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def finish(self) -> None:
        """Waits for every write; raises the first that failed."""
        self._thread.shutdown(wait=True)
        self.raise_if_failed()

    def close(self) -> None:
        """Ends the writer thread; after a failure elsewhere, what is still queued is not written."""
        self._stopping = True
        self._thread.shutdown(wait=True)


def _decompress_in_place(src_fd: int, dst: BinaryIO, dst_fd: int, base: int, entries: list[ChunkEntry],
                         threads: int, progress: Progress | None) -> dict:
    offsets, positions = frame_offsets(entries), original_offsets(entries)
    total = sum(entry.original_size for entry in entries)
    largest = max((entry.original_size for entry in entries), default=0)
    frames = _fileio.ThreadBuffers()
    os.ftruncate(dst_fd, base + total)
    # Each chunk where it belongs: direct I/O when its place and size are aligned (all but the last).
    writer = _fileio.DirectWriter(dst_fd, _fileio.reopen_direct(dst_fd))
    # One buffer per worker and one being written: a worker waits for the disk only while it is
    # slower than all the workers together (one more buffer gained nothing measurable).
    behind = _WriteBehind(writer, threads + 1, largest)

    def decode(index: int) -> int:
        _hook(index)
        entry = entries[index]
        frame = frames.get(entry.frame_size)
        if _fileio.pread_into(src_fd, frame, offsets[index]) != entry.frame_size:
            raise FormatError(f"truncated container: chunk {index}'s frame runs past the end of the file")
        out = behind.buffer()
        try:
            size = decode_frame_into(frame, out, entry)
        except BaseException as e:
            behind.give_back(out)
            if isinstance(e, FormatError):
                raise _damaged_chunk(index, offsets[index], e) from e
            raise
        behind.write(out, size, base + positions[index])
        return size

    done = 0
    try:
        with _Tasks(threads) as tasks:
            running: set[Future] = set()
            for index in range(len(entries)):
                running.add(tasks.submit(decode, index))
                while len(running) >= tasks.window:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    done = _count_done(finished, done, progress)
            while running:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                done = _count_done(finished, done, progress)
        behind.finish()
    finally:
        behind.close()  # no write in flight after it, before the writer's fds close
        writer.close()
    if total:
        _fileio.start_writeback(dst_fd, base, total)
    dst.seek(base + total)
    return {"original_size": total, "compressed_size": os.fstat(src_fd).st_size, "chunks": len(entries)}


def _count_done(finished: set[Future], done: int, progress: Progress | None) -> int:
    for future in finished:
        done += future.result()  # re-raises a worker's error here, in the calling thread
        if progress is not None:
            progress(done)
    return done


def _decode(index: int, offset: int, header, payload) -> bytes:
    _hook(index)
    try:
        return decode_payload(header, payload)
    except FormatError as e:
        raise _damaged_chunk(index, offset, e) from e


def _decompress_in_order(src: BinaryIO, dst: BinaryIO, expected: list[ChunkEntry] | None,
                         max_size: int | None, threads: int, progress: Progress | None,
                         max_chunk_size: int) -> dict:
    parse_header(read_exactly(src, HEADER_SIZE, "file header"))
    seen: list[ChunkEntry] = []
    written = 0
    reported = 0

    def write(data: bytes) -> None:  # in a worker, in order (_InOrder)
        nonlocal written
        dst.write(data)
        written += len(data)

    def finish_oldest() -> None:
        nonlocal reported
        pending.popleft().result()  # re-raises a worker's error here, in the calling thread
        if progress is not None and written != reported:
            reported = written
            progress(reported)

    pending: collections.deque[Future] = collections.deque()
    with _Tasks(threads) as tasks:
        marker = _read_frames(src, expected, max_size, max_chunk_size, tasks, pending, _InOrder(write),
                              finish_oldest, seen)
        while pending:
            finish_oldest()
    original_size = sum(entry.original_size for entry in seen)
    compressed_size = HEADER_SIZE + sum(entry.frame_size for entry in seen) + trailer_size(len(seen))
    table = marker + read_exactly(src, SEEK_ENTRY_SIZE * len(seen), "seek table")
    footer = read_exactly(src, FOOTER_SIZE, "footer")
    entries = parse_seek_table(table, footer, compressed_size, max_size)
    if entries != seen:
        raise FormatError("the seek table does not describe the chunk frames in the container")
    if src.read(1):
        raise FormatError(f"unexpected bytes after the footer at byte {compressed_size}")
    return {"original_size": original_size, "compressed_size": compressed_size, "chunks": len(seen)}


def _read_frames(src: BinaryIO, expected: list[ChunkEntry] | None, max_size: int | None,
                 max_chunk_size: int, tasks: _Tasks, pending: collections.deque, in_order: _InOrder,
                 finish_oldest: Callable[[], None], seen: list[ChunkEntry]) -> bytes:
    """Reads frames up to the seek table's marker (returned) and hands each to a worker, which
    decodes it and has it written in order (`in_order`); `finish_oldest` waits for the oldest task
    in `pending` as the window fills. Appends each frame's entry to `seen`."""
    original_size = 0
    compressed_size = HEADER_SIZE
    while True:
        try:
            marker = read_exactly(src, 4, "chunk frame or seek table marker")
            if marker == TABLE_MAGIC:
                return marker
            if marker != FRAME_MAGIC:
                raise FormatError(f"expected a chunk frame ({FRAME_MAGIC!r}) or the seek table "
                                  f"({TABLE_MAGIC!r}) at byte {compressed_size}, found {marker!r}")
            if expected is not None and len(seen) == len(expected):
                raise FormatError(f"container has more chunk frames than its seek table's {len(expected)}")
            header = parse_frame_header(marker + read_exactly(src, FRAME_HEADER_SIZE - 4, "frame header"),
                                        expected[len(seen)] if expected is not None else None,
                                        max_chunk_size)
            if max_size is not None and original_size + header.original_size > max_size:
                raise FormatError(f"container holds more than the limit of {max_size} original bytes")
            payload = read_exactly(src, header.payload_size, "chunk payload")
        except FormatError:
            # As in a one-chunk-at-a-time reader, the good chunks before the fault reach `dst`.
            while pending:
                finish_oldest()
            raise
        pending.append(tasks.submit(in_order.run, _decode, len(seen), compressed_size, header, payload))
        del payload
        seen.append(ChunkEntry(FRAME_HEADER_SIZE + header.payload_size, header.original_size, header.crc))
        original_size += header.original_size
        compressed_size += FRAME_HEADER_SIZE + header.payload_size
        while len(pending) >= tasks.window:
            finish_oldest()


# ---------------------------------------------------------------------------------------------
# Seek tables


def checked_entries(f: BinaryIO, size: int, max_size: int | None, max_chunk_size: int) -> list[ChunkEntry]:
    """The checked seek table, with the bomb guard applied to the total and to every chunk."""
    entries = read_seek_table(f, size, max_size)
    for index, entry in enumerate(entries):
        if entry.original_size > max_chunk_size:
            raise FormatError(f"chunk {index} declares {entry.original_size} original bytes, above "
                              f"the limit of {max_chunk_size} per chunk")
    return entries


def seek_table_if_seekable(src: BinaryIO, max_size: int | None,
                           max_chunk_size: int) -> list[ChunkEntry] | None:
    """The checked seek table of `src` if it can be read without disturbing a sequential read."""
    try:
        if not src.seekable() or src.tell() != 0:
            return None
        file_size = src.seek(0, io.SEEK_END)
    except (AttributeError, OSError, ValueError):
        return None
    entries = checked_entries(src, file_size, max_size, max_chunk_size)
    src.seek(0)
    return entries
