"""Per-file byte frequency tables: per-chunk histograms summed by a CombineFn, keyed by the file's job."""
from __future__ import annotations

import dataclasses
import typing

import apache_beam as beam
import numpy as np

import codec
from adapters import cancellation, storage, tracing
from adapters.jobs import Failure
from transforms.failures import FAILED
from transforms.planning import FileJob
from transforms.threads import PooledFn

__all__ = ["FrequencyTableCombineFn", "chunk_histogram", "histogram_or_failure", "job_key", "CountBytes"]

_SYMBOLS = 256


class FrequencyTableCombineFn(beam.CombineFn):
    """Sums uint64[256] byte histograms into one table; the accumulator is a uint64[256] array."""

    def create_accumulator(self) -> np.ndarray:
        return np.zeros(_SYMBOLS, dtype=np.uint64)

    def add_input(self, accumulator: np.ndarray, histogram) -> np.ndarray:
        accumulator += np.asarray(histogram, dtype=np.uint64)
        return accumulator

    def merge_accumulators(self, accumulators) -> np.ndarray:
        # Only the first accumulator may be mutated: the runner may still hold the others.
        accumulators = iter(accumulators)
        merged = next(accumulators, None)
        if merged is None:
            return self.create_accumulator()
        for accumulator in accumulators:
            merged += accumulator
        return merged

    def compact(self, accumulator: np.ndarray) -> np.ndarray:
        return accumulator

    def extract_output(self, accumulator: np.ndarray | None) -> np.ndarray:
        # A copy, so later merges into a reused accumulator cannot change an emitted table.
        if accumulator is None:
            return self.create_accumulator()
        return np.array(accumulator, dtype=np.uint64, copy=True)


def chunk_histogram(chunk) -> np.ndarray:
    """The byte histogram of one chunk, read from storage with a ranged read."""
    cancellation.check()
    return codec.histogram(storage.read_range(chunk.source, chunk.offset, chunk.length, chunk.version))


def job_key(job: FileJob) -> tuple:
    """A FileJob as a key: a tuple of its fields, which Beam encodes deterministically without the
    fallback coder (that one logs a warning per grouping); `FileJob(*key)` is the job again."""
    return dataclasses.astuple(job)


def histogram_or_failure(job_and_chunk):
    """(job, ChunkDescriptor) -> the chunk's histogram, or the job's Failure; never raises."""
    job, chunk = job_and_chunk
    with tracing.span("histogram", parent=job.trace_context, job_id=job.job_id, chunk=chunk.index,
                      bytes=chunk.length) as span:
        try:
            return chunk_histogram(chunk)
        except Exception as e:  # noqa: BLE001 - any error fails this file only
            failure = job.failure(f"count bytes of chunk {chunk.index}", e)
            tracing.mark_error(span, failure.reason)
            return failure


@beam.typehints.with_output_types(typing.Tuple[typing.Any, typing.Any])
class _ChunkHistogramFn(PooledFn):
    """(job, ChunkDescriptor) -> (job_key, (chunk index, histogram)); a read error goes to FAILED
    and the others go on."""

    def work(self, job_and_chunk):
        return histogram_or_failure(job_and_chunk)

    def outputs(self, job_and_chunk, outcome):
        if isinstance(outcome, Failure):
            return [beam.pvalue.TaggedOutput(FAILED, outcome)]
        job, chunk = job_and_chunk
        return [(job_key(job), (chunk.index, outcome))]


@dataclasses.dataclass
class CountBytes(beam.PTransform):
    """`(job, chunk)` pairs -> `(histograms, failures)`: `(job_key, (chunk index, uint64[256]))` per
    chunk read, for per-job state that must count each chunk once.

    `threads` counts a bundle's chunks on a thread pool (0 = one per core; PooledFn).
    """

    threads: int = 1

    def expand(self, chunks):
        counted = chunks | "Count bytes" >> beam.ParDo(_ChunkHistogramFn(self.threads)).with_outputs(
            FAILED, main="histograms")
        return counted.histograms, counted[FAILED]
