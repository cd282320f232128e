"""The `dcas` command line: a thin argparse front end over `services.compression`, `services.jobs` and `services.stack`."""
from __future__ import annotations

import gc
import os
import signal
import sys

# Run as the `dcas` program, Ctrl-C while the interpreter still imports (numba, the codec: a second
# or more) ends the process quietly with the signal's default action instead of a traceback; main()
# makes it KeyboardInterrupt for the work, and the default again for the shutdown.
# The imports make ~100k objects that live as long as the process, which the collector would
# traverse again and again for nothing (~0.04 s of a 0.3 s start-up): main() freezes them, then
# turns it back on.
_AS_PROGRAM = __name__ == "__main__" or os.path.basename(sys.argv[0]) == "dcas"
if _AS_PROGRAM:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    gc.disable()

import argparse  # noqa: E402 - after the handler above, on purpose
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass
from typing import Callable, NoReturn, Sequence, TextIO

from codec.container import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE  # noqa: E402
from codec.errors import FormatError  # noqa: E402
from codec.sizes import parse_size  # noqa: E402
from services import compression  # noqa: E402
from services import cli_http as http_client  # noqa: E402
from services.progress import ProgressBar, format_bytes  # noqa: E402

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
SUFFIX = ".dcz"
STDIO = "-"


