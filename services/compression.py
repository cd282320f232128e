"""Service layer: compress, decompress, describe and verify `.dcz` files, with atomic outputs."""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Protocol, Union

import codec
from codec.container import DEFAULT_CHUNK_SIZE, read_seek_table

__all__ = [
    "ServiceError", "InputError", "OutputError", "OutputExistsError", "Engine", "StreamEngine",
    "compress_file", "decompress_file", "file_info", "verify_file", "source_size", "original_size",
    "atomic_output",
]

# A source or destination is a path, or an already-open binary file (stdin/stdout, an HTTP body).
# Open files are used as they are: the caller owns them, and writes to them cannot be atomic.
Source = Union[str, os.PathLike, BinaryIO]
Destination = Union[str, os.PathLike, BinaryIO]
Progress = Callable[[int], None]


class ServiceError(Exception):
    """A request the service cannot carry out; the message is meant for the user as it is."""


class InputError(ServiceError):
    """The input is missing, a directory, or unreadable."""


class OutputError(ServiceError):
    """The output cannot be created where it was asked for."""


class OutputExistsError(OutputError):
    """The output exists and overwriting was not allowed."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"output file already exists: {path}")
        self.path = path


class Engine(Protocol):
    """What does the compressing: today the codec's streaming API, later a Beam pipeline."""

    def compress(self, src: BinaryIO, dst: BinaryIO, *, chunk_size: int,
                 progress: Progress | None) -> dict: ...

    def decompress(self, src: BinaryIO, dst: BinaryIO, *, max_size: int | None,
                   progress: Progress | None) -> dict: ...


class StreamEngine:
    """Runs `codec.compress_stream` / `decompress_stream` in this process, one chunk at a time."""

    def compress(self, src: BinaryIO, dst: BinaryIO, *, chunk_size: int,
                 progress: Progress | None) -> dict:
        return codec.compress_stream(src, dst, chunk_size=chunk_size, progress=progress)

    def decompress(self, src: BinaryIO, dst: BinaryIO, *, max_size: int | None,
                   progress: Progress | None) -> dict:
        return codec.decompress_stream(src, dst, max_size=max_size, progress=progress)


# The one place that picks the engine: the Beam pipeline replaces this, the functions below stay.
DEFAULT_ENGINE: Engine = StreamEngine()


def compress_file(src: Source, dst: Destination, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                  progress: Progress | None = None, overwrite: bool = False,
                  engine: Engine | None = None) -> dict:
    """Compresses `src` into the `.dcz` container `dst`; returns the engine's stats plus `seconds`."""
    engine = engine or DEFAULT_ENGINE
    started = time.perf_counter()  # fsync and rename count: the output is not safe before them
    with _open_input(src) as src_file, _open_output(dst, src, overwrite) as dst_file:
        stats = engine.compress(src_file, dst_file, chunk_size=chunk_size, progress=progress)
    return {**stats, "seconds": time.perf_counter() - started}


def decompress_file(src: Source, dst: Destination, *, max_size: int | None = None,
                    progress: Progress | None = None, overwrite: bool = False,
                    engine: Engine | None = None) -> dict:
    """Decompresses the `.dcz` file `src` into `dst`; a bad container raises `codec.FormatError`
    and leaves no output behind."""
    engine = engine or DEFAULT_ENGINE
    started = time.perf_counter()  # fsync and rename count: the output is not safe before them
    with _open_input(src) as src_file, _open_output(dst, src, overwrite) as dst_file:
        stats = engine.decompress(src_file, dst_file, max_size=max_size, progress=progress)
    return {**stats, "seconds": time.perf_counter() - started}


def file_info(path: str | os.PathLike) -> dict:
    """The container's description (chunks, sizes, ratio, checksums) as a JSON-ready dict."""
    with _open_input(path) as f:
        return {"file": str(path), **codec.info(f, os.fstat(f.fileno()).st_size)}


def verify_file(path: str | os.PathLike, *, progress: Progress | None = None) -> dict:
    """Decodes every chunk and checks every checksum; raises `codec.FormatError` on the first fault."""
    with _open_input(path) as f:
        return {"file": str(path), **codec.verify(f, os.fstat(f.fileno()).st_size, progress=progress)}


def source_size(src: Source) -> int | None:
    """Bytes a compression will read, for a progress total; None for pipes and open streams."""
    if not isinstance(src, (str, os.PathLike)):
        return None
    with contextlib.suppress(OSError):
        st = os.stat(src)
        if stat.S_ISREG(st.st_mode):
            return st.st_size
    return None


def original_size(src: Source) -> int | None:
    """Bytes a decompression will write, read from the seek table; None if that is not possible
    (a pipe, or a container too broken to say: decompression then reports the real error)."""
    if source_size(src) is None:
        return None
    with contextlib.suppress(OSError, ValueError), open(src, "rb") as f:
        return sum(entry.original_size for entry in read_seek_table(f, os.fstat(f.fileno()).st_size))
    return None


@contextlib.contextmanager
def _open_input(src: Source) -> Iterator[BinaryIO]:
    if not isinstance(src, (str, os.PathLike)):
        yield src
        return
    path = Path(src)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"input file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"input is a directory: {path}") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    with f:
        # open() succeeds on a directory on some systems, and on FIFOs that we would then block on.
        if stat.S_ISDIR(os.fstat(f.fileno()).st_mode):
            raise InputError(f"input is a directory: {path}")
        yield f


@contextlib.contextmanager
def _open_output(dst: Destination, src: Source, overwrite: bool) -> Iterator[BinaryIO]:
    if not isinstance(dst, (str, os.PathLike)):
        yield dst
        return
    path = Path(dst)
    if isinstance(src, (str, os.PathLike)) and path.exists():
        with contextlib.suppress(OSError):
            if os.path.samefile(src, path):
                raise OutputError(f"input and output are the same file: {path}")
    with atomic_output(path, overwrite=overwrite) as f:
        yield f


@contextlib.contextmanager
def atomic_output(path: Path, *, overwrite: bool = False) -> Iterator[BinaryIO]:
    """Yields a temp file beside `path`; on success fsyncs it and renames it to `path`.

    On any exception, Ctrl-C included, the temp file is removed and an existing `path` is untouched,
    so a reader never sees a half-written output. The existence check happens before any work (to
    fail fast) and again at the rename, without a race when the filesystem supports hard links.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output is a directory: {path}")
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(path)
    directory = path.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except FileNotFoundError:
        raise OutputError(f"output directory does not exist: {directory}") from None
    except OSError as e:
        raise OutputError(f"cannot create a file in {directory}: {e.strerror or e}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes 0600 files; give the output the permissions a plain open() would have.
        os.chmod(tmp, 0o666 & ~_current_umask())
        _publish(tmp, path, overwrite)
        _fsync_directory(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if `path` appeared meanwhile, unlike rename
    except FileExistsError:
        raise OutputExistsError(path) from None
    except OSError:
        # No hard links here (some FUSE and network filesystems): check, then rename.
        if os.path.lexists(path):
            raise OutputExistsError(path) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform, which is fine.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
