"""Service layer: compress, decompress, describe and verify `.dcz` files, with atomic outputs."""
from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import stat
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Protocol, Sequence, Union

import codec
from adapters import cancellation, local_files, metadata
from codec.container import DEFAULT_CHUNK_SIZE, FRAME_HEADER_SIZE, parse_frame_header, read_seek_table

__all__ = [
    "ServiceError", "InputError", "OutputError", "OutputExistsError", "FileFailedError", "Interrupted",
    "InterruptedAfterPublication", "DamagedContainerError", "Engine", "LocalEngine", "StreamEngine",
    "BeamEngine", "ENGINES", "choose_engine", "compress_file", "decompress_file", "file_info",
    "verify_file", "DEFAULT_MAX_DECODE_CHUNK", "clean_leftovers", "was_published", "source_size",
    "original_size", "atomic_output", "LOCAL_RUNNER",
]

LOCAL_RUNNER = "DirectRunner"

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

    def __init__(self, path: Path | str) -> None:
        super().__init__(f"output file already exists: {path}")
        self.path = path


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the job; whatever it left behind was removed."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__("interrupted")
        self.signum = signum


class InterruptedAfterPublication(ServiceError):
    """A signal came after the output was complete and in place: it is kept, the run succeeded."""

    def __init__(self, path: str, signum: int = signal.SIGINT) -> None:
        super().__init__(f"interrupted after {path} was published; the output is complete")
        self.path = path
        self.signum = signum


class FileFailedError(ServiceError):
    """The pipeline ran but could not produce the output; the message says why."""


class DamagedContainerError(FileFailedError, codec.FormatError):
    """The pipeline found a damaged chunk: a `FormatError`, as the streaming codec would raise."""


def _file_failed(src: str, reasons: Sequence[str]) -> FileFailedError:
    """The error for a file the pipeline failed, from its `stage: ErrorType: message` reasons."""
    message = f"{src}: {'; '.join(reasons) or 'the pipeline wrote no output'}"
    if any(": FormatError: " in f": {reason}" for reason in reasons):
        return DamagedContainerError(message)
    return FileFailedError(message)


class Engine(Protocol):
    """What does the work for one file: the codec's streaming API, or the Beam batch pipeline."""

    def compress_file(self, src: Source, dst: Destination, *, chunk_size: int,
                      progress: Progress | None, overwrite: bool) -> dict: ...

    def decompress_file(self, src: Source, dst: Destination, *, max_size: int | None,
                        progress: Progress | None, overwrite: bool) -> dict: ...


