"""Decompress mode's worker steps: read each container's seek table, then decode parts of it in parallel."""
from __future__ import annotations

import dataclasses
import os
import threading
import time

import apache_beam as beam

from codec import container
from codec.errors import FormatError
from adapters import cancellation, local_files, storage, tracing
from transforms.encode import PartRecord, part_outputs
from transforms.failures import FAILED
from transforms.threads import PooledFn
from transforms.planning import FileJob, part_path

__all__ = ["ContainerJob", "DecodePartTask", "read_container_table", "decode_part_tasks",
           "decode_part", "decodes_in_place", "decoded_temp_path", "largest_chunk", "decode_part_in_place",
           "read_table_or_failure", "decode_task",
           "ReadSeekTables", "DecodeParts"]


@dataclasses.dataclass(frozen=True)
class ContainerJob:
    """A container to decompress and its checked seek table."""

    job: FileJob
    entries: tuple[container.ChunkEntry, ...]


@dataclasses.dataclass(frozen=True)
class DecodePartTask:
    """Chunks `chunk_start`.. of one container (their entries and first frame offset) for one worker.

    `original_offset` is where the first chunk's bytes go in the output, `output_size` the size of
    the whole output: a local decoder writes straight into the output's temp file with them.
    """

    job: FileJob
    index: int
    chunk_start: int
    frame_offset: int
    entries: tuple[container.ChunkEntry, ...]
    original_offset: int = 0
    output_size: int = 0


def read_container_table(job: FileJob) -> ContainerJob:
    """Reads and checks the header, footer and seek table with three small ranged reads."""
    size = job.size
    if size < container.HEADER_SIZE + container.trailer_size(0):
        raise FormatError(f"truncated container: {size} bytes is less than the smallest container "
                          f"({container.HEADER_SIZE + container.trailer_size(0)} bytes)")
    container.parse_header(storage.read_range(job.source, 0, container.HEADER_SIZE, job.version))
    footer = storage.read_range(job.source, size - container.FOOTER_SIZE, container.FOOTER_SIZE, job.version)
    chunk_count, _ = container.parse_footer(footer, size)
    table_size = container.trailer_size(chunk_count) - container.FOOTER_SIZE
    table = storage.read_range(job.source, size - container.trailer_size(chunk_count), table_size, job.version)
    entries = tuple(container.parse_seek_table(table, footer, size))
    if decodes_in_place(job.destination):  # before any work: a bomb, or too big for the disk
        local_files.check_free_space(job.destination, sum(entry.original_size for entry in entries))
    return ContainerJob(job, entries)


def decode_part_tasks(container_job: ContainerJob) -> list[DecodePartTask]:
    """The container's chunks grouped into parts as on compress, each with its first frame's offset."""
    entries = container_job.entries
    offsets = container.frame_offsets(entries)
    original_offsets = container.original_offsets(entries)
    output_size = sum(entry.original_size for entry in entries)
    return [DecodePartTask(container_job.job, index, start, offsets[start], entries[start:stop],
                           original_offsets[start], output_size)
            for index, (start, stop) in enumerate(storage.plan_parts(len(entries)))]


def decodes_in_place(destination: str) -> bool:
    """Local outputs are decoded straight into one temp file; gs:// outputs into part objects."""
    return "://" not in destination


def decoded_temp_path(temp_dir: str, destination: str) -> str:
    """The one temp file (in the job's temp folder, so on the destination's filesystem) that every
    decoder of a local output writes into; publication renames it to the destination.

    Not named like a part (`.part-NNNNN`): it has the output's full size from the start."""
    return os.path.join(temp_dir, os.path.basename(destination) + ".decoded")


def _frames(task: DecodePartTask):
    """Yields (chunk number, frame offset, entry, frame bytes) of the task, one ranged read each."""
    offset = task.frame_offset
    for number, entry in enumerate(task.entries, start=task.chunk_start):
        cancellation.check()
        yield number, offset, entry, storage.read_range(task.job.source, offset, entry.frame_size,
                                                        task.job.version)
        offset += entry.frame_size


