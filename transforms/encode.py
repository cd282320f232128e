"""Compress mode's worker step: each part reads its own chunks, encodes them and writes one part object."""
from __future__ import annotations

import dataclasses
import os
import time

import apache_beam as beam

from codec import container
from adapters import cancellation, storage, tracing
from transforms.failures import FAILED
from transforms.observability import log_event, record_distribution
from transforms.threads import PooledFn
from transforms.planning import FileJob, Spread, chunk_count, chunk_descriptors, part_path

__all__ = ["PartTask", "PartRecord", "part_tasks", "encode_part", "tasks_with_table", "encode_task",
           "part_outputs", "EncodeParts"]


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

    `entries` are the part's seek-table entries in order (compress mode; empty on decompress);
    `job_id` and `attempt` say which attempt of which job wrote it.
    """

    source: str
    index: int
    path: str
    chunks: int
    bytes_in: int
    bytes_out: int
    seconds: float
    entries: tuple[container.ChunkEntry, ...] = ()
    job_id: str = ""
    attempt: int = 1


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
            with tracing.span("encode chunk", chunk=chunk.index, bytes=chunk.length):
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
                        time.perf_counter() - started, tuple(entries), task.job.job_id, task.job.attempt)
    return record, encode_ms


def tasks_with_table(keyed_table) -> list[tuple[PartTask, object]]:
    """(job_key, table) -> each of the file's part tasks paired with the file's frequency table."""
    key, table = keyed_table
    job = FileJob(*key)
    return [(task, table) for task in part_tasks(job, job.chunk_size)]


def encode_task(task_and_table):
    """(PartTask, table) -> `(PartRecord, encode ms per chunk)` written to the part's temp object, or
    `(Failure, [])` with that object removed. Never raises."""
    task, table = task_and_table
    job = task.job
    path = part_path(job.temp_dir, job.destination, task.index)
    try:
        with tracing.span("encode part", parent=job.trace_context, job_id=job.job_id, part=task.index,
                          chunks=task.chunk_stop - task.chunk_start):
            return encode_part(task, job.chunk_size, table, path)
    except Exception as e:  # noqa: BLE001 - any error fails this file only
        cancellation.stop_on_write_error(e)
        storage.delete([path])
        return job.failure(f"encode part {task.index}", e), []


def _part_key(task_and_table) -> tuple[str, str, int, int]:
    job = task_and_table[0].job
    return job.job_id, job.source, job.attempt, task_and_table[0].index


def part_outputs(outcome, verb: str):
    """What a part step ("encode" or "decode") emits for its task's outcome: the record, after its
    chunk times (`{verb}-time-ms`) and a `part-{verb}d` log line, or the Failure tagged FAILED."""
    record, chunk_ms = outcome
    if not isinstance(record, PartRecord):
        return [beam.pvalue.TaggedOutput(FAILED, record)]
    for ms in chunk_ms:
        record_distribution(f"{verb}-time-ms", ms)
    log_event(f"part-{verb}d", record.job_id, source=record.source, part=record.index, chunks=record.chunks,
              seconds=round(record.seconds, 3), worker_pid=os.getpid())
    return [record]


class _EncodePartFn(PooledFn):
    """(PartTask, table) -> PartRecord; a failure removes the part object and goes to FAILED."""

    def work(self, task_and_table):
        return encode_task(task_and_table)

    def outputs(self, task_and_table, outcome):
        return part_outputs(outcome, "encode")


@dataclasses.dataclass
class EncodeParts(beam.PTransform):
    """`(job_key, table)` frequency tables -> `(records, failures)`: every part of each file encoded with its table.

    The tasks are made from each table and carry it, rather than reading the tables as a side
    input, so no worker has to hold the tables of every file in the job: 2 KiB per part instead
    of 2 KiB per file on every worker. A file without a table (empty, or none of its chunks could
    be read) has nothing to encode; publication handles it.

    `spread` deals the parts out across the runner's workers (a grouping: batch only); `threads`
    encodes a bundle's parts on a thread pool instead (0 = one thread per core; PooledFn).
    """

    spread: bool = True
    threads: int = 1

    def expand(self, tables):
        tasks = tables | "Plan parts" >> beam.FlatMap(tasks_with_table)
        if self.spread:
            tasks = tasks | "Spread parts" >> Spread(_part_key)
        encoded = (
            tasks
            | "Encode part" >> beam.ParDo(_EncodePartFn(self.threads)).with_outputs(
                FAILED, main="records"))
        return encoded.records, encoded[FAILED]