class LocalEngine:
    """Codes one local file or pipe in this process: `threads` workers run the codec's nogil
    kernels (codec.parallel), with no Beam import at all.

    A regular input file is coded with its whole-file table, as the pipeline does, so the container
    is byte for byte the pipeline's; unlike the pipeline, it is read once where the output can be
    rewound (codec.compress_with_file_table). A pipe has no whole-file table and is coded without
    it (docs/format.md says what differs). Subclasses may replace
    `compress` / `decompress`, which see the opened files.
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or codec.default_threads()

    def compress_file(self, src: Source, dst: Destination, *, chunk_size: int,
                      progress: Progress | None, overwrite: bool) -> dict:
        described: dict = {}  # what the metadata needs, once the container is written

        def describe(container_path: str, written: os.stat_result) -> bytes | None:
            # A regular input file given by path gets the pipeline's DST.meta.json; a pipe none
            # (an older one beside DST is removed with the container it described).
            if not described or not isinstance(src, (str, os.PathLike)):
                return None
            return _container_metadata(os.fspath(src), os.fspath(dst), container_path, written, chunk_size,
                                       **described)

        with _open_input(src) as src_file, _open_output(dst, src, overwrite, describe) as dst_file:
            version = _file_version(src_file)
            started = time.perf_counter()
            stats = self.compress(src_file, dst_file, chunk_size=chunk_size, progress=progress)
            table = stats.pop("frequencies", None)
            _check_unchanged(src, src_file, version)
            if version is not None and table is not None:
                described.update(table=table, seconds=time.perf_counter() - started)
            return stats

    def decompress_file(self, src: Source, dst: Destination, *, max_size: int | None,
                        progress: Progress | None, overwrite: bool) -> dict:
        with _open_input(src) as src_file, _open_output(dst, src, overwrite) as dst_file:
            version = _file_version(src_file)
            stats = self.decompress(src_file, dst_file, max_size=max_size, progress=progress)
            _check_unchanged(src, src_file, version)
            return stats

    def compress(self, src: BinaryIO, dst: BinaryIO, *, chunk_size: int,
                 progress: Progress | None) -> dict:
        if _file_version(src) is not None:  # a regular file: the pipeline's whole-file table
            # Its stats carry the table, for DST.meta.json (compress_file takes it out of them).
            return codec.compress_with_file_table(src, dst, chunk_size=chunk_size, progress=progress,
                                                  threads=self.threads)
        return codec.compress_stream(src, dst, chunk_size=chunk_size, progress=progress,
                                     threads=self.threads)

    def decompress(self, src: BinaryIO, dst: BinaryIO, *, max_size: int | None,
                   progress: Progress | None) -> dict:
        return codec.decompress_stream(src, dst, max_size=max_size, progress=progress,
                                       threads=self.threads, max_chunk_size=DEFAULT_MAX_DECODE_CHUNK)


# The in-process engine's name before it ran threads; kept for callers that subclass it.
StreamEngine = LocalEngine


def _container_metadata(source: str, destination: str, container_path: str, written: os.stat_result,
                        chunk_size: int, table, seconds: float) -> bytes:
    """The pipeline's DST.meta.json for the container just written to `container_path`, read back
    from its seek table (through a descriptor checked to be the file written)."""
    fd = os.open(container_path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        if not os.path.samestat(os.fstat(fd), written):
            raise OutputError(f"{destination}: the file written was replaced while the job ran")
        entries = read_seek_table(f, written.st_size)
    # The whole file is one part coded by this process: its wall time is the worker time.
    timings = {"worker_seconds": round(seconds, 6), "slowest_part_seconds": round(seconds, 6)}
    return metadata.metadata_bytes(metadata.container_metadata(
        source, destination, sum(e.original_size for e in entries), entries, chunk_size,
        table, written.st_size, timings))


def _file_version(f: BinaryIO) -> str | None:
    """What changes when a regular file is modified or replaced; None for pipes and the like."""
    try:
        return local_files.file_version(f.fileno())
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def _check_unchanged(src: Source, f: BinaryIO, version: tuple | None) -> None:
    """InputError if the file changed since `version` was taken. Called inside the output's
    context, so a changed input publishes nothing: the output would mix what was read before and
    after the change (the pipeline pins its inputs the same way)."""
    if version is not None and _file_version(f) != version:
        name = os.fspath(src) if isinstance(src, (str, os.PathLike)) else getattr(f, "name", "input")
        raise InputError(f"input changed while it was read: {name}")


class BeamEngine:
    """Runs the Beam batch pipeline (`pipelines.batch.run_job`) on one file given by path.

    Chunks are read, encoded or decoded, and written by parallel workers: local worker processes
    (`workers`, 0 = one per core) with the DirectRunner, or Dataflow with `runner="DataflowRunner"`
    and its options in `pipeline_args`. Paths may be local or gs://. The pipeline publishes the
    output atomically itself (a temp file and rename locally, compose on GCS), never touches an
    existing output unless it succeeds, and removes its temp objects; this engine checks the
    arguments first and removes what an interrupted run leaves behind.
    """

    # How often the progress bar lists the job's temp dir; a GCS listing is a request, so slower.
    LOCAL_POLL_SECONDS = 0.25
    REMOTE_POLL_SECONDS = 2.0

    def __init__(self, *, workers: int = 0, runner: str = LOCAL_RUNNER,
                 pipeline_args: Sequence[str] = ()) -> None:
        self.workers = workers
        self.runner = runner
        self.pipeline_args = list(pipeline_args)

    def compress_file(self, src: Source, dst: Destination, *, chunk_size: int,
                      progress: Progress | None, overwrite: bool) -> dict:
        src, dst = os.fspath(src), os.fspath(dst)
        size = self._check_paths(src, dst, overwrite)
        stats = self._run(src, dst, "compress", chunk_size, progress, size,
                          lambda temp_dir: _encoded_input_probe(temp_dir, dst, size, chunk_size), overwrite)
        return {"original_size": stats["bytes_in"], "compressed_size": stats["bytes_out"],
                "chunks": stats["chunks"], "job_id": stats["job_id"]}

    def decompress_file(self, src: Source, dst: Destination, *, max_size: int | None,
                        progress: Progress | None, overwrite: bool) -> dict:
        src, dst = os.fspath(src), os.fspath(dst)
        size = self._check_paths(src, dst, overwrite)
        # The seek table first: a bad container fails here with the codec's own message, the
        # --max-size limit applies before any work, and the progress bar gets its total.
        with _open_path(src) as f:
            total = sum(entry.original_size for entry in read_seek_table(f, size, max_size))
        stats = self._run(src, dst, "decompress", DEFAULT_CHUNK_SIZE, progress, total,
                          lambda temp_dir: _decoded_bytes_probe(temp_dir, dst), overwrite)
        return {"original_size": stats["bytes_out"], "compressed_size": stats["bytes_in"],
                "chunks": stats["chunks"], "job_id": stats["job_id"]}

    def _check_paths(self, src: str, dst: str, overwrite: bool) -> int:
        """The service layer's promises, checked before the pipeline starts; returns SRC's size."""
        if self.runner == "DataflowRunner" and not (_is_remote(src) and _is_remote(dst)):
            raise ServiceError("Dataflow workers cannot reach local files: give SRC and DST as gs:// paths")
        for path in (src, dst):
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:
                shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                raise InputError(f"{shown}: the pipeline takes only UTF-8 file names; rename the file, "
                                 "or leave out --workers/--runner to code it in this process") from None
        if _is_remote(src):
            size = _remote_size(src)
            if size is None:
                raise InputError(f"input file not found: {src}")
        else:
            with _open_input(src) as f:  # missing, a directory, unreadable: the same errors as always
                size = os.fstat(f.fileno()).st_size
        if _is_remote(dst):
            FileSystems = _beam_filesystems()
            from adapters import storage
            if dst.startswith("gs://") and not storage.bucket_exists(dst):
                raise OutputError(f"output bucket does not exist: {dst.split('/')[2]} ({dst})")
            if dst.endswith("/"):
                raise OutputError(f"output is a directory: {dst} (name the output file)")
            if dst == src:
                raise OutputError(f"input and output are the same file: {dst}")
            if not overwrite and FileSystems.exists(dst):
                raise OutputExistsError(dst)  # a str: Path() would turn gs:// into gs:/
            return size
        path = Path(dst)
        if path.is_dir():
            raise OutputError(f"output is a directory: {path}")
        if not _is_remote(src) and path.exists():
            with contextlib.suppress(OSError):
                if os.path.samefile(src, path):
                    raise OutputError(f"input and output are the same file: {path}")
        # Checked here to fail before any work; without --force the pipeline checks again as it
        # publishes (--keep_existing), so an output created during the run is kept, not replaced.
        if not overwrite and os.path.lexists(path):
            raise OutputExistsError(path)
        directory = path.parent
        if not directory.is_dir():
            raise OutputError(f"output directory does not exist: {directory}")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise OutputError(f"cannot create a file in {directory}: Permission denied")
        return size

    def _run(self, src: str, dst: str, mode: str, chunk_size: int, progress: Progress | None,
             total: int, probe_for: Callable[[str], Callable[[], int]], overwrite: bool) -> dict:
        # Imported here: Beam takes a second or two to import, which `info` and pipes never need.
        from adapters import storage
        from transforms.observability import new_job_id

        job_id = new_job_id()  # ours, so we know where the job's temp objects are
        temp_dir = storage.temp_dir_for(dst, job_id)
        remote = _is_remote(dst)
        try:
            if not remote:
                clean_leftovers(os.path.dirname(os.path.abspath(dst)))  # what killed runs left here
            # Our lease on the job's temp folder: `dcas clean` and later runs leave it alone while we live.
            with contextlib.nullcontext() if remote else local_files.job_lease(temp_dir):
                storage.prepare_temp_dir(temp_dir)  # a private folder, or a clear error before any work
                return self._run_job(src, dst, mode, chunk_size, progress, total, probe_for, overwrite,
                                     job_id, temp_dir)
        except local_files.UnsafeTempDirError as e:
            raise OutputError(str(e)) from None
        finally:
            if not remote:
                local_files.remove_if_empty(_parent(temp_dir))  # the shared .dcas-tmp, once unused

    def _run_job(self, src, dst, mode, chunk_size, progress, total, probe_for, overwrite, job_id,
                 temp_dir) -> dict:
        from pipelines.batch import run_job
        from adapters import storage
        failures_path = _join(_parent(temp_dir), f"{job_id}.failures.csv")
        extra_args = [*self.pipeline_args, f"--job_id={job_id}"]
        succeeded = False
        cancellation.reset()
        with _StopOnSignals() as signals:
            try:
                try:
                    with _polling(progress, probe_for(temp_dir), total, _is_remote(dst)):
                        stats = run_job(src, dst, mode, chunk_size=chunk_size, workers=self.workers,
                                        runner=self.runner, extra_args=extra_args, failures=failures_path,
                                        overwrite=overwrite)
                    cancellation.fault_point("job-finished")
                except Exception as e:
                    if signals.received:  # what Beam makes of workers that stopped: not the story
                        raise Interrupted(signals.received[0]) from None
                    if isinstance(e, FileNotFoundError):
                        raise InputError(f"input file not found: {src}") from None
                    if isinstance(e, ValueError):
                        raise ServiceError(str(e)) from None
                    raise
                published = not stats["files_failed"] and stats["files_written"] == 1
                if signals.received:
                    succeeded = published
                    if published:
                        _PUBLISHED.add(dst)
                        raise InterruptedAfterPublication(dst, signals.received[0])
                    raise Interrupted(signals.received[0])
                if not published:
                    reasons = [error for _, error in stats["failures"]]
                    if not overwrite and any(": FileExistsError: " in reason for reason in reasons):
                        raise OutputExistsError(dst)  # it appeared during the run; it was kept
                    raise _file_failed(src, reasons)
                succeeded = True
                _PUBLISHED.add(dst)
            finally:
                signals.cleaning = True  # further signals wait: a half-done clean-up helps nobody
                if not succeeded:
                    # Workers still running (a second Ctrl-C cut the drain short) stop at their next
                    # chunk; a publication in flight finishes or rolls back before we look.
                    cancellation.request_stop()
                    cancellation.wait_for_publications(timeout=120)
                    from transforms.assemble import recover_publications
                    with contextlib.suppress(Exception):
                        recover_publications(temp_dir)
                _remove_job_leftovers(storage, temp_dir, failures_path, dst, succeeded)
                cancellation.reset()  # this job is over; the process may run others
        if progress is not None:
            progress(total)
        return stats


class _StopOnSignals:
    """While the pipeline runs: the first SIGINT or SIGTERM asks the workers to stop (they fail
    their files at the next chunk or publication step, so the job drains and Beam shuts down in
    order); a second one interrupts at once. During the clean-up, signals are noted, not acted on.
    Only the main thread can install handlers; elsewhere this does nothing."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.cleaning = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        first = not self.received
        self.received.append(signum)
        cancellation.request_stop()
        if not first and not self.cleaning:
            raise Interrupted(self.received[0])

    def __enter__(self) -> "_StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# Outputs this process published: an interrupt that comes after is reported as such, not as a failure.
