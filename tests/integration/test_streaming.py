"""The streaming job graph under TestStream, with the in-memory queue and status store."""
from __future__ import annotations

import dataclasses
import json
import os
import uuid

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline, test_stream

import codec
from adapters import storage, tracing
from adapters.jobs import JobRequest, JobState, JobStatus
from adapters.memory import InMemoryJobQueue, InMemoryStatusStore, MemorySpec
from adapters.messages import encode_job_message
from pipelines.streaming import serve_jobs
from transforms.assemble import METADATA_SUFFIX
from transforms.encode import encode_part, part_tasks
from transforms.frequencies import job_key
from transforms.jobs import read_table
from transforms.perjob import FAILURE, JOB, OPEN, PART, AssembleJobs, CountTables
from transforms.planning import FileJob, part_path

# Timers are set from the wall clock; under TestStream the runner's clock starts at 0, so this
# advance moves it past every deadline a test sets.
PAST_EVERY_DEADLINE = 10 ** 10


@dataclasses.dataclass
class Service:
    store: InMemoryStatusStore
    queue: InMemoryJobQueue
    status_spec: MemorySpec
    queue_spec: MemorySpec


@pytest.fixture
def service() -> Service:
    store, queue = InMemoryStatusStore(), InMemoryJobQueue()
    name = uuid.uuid4().hex
    return Service(store, queue, MemorySpec.register(f"status-{name}", store),
                   MemorySpec.register(f"queue-{name}", queue))


def collector() -> tuple[MemorySpec, list]:
    """A list that DoFns (pickled copies in this process) can append to, through a MemorySpec."""
    collected: list = []
    return MemorySpec.register(f"list-{uuid.uuid4().hex}", collected), collected


def _append(element, spec: MemorySpec) -> None:
    spec.open().append(element)


def streaming_pipeline() -> test_pipeline.TestPipeline:
    return test_pipeline.TestPipeline(runner="BundleBasedDirectRunner", options=PipelineOptions(["--streaming"]))


def message(request: JobRequest) -> PubsubMessage:
    return PubsubMessage(*encode_job_message(request))


def submit(service: Service, request: JobRequest) -> PubsubMessage:
    """What `dcas submit` does: the QUEUED status first, then the message."""
    service.store.create(JobStatus.queued(request))
    return message(request)


def serve(service: Service, *batches, timeout: float = 60.0, advance_past_deadlines: bool = False):
    """Runs the job graph over batches of messages; returns the published outputs' destinations."""
    stream = test_stream.TestStream()
    for batch in batches:
        stream = stream.add_elements(list(batch))
    if advance_past_deadlines:
        stream = stream.advance_processing_time(PAST_EVERY_DEADLINE)
    stream = stream.advance_watermark_to_infinity()
    spec, published = collector()
    with streaming_pipeline() as p:
        results, _ = serve_jobs(p | stream, service.status_spec, service.queue_spec, timeout=timeout, threads=2,
                                progress_interval=0.0)
        _ = results | beam.Map(lambda result: result.destination) | beam.Map(_append, spec)
    return published


