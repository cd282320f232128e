"""The batch pipeline: chunk-parallel compression and decompression of files, locally or on gs://."""
from __future__ import annotations

import argparse
import csv
import io
import logging
import re
import sys
import time
from typing import Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from codec import container
from codec.sizes import parse_size
from adapters import cancellation, storage
from adapters.jobs import JobRequest
from pipelines.options import has_option, new_pipeline
from transforms.assemble import PublishContainers, PublishDecoded
from transforms.decode import DecodeParts, ReadSeekTables, decode_part_tasks
from transforms.encode import EncodeParts
from transforms.failures import WriteFailures, started, temp_dir_item
from transforms.observability import METRICS_NAMESPACE, log_event, new_job_id
from transforms.planning import COMPRESS, MODES, FileJob, PlanFiles, Spread, output_is_file

__all__ = ["IN_PROCESS_BELOW", "LOCAL_RUNNING_MODE", "parse_size", "parse_args", "validate_args", "default_failures_path",
           "job_request", "build_pipeline", "new_pipeline", "run", "run_job", "main"]

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.batch",
        description="Compress files into .dcz containers, or decompress them, chunk-parallel on Beam. "
                    "Every other argument is a Beam pipeline option (--runner, --direct_num_workers, ...).")
    parser.add_argument("--input", required=True,
                        help="file pattern: a path, a glob, or gs://bucket/prefix/*")
    parser.add_argument("--output", required=True,
                        help="output directory (end gs:// directories with '/'); or the output file "
                             "when --input is one literal path")
    parser.add_argument("--mode", choices=MODES, default=COMPRESS)
    parser.add_argument("--chunk_size", type=parse_size, default=container.DEFAULT_CHUNK_SIZE,
                        help="bytes per chunk on compress, e.g. 4MiB (default)")
    parser.add_argument("--failures", default=None,
                        help="where to write the `file,error` CSV of failed files (always written "
                             "when given); default: <job id>.failures.csv beside the output, only "
                             "when a file failed")
    parser.add_argument("--job_id", default=None,
                        help="id for logs and temp object names (default: a fresh one per run)")
    # `--keep_existing` alone or with a value: a flex template passes every parameter as --name=value.
    parser.add_argument("--keep_existing", nargs="?", const=True, default=False, type=_parse_bool,
                        metavar="true|false",
                        help="fail a file whose output (or its .meta.json) already exists, even one "
                             "created while the job runs, instead of replacing it")
    return parser


def _parse_bool(text: str) -> bool:
    if text not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text == "true"


def validate_args(known: argparse.Namespace) -> None:
    """Raises ValueError saying what is wrong with the pipeline's own arguments."""
    if not 1 <= known.chunk_size <= container.MAX_CHUNK_SIZE:
        raise ValueError(f"--chunk_size must be between 1 byte and {container.MAX_CHUNK_SIZE} "
                         f"(1 GiB), got {known.chunk_size}")
    if not known.input.strip():
        raise ValueError("--input is empty; pass a file path or pattern")
    if not known.output.strip():
        raise ValueError("--output is empty; pass a directory or file")
    if known.job_id is not None and not re.fullmatch(r"[a-z0-9][a-z0-9-]*", known.job_id):
        raise ValueError(f"--job_id {known.job_id!r} may hold only lowercase letters, digits and '-'")


# run_job runs smaller inputs (total bytes) in its own process; see run_job.
IN_PROCESS_BELOW = 64 * 2**20
# How local runs use several workers; see _with_direct_runner_defaults.
LOCAL_RUNNING_MODE = "multi_threading"

_LOCAL_RUNNERS = ("DirectRunner", "direct", "FnApiRunner", "fnapirunner", "SwitchingDirectRunner")