_PUBLISHED: set[str] = set()


def clean_leftovers(directory: str | os.PathLike) -> list[str]:
    """Removes what killed runs left in a local folder (their temp folders and files, after
    completing or undoing a publication they were in), never a live run's; returns the names."""
    return local_files.clean_leftovers(os.fspath(directory), recover=_recover_job)


def _recover_job(job_dir: str) -> None:
    # A job killed while it published a container and its metadata (either engine) left a journal.
    metadata.recover_local_publications(job_dir, local_files.JOURNAL_SUFFIX)


def was_published(dst: Destination) -> bool:
    """True if this process published `dst` (a path) completely: a later Ctrl-C changes nothing."""
    return isinstance(dst, (str, os.PathLike)) and os.fspath(dst) in _PUBLISHED


def _polling(progress: Progress | None, measure: Callable[[], int], total: int, remote: bool):
    if progress is None or total <= 0:
        return contextlib.nullcontext()
    from services.progress import PollingProgress
    interval = BeamEngine.REMOTE_POLL_SECONDS if remote else BeamEngine.LOCAL_POLL_SECONDS
    return PollingProgress(progress, measure, total, interval)


def _parent(path: str) -> str:
    """`/a/b/.dcas-tmp/job/` -> `/a/b/.dcas-tmp`; the same for gs:// paths."""
    return path.rstrip("/" + os.sep).rsplit("/" if _is_remote(path) else os.sep, 1)[0]


