"""Per-file publication: order a file's part records, add header and seek table, publish atomically."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from codec import container
from adapters import cancellation, metadata, storage
from adapters.jobs import Failure
from transforms.decode import ContainerJob, decoded_temp_path, decodes_in_place
from transforms.encode import PartRecord, with_file_table
from transforms.failures import FAILED, combined_failure, failure_reason
from transforms.observability import inc_counter, log_event
from transforms.planning import METADATA_SUFFIX, FileJob, chunk_count, part_path

__all__ = ["METADATA_SUFFIX", "JOURNAL_SUFFIX", "FileResult", "metadata_path", "ordered_parts", "failure_reason",
           "container_metadata", "publish_container", "publish_decoded", "recover_publication",
           "recover_publications", "compress_part_count", "decode_part_count", "leftover_temp_paths",
           "count_published", "file_key", "PublishContainers", "PublishDecoded"]

from adapters.local_files import JOURNAL_SUFFIX  # noqa: E402 - the temp folder's naming has one owner


@dataclasses.dataclass(frozen=True)
class FileResult:
    """One published output: what was read, what was written, how many chunks."""

    source: str
    destination: str
    bytes_in: int
    bytes_out: int
    chunks: int
    seconds: float


def metadata_path(destination: str) -> str:
    return destination + METADATA_SUFFIX


def ordered_parts(source: str, records, part_count: int) -> list[PartRecord]:
    """The records of parts 0..part_count-1 in order; raises if any part is missing."""
    by_index = {record.index: record for record in records}
    missing = [index for index in range(part_count) if index not in by_index]
    if missing or len(by_index) != part_count:
        raise RuntimeError(f"{source}: expected {part_count} parts, missing {missing[:10]}, "
                           f"got indices {sorted(by_index)[:10]}...")
    return [by_index[index] for index in range(part_count)]


def container_metadata(job: FileJob, entries, chunk_size: int, table, compressed_size: int,
                       timings: dict) -> dict:
    """adapters.metadata.container_metadata of a FileJob (the in-process engine builds the same)."""
    return metadata.container_metadata(job.source, job.destination, job.size, entries, chunk_size, table,
                                       compressed_size, timings)


def _write_object(path: str, data: bytes) -> None:
    with storage.open_write(path) as f:
        f.write(data)


def _container_published(destination: str, size: int, trailer: bytes) -> bool:
    """True when `destination` is this container: its size, and its seek table with every chunk's CRC."""
    try:
        if _size_of(destination) != size:
            return False
        return storage.read_range(destination, size - len(trailer), len(trailer)) == trailer
    except Exception:  # noqa: BLE001 - "cannot tell" means "not published"
        return False


def _decoded_published(destination: str, entries) -> bool:
    """True when `destination` has the decoded size and its first and last chunks their CRC32Cs."""
    try:
        if _size_of(destination) != sum(entry.original_size for entry in entries):
            return False
        offsets = container.original_offsets(entries)
        return all(container.crc32c(storage.read_range(destination, offsets[i], entries[i].original_size))
                   == entries[i].crc for i in {0, len(entries) - 1})
    except Exception:  # noqa: BLE001 - "cannot tell" means "not published"
        return False


def _size_of(path: str) -> int | None:
    matched = FileSystems.match([path])[0].metadata_list
    return matched[0].size_in_bytes if matched else None


def _gone(path: str) -> bool:
    try:
        return not FileSystems.exists(path)
    except Exception:  # noqa: BLE001 - "cannot tell" means "not gone"
        return False


