"""Which files a run touches, where each one's output goes, and how each file is cut into chunks."""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable, Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from codec.container import DEFAULT_CHUNK_SIZE
from adapters import cancellation, storage, tracing
from adapters.metadata import METADATA_SUFFIX
from adapters.jobs import COMPRESS, DECOMPRESS, OPERATIONS, Failure, JobRequest
from transforms.failures import FAILED

__all__ = [
    "COMPRESS", "DECOMPRESS", "MODES", "CONTAINER_SUFFIX", "METADATA_SUFFIX", "is_own_output",
    "FileJob", "ChunkDescriptor",
    "has_glob", "output_is_file", "destination_for", "plan_jobs", "pin_versions", "for_request", "chunk_count",
    "chunk_descriptors",
    "part_path", "plan_request", "job_chunks", "PlanFiles", "Spread",
]

MODES = OPERATIONS
CONTAINER_SUFFIX = ".dcz"
# A job's failures CSV in its output folder (default_failures_path; job ids from new_job_id).
_FAILURES_CSV = re.compile(r"dcas-\d{8}-\d{6}-[0-9a-f]{8}\.failures\.csv(\.tmp)?")


@dataclasses.dataclass(frozen=True)
class FileJob:
    """One input file, the final path its output is published to, and the settings of the job it
    belongs to: every later element carries it, so nothing about a job is fixed in the graph.

    `version` (storage.input_version, taken when the job is planned) pins the input: every read of
    the job asks for that version, so an input replaced mid-job fails its file instead of mixing.
    `job_id` and `attempt` name the job's temp objects (storage.temp_dir_for) and its status;
    `table_uri` names a stored frequency table to encode with instead of counting one.
    """

    source: str
    size: int
    destination: str
    version: str | None = None
    job_id: str = ""
    attempt: int = 1
    chunk_size: int = DEFAULT_CHUNK_SIZE
    operation: str = COMPRESS
    table_uri: str | None = None
    trace_context: str | None = None  # the job's W3C traceparent: its spans join the job's trace

    @property
    def temp_dir(self) -> str:
        """This attempt's temp folder beside the destination."""
        return storage.temp_dir_for(self.destination, self.job_id, self.attempt)

    def failure(self, stage: str, error: BaseException | str) -> Failure:
        """The dead-letter record of this file failing at `stage`."""
        return Failure.of(self.job_id, self.source, stage, error, self.attempt, self.trace_context)


@dataclasses.dataclass(frozen=True)
class ChunkDescriptor:
    """Where one chunk of an input file lies; a worker reads it with a ranged read (of `version`)."""

    source: str
    index: int
    offset: int
    length: int
    version: str | None = None


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


def chunk_descriptors(source: str, size: int, chunk_size: int, start: int = 0, stop: int | None = None,
                      version: str | None = None) -> Iterator[ChunkDescriptor]:
    """Yields chunks `start`..`stop` (default: all) of a file; lazily, as a large file has many."""
    stop = chunk_count(size, chunk_size) if stop is None else stop
    for index in range(start, stop):
        offset = index * chunk_size
        yield ChunkDescriptor(source, index, offset, min(chunk_size, size - offset), version)


def part_path(temp_dir: str, destination: str, part_index: int) -> str:
    """Deterministic part object name, so a retried bundle overwrites rather than duplicates."""
    name = FileSystems.split(destination)[1]
    return FileSystems.join(temp_dir, f"{name}.part-{part_index:05d}")


def plan_jobs(metadata_list, output: str, mode: str, output_names_file: bool,
              job_id: str = "") -> tuple[list[FileJob], list[Failure]]:
    """`(jobs, failures)` for matched files: one FileJob per file whose output can be named.

    A file fails when no output name can be derived from it, and so do all inputs that would be
    written to one output (they would race to publish it). Files under a job temp folder
    (storage.TEMP_DIR_NAME: another run's parts, when the output lies inside the input pattern)
    are not inputs and are skipped, and so, when a pattern is compressed, are dcas's own outputs
    (is_own_output).
    """
    by_destination: dict[str, list[FileJob]] = {}
    failures = []
    for metadata in metadata_list:
        if _in_temp_dir(metadata.path):
            continue
        if not output_names_file and mode == COMPRESS and is_own_output(metadata.path):
            continue
        try:
            destination = destination_for(metadata.path, output, mode, output_names_file)
        except ValueError as e:
            failures.append(Failure.of(job_id, metadata.path, "plan", e))
            continue
        by_destination.setdefault(destination, []).append(
            FileJob(metadata.path, metadata.size_in_bytes, destination))
    jobs = []
    for destination, sharing in by_destination.items():
        if len(sharing) == 1:
            jobs.extend(sharing)
            continue
        sharing.sort(key=lambda job: job.source)
        sources = ", ".join(job.source for job in sharing)
        failures.extend(Failure.of(job_id, job.source, "plan", ValueError(
            f"inputs {sources} would all be written to {destination}")) for job in sharing)
    return jobs, failures