def _base_name(path: str) -> str:
    return path.rsplit("/", 1)[-1] if _is_remote(path) else os.path.basename(path)


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if _is_remote(directory) else os.path.join(directory, name)


def _remove_job_leftovers(storage, temp_dir: str, failures_path: str, dst: str, succeeded: bool) -> None:
    """The job's temp dir and failures CSV; after a failure or Ctrl-C also the publication temp
    file a killed worker could not remove (`.NAME.<uuid hex>.tmp` beside DST)."""
    with contextlib.suppress(Exception):
        storage.delete([failures_path])
    with contextlib.suppress(Exception):
        storage.remove_temp_dir(temp_dir)
    if _is_remote(dst):
        return
    local_files.remove_if_empty(_parent(temp_dir))  # the shared .dcas-tmp, once no other job uses it
    if succeeded:
        return
    directory, name = os.path.split(os.path.abspath(dst))
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if (local_files.is_publication_temp_of(entry.name, name)
                    and entry.stat(follow_symlinks=False).st_uid == os.geteuid()):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


_PART_INDEX = re.compile(r"\.part-(\d+)$")


def _part_objects(temp_dir: str, output_name: str) -> dict[int, tuple[str, int]]:
    """{part index: (path, bytes written so far)} for the job's part objects of `output_name`.

    Local part files grow while a worker writes them; a GCS object only appears once complete.
    """
    if _is_remote(temp_dir):
        FileSystems = _beam_filesystems()
        listing = [(m.path, m.size_in_bytes) for m in FileSystems.match([temp_dir + "*"])[0].metadata_list]
    else:
        try:
            listing = [(entry.path, entry.stat().st_size) for entry in os.scandir(temp_dir)]
        except FileNotFoundError:
            return {}
    prefix = output_name + ".part-"
    parts = {}
    for path, size in listing:
        name = path.rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1]
        match = _PART_INDEX.search(name)
        if name.startswith(prefix) and match:
            parts[int(match.group(1))] = (path, size)
    return parts


