"""The streaming pipeline of the job service: job messages from Pub/Sub in, outputs and status out."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

import apache_beam as beam
import numpy as np

from adapters import tracing
from adapters.jobs import COMPRESS
from pipelines.options import new_pipeline, with_streaming_defaults
from transforms.decode import DecodeParts, ReadSeekTables, decode_part_tasks
from transforms.encode import EncodeParts
from transforms.frequencies import CountBytes, job_key
from transforms.jobs import ClaimJobs, ParseJobMessages, ReadGivenTables, ReportFailures
from transforms.perjob import DEFAULT_HEARTBEAT, DEFAULT_TIMEOUT, AssembleJobs, CountTables
from transforms.planning import PlanFiles, chunk_count, job_chunks

__all__ = ["parse_args", "adapter_specs", "serve_jobs", "build_pipeline", "run", "main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.streaming",
        description="Run the job service's streaming pipeline: job messages from a Pub/Sub subscription, "
                    "outputs to storage, status to Firestore. Every other argument is a Beam pipeline option.")
    parser.add_argument("--project", required=True, help="the Google Cloud project of topics and status")
    parser.add_argument("--subscription", required=True, help="projects/P/subscriptions/S to read jobs from")
    parser.add_argument("--jobs_topic", required=True, help="projects/P/topics/T, the jobs topic")
    parser.add_argument("--dead_letter_topic", required=True, help="projects/P/topics/D for failed jobs")
    parser.add_argument("--status_collection", default="jobs", help="Firestore collection of status documents")
    parser.add_argument("--max_attempts", type=int, default=3,
                        help="a job whose message has a later attempt fails instead of running")
    parser.add_argument("--assembly_timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds a job may wait for its next part before it fails")
    parser.add_argument("--heartbeat_interval", type=float, default=DEFAULT_HEARTBEAT,
                        help="seconds between heartbeats of a running job (keep it well under the "
                             "reconciler's DCAS_STALE_AFTER)")
    parser.add_argument("--threads", type=int, default=0,
                        help="chunk-work threads per step (0 = one per core)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Splits argv into the pipeline's own arguments and Beam's (with the streaming defaults); runs nothing."""
    parser = _parser()
    known, pipeline_args = parser.parse_known_args(argv)
    if known.max_attempts < 1:
        parser.error(f"--max_attempts must be 1 or more, got {known.max_attempts}")
    if known.assembly_timeout <= 0:
        parser.error(f"--assembly_timeout must be positive, got {known.assembly_timeout}")
    if known.heartbeat_interval <= 0:
        parser.error(f"--heartbeat_interval must be positive, got {known.heartbeat_interval}")
    if known.threads < 0:
        parser.error(f"--threads must be 0 or more, got {known.threads}")
    return known, with_streaming_defaults([*pipeline_args, f"--project={known.project}"])


def adapter_specs(known: argparse.Namespace):
    """(queue spec, status spec): what the DoFns open in setup() to reach Pub/Sub and Firestore."""
    from adapters.firestore import FirestoreStatusSpec
    from adapters.pubsub import PubSubQueueSpec
    return (PubSubQueueSpec(known.project, known.jobs_topic, known.dead_letter_topic),
            FirestoreStatusSpec(known.project, known.status_collection))


def _operation_index(job, unused_count) -> int:
    return 0 if job.operation == COMPRESS else 1


def _table_index(job, unused_count) -> int:
    return 0 if job.table_uri else 1


def _empty_file_table(job):
    """A file with no chunk has no histogram to count: its (all-zero) table is known at once."""
    if chunk_count(job.size, job.chunk_size) == 0:
        yield job_key(job), np.zeros(256, dtype=np.uint64)