def is_own_output(path: str) -> bool:
    """A container, metadata object or failures CSV that dcas writes: a compress pattern that
    covers its own output folder skips them, instead of compressing its last run's outputs again
    (`x.dcz.dcz`, `x.dcz.meta.json.dcz`). A file named alone is compressed whatever its name."""
    name = path.replace(os.sep, "/").rsplit("/", 1)[-1]
    return (name.endswith(CONTAINER_SUFFIX) or name.endswith(CONTAINER_SUFFIX + METADATA_SUFFIX)
            or bool(_FAILURES_CSV.fullmatch(name)))


def _in_temp_dir(path: str) -> bool:
    return storage.TEMP_DIR_NAME in path.replace(os.sep, "/").split("/")[:-1]


def pin_versions(jobs: list[FileJob]) -> tuple[list[FileJob], list[Failure]]:
    """`(jobs, failures)`: each job with its input's current version; a file that vanished since it
    was matched fails."""
    pinned, failures = [], []
    for job, version in zip(jobs, storage.input_versions([job.source for job in jobs])):
        if isinstance(version, Exception):
            failures.append(job.failure("plan", version))
        else:
            pinned.append(dataclasses.replace(job, version=version))
    return pinned, failures


def for_request(job: FileJob, request: JobRequest) -> FileJob:
    """`job` carrying the settings of the request it was planned from."""
    return dataclasses.replace(job, job_id=request.job_id, attempt=request.attempt, chunk_size=request.chunk_size,
                               operation=request.operation, table_uri=request.table_uri,
                               trace_context=request.trace_context)


def plan_request(request: JobRequest, single_input: bool) -> tuple[list[FileJob], list[Failure]]:
    """`(jobs, failures)`: a FileJob per file the request's input matches, each pinned to its version.

    `single_input` (a job of the service): the input must be one existing object, else the request
    fails. Otherwise (a batch run) the input may be a pattern; like fileio.MatchFiles, one without
    '*' must match something or FileNotFoundError is raised.
    """
    pattern = request.input_uri
    if single_input and has_glob(pattern):
        return [], [Failure.of(request.job_id, pattern, "plan", ValueError(
            "a job names one input object, not a pattern"), request.attempt, request.trace_context)]
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
        if not matched and (single_input or "*" not in pattern):
            raise FileNotFoundError(f"no file matches {pattern!r}")
    except Exception as e:  # noqa: BLE001 - a job's input that cannot be listed fails the job
        if not single_input:
            raise
        return [], [Failure.of(request.job_id, pattern, "plan", e, request.attempt, request.trace_context)]
    names_file = output_is_file(pattern, request.output_uri)
    jobs, failures = plan_jobs(matched, request.output_uri, request.operation, names_file, request.job_id)
    jobs, vanished = pin_versions([for_request(job, request) for job in jobs])
    failures = [dataclasses.replace(f, attempt=request.attempt, trace_context=request.trace_context) for f in failures]
    return jobs, failures + vanished


class _PlanFilesFn(beam.DoFn):
    """JobRequest -> a FileJob per file its input matches, and failures for files that cannot run.

    Matching and naming happen in one call, so outputs that two inputs would share are found
    without grouping by destination (a group is a stage of its own on the local runner, ~0.1-0.2 s).
    """

    def __init__(self, single_input: bool):
        self._single_input = single_input

    def process(self, request: JobRequest):
        cancellation.fault_point("plan")
        if cancellation.stop_requested():  # stopped: no files, so the job drains at once
            return
        with tracing.span("plan", parent=request.trace_context, job_id=request.job_id, attempt=request.attempt):
            jobs, failures = plan_request(request, self._single_input)
        yield from jobs
        for failed in failures:
            yield beam.pvalue.TaggedOutput(FAILED, failed)


@dataclasses.dataclass
class PlanFiles(beam.PTransform):
    """JobRequests -> `(jobs, failures)`: one FileJob per file each request's input matches, and
    Failures for files that cannot run; like fileio.MatchAll, the requests are elements.

    `single_input=True` for the job service: a request names one object, and a missing one fails
    its job rather than the pipeline.
    """

    single_input: bool = False

    def expand(self, requests):
        planned = (
            requests
            | "Match and name outputs" >> beam.ParDo(_PlanFilesFn(self.single_input)).with_outputs(
                FAILED, main="jobs"))
        return planned.jobs, planned[FAILED]


@dataclasses.dataclass
class Spread(beam.PTransform):
    """Ends a stage so that the next one deals the elements out across workers.

    Each element is keyed by `key(element)` (distinct per element, deterministic), grouped and
    ungrouped. Beam's Reshuffle does the same with random keys in eight transforms; three are
    cheaper to build (graph build is ~5 ms per transform here), and the local runner deals
    distinct keys out round-robin in arrival order, so consecutive chunks alternate between workers.
    """

    key: Callable

    def expand(self, pcoll):
        return (pcoll
                | "Key" >> beam.Map(lambda element, key: (key(element), element), self.key)
                | "Group" >> beam.GroupByKey()
                | "Ungroup" >> beam.FlatMap(lambda keyed: keyed[1]))


def job_chunks(job: FileJob):
    """`(job, chunk)` for each chunk of the job's file, cut at the job's chunk size; lazily."""
    return ((job, chunk) for chunk in chunk_descriptors(job.source, job.size, job.chunk_size,
                                                        version=job.version))

