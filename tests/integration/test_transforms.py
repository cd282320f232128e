"""The pipeline's building blocks: pure functions alone, transforms in a TestPipeline."""
from __future__ import annotations

import csv
import io
import json
import os
import time

import apache_beam as beam
from apache_beam.io.filesystem import FileMetadata
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

import codec
from codec import container
from adapters import storage
from adapters.jobs import Failure, JobRequest
from transforms.assemble import (
    METADATA_SUFFIX, container_metadata, failure_reason, ordered_parts, publish_container, publish_decoded,
)
from transforms.decode import (
    ContainerJob, DecodePartTask, decode_part, decode_part_in_place, decode_part_tasks, decoded_temp_path,
    read_container_table,
)
from transforms.encode import (
    PartRecord, PartTask, encode_part, file_table, part_tasks, tasks_with_table, with_file_table,
)
from transforms.failures import combined_failure, failures_csv, finish_job, started, temp_dir_item
from transforms.frequencies import CountBytes, FrequencyTableCombineFn, job_key
from transforms.planning import (
    ChunkDescriptor, FileJob, PlanFiles, Spread, chunk_count, chunk_descriptors, destination_for,
    job_chunks, pin_versions, plan_jobs,
)


def local_pipeline() -> beam.Pipeline:
    """A TestPipeline on the FnApiRunner in this process: Beam's DirectRunner would first try to
    download the Prism runner, which costs seconds (and fails offline) before it falls back."""
    return test_pipeline.TestPipeline(runner="FnApiRunner")


def sample_bytes(size: int, seed: int = 0) -> bytes:
    """Skewed bytes (a few symbols common, the rest rare), so Huffman has something to do."""
    rng = np.random.default_rng(seed)
    return rng.choice(256, size=size, p=np.arange(256, 0, -1) ** 3 / np.sum(np.arange(256, 0, -1) ** 3)
                      ).astype(np.uint8).tobytes()


def write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


# --- planning -------------------------------------------------------------------------------


@pytest.mark.parametrize("size, chunk_size", [(0, 10), (1, 10), (10, 10), (11, 10), (95, 10), (7, 1)])
def test_chunk_descriptors_cover_the_file_exactly_once_in_order(size, chunk_size):
    chunks = list(chunk_descriptors("f", size, chunk_size))
    assert len(chunks) == chunk_count(size, chunk_size)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert sum(c.length for c in chunks) == size
    assert all(0 < c.length <= chunk_size for c in chunks)
    assert all(a.offset + a.length == b.offset for a, b in zip(chunks, chunks[1:]))


def test_chunk_descriptors_of_a_range_are_the_same_chunks_as_the_whole():
    whole = list(chunk_descriptors("f", 95, 10))
    assert list(chunk_descriptors("f", 95, 10, start=3, stop=7)) == whole[3:7]


def test_compress_and_decompress_names_are_each_others_inverse():
    compressed = destination_for("/data/report.csv", "/out", "compress", False)
    assert compressed == "/out/report.csv.dcz"
    assert destination_for(compressed, "/back", "decompress", False) == "/back/report.csv"
    assert destination_for("gs://b/in/x", "gs://b/out/", "compress", False) == "gs://b/out/x.dcz"


def test_decompress_refuses_to_guess_a_name_for_a_file_without_the_dcz_suffix():
    with pytest.raises(ValueError, match="does not end in '.dcz'"):
        destination_for("/data/report.zip", "/out", "decompress", False)


def test_an_output_file_name_is_used_as_given():
    assert destination_for("/data/a.dcz", "/tmp/result.bin", "decompress", True) == "/tmp/result.bin"