def publish_container(job: FileJob, records, chunk_size: int, table, temp_dir: str,
                      overwrite: bool = True, checkpoint=cancellation.check) -> FileResult:
    """Writes header and trailer objects, the metadata, then publishes header+parts+trailer atomically.

    `table` None with parts that kept their chunks' counts (EncodeParts.Counting): the file's table
    is their sum, and the parts that table changes are coded again first (with_file_table).

    Idempotent: a retried bundle that runs this again after an earlier attempt published the file
    (and so deleted its parts) finds the container in place and reports it, instead of failing.
    If the container cannot be published, the metadata beside it is what it was before (an older
    one is restored from a copy). `overwrite=False`: neither the container nor its metadata may
    replace an existing object (FileExistsError), even one created while the job ran.
    `checkpoint()` is called between the steps and may raise to stop (cancellation.check does
    once the process is asked to stop); whatever stops publication, the metadata is rolled back
    unless the container made it.
    """
    started = time.perf_counter()
    parts = ordered_parts(job.source, records, len(storage.plan_parts(chunk_count(job.size, chunk_size))))
    if table is None and parts and all(part.counts for part in parts):  # EncodeParts.Counting: one read
        table, parts = with_file_table(job, parts)
    entries = [entry for part in parts for entry in part.entries]
    compressed_size = (container.HEADER_SIZE + sum(e.frame_size for e in entries)
                       + container.trailer_size(len(entries)))
    trailer_bytes = container.seek_table_bytes(entries)
    _check_against_source_checksum(job, entries)

    def result() -> FileResult:
        return FileResult(job.source, job.destination, job.size, compressed_size, len(entries),
                          time.perf_counter() - started)

    # Publication deletes the parts, so a first part that is gone means: published before, or lost.
    if parts and _gone(parts[0].path) and _container_published(job.destination, compressed_size,
                                                               trailer_bytes):
        return result()
    name = FileSystems.split(job.destination)[1]
    header, trailer, meta = (FileSystems.join(temp_dir, f"{name}.{what}")
                             for what in ("header", "trailer", "meta"))
    _write_object(header, container.header_bytes(chunk_size))
    _write_object(trailer, trailer_bytes)
    # Summed over parts: worker time spent reading, encoding and writing, not the job's wall time.
    timings = {"worker_seconds": round(sum(part.seconds for part in parts), 6),
               "slowest_part_seconds": round(max((part.seconds for part in parts), default=0.0), 6)}
    description = container_metadata(job, entries, chunk_size, table, compressed_size, timings)
    meta_bytes = metadata.metadata_bytes(description)
    _write_object(meta, meta_bytes)
    # Metadata first, so a published container always has its description beside it; the one it
    # replaces is kept until the container is in place. The journal, written before either moves,
    # says how to undo the metadata step whenever the container did not make it (recover_publication):
    # here on any exception or interrupt, or later by whoever finds a killed job's temp folder.
    meta_path = metadata_path(job.destination)
    backup = FileSystems.join(temp_dir, f"{name}.meta-before")
    had_meta = overwrite and FileSystems.exists(meta_path)
    journal_path = FileSystems.join(temp_dir, name + JOURNAL_SUFFIX)
    journal = metadata.journal_entry(job.destination, meta_path, backup if had_meta else None, compressed_size,
                                     trailer_bytes, meta_bytes)
    _write_object(journal_path, json.dumps(journal).encode("utf-8"))
    try:
        checkpoint()
        if had_meta:
            FileSystems.copy([meta_path], [backup])
        checkpoint()
        storage.publish_concatenation([meta], meta_path, temp_dir=temp_dir, overwrite=overwrite)
        cancellation.fault_point("metadata-published")
        checkpoint()
        storage.publish_concatenation([header, *(part.path for part in parts), trailer],
                                      job.destination, temp_dir=temp_dir, overwrite=overwrite)
        cancellation.fault_point("container-published")
    except BaseException:
        published = recover_publication(journal_path)
        storage.delete([header, trailer])
        if published and not isinstance(sys.exc_info()[1], (KeyboardInterrupt, cancellation.JobCancelled)):
            return result()  # a concurrent attempt of this bundle published it first
        raise
    storage.delete([backup, journal_path] if had_meta else [journal_path])
    return result()


def _check_against_source_checksum(job: FileJob, entries) -> None:
    """Where storage keeps a CRC32C of the source (GCS), the chunks encoded must combine to it:
    proof that they are exactly the source's bytes, in order. A mismatch fails the file."""
    expected = storage.stored_crc32c(job.source, job.version)
    if expected is not None and expected != container.content_crc(entries):
        raise ValueError(f"{job.source}: the chunks encoded have CRC32C {container.content_crc(entries):08x}, "
                         f"the source object {expected:08x}: its bytes were not all read as stored")


class _StorageFiles:
    """adapters.metadata.Files over adapters.storage: local paths and gs:// objects alike."""

    size = staticmethod(lambda path: _size_of(path))
    read = staticmethod(lambda path, offset, length: storage.read_range(path, offset, length))
    delete = staticmethod(lambda paths: storage.delete(paths))
    move = staticmethod(lambda source, destination: storage.publish_concatenation([source], destination))