def sample(size: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    weights = np.arange(256, 0, -1) ** 3
    return rng.choice(256, size=size, p=weights / weights.sum()).astype(np.uint8).tobytes()


def write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def compress_request(tmp_path, data: bytes, job_id: str = "job-1", chunk_size: int = 4096, **fields) -> JobRequest:
    source = write(tmp_path / f"{job_id}.bin", data)
    return JobRequest(job_id, "compress", source, str(tmp_path / "out" / f"{job_id}.dcz"), chunk_size=chunk_size,
                      **fields)


@pytest.fixture(autouse=True)
def output_dir(tmp_path):
    (tmp_path / "out").mkdir()


# --- whole jobs from messages -----------------------------------------------------------------


def test_a_compress_job_publishes_its_container_and_metadata_then_succeeds(tmp_path, service):
    data = sample(30_000, seed=1)
    request = compress_request(tmp_path, data)
    assert serve(service, [submit(service, request)]) == [request.output_uri]
    assert codec.decode(read(request.output_uri)) == data
    meta = json.loads(read(request.output_uri + METADATA_SUFFIX))
    assert (meta["filename"], meta["og_size"], meta["cp_size"]) == ("job-1.bin", len(data),
                                                                    os.path.getsize(request.output_uri))
    status = service.store.get("job-1")
    assert status.state is JobState.SUCCEEDED
    assert (status.output, status.metadata) == (request.output_uri, request.output_uri + METADATA_SUFFIX)
    assert (status.chunks_done, status.chunks_total, status.bytes_in) == (8, 8, len(data))
    assert status.ratio == pytest.approx(len(data) / os.path.getsize(request.output_uri), rel=1e-4)
    assert os.listdir(tmp_path / "out") == ["job-1.dcz", "job-1.dcz" + METADATA_SUFFIX]  # no temp folder left


def test_a_decompress_job_restores_the_original_bytes_and_writes_metadata(tmp_path, service):
    data = sample(20_000, seed=2)
    source = write(tmp_path / "in.dcz", codec.encode(data, 3000))
    request = JobRequest("job-d", "decompress", source, str(tmp_path / "out" / "restored.bin"))
    assert serve(service, [submit(service, request)]) == [request.output_uri]
    assert read(request.output_uri) == data
    meta = json.loads(read(request.output_uri + METADATA_SUFFIX))
    assert (meta["og_size"], meta["cp_size"], meta["chunks"]) == (len(data), os.path.getsize(source), 7)
    assert service.store.get("job-d").state is JobState.SUCCEEDED


def test_an_empty_input_compresses_to_an_empty_container(tmp_path, service):
    request = compress_request(tmp_path, b"")
    assert serve(service, [submit(service, request)]) == [request.output_uri]
    assert codec.decode(read(request.output_uri)) == b""
    assert service.store.get("job-1").state is JobState.SUCCEEDED


def test_a_duplicated_job_message_publishes_one_output_and_succeeds_once(tmp_path, service):
    data = sample(25_000, seed=3)
    request = compress_request(tmp_path, data)
    duplicate = submit(service, request)
    assert serve(service, [duplicate, duplicate], [message(request)]) == [request.output_uri]
    status = service.store.get("job-1")
    assert status.state is JobState.SUCCEEDED and status.chunks_done == status.chunks_total == 7
    assert codec.decode(read(request.output_uri)) == data
    assert service.queue.dead_letters == []


def test_a_redelivered_message_of_a_finished_job_changes_nothing(tmp_path, service):
    request = compress_request(tmp_path, sample(9_000, seed=4))
    serve(service, [submit(service, request)])
    before = service.store.get("job-1")
    container = read(request.output_uri)
    assert serve(service, [message(request)]) == []
    assert service.store.get("job-1") == before
    assert read(request.output_uri) == container


def test_a_stale_attempt_is_dropped_and_the_current_one_runs(tmp_path, service):
    first = compress_request(tmp_path, sample(5_000, seed=5))
    service.store.create(JobStatus.queued(first.next_attempt()))
    assert serve(service, [message(first)]) == []
    assert service.store.get("job-1").state is JobState.QUEUED
    assert serve(service, [message(first.next_attempt())]) == [first.output_uri]
    assert service.store.get("job-1").state is JobState.SUCCEEDED


def test_a_bad_message_is_dead_lettered_and_the_next_job_still_runs(tmp_path, service):
    good = compress_request(tmp_path, sample(5_000, seed=6))
    bad = PubsubMessage(b'{"not": "a job"}', {"job_id": "job-bad"})
    assert serve(service, [bad, submit(service, good)]) == [good.output_uri]
    [(payload, failure)] = service.queue.dead_letters
    assert payload == b'{"not": "a job"}' and failure.stage == "parse" and failure.job_id == "job-bad"
    assert service.store.get("job-1").state is JobState.SUCCEEDED


def test_a_job_on_a_missing_input_fails_with_its_reason_and_a_dead_letter(tmp_path, service):
    request = JobRequest("job-gone", "compress", str(tmp_path / "missing.bin"), str(tmp_path / "out" / "x.dcz"))
    good = compress_request(tmp_path, sample(5_000, seed=7))
    assert serve(service, [submit(service, request), submit(service, good)]) == [good.output_uri]
    status = service.store.get("job-gone")
    assert status.state is JobState.FAILED
    assert status.error == {"stage": "plan", "type": "FileNotFoundError",
                            "message": f"no file matches {request.input_uri!r}"}
    [(payload, failure)] = service.queue.dead_letters
    assert payload == request and failure.reason.startswith("plan: FileNotFoundError")


def test_a_corrupt_container_fails_its_job_naming_the_chunk_and_leaves_no_temp_object(tmp_path, service):
    blob = bytearray(codec.encode(sample(12_000, seed=8), 4000))
    blob[40] ^= 0xFF  # inside chunk 0's payload
    source = write(tmp_path / "bad.dcz", bytes(blob))
    request = JobRequest("job-bad", "decompress", source, str(tmp_path / "out" / "bad.bin"))
    assert serve(service, [submit(service, request)]) == []
    status = service.store.get("job-bad")
    assert status.state is JobState.FAILED
    assert status.error["stage"] == "decode part 0" and status.error["type"] == "FormatError"
    assert len(service.queue.dead_letters) == 1
    assert os.listdir(tmp_path / "out") == []


def test_an_attempt_past_the_limit_fails_instead_of_running(tmp_path, service):
    request = dataclasses.replace(compress_request(tmp_path, b"abc"), attempt=4)
    assert serve(service, [submit(service, request)]) == []
    assert service.store.get("job-1").error["stage"] == "claim"


def test_a_job_naming_a_table_encodes_with_that_table(tmp_path, service):
    data = sample(10_000, seed=9)
    table = codec.histogram(sample(50_000, seed=10)) + 1  # another table: every byte has a code
    table_uri = write(tmp_path / "table.json", json.dumps([int(n) for n in table]).encode())
    request = compress_request(tmp_path, data, table_uri=table_uri)
    assert serve(service, [submit(service, request)]) == [request.output_uri]
    assert codec.decode(read(request.output_uri)) == data
    assert json.loads(read(request.output_uri + METADATA_SUFFIX))["frequencies"] == [int(n) for n in table]


def test_interleaved_jobs_each_publish_their_own_output(tmp_path, service):
    datas = {f"job-{i}": sample(8_000 + 1_000 * i, seed=20 + i) for i in range(4)}
    requests = [compress_request(tmp_path, data, job_id) for job_id, data in datas.items()]
    published = serve(service, [submit(service, r) for r in requests[:2]], [submit(service, r) for r in requests[2:]])
    assert sorted(published) == sorted(r.output_uri for r in requests)
    for request in requests:
        assert codec.decode(read(request.output_uri)) == datas[request.job_id]
        assert service.store.get(request.job_id).state is JobState.SUCCEEDED


# --- the assembler alone: parts in any order, twice, or never ---------------------------------


def encoded_parts(tmp_path, data: bytes, job_id: str, chunk_size: int = 1000):
    """(job, table, records) of `data` encoded into its attempt's part objects, not yet assembled."""
    source = write(tmp_path / f"{job_id}.bin", data)
    job = FileJob(source, len(data), str(tmp_path / "out" / f"{job_id}.dcz"), storage.input_version(source),
                  job_id, chunk_size=chunk_size)
    table = codec.histogram(data)
    records = [encode_part(task, chunk_size, table, part_path(job.temp_dir, job.destination, task.index))[0]
               for task in part_tasks(job, chunk_size)]
    return job, table, records


def running(service: Service, job: FileJob) -> None:
    request = JobRequest(job.job_id, "compress", job.source, job.destination, chunk_size=job.chunk_size)
    service.store.create(JobStatus.queued(request))
    service.store.transition(job.job_id, JobState.RUNNING, 1)


def assemble(service: Service, *batches, advance_past_deadlines: bool = False,
             stream: test_stream.TestStream | None = None, **settings):
    """Runs AssembleJobs over batches of (tag, value) events (or a TestStream of them); returns
    (destinations, failures)."""
    if stream is None:
        stream = test_stream.TestStream()
        for batch in batches:
            stream = stream.add_elements(list(batch))
        if advance_past_deadlines:
            stream = stream.advance_processing_time(PAST_EVERY_DEADLINE)
    stream = stream.advance_watermark_to_infinity()
    (published_spec, published), (failed_spec, failed) = collector(), collector()
    with streaming_pipeline() as p:
        events = p | stream
        tables = events | "Tables" >> beam.FlatMap(lambda e: [e[1]] if e[0] == JOB else [])
        records = events | "Parts" >> beam.FlatMap(lambda e: [e[1]] if e[0] == PART else [])
        failures = events | "Failures" >> beam.FlatMap(lambda e: [e[1]] if e[0] == FAILURE else [])
        claimed = events | "Claimed" >> beam.FlatMap(lambda e: [e[1]] if e[0] == OPEN else [])
        containers = p | "No containers" >> beam.Create([])
        results, failures_out = ((tables, containers, records, failures, claimed)
                                 | AssembleJobs(service.status_spec, timeout=30, progress_interval=0.0, **settings))
        _ = results | "Destination" >> beam.Map(lambda r: r.destination) | "Published" >> beam.Map(_append,
                                                                                                  published_spec)
        _ = failures_out | "Failed" >> beam.Map(_append, failed_spec)
    return published, failed


def record_progress_calls(service: Service) -> list:
    """(chunks_done, chunks_total) of every progress write the store accepts or refuses."""
    calls = []
    record_progress = service.store.record_progress
    service.store.record_progress = lambda *a, **kw: calls.append((kw["chunks_done"], kw["chunks_total"])) or \
        record_progress(*a, **kw)
    return calls


def claimed_request(job: FileJob) -> JobRequest:
    return JobRequest(job.job_id, "compress", job.source, job.destination, chunk_size=job.chunk_size)


def at_zero() -> float:
    """The DoFn's clock under TestStream, whose processing time starts at 0."""
    return 0.0


def test_a_claimed_job_beats_while_its_chunks_are_counted_and_stops_when_it_ends(tmp_path, service):
    data = sample(5_000, seed=37)
    job, table, records = encoded_parts(tmp_path, data, "job-1")
    running(service, job)
    calls = record_progress_calls(service)
    stream = (test_stream.TestStream()
              .add_elements([(OPEN, claimed_request(job))])
              # Counting: nothing reaches the assembler for 15 s; a heartbeat every 5 s.
              .advance_processing_time(5).advance_processing_time(5).advance_processing_time(5)
              .add_elements([(JOB, (job_key(job), table))] + [(PART, r) for r in records])
              .advance_processing_time(5).advance_processing_time(5))  # ended: no more heartbeats
    published, failed = assemble(service, stream=stream, heartbeat=5.0, clock=at_zero)
    assert (published, failed) == ([job.destination], [])
    assert calls[:3] == [(0, 0)] * 3  # the three heartbeats, before the plan's first progress
    assert [c for c in calls if c[1] == 0] == [(0, 0)] * 3
    assert service.store.get("job-1").state is JobState.SUCCEEDED


def test_a_job_whose_plan_never_comes_stops_beating_a_timeout_after_its_claim(tmp_path, service):
    job, _, _ = encoded_parts(tmp_path, sample(3_000, seed=38), "job-1")
    running(service, job)
    calls = record_progress_calls(service)
    stream = test_stream.TestStream().add_elements([(OPEN, claimed_request(job))])
    for _ in range(10):
        stream = stream.advance_processing_time(5)
    assemble(service, stream=stream, heartbeat=5.0, clock=at_zero)
    assert len(calls) == 6  # at 5, 10, ..., 30 s (the timeout); then the reconciler may take it
    assert service.store.get("job-1").state is JobState.RUNNING


def test_parts_out_of_order_assemble_into_the_file(tmp_path, service):
    data = sample(9_500, seed=30)
    job, table, records = encoded_parts(tmp_path, data, "job-1")
    running(service, job)
    published, failed = assemble(service, [(PART, records[7]), (PART, records[2])],
                                 [(JOB, (job_key(job), table))], [(PART, r) for r in reversed(records)])
    assert published == [job.destination] and failed == []
    assert codec.decode(read(job.destination)) == data
    assert service.store.get("job-1").state is JobState.SUCCEEDED


def test_duplicated_parts_count_once_in_the_output_and_the_progress(tmp_path, service):
    data = sample(6_000, seed=31)
    job, table, records = encoded_parts(tmp_path, data, "job-1")
    running(service, job)
    progress = []
    record_progress = service.store.record_progress
    service.store.record_progress = lambda *a, **kw: progress.append(kw["chunks_done"]) or record_progress(*a, **kw)
    published, _ = assemble(service, [(JOB, (job_key(job), table))],
                            [(PART, records[0]), (PART, records[0]), (PART, records[1])],
                            [(PART, r) for r in records[1:]])
    assert published == [job.destination]
    assert codec.decode(read(job.destination)) == data
    assert progress == list(range(len(records)))  # the plan's 0, then every part but the last (SUCCEEDED's)
    assert service.store.get("job-1").chunks_done == len(records)


def test_a_missing_part_times_out_and_fails_the_job_and_its_temp_objects_go(tmp_path, service):
    job, table, records = encoded_parts(tmp_path, sample(5_000, seed=32), "job-1")
    running(service, job)
    published, failed = assemble(service, [(JOB, (job_key(job), table))], [(PART, r) for r in records if r.index != 2],
                                 advance_past_deadlines=True)
    assert published == []
    [failure] = failed
    assert (failure.stage, failure.error_type) == ("assemble", "TimeoutError") and "[2]" in failure.message
    assert not os.path.exists(job.temp_dir) and not os.path.exists(job.destination)


@pytest.mark.parametrize("failure_first", [True, False], ids=["failure-first", "failure-last"])
def test_a_part_failure_ends_the_job_and_its_parts_go_whenever_they_arrive(tmp_path, service, failure_first):
    job, table, records = encoded_parts(tmp_path, sample(5_000, seed=33), "job-1")
    running(service, job)
    broken = job.failure("encode part 3", OSError("disk full"))
    others = [(JOB, (job_key(job), table)), (PART, records[0])]
    batches = [[(FAILURE, broken)], others] if failure_first else [others, [(FAILURE, broken)]]
    published, failed = assemble(service, *batches)
    assert (published, failed) == ([], [broken])
    assert not os.path.exists(job.temp_dir)


def test_interleaved_parts_of_two_jobs_assemble_each_job(tmp_path, service):
    data_a, data_b = sample(4_000, seed=34), sample(7_000, seed=35)
    job_a, table_a, records_a = encoded_parts(tmp_path, data_a, "job-a")
    job_b, table_b, records_b = encoded_parts(tmp_path, data_b, "job-b")
    running(service, job_a)
    running(service, job_b)
    interleaved = [event for pair in zip(records_b, records_a + [None] * 3) for event in pair if event]
    published, _ = assemble(service, [(JOB, (job_key(job_a), table_a)), (JOB, (job_key(job_b), table_b))],
                            [(PART, r) for r in interleaved])
    assert sorted(published) == sorted([job_a.destination, job_b.destination])
    assert codec.decode(read(job_a.destination)) == data_a and codec.decode(read(job_b.destination)) == data_b


def test_state_is_cleared_after_a_job_and_late_parts_are_dropped_until_it_is(tmp_path, service):
    data = sample(3_000, seed=36)
    job, table, records = encoded_parts(tmp_path, data, "job-1")
    running(service, job)
    late = [dataclasses.replace(records[0], path=write(tmp_path / f"late-{i}.part", b"stray")) for i in range(2)]
    stream = (test_stream.TestStream()
              .add_elements([(JOB, (job_key(job), table))] + [(PART, r) for r in records])
              .add_elements([(PART, late[0])])  # the job has ended: dropped, its object removed
              .advance_processing_time(PAST_EVERY_DEADLINE)  # the end mark expires: nothing is left
              .add_elements([(PART, late[1])])  # so this one starts from nothing
              .advance_processing_time(PAST_EVERY_DEADLINE))
    published, failed = assemble(service, stream=stream)
    assert published == [job.destination]
    [failure] = failed
    assert "never planned" in failure.message
    assert not os.path.exists(late[0].path) and not os.path.exists(late[1].path)
    assert service.store.get("job-1").state is JobState.SUCCEEDED
    assert codec.decode(read(job.destination)) == data


# --- a table the request names ------------------------------------------------------------------


def test_a_named_table_is_read_from_a_list_or_from_a_containers_metadata(tmp_path):
    counts = list(range(256))
    as_list = write(tmp_path / "t.json", json.dumps(counts).encode())
    as_meta = write(tmp_path / "x.dcz.meta.json", json.dumps({"og_size": 1, "frequencies": counts}).encode())
    assert read_table(as_list).tolist() == counts == read_table(as_meta).tolist()


@pytest.mark.parametrize("content", [b"[1, 2, 3]", b'{"frequencies": null}', b"[" + b"-1, " * 255 + b"0]", b"not json"],
                         ids=["short", "null", "negative", "not-json"])
def test_a_named_table_that_is_not_256_counts_is_refused(tmp_path, content):
    with pytest.raises(ValueError):
        read_table(write(tmp_path / "t.json", content))


def test_a_job_whose_named_table_cannot_be_read_fails_at_that_stage(tmp_path, service):
    request = compress_request(tmp_path, b"abc", table_uri=str(tmp_path / "no-table.json"))
    assert serve(service, [submit(service, request)]) == []
    assert service.store.get("job-1").error["stage"] == "read table"


def test_the_last_attempt_to_succeed_removes_the_temp_objects_a_crashed_attempt_left(tmp_path, service):
    request = compress_request(tmp_path, sample(6_000, seed=40))
    crashed = storage.temp_dir_for(request.output_uri, request.job_id, 1)
    os.makedirs(crashed)
    write(os.path.join(crashed, "job-1.dcz.part-00000"), b"half of attempt 1")
    service.store.create(JobStatus.queued(request.next_attempt()))
    assert serve(service, [message(request.next_attempt())]) == [request.output_uri]
    assert sorted(os.listdir(tmp_path / "out")) == ["job-1.dcz", "job-1.dcz" + METADATA_SUFFIX]


def test_a_jobs_table_counts_each_chunk_once_in_any_order(tmp_path):
    data = sample(5_500, seed=41)
    job = FileJob(write(tmp_path / "in.bin", data), len(data), str(tmp_path / "out" / "in.dcz"), job_id="job-1",
                  chunk_size=1_000)
    histograms = [(job_key(job), (i, codec.histogram(data[i * 1000:(i + 1) * 1000]))) for i in range(6)]
    stream = (test_stream.TestStream()
              .add_elements([histograms[4], histograms[0], histograms[4]])
              .add_elements(histograms[1:4] + [histograms[0], histograms[5]])
              .advance_watermark_to_infinity())
    spec, tables = collector()
    with streaming_pipeline() as p:
        _ = (p | stream | CountTables(timeout=30)
             | beam.MapTuple(lambda key, table: (key, table.tolist())) | beam.Map(_append, spec))
    assert tables == [(job_key(job), codec.histogram(data).tolist())]


def test_a_job_cancelled_while_it_runs_publishes_nothing(tmp_path, service):
    job, table, records = encoded_parts(tmp_path, sample(4_000, seed=42), "job-1")
    running(service, job)
    service.store.transition("job-1", JobState.CANCELLED, 1)
    published, failed = assemble(service, [(JOB, (job_key(job), table))], [(PART, r) for r in records])
    assert (published, failed) == ([], [])
    assert not os.path.exists(job.destination) and not os.path.exists(job.temp_dir)
    assert service.store.get("job-1").state is JobState.CANCELLED


# --- tracing ----------------------------------------------------------------------------------------

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


FAILING_TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_traced_jobs_record_each_stage_as_spans_of_the_trace_their_message_carries(tmp_path, service, spans_file):
    request = compress_request(tmp_path, sample(12_000, seed=21), trace_context=TRACEPARENT)
    missing = JobRequest("job-gone", "compress", str(tmp_path / "missing.bin"), str(tmp_path / "out" / "x.dcz"),
                         trace_context=FAILING_TRACE)
    untraced = compress_request(tmp_path, sample(5_000, seed=22), job_id="job-2")
    published = serve(service, [submit(service, request), submit(service, missing), submit(service, untraced)])
    assert sorted(published) == sorted([request.output_uri, untraced.output_uri])
    spans = tracing.read_spans(str(spans_file), tracing.trace_id_of(TRACEPARENT))
    names = [s["name"] for s in spans]
    assert {"claim", "plan", "assemble", "publish"} <= set(names)
    assert names.count("histogram") == names.count("encode chunk") == 3  # 12,000 bytes in 4,096-byte chunks
    by_id = {s["span_id"]: s for s in spans}
    [publish] = [s for s in spans if s["name"] == "publish"]
    assert by_id[publish["parent_id"]]["name"] == "assemble"
    assert all(by_id[s["parent_id"]]["name"] == "encode part" for s in spans if s["name"] == "encode chunk")
    stage_roots = [s for s in spans if s["parent_id"] not in by_id]
    assert {s["parent_id"] for s in stage_roots} == {"00f067aa0ba902b7"}  # each stage hangs off the Manager's span

    failing = tracing.read_spans(str(spans_file), tracing.trace_id_of(FAILING_TRACE))
    [failed] = [s for s in failing if s["name"] == "report failure"]
    assert failed["status"] == "ERROR" and failed["attributes"]["stage"] == "plan"
    assert failed["attributes"]["error_type"] == "FileNotFoundError"
    assert failed["parent_id"] == "b7ad6b7169203331"  # under the Manager's span of that job
    assert len(tracing.read_spans(str(spans_file))) == len(spans) + len(failing)  # the untraced job made none