def test_plan_files_names_outputs_and_fails_inputs_that_would_share_one(tmp_path):
    for sub in ("x", "y"):
        os.mkdir(tmp_path / sub)
        write(tmp_path / sub / "same.txt", b"abc")
    write(tmp_path / "x" / "own.txt", b"")
    request = JobRequest("job-1", "compress", str(tmp_path / "*" / "*.txt"), str(tmp_path / "out"), chunk_size=7)
    with local_pipeline() as p:
        jobs, failures = p | beam.Create([request]) | PlanFiles()
        own = str(tmp_path / "x" / "own.txt")
        assert_that(jobs, equal_to([FileJob(own, 0, str(tmp_path / "out" / "own.txt.dcz"),
                                            storage.input_version(own), "job-1", chunk_size=7)]),
                    label="check:jobs")
        assert_that(failures | "Failed files" >> beam.Map(lambda f: f.source),
                    equal_to([str(tmp_path / sub / "same.txt") for sub in "xy"]),
                    label="check:failures")


def test_job_chunks_are_every_chunk_of_every_file_at_its_jobs_chunk_size():
    jobs = [FileJob("a", 25, "a.dcz", chunk_size=10), FileJob("b", 0, "b.dcz", chunk_size=10),
            FileJob("c", 10, "c.dcz", chunk_size=10)]
    chunks = [pair for job in jobs for pair in job_chunks(job)]
    assert chunks == [(jobs[0], ChunkDescriptor("a", 0, 0, 10)), (jobs[0], ChunkDescriptor("a", 1, 10, 10)),
                      (jobs[0], ChunkDescriptor("a", 2, 20, 5)), (jobs[2], ChunkDescriptor("c", 0, 0, 10))]


def test_plan_jobs_fails_an_input_whose_output_cannot_be_named_and_keeps_the_others():
    matched = [FileMetadata("/in/a.dcz", 5), FileMetadata("/in/b.zip", 7)]
    jobs, failures = plan_jobs(matched, "/out", "decompress", False)
    assert jobs == [FileJob("/in/a.dcz", 5, "/out/a")]
    assert [failed.source for failed in failures] == ["/in/b.zip"]


def test_plan_files_fails_the_pipeline_when_a_literal_input_matches_nothing(tmp_path):
    with pytest.raises(Exception, match="no file matches"):
        with local_pipeline() as p:
            p | beam.Create([JobRequest("job-1", "compress", str(tmp_path / "gone.txt"), str(tmp_path / "out"))]
                            ) | PlanFiles()


def test_spread_keeps_every_element_once():
    with local_pipeline() as p:
        spread = p | beam.Create(range(50)) | Spread(lambda n: n)
        assert_that(spread, equal_to(list(range(50))))


# --- frequency tables -----------------------------------------------------------------------


def test_combine_fn_by_hand_sums_shards_like_one_histogram_of_everything():
    data = sample_bytes(30_000)
    shards = [data[:7_000], data[7_000:7_001], data[7_001:20_000], data[20_000:]]
    fn = FrequencyTableCombineFn()
    accumulators = []
    for shard in shards:
        accumulator = fn.create_accumulator()
        accumulators.append(fn.add_input(accumulator, codec.histogram(shard)))
    untouched = [a.copy() for a in accumulators[1:]]
    merged = fn.merge_accumulators(accumulators)
    table = fn.extract_output(fn.compact(merged))
    assert table.dtype == np.uint64 and table.shape == (256,)
    np.testing.assert_array_equal(table, codec.histogram(data))
    for before, after in zip(untouched, accumulators[1:]):
        np.testing.assert_array_equal(before, after)  # only the first accumulator may change


def test_combine_fn_with_no_input_extracts_an_all_zero_table():
    fn = FrequencyTableCombineFn()
    empty = fn.extract_output(fn.merge_accumulators([]))
    np.testing.assert_array_equal(empty, np.zeros(256, dtype=np.uint64))
    np.testing.assert_array_equal(fn.extract_output(fn.create_accumulator()), empty)


def test_extracted_table_does_not_change_when_its_accumulator_does():
    fn = FrequencyTableCombineFn()
    accumulator = fn.add_input(fn.create_accumulator(), codec.histogram(b"aab"))
    table = fn.extract_output(accumulator)
    fn.add_input(accumulator, codec.histogram(b"zzz"))
    assert table[ord("z")] == 0 and table[ord("a")] == 2


