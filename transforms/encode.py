"""Compress mode's worker step: each part reads its own chunks, encodes them and writes one part object."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import time

import apache_beam as beam
import numpy as np

from codec import container
from codec.chunk import shared_table_wins
from adapters import cancellation, storage, tracing
from transforms.failures import FAILED
from transforms.observability import log_event, record_distribution
from transforms.threads import PooledFn, pool_size
from transforms.planning import FileJob, Spread, chunk_count, chunk_descriptors, part_path

__all__ = ["PartTask", "PartRecord", "part_tasks", "encode_part", "tasks_with_table", "tasks_to_count",
           "encode_task", "chunk_counts", "file_table", "with_file_table", "part_outputs", "EncodeParts"]

_SYMBOLS = 256
# Chunk byte counts in a PartRecord: one row of 256 per chunk. A chunk holds at most 2^30 bytes.
_COUNT_TYPE = np.dtype("<u4")
# Each worker thread reads its chunks into one buffer: a fresh one per chunk cost the worker ~2 CPU-s
# per GB in page faults. Streaming workers live on: they keep none above 16 MiB (4 default chunks).
_READ_BUFFERS = storage.ThreadBuffers(keep_up_to=16 * 2**20)


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
    `job_id` and `attempt` say which attempt of which job wrote it. `counts` (compress mode, when
    the part was coded without a shared table: EncodeParts.Counting) holds each chunk's byte
    histogram, uint32 little-endian, 1 KiB a chunk (chunk_counts reads it).
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
    counts: bytes = b""


def part_tasks(job: FileJob, chunk_size: int) -> list[PartTask]:
    """The parts of one file: consecutive chunk ranges, few enough for one GCS composite object."""
    return [PartTask(job, index, start, stop)
            for index, (start, stop) in enumerate(storage.plan_parts(chunk_count(job.size, chunk_size)))]


def encode_part(task: PartTask, chunk_size: int, shared_histogram, path: str,
                count: bool = False) -> tuple[PartRecord, list[float]]:
    """Encodes the task's chunks one at a time into the part object at `path`.

    Holds one chunk and its frame in memory at a time, whatever the file or part size. Returns the
    record and the encode time of each chunk in milliseconds. `count`: the record keeps each chunk's
    byte histogram, which the encoder takes anyway.
    """
    started = time.perf_counter()
    entries, encode_ms = [], []
    counts = np.zeros((task.chunk_stop - task.chunk_start if count else 0, _SYMBOLS), dtype=_COUNT_TYPE)
    bytes_in = bytes_out = 0
    with storage.open_write(path) as out:
        for chunk in chunk_descriptors(task.job.source, task.job.size, chunk_size,
                                       task.chunk_start, task.chunk_stop, task.job.version):
            cancellation.check()
            with tracing.span("encode chunk", chunk=chunk.index, bytes=chunk.length):
                data = storage.read_range_into(chunk.source, chunk.offset, _READ_BUFFERS.get(chunk.length),
                                               chunk.version)
                encode_started = time.perf_counter()
                # Header and payload written apart: joining them would copy every compressed byte once more.
                row = counts[len(entries)] if count else None
                frame_header, payload, entry = container.encode_frame_parts(data, shared_histogram, row)
                encode_ms.append((time.perf_counter() - encode_started) * 1000)
                out.write(frame_header)
                out.write(payload)
            entries.append(entry)
            cancellation.fault_point("chunk-encoded")
            bytes_in += entry.original_size
            bytes_out += entry.frame_size
    record = PartRecord(task.job.source, task.index, path, len(entries), bytes_in, bytes_out,
                        time.perf_counter() - started, tuple(entries), task.job.job_id, task.job.attempt,
                        counts.tobytes())
    return record, encode_ms


def chunk_counts(record: PartRecord) -> np.ndarray:
    """The byte histograms of a counted part's chunks, one row of 256 per chunk."""
    return np.frombuffer(record.counts, dtype=_COUNT_TYPE).reshape(-1, _SYMBOLS)


