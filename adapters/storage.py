"""Storage adapter under the pipelines: ranged reads, part writes and atomic publication, locally and on gs://."""
from __future__ import annotations

import itertools
import os
import shutil
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from google.api_core import exceptions as gcs_exceptions

from adapters import cancellation, local_files
from adapters.local_files import TEMP_DIR_NAME
# Positional and direct writes live in the codec, which the in-process engine uses without Beam.
from codec._fileio import (  # noqa: F401 - re-exported
    DIRECT_IO_ALIGNMENT, DirectStage, ThreadBuffers, aligned_buffer, direct_io_allows, open_direct, pread_into,
    pwrite_all, reopen_direct, start_writeback,
)

__all__ = [
    "GCS_MAX_COMPONENTS",
    "InputChangedError",
    "GCS_MAX_COMPOSE_SOURCES",
    "TEMP_DIR_NAME",
    "compose_plan",
    "copy_groups",
    "configure_beam_for_storage_emulator",
    "DIRECT_IO_ALIGNMENT",
    "aligned_buffer",
    "delete",
    "direct_io_allows",
    "open_direct",
    "pwrite_all",
    "input_version",
    "input_versions",
    "open_write",
    "plan_parts",
    "prepare_temp_dir",
    "publish_concatenation",
    "publish_local_file",
    "start_writeback",
    "stored_crc32c",
    "bucket_exists",
    "read_range",
    "read_range_into",
    "ThreadBuffers",
    "remove_temp_dir",
    "temp_dir_for", "remove_job_temp_dir",
]

# Limits of GCS `compose`: at most 32 sources per call, and a composite object counts every
# non-composite object it was built from (cumulatively through nested composes) up to 1024.
GCS_MAX_COMPOSE_SOURCES = 32
GCS_MAX_COMPONENTS = 1024
# Parts per file, leaving room for the header and trailer objects (1 + 1000 + 1 <= 1024) and a few
# spare components for future extras (e.g. a second trailer) without touching the plan.
DEFAULT_MAX_PARTS = 1000
_GCS_PREFIX = "gs://"
_COPY_BUFFER_SIZE = 8 * 2**20
_GCS_THREADS = 8
# Local publication copies its sources with a few threads once there is enough to share out.
_LOCAL_COPY_THREADS = 4
_PARALLEL_COPY_ABOVE = 64 * 2**20


# ---------------------------------------------------------------------------------------------
# Pure planning