def test_count_bytes_gives_each_chunks_histogram_under_its_files_key(tmp_path):
    a, b = sample_bytes(5_000, seed=1), b"hello"
    path_a, path_b = write(tmp_path / "a", a), write(tmp_path / "b", b)
    job_a, job_b = FileJob(path_a, len(a), "a.dcz"), FileJob(path_b, len(b), "b.dcz")
    chunks = [*((job_a, c) for c in chunk_descriptors(path_a, len(a), 1_000)),
              *((job_b, c) for c in chunk_descriptors(path_b, len(b), 1_000))]
    expected = [(job_a, i, codec.histogram(a[i * 1_000:(i + 1) * 1_000]).tolist()) for i in range(5)]
    with local_pipeline() as p:
        histograms, failures = p | beam.Create(chunks) | CountBytes()
        as_lists = histograms | beam.MapTuple(lambda key, counted: (FileJob(*key), counted[0], counted[1].tolist()))
        assert_that(as_lists, equal_to([*expected, (job_b, 0, codec.histogram(b).tolist())]), label="check:histograms")
        assert_that(failures, equal_to([]), label="check:failures")


def test_a_chunk_that_cannot_be_read_fails_its_file_and_not_the_others(tmp_path):
    path = write(tmp_path / "short", b"0123456789")
    chunks = [(FileJob(path, 10, "x.dcz"), ChunkDescriptor(path, 0, 0, 10)),
              (FileJob(path + ".gone", 10, "y.dcz"), ChunkDescriptor(path + ".gone", 0, 0, 10))]
    with local_pipeline() as p:
        histograms, failures = p | beam.Create(chunks) | CountBytes()
        assert_that(histograms | "Counted files" >> beam.MapTuple(lambda key, _: key[0]), equal_to([path]),
                    label="check:histograms")
        assert_that(failures | "Failed files" >> beam.Map(lambda f: f.source), equal_to([path + ".gone"]),
                    label="check:failures")


# --- encode ---------------------------------------------------------------------------------


def test_encoded_parts_concatenate_into_the_container_codec_encode_writes(tmp_path):
    data = sample_bytes(10_000, seed=2)
    chunk_size = 1_024
    job = FileJob(write(tmp_path / "in", data), len(data), str(tmp_path / "in.dcz"))
    table = codec.histogram(data)
    records = [encode_part(task, chunk_size, table, str(tmp_path / f"part-{task.index}"))[0]
               for task in part_tasks(job, chunk_size)]
    entries = [e for r in records for e in r.entries]
    body = b"".join(open(r.path, "rb").read() for r in records)
    blob = container.header_bytes(chunk_size) + body + container.seek_table_bytes(entries)
    assert blob == codec.encode(data, chunk_size, shared_histogram=table)
    assert sum(r.bytes_in for r in records) == len(data)
    assert sum(r.bytes_out for r in records) == len(body)


def table_sensitive_bytes(size: int) -> bytes:
    """Bytes spread evenly over 128 values: some small chunks take the whole-file table over their own."""
    return np.random.default_rng(1).integers(0, 128, size).astype(np.uint8).tobytes()


def counted_parts(tmp_path, data: bytes, chunk_size: int):
    job = FileJob(write(tmp_path / "in", data), len(data), str(tmp_path / "in.dcz"), chunk_size=chunk_size)
    records = [encode_part(task, chunk_size, None, str(tmp_path / f"part-{task.index}"), count=True)[0]
               for task in part_tasks(job, chunk_size)]
    return job, records


def concatenated(records, chunk_size: int) -> bytes:
    body = b"".join(open(r.path, "rb").read() for r in records)
    return (container.header_bytes(chunk_size) + body
            + container.seek_table_bytes([e for r in records for e in r.entries]))


