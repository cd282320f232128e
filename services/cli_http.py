"""`dcas` as a client of the Manager and Status APIs: submit a local file, status (--follow), cancel, delete, jobs, fetch."""
from __future__ import annotations

import json
import os

from services.progress import ProgressBar, format_bytes

__all__ = ["submit_file", "status", "cancel", "delete", "list_jobs", "fetch"]


def _client(args):
    from services.client import ApiClient
    return ApiClient(args.server, args.key)


def _manager_client(args, why: str):
    """_client(), or a usage error saying `why` the command needs the Manager when no --server is given."""
    from services.cli import UsageError
    if not args.server:
        raise UsageError(f"{why}: give --server URL (or DCAS_SERVER)")
    return _client(args)


def _bar(console, label: str, total: int | None, quiet: bool) -> ProgressBar:
    show = not quiet and console.stderr.isatty()
    console.progress = ProgressBar(label, total if show else None, console.stderr, enabled=show)
    return console.progress


def submit_file(args, console) -> None:
    """Uploads FILE through the Manager (a bar for the upload), prints the job id; with --wait
    follows the job's events (a bar for the job) and fails unless it SUCCEEDED."""
    from services.cli import UsageError
    from services.client import ClientError
    if args.job_id:
        raise UsageError("--job-id is for gs:// jobs; the Manager picks an upload's job id")
    if not args.server:
        raise UsageError(f"{args.src} is a local file: give --server URL (or DCAS_SERVER) to upload it "
                         "through the Manager, or gs:// URIs for SRC and DST")
    if not os.path.isfile(args.src):
        raise FileNotFoundError(2, "No such file", args.src)
    size = os.path.getsize(args.src)
    operation = "decompress" if args.decompress else "compress"
    with _client(args) as client:
        bar = _bar(console, "upload", size, args.quiet)
        accepted = client.upload(args.src, operation, progress=bar)
        bar.clear()
        print(accepted["job_id"], file=console.stdout, flush=True)
        if not args.wait:
            return
        bar = _bar(console, "job", size, args.quiet)
        final = None
        for status in client.follow(accepted["job_id"]):
            bar(int(status.get("bytes_in") or 0) if status["state"] != "SUCCEEDED" else size)
            final = status
        bar.clear()
    if final["state"] != "SUCCEEDED":
        raise ClientError(f"job {final['job_id']} {final['state']}: {_reason(final)}")
    summary = f"{final['job_id']}: SUCCEEDED, {format_bytes(final.get('bytes_in') or 0)} -> " \
              f"{format_bytes(final.get('bytes_out') or 0)}"
    if not args.quiet:
        print(summary, file=console.stderr)


def status(args, console) -> None:
    with _manager_client(args, "--follow reads the job's events from the Manager") as client:
        if not args.follow:
            _print_status(client.status(args.job_id), args.json, console)
            return
        for current in client.follow(args.job_id):
            _print_status(current, args.json, console)


def cancel(args, console) -> None:
    with _client(args) as client:
        current = client.cancel(args.job_id)
    print(f"{current['job_id']}: {current['state']}", file=console.stdout)


def delete(args, console) -> None:
    with _manager_client(args, "`dcas delete` asks the Manager") as client:
        last = client.delete(args.job_id)
    print(f"{last['job_id']}: deleted (it was {last['state']})", file=console.stdout)


def list_jobs(args, console) -> None:
    from services.cli import UsageError
    with _manager_client(args, "`dcas jobs` asks the Manager") as client:
        if args.limit < 1:
            raise UsageError(f"--limit must be 1 or more, got {args.limit}")
        for count, job in enumerate(client.jobs(args.state, args.limit), 1):
            if args.json:
                print(json.dumps(job, sort_keys=True), file=console.stdout)
            else:
                ratio = f"{job['ratio']:.3f}" if job.get("ratio") else "-"
                print(f"{job['job_id']}  {job['state']:<9}  {job['operation']:<10}  {ratio:>6}  "
                      f"{format_bytes(job.get('bytes_in') or 0):>9} -> {format_bytes(job.get('bytes_out') or 0):<9}  "
                      f"{job['filename']}", file=console.stdout)
            if count >= args.limit:
                break


def fetch(args, console) -> None:
    with _manager_client(args, "`dcas fetch` downloads from the Manager") as client:
        current = client.status(args.job_id)
        bar = _bar(console, "fetch", current.get("bytes_out") or None, args.quiet)
        size = client.fetch(args.job_id, args.output, progress=bar, overwrite=args.force)
        bar.clear()
    if not args.quiet:
        print(f"fetched {args.job_id} -> {args.output}: {format_bytes(size)}", file=console.stderr)


def _print_status(current: dict, as_json: bool, console) -> None:
    if as_json:
        print(json.dumps(current, sort_keys=True), file=console.stdout, flush=True)
        return
    line = f"{current['job_id']}: {current['state']}, attempt {current['attempt']}"
    if current.get("chunks_total"):
        line += f", {current['chunks_done']}/{current['chunks_total']} chunks"
    if current.get("ratio"):
        line += f", ratio {current['ratio']:.3f}"
    if current.get("error"):
        line += f", {_reason(current)}"
    print(line, file=console.stdout, flush=True)


def _reason(current: dict) -> str:
    error = current.get("error") or {}
    if not error:
        return "no reason recorded"
    return f"{error.get('stage', '?')}: {error.get('type', 'Error')}: {error.get('message', '')}"
