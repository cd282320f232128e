"""Compress mode's worker step: each part reads its own chunks, encodes them and writes one part object."""
from __future__ import annotations

import dataclasses
import os
import time

import apache_beam as beam

from codec import container
from adapters import cancellation, storage
from transforms.failures import FAILED, failure
from transforms.observability import log_event, record_distribution
from transforms.planning import FileJob, Spread, chunk_count, chunk_descriptors, part_path

__all__ = ["PartTask", "PartRecord", "part_tasks", "encode_part", "tasks_with_table", "EncodeParts"]


@dataclasses.dataclass(frozen=True)
class PartTask:
    """Chunks `chunk_start`..`chunk_stop` of one file, which one worker turns into one part object."""

    job: FileJob
    index: int
    chunk_start: int
    chunk_stop: int


@dataclasses.dataclass(frozen=True)
class PartRecord:
    """What a worker reports about one part object it wrote: small, so it can go through the runner.

    `entries` are the part's seek-table entries in order (compress mode; empty on decompress).
    """

    source: str
    index: int
    path: str
    chunks: int
    bytes_in: int
    bytes_out: int
    seconds: float
    entries: tuple[container.ChunkEntry, ...] = ()


def part_tasks(job: FileJob, chunk_size: int) -> list[PartTask]:
    """The parts of one file: consecutive chunk ranges, few enough for one GCS composite object."""
    return [PartTask(job, index, start, stop)
            for index, (start, stop) in enumerate(storage.plan_parts(chunk_count(job.size, chunk_size)))]


def encode_part(task: PartTask, chunk_size: int, shared_histogram, path: str) -> tuple[PartRecord, list[float]]:
    """Encodes the task's chunks one at a time into the part object at `path`.

    Holds one chunk and its frame in memory at a time, whatever the file or part size. Returns the
    record and the encode time of each chunk in milliseconds.
    """
    started = time.perf_counter()
    entries, encode_ms = [], []
    bytes_in = bytes_out = 0
    with storage.open_write(path) as out:
        for chunk in chunk_descriptors(task.job.source, task.job.size, chunk_size,
                                       task.chunk_start, task.chunk_stop, task.job.version):
            cancellation.check()
            data = storage.read_range(chunk.source, chunk.offset, chunk.length, chunk.version)
            encode_started = time.perf_counter()
            # Header and payload written apart: joining them would copy every compressed byte once more.
            frame_header, payload, entry = container.encode_frame_parts(data, shared_histogram)
            encode_ms.append((time.perf_counter() - encode_started) * 1000)
            out.write(frame_header)
            out.write(payload)
            entries.append(entry)
            cancellation.fault_point("chunk-encoded")
            bytes_in += entry.original_size
            bytes_out += entry.frame_size
    record = PartRecord(task.job.source, task.index, path, len(entries), bytes_in, bytes_out,
                        time.perf_counter() - started, tuple(entries))
    return record, encode_ms


def tasks_with_table(keyed_table, chunk_size: int) -> list[tuple[PartTask, object]]:
    """(job_key, table) -> each of the file's part tasks paired with the file's frequency table."""
    key, table = keyed_table
    return [(task, table) for task in part_tasks(FileJob(*key), chunk_size)]


def _part_key(task_and_table) -> tuple[str, int]:
    return task_and_table[0].job.source, task_and_table[0].index


class _EncodePartFn(beam.DoFn):
    """(PartTask, table) -> PartRecord; a failure removes the part object and goes to FAILED."""

    def __init__(self, chunk_size: int, job_id: str):
        self._chunk_size = chunk_size
        self._job_id = job_id

    def process(self, task_and_table):
        task, table = task_and_table
        path = part_path(storage.temp_dir_for(task.job.destination, self._job_id),
                         task.job.destination, task.index)
        try:
            record, encode_ms = encode_part(task, self._chunk_size, table, path)
        except Exception as e:  # noqa: BLE001 - any error fails this file only
            cancellation.stop_on_write_error(e)
            storage.delete([path])
            yield beam.pvalue.TaggedOutput(FAILED, failure(task.job.source, f"encode part {task.index}", e))
            return
        for ms in encode_ms:
            record_distribution("encode-time-ms", ms)
        log_event("part-encoded", self._job_id, source=task.job.source,
                  part=task.index, chunks=record.chunks, seconds=round(record.seconds, 3),
                  worker_pid=os.getpid())
        yield record


@dataclasses.dataclass
class EncodeParts(beam.PTransform):
    """`(job_key, table)` frequency tables -> `(records, failures)`: every part of each file encoded with its table.

    The tasks are made from each table and carry it, rather than reading the tables as a side
    input, so no worker has to hold the tables of every file in the job: 2 KiB per part instead
    of 2 KiB per file on every worker. A file without a table (empty, or none of its chunks could
    be read) has nothing to encode; publication handles it.
    """

    chunk_size: int
    job_id: str

    def expand(self, tables):
        encoded = (
            tables
            | "Plan parts" >> beam.FlatMap(tasks_with_table, self.chunk_size)
            | "Spread parts" >> Spread(_part_key)
            | "Encode part" >> beam.ParDo(_EncodePartFn(self.chunk_size, self.job_id)).with_outputs(
                FAILED, main="records"))
        return encoded.records, encoded[FAILED]