def serve_jobs(messages, status_spec, queue_spec, *, max_attempts: int = 3,
               timeout: float = DEFAULT_TIMEOUT, threads: int = 0, progress_interval: float = 1.0,
               heartbeat: float = DEFAULT_HEARTBEAT):
    """Adds the job service to the graph of `messages` (PubsubMessages with attributes); returns the
    published FileResults and the Failures that failed a job.

    parse -> claim (QUEUED -> RUNNING for the message's attempt) -> plan -> per-job frequency table
    (counted in per-job state, or the one the request names) -> encode / decode parts on a thread
    pool -> assemble per job in state -> output + DST.meta.json -> SUCCEEDED. The assembler, the one
    writer of a job's progress, also keeps its heartbeat fresh from the claim on. Every failure goes to
    ReportFailures: the job FAILED, the message on the dead-letter topic.
    """
    requests, bad_messages = messages | "Parse" >> ParseJobMessages()
    claimed, claim_failures = requests | "Claim" >> ClaimJobs(status_spec, max_attempts)
    jobs, plan_failures = claimed | "Plan" >> PlanFiles(single_input=True)
    compress, decompress = jobs | "By operation" >> beam.Partition(_operation_index, 2)

    given, to_count = compress | "Table given?" >> beam.Partition(_table_index, 2)
    given_tables, given_failures = given | "Given tables" >> ReadGivenTables()
    histograms, count_failures = (to_count
                                  | "Cut into chunks" >> beam.FlatMap(job_chunks)
                                  | "Count" >> CountBytes(threads))
    counted_tables = histograms | "Frequency tables" >> CountTables(timeout)
    empty_tables = to_count | "Empty files" >> beam.FlatMap(_empty_file_table)
    tables = (given_tables, counted_tables, empty_tables) | "Tables" >> beam.Flatten()
    encoded, encode_failures = tables | "Encode" >> EncodeParts(spread=False, threads=threads)

    containers, seek_failures = decompress | "Seek tables" >> ReadSeekTables()
    decoded, decode_failures = (containers
                                | "Plan parts" >> beam.FlatMap(decode_part_tasks)
                                | "Decode" >> DecodeParts(threads))

    records = (encoded, decoded) | "Parts" >> beam.Flatten()
    part_failures = (encode_failures, decode_failures) | "Part failures" >> beam.Flatten()
    results, assemble_failures = ((tables, containers, records, part_failures, claimed)
                                  | "Assemble" >> AssembleJobs(status_spec, timeout, progress_interval, heartbeat))
    failed = ((bad_messages, claim_failures, plan_failures, given_failures, count_failures, seek_failures,
               assemble_failures)
              | "Report failures" >> ReportFailures(status_spec, queue_spec))
    return results, failed


def build_pipeline(pipeline: beam.Pipeline, known: argparse.Namespace, queue_spec=None, status_spec=None):
    """Adds the whole service to `pipeline`: ReadFromPubSub(with attributes) | serve_jobs."""
    if queue_spec is None or status_spec is None:
        queue_spec, status_spec = adapter_specs(known)
    messages = pipeline | "Read jobs" >> beam.io.ReadFromPubSub(subscription=known.subscription,
                                                                 with_attributes=True)
    return serve_jobs(messages, status_spec, queue_spec, max_attempts=known.max_attempts,
                      timeout=known.assembly_timeout, threads=known.threads,
                      heartbeat=known.heartbeat_interval)


def run(argv: Sequence[str] | None = None):
    """Parses argv, builds the graph and runs it until it is stopped; returns the PipelineResult."""
    known, pipeline_args = parse_args(argv)
    with new_pipeline(pipeline_args) as pipeline:
        build_pipeline(pipeline, known)
        result = pipeline.run()
        result.wait_until_finish()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("dcas").setLevel(logging.INFO)
    # Spans go where DCAS_TRACE_EXPORTER / DCAS_TRACE_FILE say, as in the Manager (services.config
    # reads the same variables); a runner's own workers read them on their first span.
    tracing.configure_from_env("dcas-pipeline")
    run(argv)
    return 0


if __name__ == "__main__":
    # Through the imported module, so that Beam pickles `pipelines.streaming.*` by reference, not `__main__`.
    from pipelines import streaming
    sys.exit(streaming.main())
