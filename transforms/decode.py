"""Decompress mode's worker steps: read each container's seek table, then decode parts of it in parallel."""
from __future__ import annotations

import dataclasses
import os
import time

import apache_beam as beam

from codec import container
from codec.errors import FormatError
from transforms import storage
from transforms.encode import PartRecord
from transforms.failures import FAILED, failure
from transforms.observability import log_event, record_distribution
from transforms.planning import FileJob, part_path

__all__ = ["ContainerJob", "DecodePartTask", "read_container_table", "decode_part_tasks",
           "decode_part", "ReadSeekTables", "DecodeParts"]


@dataclasses.dataclass(frozen=True)
class ContainerJob:
    """A container to decompress and its checked seek table."""

    job: FileJob
    entries: tuple[container.ChunkEntry, ...]


@dataclasses.dataclass(frozen=True)
class DecodePartTask:
    """Chunks `chunk_start`.. of one container (their entries and first frame offset) for one worker."""

    job: FileJob
    index: int
    chunk_start: int
    frame_offset: int
    entries: tuple[container.ChunkEntry, ...]


def read_container_table(job: FileJob) -> ContainerJob:
    """Reads and checks the header, footer and seek table with three small ranged reads."""
    size = job.size
    if size < container.HEADER_SIZE + container.trailer_size(0):
        raise FormatError(f"truncated container: {size} bytes is less than the smallest container "
                          f"({container.HEADER_SIZE + container.trailer_size(0)} bytes)")
    container.parse_header(storage.read_range(job.source, 0, container.HEADER_SIZE))
    footer = storage.read_range(job.source, size - container.FOOTER_SIZE, container.FOOTER_SIZE)
    chunk_count, _ = container.parse_footer(footer, size)
    table_size = container.trailer_size(chunk_count) - container.FOOTER_SIZE
    table = storage.read_range(job.source, size - container.trailer_size(chunk_count), table_size)
    return ContainerJob(job, tuple(container.parse_seek_table(table, footer, size)))


def decode_part_tasks(container_job: ContainerJob) -> list[DecodePartTask]:
    """The container's chunks grouped into parts as on compress, each with its first frame's offset."""
    entries = container_job.entries
    offsets = container.frame_offsets(entries)
    return [DecodePartTask(container_job.job, index, start, offsets[start], entries[start:stop])
            for index, (start, stop) in enumerate(storage.plan_parts(len(entries)))]


def decode_part(task: DecodePartTask, path: str) -> tuple[PartRecord, list[float]]:
    """Decodes the task's frames one at a time into the part object at `path`.

    Holds one frame and its decoded chunk in memory at a time. A damaged chunk raises FormatError
    naming the chunk and its offset. Returns the record and each chunk's decode time in ms.
    """
    started = time.perf_counter()
    decode_ms = []
    offset = task.frame_offset
    bytes_out = 0
    with storage.open_write(path) as out:
        for number, entry in enumerate(task.entries, start=task.chunk_start):
            frame = storage.read_range(task.job.source, offset, entry.frame_size)
            decode_started = time.perf_counter()
            try:
                data = container.decode_frame(frame, entry)
            except FormatError as e:
                raise FormatError(f"chunk {number} (frame at byte {offset}): {e}") from e
            decode_ms.append((time.perf_counter() - decode_started) * 1000)
            out.write(data)
            offset += entry.frame_size
            bytes_out += len(data)
    record = PartRecord(task.job.source, task.index, path, len(task.entries),
                        offset - task.frame_offset, bytes_out, time.perf_counter() - started)
    return record, decode_ms


class _ReadSeekTableFn(beam.DoFn):
    """FileJob -> ContainerJob; a file that is not a valid container goes to FAILED."""

    def process(self, job: FileJob):
        try:
            yield read_container_table(job)
        except Exception as e:  # noqa: BLE001 - any error fails this file only
            yield beam.pvalue.TaggedOutput(FAILED, failure(job.source, "read seek table", e))


class _DecodePartFn(beam.DoFn):
    """DecodePartTask -> PartRecord; a failure removes the part object and goes to FAILED."""

    def __init__(self, job_id: str):
        self._job_id = job_id

    def process(self, task: DecodePartTask):
        path = part_path(storage.temp_dir_for(task.job.destination, self._job_id),
                         task.job.destination, task.index)
        try:
            record, decode_ms = decode_part(task, path)
        except Exception as e:  # noqa: BLE001 - any error fails this file only
            storage.delete([path])
            yield beam.pvalue.TaggedOutput(FAILED, failure(task.job.source, f"decode part {task.index}", e))
            return
        for ms in decode_ms:
            record_distribution("decode-time-ms", ms)
        log_event("part-decoded", self._job_id, source=task.job.source,
                  part=task.index, chunks=record.chunks, seconds=round(record.seconds, 3),
                  worker_pid=os.getpid())
        yield record


class ReadSeekTables(beam.PTransform):
    """FileJobs -> `(containers, failures)`: each container's checked seek table, or why it has none."""

    def expand(self, jobs):
        read = jobs | "Read seek table" >> beam.ParDo(_ReadSeekTableFn()).with_outputs(
            FAILED, main="containers")
        return read.containers, read[FAILED]


@dataclasses.dataclass
class DecodeParts(beam.PTransform):
    """DecodePartTasks -> `(records, failures)`; decoded bytes go straight to part objects."""

    job_id: str

    def expand(self, tasks):
        decoded = tasks | "Decode part" >> beam.ParDo(_DecodePartFn(self.job_id)).with_outputs(
            FAILED, main="records")
        return decoded.records, decoded[FAILED]
