"""Which files a run touches, where each one's output goes, and how each file is cut into chunks."""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterator

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from transforms.failures import FAILED, failure

__all__ = [
    "COMPRESS", "DECOMPRESS", "MODES", "CONTAINER_SUFFIX",
    "FileJob", "ChunkDescriptor",
    "has_glob", "output_is_file", "destination_for", "chunk_count", "chunk_descriptors",
    "part_path", "PlanFiles", "PlanChunks",
]

COMPRESS = "compress"
DECOMPRESS = "decompress"
MODES = (COMPRESS, DECOMPRESS)
CONTAINER_SUFFIX = ".dcz"


@dataclasses.dataclass(frozen=True)
class FileJob:
    """One input file and the final path its output is published to."""

    source: str
    size: int
    destination: str


@dataclasses.dataclass(frozen=True)
class ChunkDescriptor:
    """Where one chunk of an input file lies; a worker reads it with a ranged read."""

    source: str
    index: int
    offset: int
    length: int


def has_glob(pattern: str) -> bool:
    """True if the pattern has wildcard characters, so it may match many files."""
    return any(c in pattern for c in "*?[")


def output_is_file(input_pattern: str, output: str,
                   is_directory: Callable[[str], bool] = os.path.isdir) -> bool:
    """True if --output names the one output file rather than a directory.

    It names a file only when the input is one literal path (no wildcard) and the output is
    neither spelled as a directory (trailing '/') nor an existing local directory. On gs:// there
    are no directories, so a trailing '/' is the only way to say "directory".
    """
    if has_glob(input_pattern) or output.endswith("/"):
        return False
    if "://" not in output and is_directory(output):
        return False
    return True


def destination_for(source: str, output: str, mode: str, output_names_file: bool) -> str:
    """The final output path for `source`: `name` -> `name.dcz` on compress, the reverse on decompress."""
    if output_names_file:
        return output
    name = FileSystems.split(source)[1]
    if mode == COMPRESS:
        return FileSystems.join(output, name + CONTAINER_SUFFIX)
    if mode == DECOMPRESS:
        if not name.endswith(CONTAINER_SUFFIX) or name == CONTAINER_SUFFIX:
            raise ValueError(
                f"{source!r} does not end in {CONTAINER_SUFFIX!r}, so its output name is unknown; "
                f"rename it, or decompress it alone and pass the output file name as --output")
        return FileSystems.join(output, name[: -len(CONTAINER_SUFFIX)])
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


def chunk_count(size: int, chunk_size: int) -> int:
    """Chunks of `chunk_size` bytes (the last may be shorter) that cover `size` bytes; 0 when empty."""
    return -(-size // chunk_size)


def chunk_descriptors(source: str, size: int, chunk_size: int,
                      start: int = 0, stop: int | None = None) -> Iterator[ChunkDescriptor]:
    """Yields chunks `start`..`stop` (default: all) of a file; lazily, as a large file has many."""
    stop = chunk_count(size, chunk_size) if stop is None else stop
    for index in range(start, stop):
        offset = index * chunk_size
        yield ChunkDescriptor(source, index, offset, min(chunk_size, size - offset))


def part_path(temp_dir: str, destination: str, part_index: int) -> str:
    """Deterministic part object name, so a retried bundle overwrites rather than duplicates."""
    name = FileSystems.split(destination)[1]
    return FileSystems.join(temp_dir, f"{name}.part-{part_index:05d}")


class _PlanFileFn(beam.DoFn):
    """FileMetadata -> FileJob, or a failure when no output name can be derived."""

    def __init__(self, output: str, mode: str, output_names_file: bool):
        self._output = output
        self._mode = mode
        self._output_names_file = output_names_file

    def process(self, metadata):
        try:
            destination = destination_for(metadata.path, self._output, self._mode,
                                          self._output_names_file)
        except ValueError as e:
            yield beam.pvalue.TaggedOutput(FAILED, failure(metadata.path, "plan", e))
            return
        yield FileJob(metadata.path, metadata.size_in_bytes, destination)


def _reject_shared_destinations(destination_and_jobs):
    """Two inputs with one output name would race to publish it, so both fail instead."""
    destination, jobs = destination_and_jobs
    jobs = sorted(jobs, key=lambda job: job.source)
    if len(jobs) == 1:
        yield jobs[0]
        return
    sources = ", ".join(job.source for job in jobs)
    for job in jobs:
        yield beam.pvalue.TaggedOutput(FAILED, failure(
            job.source, "plan", ValueError(f"inputs {sources} would all be written to {destination}")))


@dataclasses.dataclass
class PlanFiles(beam.PTransform):
    """Matches --input; returns `(jobs, failures)`: one FileJob per file, and files that cannot run."""

    input_pattern: str
    output: str
    mode: str
    output_names_file: bool

    def expand(self, pbegin):
        planned = (
            pbegin
            | "Match files" >> fileio.MatchFiles(self.input_pattern)
            | "Name outputs" >> beam.ParDo(
                _PlanFileFn(self.output, self.mode, self.output_names_file)).with_outputs(
                    FAILED, main="jobs"))
        checked = (
            planned.jobs
            | "Key by destination" >> beam.Map(lambda job: (job.destination, job))
            | "Group by destination" >> beam.GroupByKey()
            | "Reject shared destinations" >> beam.FlatMap(
                _reject_shared_destinations).with_outputs(FAILED, main="jobs"))
        failures = ((planned[FAILED], checked[FAILED])
                    | "Flatten planning failures" >> beam.Flatten())
        return checked.jobs, failures


@dataclasses.dataclass
class PlanChunks(beam.PTransform):
    """FileJob -> its ChunkDescriptors, reshuffled so the chunks of one file spread across workers."""

    chunk_size: int

    def expand(self, jobs):
        return (
            jobs
            | "Cut into chunks" >> beam.FlatMap(
                lambda job, chunk_size: chunk_descriptors(job.source, job.size, chunk_size),
                self.chunk_size)
            | "Spread chunks" >> beam.Reshuffle())