def _complete_frames_input(path: str, size: int) -> int:
    """Original bytes of the complete frames at the start of a part file being written."""
    done = offset = 0
    with contextlib.suppress(OSError, ValueError), open(path, "rb") as f:
        while offset + FRAME_HEADER_SIZE <= size:
            f.seek(offset)
            header = parse_frame_header(f.read(FRAME_HEADER_SIZE))
            end = offset + FRAME_HEADER_SIZE + header.payload_size
            if end > size:
                break
            done += header.original_size
            offset = end
    return done


def _encoded_input_probe(temp_dir: str, dst: str, size: int, chunk_size: int) -> Callable[[], int]:
    """Input bytes encoded so far: each part covers a known chunk range (the plan the pipeline
    uses); a complete part counts all of it, a local part being written its complete frames."""
    from adapters import storage
    from transforms.planning import chunk_count
    part_inputs = [min(stop * chunk_size, size) - start * chunk_size
                   for start, stop in storage.plan_parts(chunk_count(size, chunk_size))]
    name = _base_name(dst)
    finished: dict[int, int] = {}  # parts already counted in full need no more reads

    def measure() -> int:
        partial = 0
        for index, (path, written) in _part_objects(temp_dir, name).items():
            if index in finished or index >= len(part_inputs):
                continue
            done = part_inputs[index] if _is_remote(path) else _complete_frames_input(path, written)
            if done >= part_inputs[index]:
                finished[index] = part_inputs[index]
            else:
                partial += done
        return sum(finished.values()) + partial

    return measure


