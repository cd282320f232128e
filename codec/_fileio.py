"""Positional and direct (O_DIRECT) file writes and pipe sizes, shared by the in-process engine and the storage adapter."""
from __future__ import annotations

import errno
import mmap
import os
import stat
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

__all__ = ["DIRECT_IO_ALIGNMENT", "open_direct", "reopen_direct", "direct_io_allows", "aligned_buffer",
           "pwrite_all", "pread_into", "DirectWriter", "DirectStage", "ThreadBuffers", "start_writeback", "widen_pipe"]

# Direct I/O: offsets, lengths and buffer addresses must be multiples of the device's logical block
# size; 4096 covers both 512-byte and 4 KiB devices.
DIRECT_IO_ALIGNMENT = 4096


def open_direct(path: str, *, follow_links: bool = False) -> int | None:
    """A write-only fd on the existing local file `path` that bypasses the page cache (O_DIRECT), or
    None where the platform or filesystem has no direct I/O (tmpfs, macOS, ...).

    Why: on the benchmark machine, filling page-cache pages costs ~2 CPU-s per GB written (buffered
    pwrite ~480 MB/s per core) and fsync then writes them anyway; direct writes go from our buffer to
    the disk, which sets the pace alone. The file still needs an fsync for the device's cache and
    the metadata. A symlink at `path` is never followed (one swapped into a temp folder must not
    redirect our writes), unless `follow_links` says the link is known to be safe."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    if not follow_links:
        flag |= os.O_NOFOLLOW
    try:
        return os.open(path, os.O_WRONLY | flag)
    except OSError:
        return None


def reopen_direct(fd: int) -> int | None:
    """`open_direct` for a file known only by an open fd (a temp file from mkstemp): Linux reopens
    it through /proc/self/fd; None wherever that or direct I/O is not available."""
    if not os.path.isdir("/proc/self/fd"):
        return None
    # /proc/self/fd/N is a link by design, to the very file `fd` holds open: follow it, then check.
    direct = open_direct(f"/proc/self/fd/{fd}", follow_links=True)
    if direct is not None and not os.path.samestat(os.fstat(direct), os.fstat(fd)):
        os.close(direct)
        return None
    return direct


def direct_io_allows(offset: int, length: int) -> bool:
    """Whether a write of `length` bytes at `offset` meets direct I/O's alignment."""
    return offset % DIRECT_IO_ALIGNMENT == 0 and length % DIRECT_IO_ALIGNMENT == 0 and length > 0


def aligned_buffer(size: int):
    """A zeroed uint8 numpy array of `size` bytes at a page-aligned address (anonymous mmap), as
    direct I/O needs."""
    return np.frombuffer(mmap.mmap(-1, max(size, 1)), dtype=np.uint8)[:size]