def _damaged_chunk(number: int, offset: int, error: FormatError) -> FormatError:
    return FormatError(f"chunk {number} (frame at byte {offset}): {error}")


def _decoded_chunks(task: DecodePartTask, decode_ms: list):
    """Yields each of the task's chunks decoded and checked, reading one frame at a time."""
    for number, offset, entry, frame in _frames(task):
        decode_started = time.perf_counter()
        try:
            data = container.decode_frame(frame, entry)
        except FormatError as e:
            raise _damaged_chunk(number, offset, e) from e
        decode_ms.append((time.perf_counter() - decode_started) * 1000)
        cancellation.fault_point("chunk-decoded")
        yield data


def largest_chunk(task: DecodePartTask) -> int:
    """Original size of the task's largest chunk: the buffer decode_part_in_place needs."""
    return max((entry.original_size for entry in task.entries), default=0)


def decode_part_in_place(task: DecodePartTask, path: str, buffer=None) -> tuple[PartRecord, list[float]]:
    """Decodes the task's frames into the shared local file `path`, each at its original offset.

    Every decoder of the file opens `path` without truncating it and sets its size to the whole
    output's (the same size from each, so no decoder cuts another's bytes), then writes only its
    own byte range: parts land where they belong in any order, a retried part rewrites the same
    bytes, and publication is a rename instead of a copy of every byte.

    Chunks are decoded into `buffer` (a storage.aligned_buffer of at least largest_chunk(task)
    bytes; one is made when it is missing or short) and written from it with direct I/O wherever
    the filesystem and the chunk's alignment allow (storage.open_direct says why), buffered
    otherwise. Returns what decode_part returns; the record's `path` is the shared file.
    """
    started = time.perf_counter()
    decode_ms: list[float] = []
    if buffer is None or buffer.shape[0] < largest_chunk(task):
        buffer = storage.aligned_buffer(largest_chunk(task))
    # A private folder and no symlink followed: nobody else can swap in a file of theirs for us to
    # resize and fill (or to be published in place of the output).
    storage.prepare_temp_dir(os.path.dirname(path))
    fd = local_files.open_private(path, truncate=False)
    direct_fd = None
    try:
        os.ftruncate(fd, task.output_size)
        direct_fd = storage.open_direct(path)
        if direct_fd is not None and not os.path.samestat(os.fstat(direct_fd), os.fstat(fd)):
            os.close(direct_fd)
            direct_fd = None
        position = task.original_offset
        for number, offset, entry, frame in _frames(task):
            decode_started = time.perf_counter()
            try:
                size = container.decode_frame_into(frame, buffer, entry)
            except FormatError as e:
                raise _damaged_chunk(number, offset, e) from e
            decode_ms.append((time.perf_counter() - decode_started) * 1000)
            cancellation.fault_point("chunk-decoded")
            chunk = buffer[:size]
            if direct_fd is not None and storage.direct_io_allows(position, size):
                try:
                    storage.pwrite_all(direct_fd, chunk, position)
                except OSError:
                    # The filesystem refused this direct write (EINVAL and the like): buffered from
                    # here on; rewriting the whole chunk makes any part already written harmless.
                    os.close(direct_fd)
                    direct_fd = None
                    storage.pwrite_all(fd, chunk, position)
            else:  # the file's last, shorter chunk, or no direct I/O here
                storage.pwrite_all(fd, chunk, position)
            position += size
        bytes_out = position - task.original_offset
        # Disk writes of buffered bytes start now, beside the other parts' decoding, not all in
        # publication's fsync.
        if bytes_out:
            storage.start_writeback(fd, task.original_offset, bytes_out)
    finally:
        if direct_fd is not None:
            os.close(direct_fd)
        os.close(fd)
    frames_size = sum(entry.frame_size for entry in task.entries)
    record = PartRecord(task.job.source, task.index, path, len(task.entries), frames_size, bytes_out,
                        time.perf_counter() - started, job_id=task.job.job_id, attempt=task.job.attempt)
    return record, decode_ms