def _decoded_bytes_probe(temp_dir: str, dst: str) -> Callable[[], int]:
    """Output bytes decoded so far: on gs://, the sizes of the part objects the decoders write;
    locally, the blocks allocated in the one temp file they write into at their offsets (it is
    sparse until written, so its allocated size grows with the work done)."""
    name = _base_name(dst)
    if _is_remote(dst):
        return lambda: sum(written for _, written in _part_objects(temp_dir, name).values())
    from transforms.decode import decoded_temp_path  # imports Beam: only once the pipeline runs

    decoded = decoded_temp_path(temp_dir, dst)

    def probe() -> int:
        try:
            return os.stat(decoded).st_blocks * 512
        except OSError:
            return 0
    return probe


ENGINES = ("local", "beam")


def choose_engine(src: Source, dst: Destination, *, workers: int | None = None,
                  runner: str = LOCAL_RUNNER, pipeline_args: Sequence[str] = (),
                  engine: str | None = None, threads: int | None = None) -> Engine:
    """The one place that picks the engine.

    The Beam batch pipeline for gs:// paths and whenever the pipeline is asked for (`workers`, a
    `runner` other than the local one, pipeline options, or `engine="beam"`); the in-process
    LocalEngine with `threads` threads (None: one per core) for everything else: local files,
    pipes and open files (`engine="local"` insists on it). `workers` None means "not chosen"; 0
    means one worker per core. Local names holding `*`, `?` or `[` are files, not patterns, here.
    """
    if engine is not None and engine not in ENGINES:
        raise ServiceError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    paths = isinstance(src, (str, os.PathLike)) and isinstance(dst, (str, os.PathLike))
    remote = _is_remote(src) or _is_remote(dst)
    pipeline_asked = workers is not None or runner != LOCAL_RUNNER or bool(pipeline_args)
    # A device or FIFO as DST (`-o /dev/null`) is written into as a stream, never replaced: only
    # the in-process engine does that.
    special_output = paths and not remote and local_files.is_special(dst)
    if special_output and engine != "beam" and runner == LOCAL_RUNNER and not pipeline_args:
        return LocalEngine(threads)  # even with --workers: the pipeline only publishes files
    if engine == "local":
        if remote or pipeline_asked:
            raise ServiceError("--engine local codes local files and pipes in this process: gs:// "
                               "paths, --workers, --runner and pipeline options need --engine beam")
        return LocalEngine(threads)
    if engine == "beam" or remote or pipeline_asked:
        if not paths:
            raise ServiceError("the Beam pipeline needs SRC and DST given as paths: a pipe cannot be "
                               "split into byte ranges")
        if special_output:
            raise ServiceError(f"the Beam pipeline publishes files and cannot write into {os.fspath(dst)}, "
                               "a device or FIFO: use the local engine")
        if threads is not None:
            raise ServiceError("--threads is for the local engine; the pipeline takes --workers")
        return BeamEngine(workers=workers or 0, runner=runner, pipeline_args=pipeline_args)
    return LocalEngine(threads)


def compress_file(src: Source, dst: Destination, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                  progress: Progress | None = None, overwrite: bool = False,
                  engine: Engine | None = None) -> dict:
    """Compresses `src` into the `.dcz` container `dst`; returns the engine's stats plus `seconds`."""
    engine = engine or choose_engine(src, dst)
    started = time.perf_counter()  # fsync and rename count: the output is not safe before them
    stats = engine.compress_file(src, dst, chunk_size=chunk_size, progress=progress, overwrite=overwrite)
    return {**stats, "seconds": time.perf_counter() - started}


def decompress_file(src: Source, dst: Destination, *, max_size: int | None = None,
                    progress: Progress | None = None, overwrite: bool = False,
                    engine: Engine | None = None, max_chunk_size: int | None = None) -> dict:
    """Decompresses the `.dcz` file `src` into `dst`; a bad container raises `codec.FormatError`
    (or, for damage the pipeline finds in a chunk, `FileFailedError`) and leaves no output behind.

    Before any work, whatever the engine: the declared sizes against `max_size`, against
    `max_chunk_size` per chunk (default DEFAULT_MAX_DECODE_CHUNK: decoding holds a chunk in
    memory) and against the free space where a local `dst` will be written."""
    _check_declared_sizes(src, dst, max_size, max_chunk_size or DEFAULT_MAX_DECODE_CHUNK)
    engine = engine or choose_engine(src, dst)
    started = time.perf_counter()  # fsync and rename count: the output is not safe before them
    stats = engine.decompress_file(src, dst, max_size=max_size, progress=progress, overwrite=overwrite)
    return {**stats, "seconds": time.perf_counter() - started}