def recover_publication(journal_path: str) -> bool:
    """adapters.metadata.recover_publication, for a journal on any storage (gs:// included)."""
    return metadata.recover_publication(journal_path, _StorageFiles())


def recover_publications(temp_dir: str) -> None:
    """recover_publication for every journal in a job's temp folder (an interrupted or killed job)."""
    pattern = FileSystems.join(temp_dir.rstrip("/" + os.sep), "*" + JOURNAL_SUFFIX)
    for matched in FileSystems.match([pattern])[0].metadata_list:
        recover_publication(matched.path)


def publish_decoded(container_job: ContainerJob, records, temp_dir: str, overwrite: bool = True) -> FileResult:
    """Publishes the decoded output (an empty file for no chunks); idempotent like publish_container.

    A local output was decoded in place into one temp file, which is renamed; a gs:// output's
    parts are composed in order. `overwrite=False`: as in publish_container.
    """
    started = time.perf_counter()
    job = container_job.job
    entries = container_job.entries
    parts = ordered_parts(job.source, records, len(storage.plan_parts(len(entries))))
    original_size = sum(e.original_size for e in entries)

    def result() -> FileResult:
        return FileResult(job.source, job.destination, job.size, original_size, len(entries),
                          time.perf_counter() - started)

    in_place = decodes_in_place(job.destination) and bool(parts)
    sources = ([decoded_temp_path(temp_dir, job.destination)] if in_place
               else [part.path for part in parts])
    if sources and _gone(sources[0]) and _decoded_published(job.destination, entries):
        return result()
    try:
        if in_place:
            storage.publish_local_file(sources[0], job.destination, original_size, overwrite=overwrite)
        else:
            storage.publish_concatenation(sources, job.destination, temp_dir=temp_dir, overwrite=overwrite)
        cancellation.fault_point("output-published")
    except Exception:
        if sources and _decoded_published(job.destination, entries):
            return result()  # a concurrent attempt of this bundle published it first
        raise
    return result()


def _part_paths(destination: str, temp_dir: str, part_count: int) -> list[str]:
    return [part_path(temp_dir, destination, index) for index in range(part_count)]


def compress_part_count(job: FileJob) -> int:
    """How many part objects the job's file is encoded into."""
    return len(storage.plan_parts(chunk_count(job.size, job.chunk_size)))


def decode_part_count(container_job: ContainerJob) -> int:
    """How many parts the container is decoded in."""
    return len(storage.plan_parts(len(container_job.entries)))


def leftover_temp_paths(job) -> list[str]:
    """The temp objects a failed FileJob (compress) or ContainerJob (decompress) leaves behind."""
    if isinstance(job, ContainerJob):
        destination = job.job.destination
        if decodes_in_place(destination):
            return [decoded_temp_path(job.job.temp_dir, destination)]
        return _part_paths(destination, job.job.temp_dir, decode_part_count(job))
    return _part_paths(job.destination, job.temp_dir, compress_part_count(job))


def count_published(result: FileResult) -> None:
    inc_counter("bytes-in", result.bytes_in)
    inc_counter("bytes-out", result.bytes_out)
    inc_counter("chunks", result.chunks)
    inc_counter("files-written")


class _PublishFn(beam.DoFn):
    """((job id, attempt, source), {jobs, records, failures}) -> FileResult, or one Failure per file
    with its parts removed."""

    def __init__(self, overwrite: bool = True):
        self._overwrite = overwrite

    def publish(self, job, records, grouped) -> FileResult:
        raise NotImplementedError

    @staticmethod
    def file_job(job) -> FileJob:
        return job

    def process(self, keyed):
        (job_id, attempt, source), grouped = _grouped(keyed)
        jobs, records, failures = list(grouped["jobs"]), list(grouped["records"]), list(grouped["failures"])
        if not jobs and not failures:
            failures = [Failure.of(job_id, source, "publish", "part records arrived for a file that has no job",
                                   attempt)]
        if not failures:
            try:
                with cancellation.publication():
                    result = self.publish(jobs[0], records, grouped)
            except Exception as e:  # noqa: BLE001 - any error fails this file only
                failures = [self.file_job(jobs[0]).failure("publish", e)]
            else:
                count_published(result)
                log_event("file-published", job_id, source=source, destination=result.destination,
                          bytes_in=result.bytes_in, bytes_out=result.bytes_out, chunks=result.chunks)
                yield result
                return
        if jobs:
            # Whatever parts did get written are garbage now; the final path was never touched.
            storage.delete(leftover_temp_paths(jobs[0]))
        failed = combined_failure(failures)
        log_event("file-failed", job_id, level=logging.ERROR, source=source, reason=failed.reason)
        yield beam.pvalue.TaggedOutput(FAILED, failed)