def _with_direct_runner_defaults(pipeline_args: Sequence[str]) -> list[str]:
    """Local runs use every core, in worker threads, unless the arguments say otherwise.

    Without --runner we name Beam's FnApiRunner ourselves: Beam's DirectRunner would first try the
    Prism runner, which downloads a binary from GitHub at run time (and only falls back to the
    FnApiRunner when that fails). The FnApiRunner runs our stages on `--direct_num_workers`
    workers; threads (`multi_threading`) rather than processes, because the codec's kernels release
    the GIL, and a worker process first spends ~3 s importing Beam and loading the numba cache.
    Measured on the 1 GB benchmark file with 2 workers: compress 21.7 s in processes against
    15-17 s in threads, decompress 22.4 s against 12.8 s. `--direct_running_mode=multi_processing`
    still picks processes.
    """
    args = list(pipeline_args)
    runner = PipelineOptions(args).view_as(StandardOptions).runner
    if runner is None:
        args.append("--runner=FnApiRunner")
    elif runner not in _LOCAL_RUNNERS:
        return args
    if not has_option(args, "--direct_running_mode"):
        args.append(f"--direct_running_mode={LOCAL_RUNNING_MODE}")
    if not has_option(args, "--direct_num_workers"):
        args.append("--direct_num_workers=0")  # 0 = one worker process per CPU core
    return args


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Splits argv into the pipeline's own arguments and Beam's, validating ours; runs nothing."""
    parser = _parser()
    known, pipeline_args = parser.parse_known_args(argv)
    try:
        validate_args(known)
    except ValueError as e:
        parser.error(str(e))
    return known, _with_direct_runner_defaults(pipeline_args)


def default_failures_path(output: str, output_names_file: bool, job_id: str) -> str:
    """`<job id>.failures.csv` in the output directory (or beside the output file)."""
    directory = FileSystems.split(output)[0] if output_names_file else output
    return FileSystems.join(directory, f"{job_id}.failures.csv")


def _build_compress(jobs, known):
    # One read of each input: the encoders count while they code (EncodeParts.Counting), and
    # publication makes the file's table from their counts.
    records, encode_failures = jobs | "Encode" >> EncodeParts.Counting()
    return ((jobs, records, (encode_failures,))
            | "Publish" >> PublishContainers(overwrite=not known.keep_existing))


def _build_decompress(jobs, known):
    containers, table_failures = jobs | "Seek tables" >> ReadSeekTables()
    tasks = (containers
             | "Plan parts" >> beam.FlatMap(decode_part_tasks)
             | "Spread parts" >> Spread(_decode_task_key))
    records, decode_failures = tasks | "Decode" >> DecodeParts()
    return ((containers, records, (table_failures, decode_failures))
            | "Publish" >> PublishDecoded(overwrite=not known.keep_existing))


def _decode_task_key(task) -> tuple[str, str, int, int]:
    return task.job.job_id, task.job.source, task.job.attempt, task.index


def job_request(known: argparse.Namespace, job_id: str) -> JobRequest:
    """The run as the one job request the graph plans from: its input may be a pattern."""
    return JobRequest(job_id, known.mode, known.input, known.output, chunk_size=known.chunk_size)


def _constant(unused_impulse, value):
    return value


def _temp_dir_item(job: FileJob):
    return temp_dir_item(job.temp_dir)


def build_pipeline(pipeline: beam.Pipeline, known: argparse.Namespace, job_id: str):
    """Adds the whole job to `pipeline`; returns `results` and a pair of Failure PCollections
    (planning, publication). Reads nothing.

    The job is an element: a JobRequest made from the arguments, planned into FileJobs that carry
    its settings (chunk size, job id) through every later step, as the service's jobs do.
    Every GroupByKey and every Flatten of several inputs ends a stage, and the local runner runs
    stages one after the other at ~20-85 ms each before any work, so the graph has as few as the
    job allows: compress spreads the parts, encodes them and groups their records per file (the
    encoders count the bytes, so no pass of its own does, with its two groupings).
    """
    names_file = output_is_file(known.input, known.output)
    # Impulse and a Map rather than beam.Create: Create adds two transforms and infers a coder from
    # the values (~0.1 s more to build the graph).
    requests = (pipeline
                | "Start" >> beam.Impulse()
                | "Request" >> beam.Map(_constant, job_request(known, job_id)))
    jobs, plan_failures = requests | "Plan files" >> PlanFiles()
    if known.mode == COMPRESS:
        results, publish_failures = _build_compress(jobs, known)
    else:
        results, publish_failures = _build_decompress(jobs, known)
    failures_path = known.failures or default_failures_path(known.output, names_file, job_id)
    # The last step also removes the temp folders: it runs once every file is published or failed.
    marks = requests | "Mark start" >> beam.Map(started)
    temp_dirs = jobs | "Temp dirs" >> beam.Map(_temp_dir_item)
    _ = ((plan_failures, publish_failures, marks, temp_dirs)
         | "Report failures" >> WriteFailures(failures_path, write_when_empty=known.failures is not None,
                                              remove_temp_dir=storage.remove_job_temp_dir))
    return results, (plan_failures, publish_failures)


def run(argv: Sequence[str] | None = None):
    """Parses argv, builds the graph and runs it to the end; returns the PipelineResult."""
    known, pipeline_args = parse_args(argv)
    return _run_parsed(known, pipeline_args)[0]


def _run_parsed(known, pipeline_args):
    job_id = known.job_id or new_job_id()
    known.job_id = job_id
    cancellation.reset()  # an earlier job's stop request is not this one's
    log_event("job-started", job_id, mode=known.mode, input=known.input, output=known.output,
              chunk_size=known.chunk_size)
    with new_pipeline(pipeline_args) as pipeline:
        build_pipeline(pipeline, known, job_id)
        result = pipeline.run()
        result.wait_until_finish()
    return result, job_id


def _counter(result, name: str) -> int:
    counters = result.metrics().query(
        MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name))["counters"]
    return sum((c.committed if c.committed is not None else c.attempted) or 0 for c in counters)


def _read_failures(path: str) -> list[tuple[str, str]]:
    if not FileSystems.exists(path):
        return []
    with FileSystems.open(path) as f:
        rows = list(csv.reader(io.TextIOWrapper(f, encoding="utf-8", newline="")))
    return [(row[0], row[1]) for row in rows[1:]]


def run_job(input: str, output: str, mode: str = COMPRESS, chunk_size: int = container.DEFAULT_CHUNK_SIZE,
            workers: int = 0, runner: str = "DirectRunner", extra_args: Sequence[str] = (),
            failures: str | None = None, overwrite: bool = True) -> dict:
    """Runs one whole job and returns its stats; the entry point for `dcas compress/decompress`.

    `workers` is the local runner's worker count (0 = one per CPU core), threads of this process
    (LOCAL_RUNNING_MODE; `extra_args` may ask for `--direct_running_mode=multi_processing`); ignored
    by other runners, which take their own options in `extra_args`. Inputs smaller than
    IN_PROCESS_BELOW in total run on one worker in this process (unless `extra_args` set
    --direct_running_mode): for them, the runner's per-worker costs exceed what parallel work would
    save. `overwrite=False` is --keep_existing. Raises ValueError for bad arguments and
    FileNotFoundError when `input` matches nothing. Files that fail do not raise: they are listed
    in `stats["failures"]` as `(file, error)` pairs and in the failures CSV.
    """
    argv = ["--input", input, "--output", output, "--mode", mode, "--chunk_size", str(chunk_size)]
    if failures is not None:
        argv += ["--failures", failures]
    if not overwrite:
        argv.append("--keep_existing")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    matched = FileSystems.match([input])[0].metadata_list
    if not matched:
        raise FileNotFoundError(f"no file matches {input!r}")
    if runner in _LOCAL_RUNNERS:
        # See _with_direct_runner_defaults for why the local runner is the FnApiRunner.
        argv.append("--runner=FnApiRunner")
        if (sum(m.size_in_bytes for m in matched) < IN_PROCESS_BELOW
                and not has_option(extra_args, "--direct_running_mode")):
            argv += ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
        else:
            argv += [f"--direct_num_workers={int(workers)}", f"--direct_running_mode={LOCAL_RUNNING_MODE}"]
    else:
        argv.append(f"--runner={runner}")
    argv += list(extra_args)  # last, so they override the choices above
    known, pipeline_args = _parser().parse_known_args(argv)
    validate_args(known)
    started = time.perf_counter()
    result, job_id = _run_parsed(known, _with_direct_runner_defaults(pipeline_args))
    seconds = time.perf_counter() - started
    names_file = output_is_file(known.input, known.output)
    failures_path = known.failures or default_failures_path(known.output, names_file, job_id)
    failed = _read_failures(failures_path)
    stats = {
        "job_id": job_id,
        "mode": mode,
        "files_written": _counter(result, "files-written"),
        "files_failed": _counter(result, "files-failed"),
        "bytes_in": _counter(result, "bytes-in"),
        "bytes_out": _counter(result, "bytes-out"),
        "chunks": _counter(result, "chunks"),
        "seconds": round(seconds, 3),
        "failures": failed,
        "failures_path": failures_path if failed or known.failures else None,
    }
    log_event("job-finished", job_id, **{k: v for k, v in stats.items() if k not in ("job_id", "failures")})
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pipelines.batch ...`: runs the job; exit status 1 if any file failed."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("dcas").setLevel(logging.INFO)
    result = run(argv)
    return 1 if _counter(result, "files-failed") else 0


if __name__ == "__main__":
    # Through the imported module, so that Beam pickles `pipelines.batch.*` by reference, not `__main__`.
    from pipelines import batch
    sys.exit(batch.main())