def test_counted_parts_give_the_files_table_and_the_bytes_of_coding_with_it(tmp_path):
    data, chunk_size = table_sensitive_bytes(8 * 4096 + 5), 4096
    job, records = counted_parts(tmp_path, data, chunk_size)
    assert concatenated(records, chunk_size) == codec.encode(data, chunk_size)  # coded without the table
    table, settled = with_file_table(job, reversed(records))
    np.testing.assert_array_equal(table, codec.histogram(data))
    assert concatenated(settled, chunk_size) == codec.encode(data, chunk_size, shared_histogram=table)
    assert codec.encode(data, chunk_size, shared_histogram=table) != codec.encode(data, chunk_size)


def test_counted_parts_the_files_table_does_not_change_are_kept_without_a_second_read(tmp_path):
    data, chunk_size = sample_bytes(10_000, seed=2), 1_024
    job, records = counted_parts(tmp_path, data, chunk_size)
    os.remove(job.source)  # nothing may be read again
    table, settled = with_file_table(job, records)
    np.testing.assert_array_equal(file_table(records), codec.histogram(data))
    assert settled == records
    assert concatenated(settled, chunk_size) == codec.encode(data, chunk_size, shared_histogram=table)


def test_part_tasks_respect_the_part_plan_of_storage():
    job = FileJob("f", 10 * 2500 + 1, "f.dcz")
    tasks = part_tasks(job, 10)
    assert [(t.chunk_start, t.chunk_stop) for t in tasks] == storage.plan_parts(2501)
    assert [t.index for t in tasks] == list(range(len(tasks)))


def test_each_task_of_a_file_gets_the_files_table():
    job = FileJob("f", 30, "f.dcz", chunk_size=10)
    table = codec.histogram(b"abc")
    assert tasks_with_table((job_key(job), table)) == [(t, table) for t in part_tasks(job, 10)]


def test_a_terabyte_file_has_few_enough_parts_for_one_gcs_composite_object():
    job = FileJob("gs://b/huge", 2**40, "gs://b/huge.dcz")
    tasks = part_tasks(job, container.DEFAULT_CHUNK_SIZE)
    chunks = chunk_count(job.size, container.DEFAULT_CHUNK_SIZE)
    assert tasks[0].chunk_start == 0 and tasks[-1].chunk_stop == chunks
    assert all(a.chunk_stop == b.chunk_start for a, b in zip(tasks, tasks[1:]))
    objects = 1 + len(tasks) + 1  # header, parts, trailer
    assert objects <= storage.GCS_MAX_COMPONENTS
    assert all(len(call) <= storage.GCS_MAX_COMPOSE_SOURCES for call in storage.compose_plan(objects))


def test_a_file_that_shrank_fails_to_encode_and_leaves_no_part_object(tmp_path):
    job = FileJob(write(tmp_path / "in", b"x" * 100), 200, str(tmp_path / "in.dcz"))
    part = tmp_path / "part"
    with pytest.raises(EOFError):
        encode_part(PartTask(job, 0, 0, 2), 100, None, str(part))
    assert not part.exists()


# --- decode ---------------------------------------------------------------------------------


def container_job(tmp_path, data: bytes, chunk_size: int) -> ContainerJob:
    blob = codec.encode(data, chunk_size)
    path = write(tmp_path / "in.dcz", blob)
    return read_container_table(FileJob(path, len(blob), str(tmp_path / "out")))


def test_read_container_table_reads_the_same_table_as_the_codec(tmp_path):
    data = sample_bytes(5_000, seed=3)
    job = container_job(tmp_path, data, 700)
    with open(job.job.source, "rb") as f:
        assert list(job.entries) == container.read_seek_table(f, job.job.size)


def test_decoded_parts_concatenate_to_the_original(tmp_path):
    data = sample_bytes(5_000, seed=4)
    job = container_job(tmp_path, data, 700)
    records = [decode_part(task, str(tmp_path / f"part-{task.index}"))[0] for task in decode_part_tasks(job)]
    assert b"".join(open(r.path, "rb").read() for r in records) == data
    assert sum(r.chunks for r in records) == len(job.entries)