def pwrite_all(fd: int, data, offset: int) -> None:
    """Writes all of `data` at `offset` (os.pwrite may write less than asked)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def pread_into(fd: int, buffer, offset: int) -> int:
    """Fills `buffer` (a writable uint8 array or memoryview) from `offset`; returns the bytes read,
    fewer only at the end of the file."""
    view = memoryview(buffer).cast("B")
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            break
        got += n
    return got


class DirectWriter:
    """Positional writes to a regular file: with O_DIRECT through `direct_fd` (None: none) where the
    place and size are aligned, through `fd` otherwise. After the file system refuses a direct
    write (EINVAL), that write and every later one go through `fd`; any other error is raised.
    Several threads may write at once. `close()` closes `direct_fd`, not `fd`."""

    def __init__(self, fd: int, direct_fd: int | None):
        self.fd, self.direct_fd = fd, direct_fd
        self._lock = threading.Lock()

    def write(self, data, position: int) -> None:
        direct_fd = self.direct_fd
        if direct_fd is not None and direct_io_allows(position, memoryview(data).nbytes):
            try:
                pwrite_all(direct_fd, data, position)
                return
            except OSError as e:
                if e.errno != errno.EINVAL:  # a full disk, an I/O error: not a matter of the path
                    raise
                self.close()  # refused after all: the same bytes, through the cache
        pwrite_all(self.fd, data, position)

    def close(self) -> None:
        with self._lock:
            if self.direct_fd is not None:
                os.close(self.direct_fd)
                self.direct_fd = None


class DirectStage:
    """Bytes appended to a regular file from `position` through an aligned staging buffer: each full
    stage goes out with O_DIRECT through `direct_fd` (the page cache bypassed, see open_direct), the
    last, partial one through `fd`. A file system that refuses a direct write after all (EINVAL)
    gets that stage and the rest through `fd`. Fill it with `write`, or in place: `space()` then
    `advance(n)`; end with `finish()`, and `close()` in any case.

    A full stage is written by a thread of its own while the next one fills (two buffers, one write
    in flight): a direct write waits for the disk, ~7 ms per 8 MiB here, and made on the coding
    thread it left that core idle (~0.5 s of a 1 GB compress on one thread, ~0.2 s on two). A
    failed write is raised by the next full stage, `finish()`, or not at all after a failure
    elsewhere (`close()` only waits for it)."""

    def __init__(self, fd: int, direct_fd: int, position: int, size: int = 8 * 2**20):
        self.fd, self.position = fd, position
        self._out = DirectWriter(fd, direct_fd)  # used by the writer thread alone
        self.stage = aligned_buffer(size)
        self.filled = 0
        self._spare: np.ndarray | None = None  # the other buffer, allocated with the first full stage
        self._writer: ThreadPoolExecutor | None = None
        self._in_flight: Future | None = None

    def space(self) -> np.ndarray:
        """The stage's unfilled rest."""
        return self.stage[self.filled:]

    def advance(self, n: int) -> None:
        """`n` more bytes of `space()` are filled; a full stage is written."""
        self.filled += n
        if self.filled == self.stage.shape[0]:
            self._write_stage()

    def write(self, data) -> None:
        view = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
        while view.shape[0]:
            n = min(view.shape[0], self.stage.shape[0] - self.filled)
            self.stage[self.filled:self.filled + n] = view[:n]
            view = view[n:]
            self.advance(n)

    def _write_stage(self) -> None:
        self._wait()  # the other buffer is free again; a failed write is raised here
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="dcz-write")
            self._spare = aligned_buffer(self.stage.shape[0])
        self._in_flight = self._writer.submit(self._out.write, self.stage, self.position)
        self.stage, self._spare = self._spare, self.stage
        self.position += self.filled
        self.filled = 0

    def _wait(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()

    def finish(self) -> int:
        """Waits for the stage in flight, writes the last partial one through `fd`; returns the
        position after it."""
        self._wait()
        pwrite_all(self.fd, self.stage[:self.filled], self.position)
        self.position += self.filled
        self.filled = 0
        return self.position

    def close(self) -> None:
        """Waits for the write in flight, without raising its error, and ends the writer thread."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        self._in_flight = None
        self._out.close()


class ThreadBuffers(threading.local):
    """One reusable read buffer per thread: reading each chunk into fresh memory costs a page fault
    per 4 KiB, which the kernel spends zeroing pages the read then overwrites. `keep_up_to`: a
    buffer larger than this is not kept (for long-lived threads that may see a huge chunk once)."""
    buffer: np.ndarray | None = None

    def __init__(self, keep_up_to: int | None = None):
        self.keep_up_to = keep_up_to

    def get(self, size: int) -> np.ndarray:
        if self.buffer is not None and self.buffer.shape[0] >= size:
            return self.buffer[:size]
        buffer = np.empty(size, dtype=np.uint8)
        if self.keep_up_to is None or size <= self.keep_up_to:
            self.buffer = buffer
        return buffer


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Starts writing a local file's dirty pages (`length` 0: to the end) to disk without waiting.

    Linux does that for POSIX_FADV_DONTNEED on dirty pages. Called while the rest of the file is
    still being produced, it lets the disk work alongside, so the final fsync waits for less.
    A hint only: where it is missing or refused, nothing changes.
    """
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


# /proc/sys/fs/pipe-max-size's default: what any process may ask for.
PIPE_SIZE = 1 << 20


def widen_pipe(f, size: int = PIPE_SIZE) -> int | None:
    """Grows the kernel buffer of the pipe behind `f` to `size` bytes; returns the pipe's size
    then, or None when `f` is not a pipe or the platform has no such call.

    Why: a pipe holds 64 KiB by default, so `cat big | dcas compress -` took a 4 MiB chunk in 64
    wake-ups of reader and writer; on a loaded machine each waited for a time slice, and the reader
    fell to ~240 MB/s with both workers idle more than half the time. A hint only: a size the
    kernel refuses (above /proc/sys/fs/pipe-max-size) leaves the pipe as it was."""
    try:
        import fcntl
        fd = f.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode) or not hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux only
            return None
    except (AttributeError, OSError, ValueError, ImportError):
        return None
    try:
        return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except OSError:
        try:
            return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
        except OSError:
            return None