def _chunk_size_argument(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not 1 <= size <= MAX_CHUNK_SIZE:
        raise argparse.ArgumentTypeError(f"chunk size must be between 1 byte and 1GiB, got {text!r}")
    return size


def _size_argument(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _number_argument(kind, what: str, allowed, rule: str):
    """An argparse type for a number of `what` (`kind`: int or float) that `allowed` accepts;
    `rule` is the message otherwise, formatted with the number as given (`{text}`) or read (`{value}`)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of {what}: {text!r}") from None
        if not allowed(value):
            raise argparse.ArgumentTypeError(rule.format(text=text, value=value))
        return value
    return parse


_threads_argument = _number_argument(int, "threads", lambda n: n >= 1, "threads must be 1 or more, got {value}")
_workers_argument = _number_argument(int, "workers", lambda n: n >= 0,
                                     "workers must be 0 (one per core) or more, got {value}")
_days_argument = _number_argument(int, "days", lambda n: n >= 1, "days must be 1 or more, got {value}")
_seconds_argument = _number_argument(float, "seconds", lambda s: s > 0,
                                     "the interval must be more than 0 seconds, got {text}")


_ENGINE_NOTE = """\
Local files and '-' (stdin or stdout) are coded in this process by --threads worker
threads (default: one per core), without Beam. gs:// paths, --workers, --runner and Beam
options after '--' run the Beam batch pipeline instead; --engine local|beam forces one.

Beam and Dataflow options go after '--', for example:
  dcas compress gs://b/in -o gs://b/in.dcz --runner DataflowRunner -- \\
      --project=p --region=r --temp_location=gs://b/tmp
Compressing a file (not a pipe) also writes DST.meta.json (sizes, ratio, checksums, timings)."""


class UsageError(Exception):
    """Wrong arguments; reported with exit status 2, like argparse's own complaints."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage and names the subcommand ("dcas compress: error: ...");
    # we promise one line that starts with "dcas: error:".
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dcas", description="Compress files into the seekable .dcz container "
                     "(chunked canonical Huffman) and back.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    compress = commands.add_parser(
        "compress", help="compress SRC into a .dcz container", epilog=_ENGINE_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compress SRC ('-' for stdin) into DST.")
    compress.add_argument("src", metavar="SRC")
    compress.add_argument("-o", "--output", metavar="DST",
                          help="output file, '-' for stdout (default: SRC.dcz)")
    compress.add_argument("--chunk-size", type=_chunk_size_argument, default=DEFAULT_CHUNK_SIZE,
                          metavar="SIZE", help="bytes per independent chunk, e.g. 64K, 4M, 4MiB "
                          f"(default: {DEFAULT_CHUNK_SIZE // 2**20}MiB)")

    decompress = commands.add_parser(
        "decompress", help="decompress a .dcz container", epilog=_ENGINE_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Decompress the .dcz file SRC ('-' for stdin).")
    decompress.add_argument("src", metavar="SRC")
    decompress.add_argument("-o", "--output", metavar="DST",
                            help="output file, '-' for stdout (default: SRC without .dcz)")
    verify = commands.add_parser("verify", help="decode every chunk and check every checksum",
                                 description="Decode FILE in full and check every CRC32C.")
    for sub in (decompress, verify):
        sub.add_argument("--max-size", type=_size_argument, default=None, metavar="SIZE",
                         help="refuse containers that declare more than SIZE original bytes "
                              "(a local output is always checked against the free space first)")
        sub.add_argument("--max-chunk-size", type=_chunk_size_argument, default=None, metavar="SIZE",
                         help="refuse chunks that declare more than SIZE bytes: decoding holds one "
                              f"in memory (default: {compression.DEFAULT_MAX_DECODE_CHUNK // 2**20}MiB)")

    for sub in (compress, decompress):
        sub.add_argument("-f", "--force", action="store_true", help="overwrite an existing DST")
        sub.add_argument("-q", "--quiet", action="store_true",
                         help="no progress bar and no summary")
        sub.add_argument("-v", "--verbose", action="store_true",
                         help="show the pipeline's log (Beam's and dcas's INFO messages) on stderr")
        sub.add_argument("--threads", type=_threads_argument, default=None, metavar="N",
                         help="worker threads of the local engine (default: one per core)")
        sub.add_argument("--engine", choices=compression.ENGINES, default=None,
                         help="local: this process (local files and pipes); beam: the Beam "
                              "pipeline (default: beam only for gs:// paths, --workers, --runner "
                              "or pipeline options)")
        sub.add_argument("--workers", type=_workers_argument, default=None, metavar="N",
                         help="local workers of the Beam pipeline (0 = one per core); "
                              "runs the pipeline")
        sub.add_argument("--runner", default=compression.LOCAL_RUNNER, metavar="NAME",
                         help="Beam runner (default: DirectRunner, on this machine); "
                              "DataflowRunner needs gs:// paths and its options after '--'")

    info = commands.add_parser("info", help="describe a .dcz file as JSON",
                               description="Print chunks, sizes, ratio and checksums as JSON.")
    info.add_argument("file", metavar="FILE")

    verify.add_argument("file", metavar="FILE")
    verify.add_argument("-q", "--quiet", action="store_true", help="print nothing when FILE is OK")
    _add_job_commands(commands)
    _add_operations_commands(commands)
    _add_trace_command(commands)

    clean = commands.add_parser(
        "clean", help="remove what killed runs left in a folder",
        description="Remove the temp folders and files that runs killed before they could clean up "
                    "(kill -9, a crash, a power cut) left in DIR, after completing or undoing a "
                    "publication they were in. A running job's files are never touched.")
    clean.add_argument("directory", metavar="DIR")
    clean.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    return parser


_JOBS_NOTE = """\
The job service is found through the environment that `dcas stack up` prints
(GOOGLE_CLOUD_PROJECT, DCAS_JOBS_TOPIC, DCAS_STATUS_COLLECTION, the *_EMULATOR_HOST
variables), or a real project's names and credentials. With a server (--server or
DCAS_SERVER) and an API key (--key or DCAS_API_KEY), local files are uploaded through
the Manager and status, cancel, jobs and fetch go through its HTTP API."""


def _add_server_arguments(parser) -> None:
    parser.add_argument("--server", metavar="URL", default=os.environ.get("DCAS_SERVER"),
                        help="the Manager's base URL (default: $DCAS_SERVER)")
    parser.add_argument("--key", metavar="KEY", default=os.environ.get("DCAS_API_KEY"),
                        help="an API key (default: $DCAS_API_KEY)")


def _add_trace_command(commands) -> None:
    trace = commands.add_parser(
        "trace", help="print a job's timeline across components", epilog=_JOBS_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print job JOB's timeline: every status transition and attempt from its status "
                    "document, its failure, and the spans of its trace from the local trace file.")
    trace.add_argument("job_id", metavar="JOB")
    trace.add_argument("--json", action="store_true", help="the timeline as one JSON object")
    trace.add_argument("--trace-file", metavar="FILE", default=None,
                       help="the JSON-lines span file (default: $DCAS_TRACE_FILE)")


def _add_job_commands(commands) -> None:
    submit = commands.add_parser(
        "submit", help="queue a job on the job service", epilog=_JOBS_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Queue a job that compresses (or decompresses) the object SRC into DST, both "
                    "gs:// URIs; or upload the local FILE SRC through the Manager (--server), "
                    "which picks DST. Prints the job id on the last line of stdout.")
    submit.add_argument("src", metavar="SRC")
    submit.add_argument("dst", metavar="DST", nargs="?", help="a gs:// URI (not with a local FILE)")
    submit.add_argument("--decompress", action="store_true", help="decompress SRC (a .dcz) instead")
    submit.add_argument("--job-id", metavar="ID", help="the job's id (default: a new random one)")
    submit.add_argument("--chunk-size", type=_chunk_size_argument, default=DEFAULT_CHUNK_SIZE,
                        metavar="SIZE", help=f"bytes per chunk (default: {DEFAULT_CHUNK_SIZE // 2**20}MiB)")
    submit.add_argument("--wait", action="store_true",
                        help="wait until the job ends: exit 0 if it SUCCEEDED, 1 otherwise")
    submit.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="with --wait, give up waiting after this long")
    submit.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_server_arguments(submit)

    status = commands.add_parser("status", help="show a job's status", epilog=_JOBS_NOTE,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description="Show the status of job JOB.")
    status.add_argument("job_id", metavar="JOB")
    status.add_argument("--json", action="store_true", help="the whole status document as one JSON object")
    status.add_argument("--follow", action="store_true",
                        help="print each change until the job ends (one JSON object per line with --json)")
    _add_server_arguments(status)

    cancel = commands.add_parser("cancel", help="cancel a queued or running job", epilog=_JOBS_NOTE,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description="Cancel job JOB unless it has already ended.")
    cancel.add_argument("job_id", metavar="JOB")
    _add_server_arguments(cancel)

    delete = commands.add_parser("delete", help="delete a job and its files (through the Manager)",
                                 description="Delete job JOB: cancelled if it still runs, its files "
                                             "deleted, gone from `dcas jobs`.")
    delete.add_argument("job_id", metavar="JOB")
    _add_server_arguments(delete)

    jobs = commands.add_parser("jobs", help="list your jobs (through the Manager)",
                               description="List the key owner's jobs, newest first.")
    jobs.add_argument("--state", choices=["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"],
                      type=str.upper, help="only jobs in this state")
    jobs.add_argument("--limit", type=int, default=50, metavar="N", help="at most N jobs (default: 50)")
    jobs.add_argument("--json", action="store_true", help="one JSON object per job and line")
    _add_server_arguments(jobs)

    fetch = commands.add_parser("fetch", help="download a job's result (through the Manager)",
                                description="Download the output of job JOB into OUT, atomically.")
    fetch.add_argument("job_id", metavar="JOB")
    fetch.add_argument("-o", "--output", metavar="OUT", required=True, help="where to write the result")
    fetch.add_argument("-f", "--force", action="store_true", help="overwrite an existing OUT")
    fetch.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_server_arguments(fetch)

    keys = commands.add_parser("keys", help="manage API keys of the Manager",
                               description="`dcas keys create OWNER` prints a new API key for OWNER "
                                           "(stored hashed in the job service's Firestore); `list` "
                                           "shows key ids; `revoke` makes a key fail with 401 at once.")
    key_actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = key_actions.add_parser("create", help="print a new key for OWNER")
    create.add_argument("owner", metavar="OWNER")
    listing = key_actions.add_parser("list", help="key ids, owners and creation times (never the keys)")
    listing.add_argument("owner", metavar="OWNER", nargs="?", help="only this owner's keys")
    revoke = key_actions.add_parser("revoke", help="revoke the key KEY_ID, or every key of OWNER")
    revoke.add_argument("target", metavar="KEY_ID|OWNER")

    serve = commands.add_parser("serve", help="run the Manager and Status HTTP services",
                                description="Serve the HTTP API and the web page on the job service "
                                            "the environment names, until Ctrl-C.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default: 8080)")

    stack = commands.add_parser(
        "stack", help="run the job service locally (emulators, pipeline, reconciler)",
        description="`dcas stack up` starts the Pub/Sub, Firestore and GCS emulators, creates the "
                    "topics, schema, subscriptions and bucket, runs the streaming pipeline and the "
                    "reconciler, prints `export` lines and `# ready`, and runs until Ctrl-C or "
                    "`dcas stack down`. `dcas stack env` prints the running stack's exports again.")
    actions = stack.add_subparsers(dest="stack_command", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="start the local stack and keep it running")
    up.add_argument("--no-pipeline", action="store_true", help="start everything but the pipeline")
    up.add_argument("--pipeline-command", metavar="CMD",
                    help="run CMD (a shell-quoted command line) instead of the streaming pipeline")
    actions.add_parser("down", help="stop the running local stack")
    actions.add_parser("env", help="print the running stack's export lines")


def _add_operations_commands(commands) -> None:
    """`dcas setup` and `dcas reconcile`: what an operator or a cron job runs against a project."""
    setup = commands.add_parser(
        "setup", help="create or check everything the job service needs in a project",
        epilog=_JOBS_NOTE, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Create, or bring back to their settings, the job schema, topics and subscriptions, "
                    "the bucket and its lifecycle rules, the Firestore indexes, the service accounts and "
                    "their IAM roles of the project the environment names (IAM bindings are only ever added, "
                    "never removed). One line per resource: created, updated, ok, skipped, manual or "
                    "failed; a failed one does not stop the others, and the exit status is 1. Safe to run again.")
    setup.add_argument("--dry-run", action="store_true",
                       help="change nothing: print what would be created or updated")
    setup.add_argument("--temp-days", type=_days_argument, default=2, metavar="N",
                       help="delete objects under .dcas-tmp/ (dead attempts' parts) after N days (default: 2)")
    setup.add_argument("--upload-days", type=_days_argument, default=7, metavar="N",
                       help="delete the records of direct uploads never completed after N days (default: 7)")
    setup.add_argument("--jobs-retention-days", type=_days_argument, default=None, metavar="N",
                       help="delete everything under the Manager's jobs/ folder after N days (default: keep)")
    setup.add_argument("--output-prefix", action="append", default=[], metavar="PREFIX",
                       help="a folder of the bucket batch outputs go to: its .dcas-tmp/ is cleaned too "
                            "(repeatable)")
    setup.add_argument("--location", metavar="LOCATION",
                       help="where to create the bucket if it is missing, e.g. europe-west1 (default: GCS's, US)")
    iam = setup.add_mutually_exclusive_group()
    iam.add_argument("--no-iam", action="store_true", help="leave out the service accounts and IAM roles")
    iam.add_argument("--print-iam", action="store_true",
                     help="do not apply the service accounts and IAM roles: print the gcloud commands that would "
                          "(lines starting with `manual`)")

    reconcile = commands.add_parser(
        "reconcile", help="publish again lost jobs and re-queue silent ones (once, or --loop)",
        epilog=_JOBS_NOTE, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="One pass of the reconciler: a job QUEUED longer than DCAS_QUEUED_TIMEOUT is "
                    "published again, a RUNNING job without a heartbeat for DCAS_STALE_AFTER is "
                    "re-queued with attempt + 1 (or FAILED on its last attempt). Prints one line per "
                    "job it acted on. With --loop, a pass every --interval seconds until SIGTERM or Ctrl-C.")
    reconcile.add_argument("--loop", action="store_true", help="keep running, a pass every --interval seconds")
    reconcile.add_argument("--interval", type=_seconds_argument, default=None, metavar="SECONDS",
                           help="seconds between passes with --loop (default: $DCAS_RECONCILE_INTERVAL, 10)")


def default_output(command: str, src: str) -> str:
    """DST when -o is not given: SRC.dcz for compress, SRC without .dcz for decompress."""
    if src == STDIO:
        return STDIO
    if command == "compress":
        return src + SUFFIX
    if not src.endswith(SUFFIX) or len(src) == len(SUFFIX):
        raise UsageError(f"cannot pick an output name: {src} does not end in {SUFFIX} (use -o DST)")
    return src[: -len(SUFFIX)]


def summary_line(verb: str, src: str, dst: str, stats: dict) -> str:
    """`compressed a -> a.dcz: 27.1 MB -> 14.0 MB, ratio 1.94, 0.32 s, 84.7 MB/s`.

    The ratio is original / compressed, as `dcas info` reports it; the speed counts original bytes.
    """
    original, compressed = stats["original_size"], stats["compressed_size"]
    seconds = stats["seconds"]
    before, after = (original, compressed) if verb == "compressed" else (compressed, original)
    ratio = f", ratio {original / compressed:.2f}" if original and compressed else ""
    speed = f", {original / seconds / 1e6:.1f} MB/s" if seconds > 0 else ""
    return f"{verb} {src} -> {dst}: {format_bytes(before)} -> {format_bytes(after)}{ratio}, {seconds:.2f} s{speed}"


@dataclass
class _Console:
    """The streams a command talks to, and the progress bar that must be cleared before an error."""
    stdin: TextIO
    stdout: TextIO
    stderr: TextIO
    progress: ProgressBar | None = None
    output: str | None = None  # DST given by path, once known

    def progress_bar(self, label: str, quiet: bool, total: Callable[[], int | None]) -> ProgressBar:
        show = not quiet and self.stderr.isatty()
        self.progress = ProgressBar(label, total() if show else None, self.stderr, enabled=show)
        return self.progress

    def clear_progress(self) -> None:
        if self.progress is not None:
            self.progress.clear()


def _transfer(args: argparse.Namespace, console: _Console) -> None:
    """`dcas compress` and `dcas decompress`."""
    dst = args.output if args.output is not None else default_output(args.command, args.src)
    if dst == STDIO and args.command == "compress" and console.stdout.isatty():
        raise UsageError("refusing to write compressed data to a terminal (use -o DST)")
    src_arg = console.stdin.buffer if args.src == STDIO else args.src
    dst_arg = console.stdout.buffer if dst == STDIO else dst
    console.output = None if dst == STDIO else dst
    engine = compression.choose_engine(src_arg, dst_arg, workers=args.workers, runner=args.runner,
                                       pipeline_args=args.pipeline_args, engine=args.engine,
                                       threads=args.threads)
    if args.command == "compress":
        progress = console.progress_bar("compress", args.quiet, lambda: compression.source_size(src_arg))
        stats = compression.compress_file(src_arg, dst_arg, chunk_size=args.chunk_size,
                                          progress=progress, overwrite=args.force, engine=engine)
    else:
        progress = console.progress_bar("decompress", args.quiet,
                                        lambda: compression.original_size(src_arg))
        stats = compression.decompress_file(src_arg, dst_arg, max_size=args.max_size,
                                            progress=progress, overwrite=args.force, engine=engine,
                                            max_chunk_size=args.max_chunk_size)
    console.clear_progress()
    if not args.quiet:
        verb = "compressed" if args.command == "compress" else "decompressed"
        src_name = "stdin" if args.src == STDIO else args.src
        dst_name = "stdout" if dst == STDIO else dst
        print(summary_line(verb, src_name, dst_name, stats), file=console.stderr)


def _info(args: argparse.Namespace, console: _Console) -> None:
    _require_file(args.file)
    print(json.dumps(compression.file_info(args.file), indent=2), file=console.stdout)


def _verify(args: argparse.Namespace, console: _Console) -> None:
    _require_file(args.file)
    progress = console.progress_bar("verify", args.quiet, lambda: compression.original_size(args.file))
    result = compression.verify_file(args.file, progress=progress, max_size=args.max_size,
                                     max_chunk_size=args.max_chunk_size)
    console.clear_progress()
    if not args.quiet:
        print(f"{args.file}: OK ({result['chunks']} chunks, {format_bytes(result['original_size'])})",
              file=console.stdout)


def _settings():
    from services.config import Settings
    try:
        return Settings.from_env()
    except ValueError as e:
        raise UsageError(str(e)) from None


def _job_service(settings=None):
    """The adapters for the environment's settings (imported late: `dcas compress` needs none)."""
    from services.bootstrap import bootstrap
    return bootstrap(settings or _settings())


def _submit(args: argparse.Namespace, console: _Console) -> None:
    if not args.src.startswith("gs://") and args.dst is None:
        return http_client.submit_file(args, console)
    if args.dst is None:
        raise UsageError("a gs:// SRC needs a gs:// DST")
    from services import jobs
    settings = _settings()
    try:
        request = jobs.new_request(args.src, args.dst, decompress=args.decompress, job_id=args.job_id,
                                   chunk_size=args.chunk_size, owner=settings.owner)
    except jobs.JobError as e:  # wrong arguments, like argparse's own complaints
        raise UsageError(str(e)) from None
    with _google_errors():
        adapters = _job_service(settings)
        try:
            jobs.submit(adapters, request)
            print(request.job_id, file=console.stdout, flush=True)
            if not args.wait:
                return
            show = not args.quiet and console.stderr.isatty()
            final = jobs.wait(adapters, request.job_id, args.timeout,
                              on_update=(lambda s: _show_progress(s, console.stderr)) if show else None)
        finally:
            adapters.close()
    if show:
        print(file=console.stderr)
    if final.state.value != "SUCCEEDED":
        raise jobs.JobError(f"job {final.job_id} {final.state.value}: {_reason(final)}")


def _show_progress(status, stderr: TextIO) -> None:
    counts = f" {status.chunks_done}/{status.chunks_total} chunks" if status.chunks_total else ""
    print(f"\r{status.job_id}: {status.state.value} (attempt {status.attempt}){counts}\033[K",
          end="", file=stderr, flush=True)


def _reason(status) -> str:
    if not status.error:
        return "no reason recorded"
    error = status.error
    return " ".join(f"{error.get('stage', '?')}: {error.get('type', 'Error')}: {error.get('message', '')}".split())


def _status(args: argparse.Namespace, console: _Console) -> None:
    if (args.server and args.key) or args.follow:
        return http_client.status(args, console)
    from services import jobs
    with _google_errors():
        adapters = _job_service()
        try:
            status = jobs.get_status(adapters, args.job_id)
        finally:
            adapters.close()
    if args.json:
        print(json.dumps(status.to_dict(), sort_keys=True), file=console.stdout)
        return
    line = f"{status.job_id}: {status.state.value}, attempt {status.attempt}"
    if status.chunks_total:
        line += f", {status.chunks_done}/{status.chunks_total} chunks"
    if status.output and status.state.value == "SUCCEEDED":
        line += f", output {status.output}"
    if status.error:
        line += f", {_reason(status)}"
    print(line, file=console.stdout)


def _trace(args: argparse.Namespace, console: _Console) -> None:
    from services import timeline
    settings = _settings()
    trace_file = args.trace_file or settings.trace_file
    with _google_errors():
        adapters = _job_service(settings)
        try:
            found = timeline.trace_job(adapters, args.job_id, trace_file)
        finally:
            adapters.close()
    if args.json:
        print(json.dumps(found, sort_keys=True), file=console.stdout)
    else:
        print(timeline.render_timeline(found, trace_file), file=console.stdout)


def _cancel(args: argparse.Namespace, console: _Console) -> None:
    if args.server and args.key:
        return http_client.cancel(args, console)
    from services import jobs
    with _google_errors():
        adapters = _job_service()
        try:
            status = jobs.cancel(adapters, args.job_id)
        finally:
            adapters.close()
    print(f"{status.job_id}: {status.state.value}", file=console.stdout)


def _stack(args: argparse.Namespace, console: _Console) -> None:
    from services import stack
    if args.stack_command == "up":
        if args.no_pipeline and args.pipeline_command:
            raise UsageError("--no-pipeline and --pipeline-command do not go together")
        stack.run_up(console.stdout, console.stderr, pipeline_command=args.pipeline_command,
                     with_pipeline=not args.no_pipeline)
    elif args.stack_command == "down":
        stack.run_down(console.stderr)
    else:
        state = stack.running_state()
        if state is None:
            raise stack.StackError("no local stack is running and ready (start one with `dcas stack up`)")
        for name, value in state["exports"].items():
            print(f"export {name}={shlex.quote(value)}", file=console.stdout)


@contextlib.contextmanager
def _google_errors():
    """A cloud client's failure as one line: what failed and what to do about it."""
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth
    from services.jobs import JobError
    try:
        yield
    except auth.DefaultCredentialsError:
        raise JobError("no Google credentials: start `dcas stack up` and export what it prints, or "
                       "run `gcloud auth application-default login` for a real project") from None
    except (api.GoogleAPICallError, api.RetryError) as e:
        raise JobError(f"the job service did not answer: {' '.join(str(e).split())}") from None


def _setup(args: argparse.Namespace, console: _Console) -> None:
    from services import setup
    try:
        options = setup.SetupOptions(temp_days=args.temp_days, upload_days=args.upload_days,
                                     jobs_retention_days=args.jobs_retention_days,
                                     output_prefixes=tuple(args.output_prefix), location=args.location)
    except ValueError as e:
        raise UsageError(str(e)) from None
    resources = setup.plan(_settings(), options, iam=not args.no_iam)
    with _google_errors():
        outcomes = setup.apply(resources, dry_run=args.dry_run, print_iam=args.print_iam,
                               on_outcome=lambda o: print(setup.format_outcome(o), file=console.stdout, flush=True))
    print(setup.summary(outcomes) + (" (dry run: nothing changed)" if args.dry_run else ""), file=console.stdout)
    if setup.failed(outcomes):
        from services.jobs import JobError
        raise JobError(f"{len(setup.failed(outcomes))} of {len(outcomes)} resources could not be applied "
                       "(the `failed` lines above say why)")


def _reconcile(args: argparse.Namespace, console: _Console) -> None:
    from services.reconciler import run_reconciler
    if args.interval is not None and not args.loop:
        raise UsageError("--interval goes with --loop")
    acted = []

    def show(action) -> None:
        acted.append(action)
        print(f"{action.job_id}: {action.action} (attempt {action.attempt})", file=console.stdout, flush=True)

    with _google_errors():
        adapters = _job_service()
        try:
            try:
                passes = run_reconciler(adapters, loop=args.loop, interval=args.interval, on_action=show)
            except KeyboardInterrupt:
                if not args.loop:
                    raise
                passes = None  # SIGTERM or Ctrl-C is how a loop is meant to end
        finally:
            adapters.close()
    after = "" if passes is None else f" in {passes} pass{'es' if passes != 1 else ''}"
    print(f"dcas: reconcile: {len(acted)} job(s) acted on{after}", file=console.stderr)


def _clean(args: argparse.Namespace, console: _Console) -> None:
    if not os.path.isdir(args.directory):
        raise compression.InputError(f"not a folder: {args.directory}")
    removed = compression.clean_leftovers(args.directory)
    if not args.quiet:
        print(f"{args.directory}: removed {len(removed)} leftover(s)"
              + "".join(f"\n  {name}" for name in removed), file=console.stdout)


def _keys(args: argparse.Namespace, console: _Console) -> None:
    from services import keys
    with _google_errors():
        adapters = _job_service()
        try:
            if args.keys_command == "list":
                lines = [f"{k.key_id}  {k.owner}  {k.created or '-'}" for k in keys.list_keys(adapters.keys, args.owner)]
            elif args.keys_command == "revoke":
                try:
                    revoked = keys.revoke(adapters.keys, args.target)
                except LookupError as e:
                    raise compression.ServiceError(str(e)) from None
                lines = [f"revoked {k.key_id} of {k.owner}" for k in revoked]
            else:
                try:
                    lines = [keys.create_key(adapters.keys, args.owner)]
                except ValueError as e:
                    raise UsageError(str(e)) from None
        finally:
            adapters.close()
    for line in lines:
        print(line, file=console.stdout)


def _serve(args: argparse.Namespace, console: _Console) -> None:
    from services.http.main import serve
    with _google_errors():
        serve(args.host, args.port)


_COMMANDS = {"compress": _transfer, "decompress": _transfer, "info": _info, "verify": _verify,
             "clean": _clean, "submit": _submit, "status": _status, "trace": _trace, "cancel": _cancel, "stack": _stack,
             "jobs": lambda args, console: http_client.list_jobs(args, console),
             "fetch": lambda args, console: http_client.fetch(args, console),
             "delete": lambda args, console: http_client.delete(args, console),
             "keys": _keys, "serve": _serve, "setup": _setup, "reconcile": _reconcile}


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Runs one `dcas` command and returns its exit status. Every failure becomes one
    `dcas: error:` line; only --help's SystemExit(0) escapes."""
    if not _AS_PROGRAM:
        return _main(argv, stdin=stdin, stdout=stdout, stderr=stderr)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    gc.freeze()  # what the imports made stays; collections from now on skip it
    gc.enable()
    try:
        return _main(argv, stdin=stdin, stdout=stdout, stderr=stderr)
    finally:
        # Interpreter shutdown (joining threads, flushing) is no place for a traceback either.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _skip_final_collections()


def _skip_final_collections() -> None:
    """Moves every object to the collector's permanent generation just before the process exits.

    Shutdown runs full collections over whatever is left, and numba leaves ~100k tracked objects
    once its kernels are loaded (Beam ~250k): ~0.25 s of a local `dcas` run and ~0.5 s of a Beam
    one, on one core, after the output is published. Frozen objects are never traversed (their
    cycles are freed with the process); files, stdout and stderr are still flushed and atexit
    handlers still run."""
    gc.freeze()


def _main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None,
          stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    console = _Console(stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr)
    input_name = "input"
    _terminate_like_interrupt()

    def fail(message: str, status: int) -> int:
        console.clear_progress()
        print(f"dcas: error: {message}", file=console.stderr)
        return status

    try:
        own_args, pipeline_args = split_pipeline_args(sys.argv[1:] if argv is None else list(argv))
        args = build_parser().parse_args(own_args)
        if pipeline_args and args.command not in ("compress", "decompress"):
            raise UsageError(f"{args.command} takes no pipeline options after '--'")
        args.pipeline_args = pipeline_args
        configure_logging(getattr(args, "verbose", False), console.stderr)
        input_name = getattr(args, "src", None) or getattr(args, "file", None) or input_name
        if input_name == STDIO:
            input_name = "stdin"
        _COMMANDS[args.command](args, console)
        return EXIT_OK
    except UsageError as e:
        return fail(str(e), EXIT_USAGE)
    except compression.InterruptedAfterPublication as e:
        console.clear_progress()
        print(f"dcas: {e}", file=console.stderr)
        return EXIT_OK
    except compression.OutputExistsError as e:
        return fail(f"{e} (use --force to overwrite)", EXIT_FAILURE)
    except compression.ServiceError as e:
        return fail(str(e), EXIT_FAILURE)
    except _service_errors() as e:
        return fail(str(e), EXIT_FAILURE)
    except FormatError as e:
        return fail(f"{input_name}: {e}", EXIT_FAILURE)
    except BrokenPipeError:
        # The reader of our stdout went away (`dcas decompress x.dcz -o - | head`): not our error,
        # and Python's exit-time flush of the dead pipe must not print a traceback either.
        _silence_stdout(console.stdout)
        return EXIT_FAILURE
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        return fail(f"{e.strerror or e}{where}", EXIT_FAILURE)
    except MemoryError:
        return fail("out of memory (try a smaller --chunk-size)", EXIT_FAILURE)
    except KeyboardInterrupt as e:
        if console.output is not None and compression.was_published(console.output):
            console.clear_progress()
            print(f"dcas: interrupted after {console.output} was published; the output is complete",
                  file=console.stderr)
            return EXIT_OK
        signum = getattr(e, "signum", signal.SIGINT)
        return fail("terminated" if signum == signal.SIGTERM else "interrupted", 128 + signum)
    except Exception as e:  # a bug: still one line, but keep the traceback one variable away
        if os.environ.get("DCAS_DEBUG"):
            raise
        return fail(f"internal error: {type(e).__name__}: {e} (set DCAS_DEBUG=1 for a traceback)",
                    EXIT_FAILURE)


_SERVICE_ERRORS = (("services.jobs", "JobError"), ("services.stack", "StackError"),
                   ("adapters.provisioning", "ProvisioningError"))


def _service_errors() -> tuple[type[Exception], ...]:
    """The job service's, the stack's and setup's errors (one line for a person) whose modules are
    loaded: an error whose module was never imported cannot be the one being reported. Looked up,
    never imported here: a Ctrl-C during start-up can leave a module half-imported, and importing
    again while reporting the interrupt would fail with a traceback."""
    loaded = (getattr(sys.modules.get(module), name, None) for module, name in _SERVICE_ERRORS)
    return tuple(error for error in loaded if error is not None)


def _terminate_like_interrupt() -> None:
    """SIGTERM does what Ctrl-C does: stop, remove what the run left, one line, exit 143 (128 + 15).

    Only the main thread may install handlers (tests call main() from others)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def terminated(signum, frame):
        raise compression.Interrupted(signum)

    signal.signal(signal.SIGTERM, terminated)


def split_pipeline_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """`compress a -o b -- --project=p` -> (`compress a -o b`, `--project=p`): what follows the first
    `--` goes to Beam unchanged."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def configure_logging(verbose: bool, stderr: TextIO) -> None:
    """Beam logs a page per run at INFO; without -v only warnings and errors get through."""
    level = logging.INFO if verbose else logging.WARNING
    logging.getLogger("apache_beam").setLevel(level)
    # The pipeline logs a failed file as an ERROR event; main() reports it as the one error line.
    logging.getLogger("dcas").setLevel(level if verbose else logging.CRITICAL)
    # The local runner re-logs every worker process's start-up warnings ("No semi_persistent_directory
    # found", one per worker and run) under this name; a failed file reaches us through the job's
    # stats instead, so without -v only errors are worth a line here.
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(
        level if verbose else logging.ERROR)
    if verbose and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _silence_stdout(stdout) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout.fileno())


def _require_file(path: str) -> None:
    if path == STDIO:
        raise UsageError("info and verify need a file they can seek in, not stdin")


if __name__ == "__main__":
    sys.exit(main())