def file_table(records) -> np.ndarray:
    """A file's byte histogram (uint64[256]) from its counted parts: the sum of their chunks'."""
    table = np.zeros(_SYMBOLS, dtype=np.uint64)
    for record in records:
        table += chunk_counts(record).sum(axis=0, dtype=np.uint64)
    return table


def with_file_table(job: FileJob, records, threads: int = 0) -> tuple[np.ndarray, list[PartRecord]]:
    """`(table, records)` for a file whose parts were coded without a shared table, counting
    (EncodeParts.Counting): its whole-file histogram, and the records of its parts coded as if the
    encoders had been given it, which is how the two-pass pipeline and the in-process engine code a
    file (docs/format.md).

    A chunk's bytes change with the table only where the table beats the chunk's own
    (shared_table_wins), which on real data is almost never: only the parts holding such a chunk
    are read and coded again, here, with the table (the other chunks come out the same), on
    `threads` threads (0 = one per core: the kernels release the GIL).
    """
    records = sorted(records, key=lambda record: record.index)
    table = file_table(records)
    again = [record for record in records
             if any(shared_table_wins(row, table) for row in chunk_counts(record))]
    if not again:
        return table, records
    tasks = part_tasks(job, job.chunk_size)

    def encode_again(record: PartRecord) -> PartRecord:
        with tracing.span("encode part again", parent=job.trace_context, job_id=job.job_id, part=record.index):
            return encode_part(tasks[record.index], job.chunk_size, table, record.path)[0]

    with concurrent.futures.ThreadPoolExecutor(min(pool_size(threads), len(again)), "dcas-again") as pool:
        coded = dict(zip((record.index for record in again), pool.map(encode_again, again)))
    return table, [coded.get(record.index, record) for record in records]


def tasks_with_table(keyed_table) -> list[tuple[PartTask, object]]:
    """(job_key, table) -> each of the file's part tasks paired with the file's frequency table."""
    key, table = keyed_table
    job = FileJob(*key)
    return [(task, table) for task in part_tasks(job, job.chunk_size)]


def tasks_to_count(job: FileJob) -> list[tuple[PartTask, None]]:
    """Each of the file's part tasks, with no table: its encoders count the chunks (EncodeParts.Counting)."""
    return [(task, None) for task in part_tasks(job, job.chunk_size)]


def encode_task(task_and_table, count: bool = False):
    """(PartTask, table) -> `(PartRecord, encode ms per chunk)` written to the part's temp object, or
    `(Failure, [])` with that object removed. Never raises. `count` as in encode_part."""
    task, table = task_and_table
    job = task.job
    path = part_path(job.temp_dir, job.destination, task.index)
    try:
        with tracing.span("encode part", parent=job.trace_context, job_id=job.job_id, part=task.index,
                          chunks=task.chunk_stop - task.chunk_start):
            return encode_part(task, job.chunk_size, table, path, count)
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
    """(PartTask, table) -> PartRecord; a failure removes the part object and goes to FAILED.
    `count`: the records keep their chunks' byte counts (encode_part)."""

    def __init__(self, threads: int = 1, count: bool = False):
        super().__init__(threads)
        self._count = count

    def work(self, task_and_table):
        return encode_task(task_and_table, self._count)

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
        return _encode(tables | "Plan parts" >> beam.FlatMap(tasks_with_table), self.spread, self.threads)

    @dataclasses.dataclass
    class Counting(beam.PTransform):
        """FileJobs -> `(records, failures)`: every part of each file encoded with its chunks' own
        tables, each record keeping its chunks' byte counts, so the file is read once: publication
        sums them into the file's table and codes again only the parts it changes (with_file_table).
        What a counting pass then EncodeParts would write, without that pass."""

        spread: bool = True
        threads: int = 1

        def expand(self, jobs):
            return _encode(jobs | "Plan parts" >> beam.FlatMap(tasks_to_count), self.spread, self.threads,
                           count=True)


def _encode(tasks, spread: bool, threads: int, count: bool = False):
    if spread:
        tasks = tasks | "Spread parts" >> Spread(_part_key)
    encoded = (tasks
               | "Encode part" >> beam.ParDo(_EncodePartFn(threads, count)).with_outputs(FAILED, main="records"))
    return encoded.records, encoded[FAILED]