def file_info(path: str | os.PathLike) -> dict:
    """The container's description (chunks, sizes, ratio, checksums) as a JSON-ready dict."""
    with _open_container(path) as (f, size):
        return {"file": os.fspath(path), **codec.info(f, size)}


@contextlib.contextmanager
def _open_container(path: str | os.PathLike) -> Iterator[tuple[BinaryIO, int]]:
    """(file, size) of a local or gs:// container (a gs:// name must not go through Path())."""
    if _is_remote(path):
        size = _remote_size(os.fspath(path))
        if size is None:
            raise InputError(f"input file not found: {os.fspath(path)}")
        with _open_path(path) as f:
            yield f, size
        return
    with _open_input(path) as f:
        yield f, os.fstat(f.fileno()).st_size


def verify_file(path: str | os.PathLike, *, progress: Progress | None = None, max_size: int | None = None,
                max_chunk_size: int | None = None) -> dict:
    """Decodes every chunk and checks every checksum; raises `codec.FormatError` on the first fault.
    `max_size` and `max_chunk_size` (default DEFAULT_MAX_DECODE_CHUNK) as in decompress_file."""
    with _open_container(path) as (f, size):
        return {"file": os.fspath(path), **codec.verify(f, size, max_size=max_size,
                                                  progress=progress,
                                                  max_chunk_size=max_chunk_size or DEFAULT_MAX_DECODE_CHUNK)}


# Decoding holds one chunk per worker, and a few bytes of run blocks can declare a 1 GiB chunk: so
# by default no chunk over this size is decoded (raise it with --max-chunk-size, up to 1 GiB).
# dcas writes 4 MiB chunks unless told otherwise.
DEFAULT_MAX_DECODE_CHUNK = 256 * 2**20


def _check_declared_sizes(src: Source, dst: Destination, max_size: int | None, max_chunk_size: int) -> None:
    """The bomb guard before any work: FormatError for a declared size over a limit, OutputError
    when a local output would not fit. Pipes are checked chunk by chunk as they are decoded."""
    size = source_size(src)
    if size is None:
        return
    try:
        with _open_path(src) as f:
            entries = read_seek_table(f, size, max_size)
    except OSError:
        return  # the engine reports an unreadable input in its own words
    for index, entry in enumerate(entries):
        if entry.original_size > max_chunk_size:
            raise codec.FormatError(
                f"chunk {index} declares {entry.original_size} original bytes, above the limit of "
                f"{max_chunk_size} per chunk (raise it with --max-chunk-size)")
    if isinstance(dst, (str, os.PathLike)) and not _is_remote(dst) and not local_files.is_special(dst):
        try:
            local_files.check_free_space(os.fspath(dst), sum(entry.original_size for entry in entries))
        except OSError as e:
            raise OutputError(f"{dst}: {e.strerror}") from None


def source_size(src: Source) -> int | None:
    """Bytes a compression will read, for a progress total; None for pipes and open streams."""
    if not isinstance(src, (str, os.PathLike)):
        return None
    if _is_remote(src):
        return _remote_size(os.fspath(src))
    with contextlib.suppress(OSError):
        st = os.stat(src)
        if stat.S_ISREG(st.st_mode):
            return st.st_size
    return None


def original_size(src: Source) -> int | None:
    """Bytes a decompression will write, read from the seek table; None if that is not possible
    (a pipe, or a container too broken to say: decompression then reports the real error)."""
    size = source_size(src)
    if size is None:
        return None
    with contextlib.suppress(OSError, ValueError), _open_path(src) as f:
        return sum(entry.original_size for entry in read_seek_table(f, size))
    return None


def _is_remote(path: Source) -> bool:
    """gs:// and other Beam filesystems: no os.path checks apply to them."""
    return isinstance(path, (str, os.PathLike)) and "://" in os.fspath(path)


def _beam_filesystems():
    """Beam's FileSystems, after adapters.storage has set Beam up (for the GCS emulator, too)."""
    import adapters.storage  # noqa: F401 - configures Beam's GCS client when imported
    from apache_beam.io.filesystems import FileSystems
    return FileSystems