def plan_parts(chunk_count: int, max_parts: int = DEFAULT_MAX_PARTS) -> list[tuple[int, int]]:
    """Split chunks 0..chunk_count-1 into at most max_parts consecutive ranges [start, stop), sizes differing by at most one."""
    if chunk_count < 0:
        raise ValueError(f"chunk_count must be >= 0, got {chunk_count!r}")
    if max_parts < 1:
        raise ValueError(f"max_parts must be >= 1, got {max_parts!r}")
    part_count = min(chunk_count, max_parts)
    if part_count == 0:
        return []
    base, extra = divmod(chunk_count, part_count)
    ranges = []
    start = 0
    for index in range(part_count):
        stop = start + base + (1 if index < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


def compose_plan(n_sources: int, fan_in: int = GCS_MAX_COMPOSE_SOURCES,
                 max_components: int = GCS_MAX_COMPONENTS) -> list[list[int]]:
    """The tree of compose calls that concatenates n_sources objects, in execution order.

    Nodes are numbered: sources are 0..n_sources-1, and call k of the plan produces node
    n_sources + k from the nodes it lists, in order. The last call produces the destination, so the
    destination is written exactly once. Calls only use nodes made by earlier calls, and the calls
    of one tree level are independent of each other (they can run in parallel).

    Every source is assumed to be a non-composite object (one component), so every object in the
    tree has as many components as the sources under it; the destination has n_sources.
    """
    if fan_in < 2:
        raise ValueError(f"fan_in must be >= 2, got {fan_in!r}")
    if n_sources < 1:
        raise ValueError(f"compose needs at least one source, got {n_sources!r}")
    if n_sources > max_components:
        raise ValueError(
            f"{n_sources} sources would make an object of {n_sources} components, over the GCS limit "
            f"of {max_components}; group chunks into fewer parts with plan_parts()")
    calls: list[list[int]] = []
    level = list(range(n_sources))
    next_node = n_sources
    while True:
        if len(level) <= fan_in:
            calls.append(level)
            return calls
        # Spread the level evenly over the fewest calls, so the tree stays as shallow as possible.
        group_count = -(-len(level) // fan_in)
        groups = [level[start:stop] for start, stop in plan_parts(len(level), group_count)]
        next_level = []
        for group in groups:
            if len(group) == 1:
                next_level.append(group[0])  # a single node needs no compose of its own
                continue
            calls.append(group)
            next_level.append(next_node)
            next_node += 1
        level = next_level


def temp_dir_for(destination: str, job_id: str, attempt: int = 1) -> str:
    """A temp folder beside destination (same bucket / filesystem) for one attempt of a job, ending in '/'.

    Each attempt has its own: `<job id>` for the first (the name batch runs have always used),
    `<job id>.a<attempt>` after it (job ids hold no '.'), so an attempt the reconciler started
    again never reads, overwrites or removes another attempt's temp objects.
    """
    if not job_id or "/" in job_id:
        raise ValueError(f"job_id must be a non-empty name without '/', got {job_id!r}")
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more, got {attempt!r}")
    folder = job_id if attempt == 1 else f"{job_id}.a{attempt}"
    if _is_gcs(destination):
        bucket, name = _split_gcs(destination)
        parent = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
        return f"{_GCS_PREFIX}{bucket}/{parent}{TEMP_DIR_NAME}/{folder}/"
    parent = os.path.dirname(os.path.abspath(destination))
    return os.path.join(parent, TEMP_DIR_NAME, folder) + os.sep


# ---------------------------------------------------------------------------------------------
# Reads and writes


class InputChangedError(RuntimeError):
    """An input was replaced or modified after its job was planned: reading on would mix versions."""


def input_version(path: str) -> str:
    """A token that changes whenever the object at `path` is replaced or modified: its GCS
    generation, or a local file's device, inode, size and modification time. FileNotFoundError if
    it is missing. Taken when a job is planned, checked by every read_range of that job."""
    if _is_gcs(path):
        bucket_name, name = _split_gcs(path)
        blob = _gcs_client().bucket(bucket_name).get_blob(name, retry=_gcs_retry())
        if blob is None:
            raise FileNotFoundError(f"no such object: {path}")
        return f"gs-generation:{blob.generation}"
    return local_files.local_version(os.stat(path))


def input_versions(paths: Sequence[str]) -> list[str | Exception]:
    """input_version of each path, in order; the error instead where one fails (a file that
    vanished since it was matched). gs:// lookups run a few at a time: each is a request."""
    versions: list[str | Exception] = [None] * len(paths)  # type: ignore[list-item]

    def look_up(index: int) -> None:
        try:
            versions[index] = input_version(paths[index])
        except Exception as e:  # noqa: BLE001 - reported per path
            versions[index] = e

    remote = [i for i, path in enumerate(paths) if _is_gcs(path)]
    for i in range(len(paths)):
        if not _is_gcs(paths[i]):
            look_up(i)
    _run_in_threads(look_up, remote)
    return versions


def bucket_exists(path: str) -> bool:
    """Whether the bucket of a gs:// path exists (True where it cannot be told, e.g. no permission
    to look: the job then reports what it finds)."""
    from google.api_core.exceptions import NotFound
    try:
        return _gcs_client().lookup_bucket(_split_gcs(path)[0], retry=_gcs_retry()) is not None
    except NotFound:
        return False
    except Exception:  # noqa: BLE001 - "cannot tell" is not "absent"
        return True


def stored_crc32c(path: str, version: str | None = None) -> int | None:
    """The CRC32C storage keeps of a whole object (GCS: of that generation), or None where there is
    none (local files, composite objects without one)."""
    if not _is_gcs(path):
        return None
    bucket_name, name = _split_gcs(path)
    generation = None
    if version is not None and version.startswith("gs-generation:"):
        generation = int(version.split(":", 1)[1])
    blob = _gcs_client().bucket(bucket_name).get_blob(name, generation=generation, retry=_gcs_retry())
    if blob is None or not blob.crc32c:
        return None
    import base64
    return int.from_bytes(base64.b64decode(blob.crc32c), "big")


def read_range(path: str, offset: int, length: int, version: str | None = None) -> bytes:
    """Exactly `length` bytes of `path` from `offset`; EOFError if the object is shorter, FileNotFoundError if missing.

    With `version` (from input_version), the bytes come from that version of the object or
    InputChangedError is raised: a GCS read asks for that generation, a local read checks the
    open file's metadata after reading."""
    if offset < 0 or length < 0:
        raise ValueError(f"offset and length must be >= 0, got offset={offset!r} length={length!r}")
    if length == 0:
        return b""
    if _is_gcs(path):
        data = _gcs_read_range(path, offset, length, version)
    elif "://" in path:  # another Beam filesystem: no version check there
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.seek(offset)
            data = _read_exactly(f, length)
    else:
        with open(path, "rb", buffering=0) as f:
            f.seek(offset)
            data = _read_exactly(f, length)
            _check_local_version(f, path, version)
    if len(data) != length:
        raise _ended_early(path, length, offset, len(data))
    return data


def _check_local_version(f, path: str, version: str | None) -> None:
    """InputChangedError unless the open local file `f` is still `version` (None: any)."""
    if version is not None and local_files.local_version(os.fstat(f.fileno())) != version:
        raise InputChangedError(f"{path} changed while the job was reading it")


def _ended_early(path: str, length: int, offset: int, got: int) -> EOFError:
    return EOFError(f"{path}: wanted {length} bytes at offset {offset}, but the object ends after {got}")


def prepare_temp_dir(temp_dir: str) -> None:
    """Makes a local job temp folder (temp_dir_for) private to this user, or refuses one that
    another user owns or may write into (local_files.UnsafeTempDirError); gs:// needs nothing."""
    if "://" not in temp_dir:
        local_files.ensure_temp_dir(temp_dir)


def read_range_into(path: str, offset: int, buffer, version: str | None = None):
    """`read_range` into `buffer` (a writable byte buffer), all of it: errors as read_range's; returns `buffer`.

    A local file is read straight into the buffer, so a caller that keeps one buffer per thread
    (ThreadBuffers) touches no fresh memory per chunk; another store's bytes are copied in."""
    view = memoryview(buffer).cast("B")
    if "://" in path:
        view[:] = read_range(path, offset, len(view), version)
        return buffer
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got offset={offset!r}")
    with open(path, "rb", buffering=0) as f:
        got = pread_into(f.fileno(), view, offset)
        _check_local_version(f, path, version)
    if got != len(view):
        raise _ended_early(path, len(view), offset, got)
    return buffer


def open_write(path: str) -> BinaryIO:
    """A binary writer for a new object at path (FileSystems.create); on an exception inside `with`, the object is removed.

    A local path inside a temp folder is written in a private folder (prepare_temp_dir) and never
    through a symlink."""
    if _is_gcs(path):
        configure_beam_for_storage_emulator()
    if "://" not in path and TEMP_DIR_NAME in path.split(os.sep)[:-1]:
        _prepare_private_parent(os.path.dirname(os.path.abspath(path)))
        raw = os.fdopen(local_files.open_private(path), "wb")
    else:
        raw = FileSystems.create(path, mime_type="application/octet-stream",
                                 compression_type=CompressionTypes.UNCOMPRESSED)
    return _RemoveOnErrorWriter(raw, path)


def _prepare_private_parent(directory: str) -> None:
    """`.dcas-tmp` itself (the failures CSV's folder), a job folder inside it, or a folder below."""
    parts = directory.split(os.sep)
    index = len(parts) - 1 - parts[::-1].index(TEMP_DIR_NAME)
    if index == len(parts) - 1:
        local_files.private_dir(directory)
        return
    local_files.ensure_temp_dir(os.sep.join(parts[:index + 2]))
    os.makedirs(directory, mode=0o700, exist_ok=True)  # inside a private folder: ours


class _RemoveOnErrorWriter:
    """Wraps a FileSystems writer: a failed `with` block must not leave a truncated object behind.

    (GCS's BlobWriter finalises the upload on close() even when closed by an exception.)
    """

    def __init__(self, raw: BinaryIO, path: str):
        self._raw = raw
        self.path = path

    def write(self, data) -> int:
        return self._raw.write(data)

    def close(self) -> None:
        self._raw.close()

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def __enter__(self) -> "_RemoveOnErrorWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._raw.close()
        finally:
            if exc_type is not None:
                delete([self.path])


def delete(paths: Sequence[str]) -> None:
    """Delete objects or files; ones that do not exist are ignored."""
    gcs_by_bucket: dict[str, list[str]] = {}
    for path in paths:
        if _is_gcs(path):
            bucket, name = _split_gcs(path)
            gcs_by_bucket.setdefault(bucket, []).append(name)
        elif "://" in path:
            if FileSystems.exists(path):
                FileSystems.delete([path])
        else:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
    for bucket_name, names in gcs_by_bucket.items():
        from google.cloud.exceptions import NotFound
        bucket = _gcs_client().bucket(bucket_name)

        def delete_one(name: str) -> None:
            try:
                bucket.delete_blob(name, retry=_gcs_retry())
            except NotFound:
                pass  # already gone (also what a retried delete sees)

        _run_in_threads(delete_one, names)


def remove_temp_dir(temp_dir: str) -> None:
    """Remove a temp folder made by temp_dir_for and everything in it (missing ok)."""
    if not os.path.basename(temp_dir.rstrip("/" + os.sep)) or TEMP_DIR_NAME not in temp_dir:
        raise ValueError(f"refusing to remove {temp_dir!r}: not a folder made by temp_dir_for()")
    if _is_gcs(temp_dir):
        bucket_name, prefix = _split_gcs(temp_dir)
        prefix = prefix.rstrip("/") + "/"
        names = [blob.name for blob in _gcs_client().list_blobs(bucket_name, prefix=prefix, retry=_gcs_retry())]
        delete([f"{_GCS_PREFIX}{bucket_name}/{name}" for name in names])
    else:
        shutil.rmtree(temp_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Atomic publication


def remove_job_temp_dir(temp_dir: str) -> None:
    """remove_temp_dir, and locally the shared parent (.dcas-tmp) too once no other job uses it."""
    remove_temp_dir(temp_dir)
    if not _is_gcs(temp_dir):
        # rmdir refuses a folder another job still uses; one someone else owns is theirs to remove.
        local_files.remove_if_empty(os.path.dirname(temp_dir.rstrip(os.sep)))


def publish_concatenation(sources: Sequence[str], destination: str, *, temp_dir: str | None = None,
                          overwrite: bool = True) -> None:
    """Make destination the concatenation of sources, in order, atomically; then delete the sources.

    Atomic means: destination is either the complete concatenation or, if anything fails, exactly
    what it was before (absent or the old object). Sources are deleted only after success.
    Intermediate objects go to temp_dir (default: a fresh folder from temp_dir_for). With
    `overwrite=False`, a destination that exists at the moment of publication (even one created
    while the sources were being written) is left alone and FileExistsError is raised.
    """
    sources = list(sources)
    if _is_gcs(destination):
        _gcs_publish(sources, destination, temp_dir, overwrite)
    elif "://" in destination:
        raise ValueError(f"publish_concatenation supports local paths and gs:// only, not {destination!r}")
    else:
        _local_publish(sources, destination, overwrite)
    delete(sources)


def publish_local_file(path: str, destination: str, expected_size: int, *, overwrite: bool = True) -> None:
    """Make the finished local file at `path` the destination atomically: fsync, check, rename.

    `path` must be on the destination's filesystem (a temp_dir_for folder is). No byte is copied.
    A file of the wrong size is refused and removed; on any failure `path` is gone and the
    destination is what it was before. `overwrite=False`: as in publish_concatenation.
    """
    directory = os.path.dirname(os.path.abspath(destination))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            written = os.fstat(fd)
            if written.st_size != expected_size:
                raise RuntimeError(f"{path} holds {written.st_size} bytes, expected {expected_size}")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.makedirs(directory, exist_ok=True)
        local_files.publish_file(path, destination, overwrite=overwrite, written=written)
    except BaseException:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        raise
    local_files.fsync_directory(directory)




def _exists(destination: str) -> FileExistsError:
    return FileExistsError(f"{destination} already exists and overwriting was not allowed")


def _local_publish(sources: list[str], destination: str, overwrite: bool) -> None:
    for source in sources:
        if _is_gcs(source):
            raise ValueError(f"cannot publish gs:// source {source!r} to local {destination!r}")
    directory = os.path.dirname(os.path.abspath(destination))
    os.makedirs(directory, exist_ok=True)
    sizes = [os.stat(source).st_size for source in sources]  # a missing source fails before any write
    offsets = list(itertools.accumulate(sizes, initial=0))
    # Locked while we write it: clean_leftovers leaves it alone.
    temp_path, fd = local_files.create_publication_temp(destination)
    try:
        try:
            written = os.fstat(fd)
            os.ftruncate(fd, offsets[-1])
            if not _copy_files_direct(sources, sizes, fd):
                def copy_group(group: range) -> None:
                    for i in group:
                        _copy_file_into(sources[i], fd, offsets[i], sizes[i])
                        # Only the range just copied: its pages are dirty, so the hint keeps them cached.
                        if sizes[i]:
                            start_writeback(fd, offsets[i], sizes[i])

                groups = copy_groups(sizes, _local_copy_threads(offsets[-1]))
                _run_in_threads(copy_group, groups, max_workers=len(groups))
            os.fsync(fd)
            cancellation.fault_point("publication-copied")
            local_files.publish_file(temp_path, destination, overwrite=overwrite, written=written)
        finally:
            os.close(fd)  # only now: the lock keeps cleaners off the temp file until it is renamed
    except BaseException:
        try:
            os.remove(temp_path)
        except FileNotFoundError:
            pass
        raise
    local_files.fsync_directory(directory)  # make the rename itself durable


def _copy_files_direct(sources: Sequence[str], sizes: Sequence[int], fd: int) -> bool:
    """Writes the local files `sources` (of `sizes` bytes) one after another into `fd` from its
    start, with direct I/O as the in-process engine writes its output (DirectStage); False, having
    written nothing, where the file system has no direct I/O.

    Why: on the benchmark machine, filling page-cache pages costs ~2.4 CPU-s per GB written, which
    copy_file_range pays as well (ext4 splices it into buffered writes). Reading the sources, still
    in the page cache, costs ~0.13 s per GB; the disk then sets the pace."""
    direct = reopen_direct(fd) if sum(sizes) >= DIRECT_IO_ALIGNMENT else None
    if direct is None:
        return False
    stage = DirectStage(fd, direct, 0, _COPY_BUFFER_SIZE)
    try:
        for source, size in zip(sources, sizes):
            with open(source, "rb", buffering=0) as f:
                done = 0
                while done < size:
                    cancellation.check()
                    space = stage.space()[:size - done]
                    got = pread_into(f.fileno(), space, done)
                    if got != space.shape[0]:
                        raise RuntimeError(f"{source} ended after {done + got} of its {size} bytes while it "
                                           "was published")
                    done += got
                    stage.advance(got)
        stage.finish()
    finally:
        stage.close()
    return True


def _local_copy_threads(total_bytes: int) -> int:
    """Threads that copy a local publication's sources: the copy's cost is the kernel filling new
    page-cache pages (~480 MB/s per core on the benchmark machine), so it scales with cores."""
    if total_bytes < _PARALLEL_COPY_ABOVE:
        return 1
    return max(1, min(os.cpu_count() or 1, _LOCAL_COPY_THREADS))


def copy_groups(sizes: Sequence[int], groups: int) -> list[range]:
    """Split sources 0..len(sizes)-1 into at most `groups` consecutive runs of about equal bytes.

    Every source is in exactly one run and no run is empty; with no sources there are no runs."""
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups!r}")
    total = sum(sizes)
    runs: list[range] = []
    start = 0
    done = 0
    for i, size in enumerate(sizes):
        done += size
        # Close the run once the bytes so far reach its share of the total.
        runs_left = groups - len(runs) - 1
        if runs_left and done * groups >= total * (len(runs) + 1):
            runs.append(range(start, i + 1))
            start = i + 1
    if start < len(sizes):
        runs.append(range(start, len(sizes)))
    return runs


def _copy_file_into(source: str, fd: int, offset: int, size: int) -> None:
    """Copy the `size` bytes of the local file `source` into `fd` at `offset`, without moving fd's
    position (so threads can fill disjoint ranges of one file). Raises if the source is shorter."""
    with open(source, "rb", buffering=0) as f:
        copied = _copy_range(f.fileno(), fd, offset, size)
    if copied != size:
        raise RuntimeError(f"{source} ended after {copied} of its {size} bytes while it was published")


def _copy_range(src_fd: int, dst_fd: int, dst_offset: int, size: int, in_kernel: bool = True) -> int:
    """Copy up to `size` bytes from the start of src_fd to dst_fd at dst_offset; returns the bytes
    copied (fewer only when the source ends first).

    In the kernel when it can (copy_file_range: no round trip through Python, and a reflink on
    filesystems that share extents), else through a buffer with pread/pwrite."""
    copied = 0
    copy_file_range = getattr(os, "copy_file_range", None)
    if in_kernel and copy_file_range is not None:
        try:
            while copied < size:
                n = copy_file_range(src_fd, dst_fd, min(size - copied, _COPY_BUFFER_SIZE * 8),
                                    copied, dst_offset + copied)
                if n == 0:
                    return copied
                copied += n
            return copied
        except OSError:
            pass  # EXDEV/ENOSYS/EINVAL and the like: go on from `copied` through a buffer
    while copied < size:
        data = os.pread(src_fd, min(size - copied, _COPY_BUFFER_SIZE), copied)
        if not data:
            return copied
        view = memoryview(data)
        while view:
            written = os.pwrite(dst_fd, view, dst_offset + copied)
            view = view[written:]
            copied += written
    return copied


def _gcs_publish(sources: list[str], destination: str, temp_dir: str | None, overwrite: bool) -> None:
    bucket_name, destination_name = _split_gcs(destination)
    source_names = []
    for source in sources:
        source_bucket, source_name = _split_gcs(source) if _is_gcs(source) else (None, source)
        if source_bucket != bucket_name:
            raise ValueError(
                f"compose works within one bucket: source {source!r} is not in gs://{bucket_name}/ "
                "(write parts under temp_dir_for(destination, ...))")
        source_names.append(source_name)
    bucket = _gcs_client().bucket(bucket_name)
    if not overwrite and bucket.blob(destination_name).exists(retry=_gcs_retry()):
        # Fails early; the precondition on the final write below is what closes the race on GCS
        # (fake-gcs-server ignores it on compose, so only this check is exercised by the tests).
        raise _exists(destination)
    if not source_names:
        # compose needs at least one source; an empty upload is just as atomic.
        try:
            # Empty either way, so a retried upload writes the same object.
            bucket.blob(destination_name).upload_from_string(
                b"", content_type="application/octet-stream", retry=_gcs_retry(), **_no_overwrite(overwrite))
        except gcs_exceptions.PreconditionFailed:
            raise _exists(destination) from None
        return
    if temp_dir is None:
        temp_dir = temp_dir_for(destination, f"compose-{uuid.uuid4().hex}")
    temp_bucket, temp_prefix = _split_gcs(temp_dir)
    if temp_bucket != bucket_name:
        raise ValueError(f"temp_dir {temp_dir!r} must be in the destination's bucket gs://{bucket_name}/")
    temp_prefix = temp_prefix.rstrip("/") + "/"
    run_id = uuid.uuid4().hex[:12]

    plan = compose_plan(len(source_names))
    node_names = list(source_names)
    for index in range(len(plan) - 1):
        node_names.append(f"{temp_prefix}compose-{run_id}-{index:05d}")
    node_names.append(destination_name)
    intermediates = node_names[len(source_names):-1]

    try:
        for level in _plan_levels(plan, len(source_names)):
            _run_compose_calls(bucket, [(plan[k], node_names[len(source_names) + k]) for k in level],
                               node_names, len(source_names), final_overwrite=overwrite)
    except gcs_exceptions.PreconditionFailed:
        raise _exists(destination) from None
    finally:
        # Intermediates are garbage whether or not the final compose succeeded.
        delete([f"{_GCS_PREFIX}{bucket_name}/{name}" for name in intermediates])


def _plan_levels(plan: list[list[int]], n_sources: int) -> list[list[int]]:
    """Group call indices into levels: a call's level is one more than its deepest input call."""
    depth_of_node = {node: 0 for node in range(n_sources)}
    levels: list[list[int]] = []
    for k, inputs in enumerate(plan):
        depth = 1 + max(depth_of_node[node] for node in inputs)
        depth_of_node[n_sources + k] = depth
        while len(levels) < depth:
            levels.append([])
        levels[depth - 1].append(k)
    return levels


def _no_overwrite(overwrite: bool) -> dict:
    """GCS precondition for a write that must not replace an object: generation 0 = "absent"."""
    return {} if overwrite else {"if_generation_match": 0}


def _run_compose_calls(bucket, calls: list[tuple[list[int], str]], node_names: list[str],
                       n_sources: int, final_overwrite: bool = True) -> None:
    """`final_overwrite=False` puts the no-overwrite precondition on the call that writes the last
    node (the destination); intermediates are ours and always written."""
    def compose_one(call: tuple[list[int], str]) -> None:
        inputs, target_name = call
        # Check first for a clear error: GCS answers a missing source with a bare 404 on the
        # compose, and fake-gcs-server with a 500 that the retry below would repeat for a minute.
        missing = [node_names[node] for node in inputs
                   if node < n_sources and not bucket.blob(node_names[node]).exists(retry=_gcs_retry())]
        if missing:
            raise FileNotFoundError(
                f"cannot compose gs://{bucket.name}/{target_name}: missing source object(s) "
                + ", ".join(f"gs://{bucket.name}/{name}" for name in missing))
        target = bucket.blob(target_name)
        target.content_type = "application/octet-stream"
        # Compose of the same sources gives the same bytes, so retrying it is safe.
        target.compose([bucket.blob(node_names[node]) for node in inputs], retry=_gcs_retry(),
                       **_no_overwrite(final_overwrite or target_name != node_names[-1]))

    _run_in_threads(compose_one, calls)


def _run_in_threads(function, items: list, max_workers: int = _GCS_THREADS) -> None:
    """Call function on every item, a few at a time (GCS calls are latency-bound); re-raise the first error."""
    if len(items) <= 1 or max_workers <= 1:
        for item in items:
            function(item)
        return
    with ThreadPoolExecutor(max_workers=min(max_workers, len(items))) as pool:
        for future in [pool.submit(function, item) for item in items]:
            future.result()


# ---------------------------------------------------------------------------------------------
# GCS plumbing: one client per process, made on first use (DoFns are pickled, clients are not).

_client_lock = threading.Lock()
_client_cache: dict[tuple[int, str | None], object] = {}


def _gcs_client():
    # Keyed by pid (a forked child must not share the parent's HTTP sessions) and by the emulator
    # address (tests start the emulator after import; a client made before would talk to real GCS).
    key = (os.getpid(), os.environ.get("STORAGE_EMULATOR_HOST"))
    client = _client_cache.get(key)
    if client is None:
        with _client_lock:
            client = _client_cache.get(key)
            if client is None:
                from google.cloud import storage
                configure_beam_for_storage_emulator()
                client = storage.Client()
                _client_cache.clear()
                _client_cache[key] = client
    return client


def _gcs_retry():
    from adapters.retries import gcs_retry
    return gcs_retry()


def _gcs_read_range(path: str, offset: int, length: int, version: str | None = None) -> bytes:
    # Not FileSystems.open + seek + read: Beam's GCS reader (BeamBlobReader) fetches
    # max(requested, 16 MiB) per read and first GETs the object's metadata, so a 4 MiB chunk would
    # cost two requests and 4x its size in egress. One ranged GET of exactly the bytes wanted
    # (`end` is inclusive) is what an encoder/decoder of one chunk needs. Measured on
    # fake-gcs-server, 4 MiB chunks of a 64 MiB object: 0.08 s per chunk through FileSystems,
    # 0.01-0.02 s here (medians of 5, two runs). gs:// writes and listing stay on FileSystems.
    bucket_name, name = _split_gcs(path)
    generation = None
    if version is not None:
        if not version.startswith("gs-generation:"):
            raise ValueError(f"{version!r} is not a version of a gs:// object")
        generation = int(version.split(":", 1)[1])
    blob = _gcs_client().bucket(bucket_name).blob(name, generation=generation)
    from google.api_core.exceptions import NotFound, RequestRangeNotSatisfiable
    try:
        return blob.download_as_bytes(start=offset, end=offset + length - 1, checksum=None,
                                      raw_download=True, retry=_gcs_retry())
    except RequestRangeNotSatisfiable:
        return b""  # offset at or past the end: reported as a short read by the caller
    except NotFound as e:
        if generation is not None:
            raise InputChangedError(f"{path} was replaced or deleted while the job was reading it") from e
        raise FileNotFoundError(f"no such object: {path}") from e  # as for a local path


def configure_beam_for_storage_emulator() -> None:
    """Under STORAGE_EMULATOR_HOST, make Beam's GCS filesystem connect anonymously at once.

    Without this, the first gs:// access of every process (the launcher and each multi-processing
    worker) spends ~17 s in Beam's retries of google.auth.default() before Beam falls back to an
    anonymous client anyway, which is what the emulator wants. We record that end state in Beam's
    credentials cache up front. Beam-internal, so guarded: if a later Beam renames it, gs:// still
    works, only slowly. Does nothing when no emulator is configured (real GCS keeps real credentials).
    """
    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        return
    try:
        from apache_beam.internal.gcp import auth
        credentials_cache = auth._Credentials
    except (ImportError, AttributeError):
        return
    with credentials_cache._credentials_lock:
        if not credentials_cache._credentials_init:
            credentials_cache._credentials = None
            credentials_cache._credentials_init = True


# ---------------------------------------------------------------------------------------------
# Small helpers


def _is_gcs(path: str) -> bool:
    return path.startswith(_GCS_PREFIX)


def _split_gcs(path: str) -> tuple[str, str]:
    if not _is_gcs(path):
        raise ValueError(f"not a gs:// path: {path!r}")
    bucket, _, name = path[len(_GCS_PREFIX):].partition("/")
    if not bucket:
        raise ValueError(f"gs:// path without a bucket: {path!r}")
    return bucket, name


def _read_exactly(f, length: int) -> bytes:
    pieces = []
    remaining = length
    while remaining > 0:
        piece = f.read(remaining)
        if not piece:
            break
        pieces.append(piece)
        remaining -= len(piece)
    return b"".join(pieces)


# Processes that import this module (the launcher, each Beam worker that unpickles our DoFns)
# inherit STORAGE_EMULATOR_HOST from the test run; set Beam up for it before any FileSystems call.
configure_beam_for_storage_emulator()