def task_with_damaged_chunk(job: ContainerJob, number: int) -> DecodePartTask:
    """Flips a payload byte of chunk `number` in the container; returns the task that decodes it."""
    damaged_offset = container.frame_offsets(job.entries)[number] + container.FRAME_HEADER_SIZE + 5
    with open(job.job.source, "r+b") as f:
        f.seek(damaged_offset)
        byte = f.read(1)
        f.seek(damaged_offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    (task,) = [t for t in decode_part_tasks(job) if t.chunk_start <= number < t.chunk_start + len(t.entries)]
    return task


def test_a_damaged_chunk_fails_with_its_number_and_leaves_no_part_object(tmp_path):
    job = container_job(tmp_path, sample_bytes(5_000, seed=5), 700)
    task = task_with_damaged_chunk(job, 3)
    part = tmp_path / "part"
    with pytest.raises(codec.FormatError, match="chunk 3 "):
        decode_part(task, str(part))
    assert not part.exists()


def test_parts_decoded_in_place_in_any_order_fill_one_file_with_the_original(tmp_path):
    data = sample_bytes(5_000, seed=7)
    job = container_job(tmp_path, data, 700)
    shared = str(tmp_path / storage.TEMP_DIR_NAME / "job" / "out.decoded")
    tasks = decode_part_tasks(job)
    records = [decode_part_in_place(task, shared)[0] for task in reversed(tasks)]
    decode_part_in_place(tasks[2], shared)  # a retried part rewrites the same bytes
    assert read_bytes(shared) == data
    assert sum(r.bytes_out for r in records) == len(data)


@pytest.mark.parametrize("size, chunk_size", [(5 * 8192, 8192), (5 * 8192 + 123, 8192), (9_000, 4096 + 1)],
                         ids=["aligned", "aligned-short-tail", "unaligned"])
def test_parts_decoded_in_place_with_direct_io_fill_the_file_exactly(tmp_path, size, chunk_size):
    # 4 KiB-aligned chunks go through O_DIRECT where the filesystem allows it (tmp_path does on
    # ext4 and xfs), the short tail and unaligned chunks through the page cache; bytes must not care.
    data = sample_bytes(size, seed=8)
    job = container_job(tmp_path, data, chunk_size)
    shared = str(tmp_path / storage.TEMP_DIR_NAME / "job" / "out.decoded")
    buffer = storage.aligned_buffer(chunk_size)
    for task in reversed(decode_part_tasks(job)):
        decode_part_in_place(task, shared, buffer)
    assert read_bytes(shared) == data


def test_a_damaged_chunk_decoded_in_place_fails_with_its_number(tmp_path):
    job = container_job(tmp_path, sample_bytes(5 * 8192, seed=9), 8192)
    task = task_with_damaged_chunk(job, 2)
    with pytest.raises(codec.FormatError, match="chunk 2 "):
        decode_part_in_place(task, str(tmp_path / storage.TEMP_DIR_NAME / "job" / "out.decoded"))


def decoded_job(tmp_path, data: bytes, chunk_size: int):
    """(container job, records, temp_dir) of `data` encoded, then decoded in place, ready to publish."""
    job = container_job(tmp_path, data, chunk_size)
    temp_dir = storage.temp_dir_for(job.job.destination, "job-1")
    records = [decode_part_in_place(task, decoded_temp_path(temp_dir, job.job.destination))[0]
               for task in decode_part_tasks(job)]
    return job, records, temp_dir


def test_publishing_a_decoded_file_twice_keeps_the_first_result(tmp_path):
    data = sample_bytes(5_000, seed=8)
    job, records, temp_dir = decoded_job(tmp_path, data, 700)
    first = publish_decoded(job, records, temp_dir)
    assert not os.path.exists(decoded_temp_path(temp_dir, job.job.destination))  # renamed, not copied
    again = publish_decoded(job, records, temp_dir)  # a retried bundle after a successful publish
    assert read_bytes(job.job.destination) == data
    assert (again.bytes_out, again.chunks) == (first.bytes_out, first.chunks) == (len(data), len(job.entries))


def test_publishing_again_fails_when_the_destination_is_not_the_decoded_file(tmp_path):
    data = sample_bytes(5_000, seed=9)
    job, records, temp_dir = decoded_job(tmp_path, data, 700)
    publish_decoded(job, records, temp_dir)
    write(job.job.destination, bytes(len(data)))  # same size, other bytes: not this job's output
    with pytest.raises(FileNotFoundError):
        publish_decoded(job, records, temp_dir)


def test_a_decoded_file_of_the_wrong_size_is_not_published_and_is_removed(tmp_path):
    data = sample_bytes(5_000, seed=10)
    job = container_job(tmp_path, data, 700)
    temp_dir = storage.temp_dir_for(job.job.destination, "job-1")
    shared = decoded_temp_path(temp_dir, job.job.destination)
    records = [decode_part_in_place(task, shared)[0] for task in decode_part_tasks(job)]
    with open(shared, "ab") as f:
        f.write(b"stray")
    with pytest.raises(RuntimeError, match="expected 5000"):
        publish_decoded(job, records, temp_dir)
    assert not os.path.exists(shared) and not os.path.exists(job.job.destination)


def test_publishing_a_container_twice_keeps_the_first_result(tmp_path):
    data = sample_bytes(5_000, seed=11)
    chunk_size = 700
    source = write(tmp_path / "data.bin", data)
    job = FileJob(source, len(data), str(tmp_path / "out" / "data.bin.dcz"))
    temp_dir = storage.temp_dir_for(job.destination, "job-1")
    table = codec.histogram(data)
    records = [encode_part(task, chunk_size, table, str(tmp_path / f"part-{task.index}"))[0]
               for task in part_tasks(job, chunk_size)]
    os.makedirs(temp_dir)
    first = publish_container(job, records, chunk_size, table, temp_dir)
    again = publish_container(job, records, chunk_size, table, temp_dir)  # a retried bundle
    assert codec.decode(read_bytes(job.destination)) == data
    assert os.path.getsize(job.destination) == first.bytes_out == again.bytes_out
    assert os.path.exists(job.destination + METADATA_SUFFIX)


def encoded_job(tmp_path, data: bytes, chunk_size: int, name: str = "data.bin"):
    """(job, records, table, temp_dir) of a file encoded into part files, ready to publish."""
    job = FileJob(write(tmp_path / name, data), len(data), str(tmp_path / "out" / f"{name}.dcz"))
    temp_dir = storage.temp_dir_for(job.destination, "job-1")
    os.makedirs(temp_dir, exist_ok=True)
    table = codec.histogram(data)
    records = [encode_part(task, chunk_size, table, str(tmp_path / f"part-{task.index}"))[0]
               for task in part_tasks(job, chunk_size)]
    return job, records, table, temp_dir


def test_a_container_is_not_published_over_an_output_that_appeared_when_overwrite_is_off(tmp_path):
    job, records, table, temp_dir = encoded_job(tmp_path, sample_bytes(3_000, seed=12), 700)
    write(job.destination, b"made by someone else during the run")
    with pytest.raises(FileExistsError):
        publish_container(job, records, 700, table, temp_dir, overwrite=False)
    assert read_bytes(job.destination) == b"made by someone else during the run"
    assert not os.path.exists(job.destination + METADATA_SUFFIX)


def test_an_existing_metadata_file_also_stops_publication_when_overwrite_is_off(tmp_path):
    job, records, table, temp_dir = encoded_job(tmp_path, sample_bytes(3_000, seed=13), 700)
    write(job.destination + METADATA_SUFFIX, b"{}")
    with pytest.raises(FileExistsError):
        publish_container(job, records, 700, table, temp_dir, overwrite=False)
    assert not os.path.exists(job.destination)
    assert read_bytes(job.destination + METADATA_SUFFIX) == b"{}"


def test_a_failed_publication_puts_back_the_metadata_it_was_replacing(tmp_path):
    job, records, table, temp_dir = encoded_job(tmp_path, sample_bytes(3_000, seed=14), 700)
    write(job.destination, b"the older container")
    write(job.destination + METADATA_SUFFIX, b'{"the": "older description"}')
    os.remove(records[1].path)  # a lost part: publication must fail
    with pytest.raises(Exception):
        publish_container(job, records, 700, table, temp_dir)
    assert read_bytes(job.destination) == b"the older container"
    assert read_bytes(job.destination + METADATA_SUFFIX) == b'{"the": "older description"}'
    assert not [name for name in os.listdir(temp_dir) if "meta" in name]


def test_a_replacing_publication_leaves_no_copy_of_the_old_metadata(tmp_path):
    data = sample_bytes(3_000, seed=15)
    job, records, table, temp_dir = encoded_job(tmp_path, data, 700)
    write(job.destination + METADATA_SUFFIX, b"{}")
    publish_container(job, records, 700, table, temp_dir)
    assert codec.decode(read_bytes(job.destination)) == data
    assert json.loads(read_bytes(job.destination + METADATA_SUFFIX))["og_size"] == len(data)
    assert os.listdir(temp_dir) == []


def test_a_decoded_file_is_not_published_over_an_output_that_appeared_when_overwrite_is_off(tmp_path):
    data = sample_bytes(5_000, seed=16)
    job, records, temp_dir = decoded_job(tmp_path, data, 700)
    write(job.job.destination, b"someone else's")
    with pytest.raises(FileExistsError):
        publish_decoded(job, records, temp_dir, overwrite=False)
    assert read_bytes(job.job.destination) == b"someone else's"


def test_an_input_replaced_after_planning_fails_its_encoding(tmp_path):
    path = write(tmp_path / "in", sample_bytes(3_000, seed=17))
    job = pin_versions([FileJob(path, 3_000, str(tmp_path / "in.dcz"))])[0][0]
    time.sleep(0.01)
    write(tmp_path / "in", sample_bytes(3_000, seed=18))
    with pytest.raises(storage.InputChangedError):
        encode_part(PartTask(job, 0, 0, 3), 1_000, None, str(tmp_path / "part"))
    assert not (tmp_path / "part").exists()


def test_a_container_replaced_after_planning_fails_its_decoding(tmp_path):
    job = container_job(tmp_path, sample_bytes(3_000, seed=19), 700)
    pinned = ContainerJob(pin_versions([job.job])[0][0], job.entries)
    time.sleep(0.01)
    write(job.job.source, codec.encode(sample_bytes(3_000, seed=20), 700))
    with pytest.raises(storage.InputChangedError):
        decode_part_in_place(decode_part_tasks(pinned)[0], str(tmp_path / storage.TEMP_DIR_NAME / "job" / "out.decoded"))


def test_pinning_fails_a_file_that_vanished_since_it_was_matched(tmp_path):
    kept = FileJob(write(tmp_path / "kept", b"x"), 1, str(tmp_path / "kept.dcz"))
    gone = FileJob(str(tmp_path / "gone"), 1, str(tmp_path / "gone.dcz"))
    jobs, failures = pin_versions([kept, gone])
    assert [job.source for job in jobs] == [kept.source] and jobs[0].version is not None
    assert [failed.source for failed in failures] == [gone.source]


def test_plan_jobs_skips_files_in_job_temp_folders():
    matched = [FileMetadata("/data/a.bin", 1), FileMetadata(f"/data/{storage.TEMP_DIR_NAME}/job/a.bin.dcz.part-00000", 1),
               FileMetadata(f"gs://b/out/{storage.TEMP_DIR_NAME}/job/x.header", 1)]
    jobs, failures = plan_jobs(matched, "/out", "compress", False)
    assert [job.source for job in jobs] == ["/data/a.bin"] and failures == []


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_a_file_that_is_not_a_container_has_no_seek_table(tmp_path):
    path = write(tmp_path / "x.dcz", b"this is not a container, only text" * 3)
    with pytest.raises(codec.FormatError, match="not a .dcz container"):
        read_container_table(FileJob(path, os.path.getsize(path), str(tmp_path / "x")))


# --- assembly and failures ------------------------------------------------------------------


def record(index: int) -> PartRecord:
    return PartRecord("f", index, f"p{index}", 1, 10, 5, 0.1)


def test_ordered_parts_sorts_records_by_part_index():
    assert [r.index for r in ordered_parts("f", [record(2), record(0), record(1)], 3)] == [0, 1, 2]


def test_ordered_parts_refuses_to_publish_with_a_part_missing():
    with pytest.raises(RuntimeError, match=r"missing \[1\]"):
        ordered_parts("f", [record(0), record(2)], 3)


def test_failure_reason_keeps_a_few_distinct_reasons_and_counts_the_rest():
    assert failure_reason(["b", "a", "b"]) == "a; b"
    assert failure_reason([f"r{i}" for i in range(10)]) == "r0; r1; r2; and 7 more"


def test_failure_is_one_line_naming_stage_and_error_type():
    assert Failure.of("j", "f", "encode part 2", OSError("disk\nfull")).reason == "encode part 2: OSError: disk full"


def test_the_failures_of_one_file_combine_into_one_failure_with_their_reasons_in_one_line():
    failures = [Failure.of("j", "f", f"decode part {i}", ValueError("bad")) for i in (4, 1, 3, 2, 1)]
    combined = combined_failure(failures)
    assert combined.reason == failure_reason([f.reason for f in failures])
    assert (combined.stage, combined.error_type, combined.job_id) == ("decode part 1", "ValueError", "j")


def test_failures_csv_quotes_commas_and_sorts_by_file():
    text = failures_csv([("b,c", 'said "no"'), ("a", "x")])
    assert list(csv.reader(io.StringIO(text))) == [["file", "error"], ["a", "x"], ["b,c", 'said "no"']]


def test_metadata_has_the_seed_fields_and_the_per_chunk_checksums():
    data = sample_bytes(3_000, seed=6)
    frames = [container.encode_frame(data[i:i + 1_000]) for i in range(0, 3_000, 1_000)]
    entries = [entry for _, entry in frames]
    size = 16 + sum(e.frame_size for e in entries) + container.trailer_size(3)
    meta = container_metadata(FileJob("/in/data.bin", 3_000, "/out/data.bin.dcz"), entries, 1_000,
                              codec.histogram(data), size, {"worker_seconds": 0.5})
    assert (meta["filename"], meta["og_size"], meta["cp_size"], meta["chunks"]) == ("data.bin", 3_000, size, 3)
    assert meta["ratio"] == pytest.approx(3_000 / size)
    assert meta["checksums"]["chunks"] == [f"{container.crc32c(data[i:i + 1_000]):08x}" for i in (0, 1_000, 2_000)]
    assert meta["codec"]["format_version"] == container.FORMAT_VERSION
    assert sum(meta["frequencies"]) == 3_000
    json.dumps(meta)  # JSON-ready


def test_finishing_a_job_writes_only_the_failures_and_then_removes_each_temp_folder_once(tmp_path):
    removed = []
    items = [started(None), Failure.of("j", "b", "encode", OSError("boom")), temp_dir_item("/t/1"),
             temp_dir_item("/t/1"), Failure.of("j", "a", "plan", ValueError("bad")), temp_dir_item("/t/2")]
    count = finish_job(items, str(tmp_path / "f.csv"), False, removed.append)
    assert count == 2
    assert (tmp_path / "f.csv").read_text() == "file,error\na,plan: ValueError: bad\nb,encode: OSError: boom\n"
    assert removed == ["/t/1", "/t/2"]


def test_finishing_a_job_with_no_failures_writes_the_csv_only_when_asked(tmp_path):
    assert finish_job([started(None)], str(tmp_path / "default.csv"), False, print) == 0
    assert not (tmp_path / "default.csv").exists()
    finish_job([started(None)], str(tmp_path / "asked.csv"), True, print)
    assert (tmp_path / "asked.csv").read_text() == "file,error\n"
