"""The streaming pipeline's pure parts: its options, message parsing, per-job bookkeeping."""
from __future__ import annotations

import pytest

from codec import container
from adapters.jobs import JobRequest
from adapters.messages import encode_job_message
from pipelines.streaming import parse_args
from transforms.decode import ContainerJob
from transforms.jobs import parse_message
from transforms.perjob import attempt_key, decoded_metadata, expected_parts, missing_parts
from transforms.planning import FileJob, plan_request

STACK_ARGV = ["--project=p", "--subscription=projects/p/subscriptions/jobs-pipeline",
              "--jobs_topic=projects/p/topics/jobs", "--dead_letter_topic=projects/p/topics/dead",
              "--status_collection=jobs", "--max_attempts=3"]


def test_the_stack_command_line_runs_on_the_local_streaming_runner():
    known, pipeline_args = parse_args(STACK_ARGV)
    assert (known.project, known.subscription, known.max_attempts) == ("p", "projects/p/subscriptions/jobs-pipeline", 3)
    assert "--runner=BundleBasedDirectRunner" in pipeline_args and "--streaming" in pipeline_args


def test_a_runner_given_on_the_command_line_is_kept():
    _, pipeline_args = parse_args([*STACK_ARGV, "--runner=DataflowRunner"])
    assert [a for a in pipeline_args if a.startswith("--runner")] == ["--runner=DataflowRunner"]


@pytest.mark.parametrize("bad", ["--max_attempts=0", "--assembly_timeout=0", "--threads=-1"])
def test_impossible_limits_are_refused(bad, capsys):
    with pytest.raises(SystemExit):
        parse_args([*STACK_ARGV, bad])
    assert bad.split("=")[0] in capsys.readouterr().err


def test_a_job_message_parses_into_its_request():
    request = JobRequest("job-1", "compress", "gs://b/in", "gs://b/out.dcz", attempt=2)
    assert parse_message(*encode_job_message(request)) == request


@pytest.mark.parametrize("data", [b"\xff\xfe", b"[]", b'{"schema_version": 1}', b'{"schema_version": 9}'],
                         ids=["not-utf8", "not-an-object", "incomplete", "unknown-version"])
def test_a_bad_message_becomes_a_parse_failure_of_the_job_its_attributes_name(data):
    payload, failure = parse_message(data, {"job_id": "job-7", "attempt": "2"})
    assert payload == data
    assert (failure.job_id, failure.attempt, failure.stage, failure.error_type) == ("job-7", 2, "parse", "ValueError")


def test_a_bad_message_without_attributes_names_no_job():
    _, failure = parse_message(b"junk", None)
    assert (failure.job_id, failure.attempt) == ("", 1)


def test_a_service_job_naming_a_pattern_fails_without_listing_anything():
    request = JobRequest("job-1", "compress", "gs://b/in/*.log", "gs://b/out.dcz")
    jobs, [failure] = plan_request(request, single_input=True)
    assert jobs == [] and failure.stage == "plan" and "pattern" in failure.message


def test_two_attempts_of_a_job_have_different_state_keys():
    assert attempt_key("job-1", 1) != attempt_key("job-1", 2)


def test_missing_parts_lists_the_indices_not_yet_in():
    assert missing_parts(5, [4, 0, 2, 2]) == [1, 3]
    assert missing_parts(0, []) == []


def test_a_job_expects_one_part_per_part_range_of_its_chunks():
    job = FileJob("a", 10_000, "a.dcz", chunk_size=1_000)
    assert expected_parts(job) == 10
    entries = tuple(container.ChunkEntry(100, 1_000, 0) for _ in range(3))
    assert expected_parts(ContainerJob(job, entries)) == 3


def test_decoded_metadata_has_the_seed_fields():
    entry = container.encode_frame(b"hello world")[1]
    meta = decoded_metadata(ContainerJob(FileJob("gs://b/x.dcz", 100, "gs://b/x"), (entry, entry)), {"s": 1})
    assert (meta["filename"], meta["og_size"], meta["cp_size"], meta["chunks"]) == ("x.dcz", 22, 100, 2)
    assert meta["ratio"] == pytest.approx(0.22)
    assert meta["checksums"]["chunks"] == [f"{entry.crc:08x}"] * 2
