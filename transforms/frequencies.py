"""Per-file byte frequency tables: per-chunk histograms summed by a CombineFn, keyed by input file."""
from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np

import codec
from transforms import storage
from transforms.failures import FAILED, failure

__all__ = ["FrequencyTableCombineFn", "chunk_histogram", "FrequencyTables"]

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


def chunk_histogram(chunk) -> tuple[str, np.ndarray]:
    """`(source, histogram)` of one chunk, read from storage with a ranged read."""
    return chunk.source, codec.histogram(storage.read_range(chunk.source, chunk.offset, chunk.length))


class _ChunkHistogramFn(beam.DoFn):
    """ChunkDescriptor -> (source, histogram); a read error goes to FAILED and the others go on."""

    def process(self, chunk):
        try:
            yield chunk_histogram(chunk)
        except Exception as e:  # noqa: BLE001 - any error fails this file only
            yield beam.pvalue.TaggedOutput(FAILED, failure(chunk.source, f"count bytes of chunk {chunk.index}", e))


@dataclasses.dataclass
class FrequencyTables(beam.PTransform):
    """ChunkDescriptors -> `(tables, failures)`; `tables` holds one `(source, uint64[256])` per non-empty file."""

    def expand(self, chunks):
        counted = chunks | "Count bytes" >> beam.ParDo(_ChunkHistogramFn()).with_outputs(
            FAILED, main="histograms")
        tables = counted.histograms | "Sum per file" >> beam.CombinePerKey(FrequencyTableCombineFn())
        return tables, counted[FAILED]