class _PublishContainerFn(_PublishFn):
    def publish(self, job, records, grouped):
        tables = list(grouped["tables"])
        return publish_container(job, records, job.chunk_size, tables[0] if tables else None, job.temp_dir,
                                 self._overwrite)


class _PublishDecodedFn(_PublishFn):
    def publish(self, container_job, records, grouped):
        return publish_decoded(container_job, records, container_job.job.temp_dir, self._overwrite)

    @staticmethod
    def file_job(container_job) -> FileJob:
        return container_job.job


def _grouped(keyed) -> tuple[str, dict[str, list]]:
    file, tagged = keyed
    grouped: dict[str, list] = {"jobs": [], "records": [], "failures": [], "tables": []}
    for tag, value in tagged:
        grouped[tag].append(value)
    return file, grouped


def _tagged(element, tag: str, key):
    file, value = key(element)
    return file, (tag, value)


def _group_per_file(inputs):
    """`[(tag, pcoll, key)]` -> `(file key, [(tag, value)])`, where `key(element)` is `(file key, value)`.

    What CoGroupByKey makes, with one Flatten for every input: CoGroupByKey's own Flatten would
    come after the Flatten of the stages' failure outputs, and on the local runner each Flatten of
    several inputs is a stage of its own (~20-85 ms each). One Map per input keys and tags at once.
    """
    tagged = [pcoll | f"Key {tag} {index}" >> beam.Map(_tagged, tag, key)
              for index, (tag, pcoll, key) in enumerate(inputs)]
    return (tagged
            | "Flatten per file" >> beam.Flatten()
            | "Group per file" >> beam.GroupByKey())


def file_key(job: FileJob) -> tuple[str, int, str]:
    """What publication groups by: one file of one attempt of one job."""
    return job.job_id, job.attempt, job.source


def _job_by_file(job):
    return file_key(job), job


def _container_by_file(container_job):
    return file_key(container_job.job), container_job


def _record_by_file(record):
    return (record.job_id, record.attempt, record.source), record


def _table_by_file(keyed_table):
    key, table = keyed_table
    return file_key(FileJob(*key)), table


def _failure_by_file(failed: Failure):
    return (failed.job_id, failed.attempt, failed.source), failed


@dataclasses.dataclass
class PublishContainers(beam.PTransform):
    """`(jobs, records, failures[, tables])` -> `(results, failures)`: a `.dcz` per fully encoded file.

    `failures` is a sequence of the stages' Failure PCollections; `tables` are the
    `(job_key, uint64[256])` frequency tables, written into each file's metadata; without them, the
    records come from EncodeParts.Counting (publish_container sums their counts). `overwrite=False`
    fails a file whose output (or its metadata) exists instead of replacing it.
    """

    overwrite: bool = True

    def expand(self, inputs):
        jobs, records, failures, *tables = inputs
        by_file = [("jobs", jobs, _job_by_file), ("records", records, _record_by_file),
                   *(("tables", table, _table_by_file) for table in tables)]
        published = (
            _group_per_file([*by_file, *(("failures", failed, _failure_by_file) for failed in failures)])
            | "Publish container" >> beam.ParDo(
                _PublishContainerFn(self.overwrite)).with_outputs(
                    FAILED, main="results"))
        return published.results, published[FAILED]


@dataclasses.dataclass
class PublishDecoded(beam.PTransform):
    """`(containers, records, failures)` -> `(results, failures)`: one published output per good container.

    `failures` is a sequence of the stages' Failure PCollections; `overwrite` as in
    PublishContainers.
    """

    overwrite: bool = True

    def expand(self, inputs):
        containers, records, failures = inputs
        published = (
            _group_per_file([("jobs", containers, _container_by_file), ("records", records, _record_by_file),
                             *(("failures", failed, _failure_by_file) for failed in failures)])
            | "Publish output" >> beam.ParDo(_PublishDecodedFn(self.overwrite)).with_outputs(
                FAILED, main="results"))
        return published.results, published[FAILED]