def _remote_size(path: str) -> int | None:
    FileSystems = _beam_filesystems()
    with contextlib.suppress(Exception):  # a missing object, or no credentials: no total
        return FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    return None


def _open_path(path: Source) -> BinaryIO:
    if _is_remote(path):
        from apache_beam.io.filesystem import CompressionTypes
        return _beam_filesystems().open(os.fspath(path), compression_type=CompressionTypes.UNCOMPRESSED)
    return open(path, "rb")


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
def _open_output(dst: Destination, src: Source, overwrite: bool,
                 describe: Describe | None = None) -> Iterator[BinaryIO]:
    if not isinstance(dst, (str, os.PathLike)):
        yield dst
        return
    path = Path(dst)
    if isinstance(src, (str, os.PathLike)) and path.exists():
        with contextlib.suppress(OSError):
            if os.path.samefile(src, path):
                raise OutputError(f"input and output are the same file: {path}")
    with atomic_output(path, overwrite=overwrite, describe=describe) as f:
        yield f


# (temp path, fstat of the file written) -> the container's DST.meta.json, or None for none.
Describe = Callable[[str, os.stat_result], Union[bytes, None]]


@contextlib.contextmanager
def atomic_output(path: Path, *, overwrite: bool = False, describe: Describe | None = None) -> Iterator[BinaryIO]:
    """Yields a temp file beside `path`; on success fsyncs it and renames it to `path`.

    On any exception, Ctrl-C included, the temp file is removed and an existing `path` is untouched,
    so a reader never sees a half-written output. The existence check happens before any work (to
    fail fast) and again at the rename, without a race when the filesystem supports hard links.
    The temp file is created anew (never through a symlink) and the file renamed into place must
    be the one written. An existing device or FIFO (`-o /dev/null`) is written into, as a shell
    redirection would, and never replaced; a block device (a disk) only with `overwrite`.

    With `describe` the output is a container: its `DST.meta.json` (what `describe` returns) is
    published with it as one unit (adapters.metadata.publish_local_pair), and when `describe`
    returns None an older metadata object beside `path` goes with the container it described.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output is a directory: {path}")
    if local_files.is_special(path):
        with _open_special(path, overwrite) as f:
            yield f
        return
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(path)
    directory = path.parent
    clean_leftovers(directory)  # what killed runs left here; never a live one's
    try:
        # 0666 less the umask: the permissions a plain open() would give the output. Locked while
        # we write it: clean_leftovers leaves it alone.
        tmp, fd = local_files.create_publication_temp(os.fspath(path), 0o666)
    except FileNotFoundError:
        raise OutputError(f"output directory does not exist: {directory}") from None
    except OSError as e:
        raise OutputError(f"cannot create a file in {directory}: {e.strerror or e}") from None
    lock_fd = os.dup(fd)  # holds the lock (one open file description) until the rename is done
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            written = os.fstat(f.fileno())
        cancellation.fault_point("output-written")
        meta = describe(tmp, written) if describe is not None else None
        try:
            if meta is not None or (describe is not None
                                    and os.path.lexists(os.fspath(path) + metadata.METADATA_SUFFIX)):
                metadata.publish_local_pair(tmp, os.fspath(path), meta, overwrite=overwrite, written=written)
            else:
                local_files.publish_file(tmp, os.fspath(path), overwrite=overwrite, written=written)
        except local_files.SpecialFileError:
            raise OutputError(f"output became a device or other special file while the job ran: {path}") from None
        except FileExistsError as e:
            raise OutputExistsError(e.filename or path) from None
        except local_files.UnsafeTempDirError as e:
            raise OutputError(str(e)) from None
        local_files.fsync_directory(directory)
        _PUBLISHED.add(os.fspath(path))
        cancellation.fault_point("output-published")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(lock_fd)


@contextlib.contextmanager
def _open_special(path: Path, overwrite: bool) -> Iterator[BinaryIO]:
    mode = os.stat(path).st_mode
    if stat.S_ISBLK(mode) and not overwrite:
        raise OutputExistsError(path)  # writing into a disk asks for --force
    if stat.S_ISSOCK(mode):
        raise OutputError(f"output is a socket: {path}")
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))  # no O_TRUNC, no O_CREAT
    except OSError as e:
        raise OutputError(f"cannot write to {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "wb") as f:
        yield f