def decode_part(task: DecodePartTask, path: str) -> tuple[PartRecord, list[float]]:
    """Decodes the task's frames one at a time into the part object at `path`.

    Holds one frame and its decoded chunk in memory at a time. A damaged chunk raises FormatError
    naming the chunk and its offset. Returns the record and each chunk's decode time in ms.
    """
    started = time.perf_counter()
    decode_ms: list[float] = []
    bytes_out = 0
    with storage.open_write(path) as out:
        for data in _decoded_chunks(task, decode_ms):
            out.write(data)
            bytes_out += len(data)
    frames_size = sum(entry.frame_size for entry in task.entries)
    record = PartRecord(task.job.source, task.index, path, len(task.entries), frames_size, bytes_out,
                        time.perf_counter() - started, job_id=task.job.job_id, attempt=task.job.attempt)
    return record, decode_ms


def read_table_or_failure(job: FileJob):
    """read_container_table(job), or the job's Failure; never raises."""
    try:
        return read_container_table(job)
    except Exception as e:  # noqa: BLE001 - any error fails this file only
        return job.failure("read seek table", e)


class _ReadSeekTableFn(beam.DoFn):
    """FileJob -> ContainerJob; a file that is not a valid container goes to FAILED."""

    def process(self, job: FileJob):
        outcome = read_table_or_failure(job)
        yield outcome if isinstance(outcome, ContainerJob) else beam.pvalue.TaggedOutput(FAILED, outcome)


def decode_task(task: DecodePartTask, buffer=None):
    """DecodePartTask -> `(PartRecord, decode ms per chunk)`, or `(Failure, [])` with the part object
    removed; never raises. Local outputs are decoded in place (into `buffer` when it is large
    enough), gs:// outputs into a part object each."""
    job = task.job
    in_place = decodes_in_place(job.destination)
    path = (decoded_temp_path(job.temp_dir, job.destination) if in_place
            else part_path(job.temp_dir, job.destination, task.index))
    try:
        with tracing.span("decode part", parent=job.trace_context, job_id=job.job_id, part=task.index,
                          chunks=len(task.entries)):
            if in_place:
                return decode_part_in_place(task, path, buffer)
            return decode_part(task, path)
    except Exception as e:  # noqa: BLE001 - any error fails this file only
        cancellation.stop_on_write_error(e)
        # The shared file of an in-place output goes when publication fails the file.
        if not in_place:
            storage.delete([path])
        return job.failure(f"decode part {task.index}", e), []


class _DecodePartFn(PooledFn):
    """DecodePartTask -> PartRecord; a failure removes the part object and goes to FAILED."""

    def setup(self):
        super().setup()
        self._local = threading.local()  # a buffer per thread, made on first use at the largest chunk's size

    def _buffer_for(self, task: DecodePartTask):
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or buffer.shape[0] < largest_chunk(task):
            buffer = self._local.buffer = storage.aligned_buffer(largest_chunk(task))
        return buffer

    def work(self, task: DecodePartTask):
        buffer = self._buffer_for(task) if decodes_in_place(task.job.destination) else None
        return decode_task(task, buffer)

    def outputs(self, task, outcome):
        return part_outputs(outcome, "decode")


class ReadSeekTables(beam.PTransform):
    """FileJobs -> `(containers, failures)`: each container's checked seek table, or why it has none."""

    def expand(self, jobs):
        read = jobs | "Read seek table" >> beam.ParDo(_ReadSeekTableFn()).with_outputs(
            FAILED, main="containers")
        return read.containers, read[FAILED]


@dataclasses.dataclass
class DecodeParts(beam.PTransform):
    """DecodePartTasks -> `(records, failures)`; decoded bytes go straight to part objects.

    `threads` decodes a bundle's tasks on a thread pool (0 = one per core; PooledFn).
    """

    threads: int = 1

    def expand(self, tasks):
        decoded = tasks | "Decode part" >> beam.ParDo(_DecodePartFn(self.threads)).with_outputs(
            FAILED, main="records")
        return decoded.records, decoded[FAILED]
