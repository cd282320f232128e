"""HTTP services benchmark on the local stack: concurrent uploads (Manager RSS, throughput vs a plain
resumable upload), GET /v1/jobs/{id} latency under a fixed request rate, last byte -> SUCCEEDED."""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

from benchmarks.run import conditions, write_docs_section

MB = 10**6
TARGET_RSS = 256 * 2**20
TARGET_THROUGHPUT = 0.8
PIECE = 1 << 20


def sample(size: int, seed: int = 1) -> bytes:
    """Compressible bytes (a skewed byte distribution), the same on every run."""
    rng = np.random.default_rng(seed)
    return rng.geometric(0.08, size).clip(1, 255).astype(np.uint8).tobytes()


def pieces(data: bytes, done: list | None = None):
    view = memoryview(data)
    for offset in range(0, len(view), PIECE):
        yield view[offset:offset + PIECE]
    if done is not None:
        done.append(time.time())  # the last byte has been handed to the connection


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def current_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def upload_through_manager(server: str, key: str, data: bytes, name: str, done: list | None = None) -> dict:
    response = httpx.post(f"{server}/v1/jobs", params={"operation": "compress", "filename": name},
                          content=pieces(data, done), timeout=600,
                          headers={"Authorization": f"Bearer {key}", "Content-Length": str(len(data)),
                                   "Content-Type": "application/octet-stream"})
    response.raise_for_status()
    return response.json()


def plain_resumable_upload(bucket: str, name: str, data: bytes, chunk_size: int) -> None:
    import io

    from google.cloud import storage
    blob = storage.Client().bucket(bucket).blob(name, chunk_size=chunk_size)
    blob.upload_from_file(io.BytesIO(data), size=len(data), content_type="application/octet-stream")


def concurrent_uploads(stack, server: str, key: str, n: int, size: int, rounds: int, chunk: int) -> dict:
    """n uploads of `size` bytes at once, through the Manager and straight to fake-gcs-server,
    alternating, `rounds` times; the Manager's peak RSS over all of them."""
    data = sample(size)
    bucket = stack.settings.bucket
    manager_pid = stack._manager.pid
    warm = upload_through_manager(server, key, sample(20 * MB, seed=3), "warm-up.bin")  # first-use costs
    _delete_all(bucket, server, key, [warm])
    base_rss = current_rss(manager_pid)
    manager_times, plain_times = [], []
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        for round_ in range(rounds):
            began = time.perf_counter()
            list(pool.map(lambda i: plain_resumable_upload(bucket, f"plain/{round_}/{i}", data, chunk), range(n)))
            plain_times.append(time.perf_counter() - began)
            began = time.perf_counter()
            accepted = list(pool.map(lambda i: upload_through_manager(server, key, data, f"u{round_}-{i}.bin"),
                                     range(n)))
            manager_times.append(time.perf_counter() - began)
            print(f"round {round_}: plain {plain_times[-1]:.2f} s, manager {manager_times[-1]:.2f} s",
                  file=sys.stderr, flush=True)
            _delete_all(bucket, server, key, accepted)
    total = n * size
    manager, plain = statistics.median(manager_times), statistics.median(plain_times)
    return {"uploads": n, "size": size, "rounds": rounds, "chunk": chunk, "manager_s": manager_times, "plain_s": plain_times,
            "manager_mb_s": total / manager / MB, "plain_mb_s": total / plain / MB,
            "ratio": plain / manager, "rss_peak": peak_rss(manager_pid), "rss_idle": base_rss}


def _delete_all(bucket: str, server: str, key: str, accepted) -> None:
    """Cancels the round's jobs (so a pipeline started later drops their messages) and deletes
    every object, the plain uploads' too."""
    from google.cloud import storage
    for job in accepted:
        httpx.delete(f"{server}/v1/jobs/{job['job_id']}", headers={"Authorization": f"Bearer {key}"}, timeout=60)
    for blob in storage.Client().list_blobs(bucket):
        blob.delete()


def status_latency(server: str, key: str, rate: float, seconds: float, jobs: int = 1,
                   manager_pid: int | None = None) -> dict:
    """GET /v1/jobs/{id} at `rate` requests/s (open loop: each request starts on schedule,
    whatever the earlier ones do) for `seconds`, over `jobs` jobs in turn; latency percentiles."""
    # Plain HTTP/1.1 over asyncio streams (keep-alive connections, opened as concurrency needs
    # them): httpx's AsyncClient costs ~10x the CPU a request, so on a shared machine the load
    # generator itself became the queue it was measuring.
    ids = [upload_through_manager(server, key, b"latency probe %d " % i * 100, f"probe-{i}.txt")["job_id"]
           for i in range(jobs)]
    address = httpx.URL(server)
    host, port = address.host, address.port

    async def run() -> tuple[list[float], int, float]:
        idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        opened: list[asyncio.StreamWriter] = []
        latencies: list[float] = []
        errors = 0

        async def one(job_id: str) -> None:
            nonlocal errors
            began = time.perf_counter()
            if idle:
                reader, writer = idle.pop()
            else:
                reader, writer = await asyncio.open_connection(host, port)
                opened.append(writer)
            writer.write(f"GET /v1/jobs/{job_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         f"Authorization: Bearer {key}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            idle.append((reader, writer))
            if head.split(b" ", 2)[1] == b"200":
                latencies.append(time.perf_counter() - began)
            else:
                errors += 1

        try:
            for i in range(20):  # warm the connections and the server's clients
                await one(ids[i % jobs])
            latencies.clear()
            tasks = []
            start = time.perf_counter()
            count = int(rate * seconds)
            for i in range(count):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(one(ids[i % jobs])))
            sent_over = time.perf_counter() - start
            await asyncio.gather(*tasks)
        finally:
            for writer in opened:
                writer.close()
        return latencies, errors, count / sent_over

    cpu_before = _cpu_seconds(manager_pid) if manager_pid else None
    own_before = time.process_time()
    latencies, errors, achieved = asyncio.run(run())
    requests = len(latencies) + errors
    latencies.sort()
    quantile = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    result = {"rate": rate, "achieved_rate": achieved, "seconds": seconds, "jobs": jobs, "requests": requests,
              "errors": errors, "p50_ms": quantile(0.50), "p99_ms": quantile(0.99), "max_ms": latencies[-1] * 1000,
              "client_cpu_ms": (time.process_time() - own_before) / (requests + 20) * 1000}
    if manager_pid:
        result["manager_cpu_ms"] = (_cpu_seconds(manager_pid) - cpu_before) / (requests + 20) * 1000
    return result


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def last_byte_to_succeeded(server: str, key: str, size: int, repeats: int) -> dict:
    """Upload, then wait for SUCCEEDED; the time from the last byte sent to the SUCCEEDED time the
    status document records (one clock: everything runs on this machine)."""
    from services.client import ApiClient
    data = sample(size, seed=2)
    results = []
    with ApiClient(server, key) as client:
        for _ in range(repeats):
            done: list[float] = []
            accepted = upload_through_manager(server, key, data, f"e2e-{size}.bin", done)
            final = None
            for final in client.follow(accepted["job_id"]):
                pass
            if final["state"] != "SUCCEEDED":
                raise RuntimeError(f"job {accepted['job_id']} {final['state']}: {final.get('error')}")
            succeeded = datetime.datetime.fromisoformat(final["times"]["SUCCEEDED"]).timestamp()
            results.append(succeeded - done[-1])
    return {"size": size, "repeats": repeats, "seconds": results, "median_s": statistics.median(results)}


def render(run: dict, uploads: list[dict] | None, latency: list[dict] | None, e2e: list[dict], e2e_note: str) -> str:
    lines = [f"Run {run['date']}, commit `{run['commit']}`, {run['nproc']} × {run['cpu']}; the local stack "
             f"(fake-gcs-server, Pub/Sub and Firestore emulators, the Manager as one uvicorn process) on the "
             f"same machine as the clients; 1-minute load average {run['load_before'][0]:.1f} before "
             f"(the machine was shared with other work: treat the figures as rough).", ""]
    for result in uploads or []:
        ok_rss = result["rss_peak"] <= TARGET_RSS
        ok_speed = result["ratio"] >= TARGET_THROUGHPUT
        chunk = f"{result['chunk'] // 2**20} MiB"
        lines += [
            f"**{result['uploads']} concurrent uploads of {result['size'] // MB} MB, {chunk} resumable chunks** "
            f"({result['rounds']} rounds, alternating; medians):", "",
            "| path | MB/s (all uploads together) | wall times (s) |", "|---|---|---|",
            f"| plain resumable upload (google-cloud-storage, {chunk} chunks) to fake-gcs-server | "
            f"{result['plain_mb_s']:.0f} | {', '.join(f'{t:.1f}' for t in result['plain_s'])} |",
            f"| through the Manager (DCAS_UPLOAD_BUFFER={chunk}: histogram counted, table stored, job queued) | "
            f"{result['manager_mb_s']:.0f} | {', '.join(f'{t:.1f}' for t in result['manager_s'])} |", "",
            f"- Throughput through the Manager / plain: **{result['ratio']:.2f}×** (target ≥ {TARGET_THROUGHPUT}×: "
            f"{'met' if ok_speed else 'not met'}).",
            f"- Manager peak RSS (VmHWM, whole run): **{result['rss_peak'] / 2**20:.0f} MiB**, after one warm-up upload: "
            f"{result['rss_idle'] / 2**20:.0f} MiB (target ≤ 256 MiB: {'met' if ok_rss else 'not met'}).", ""]
    for result in latency or []:
        spread = ("one job" if result["jobs"] == 1 else
                  f"{result['jobs']} jobs in turn (no two requests in a row share a read)")
        cpu = (f"; Manager CPU {result['manager_cpu_ms']:.2f} ms a request"
               if "manager_cpu_ms" in result else "")
        lines += [f"**GET /v1/jobs/{{id}} at {result['rate']:.0f} requests/s, {spread}**, for "
                  f"{result['seconds']:.0f} s (open loop from one asyncio client on loopback, plain HTTP/1.1 "
                  f"keep-alive, achieved {result['achieved_rate']:.0f}/s; each request checks the API key "
                  f"and reads the status document in Firestore): p50 **{result['p50_ms']:.1f} ms**, p99 "
                  f"**{result['p99_ms']:.1f} ms**, max {result['max_ms']:.0f} ms, {result['errors']} errors of "
                  f"{result['requests']}{cpu}, load generator {result['client_cpu_ms']:.2f} ms.", ""]
    if e2e:
        lines += ["**Last uploaded byte → SUCCEEDED** (status document's time; streaming pipeline on the "
                  "local runner):", "", "| file | runs (s) | median (s) |", "|---|---|---|"]
        lines += [f"| {r['size'] // MB} MB | {', '.join(f'{s:.2f}' for s in r['seconds'])} | {r['median_s']:.2f} |"
                  for r in e2e]
        lines.append("")
    if e2e_note:
        lines += [e2e_note, ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--buffers", nargs="+", default=["8M", "2M"],
                        help="DCAS_UPLOAD_BUFFER values to measure the uploads with (the Manager restarts for each)")
    parser.add_argument("--size", type=int, default=100, help="MB per upload")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--latency-jobs", type=int, default=20,
                        help="also measure the status requests spread over this many jobs")
    parser.add_argument("--skip", nargs="*", default=[], choices=["uploads", "latency", "e2e"])
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing the docs")
    args = parser.parse_args(argv)

    from services.config import Settings
    from services.stack import LocalStack, PIPELINE_MODULE, streaming_pipeline_command
    run = conditions()
    os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "dcas-bench")
    os.environ["DCAS_UPLOADS_PER_OWNER"] = str(max(args.uploads, 4))  # all uploads are the demo owner's
    settings = Settings.from_env()
    has_pipeline = importlib.util.find_spec(PIPELINE_MODULE) is not None and "e2e" not in args.skip
    runtime = Path(tempfile.mkdtemp(prefix="dcas-bench-"))
    # No pipeline while uploads and requests are measured: it would take the CPU they are measured on.
    stack = LocalStack(settings, runtime, None)
    uploads = latency = None
    e2e: list[dict] = []
    try:
        exports = stack.up()
        server, key = exports["DCAS_SERVER"], exports["DCAS_API_KEY"]
        if "uploads" not in args.skip:
            from codec.sizes import parse_size
            from services.processes import stop_process
            uploads = []
            for i, buffer in enumerate(args.buffers):
                os.environ["DCAS_UPLOAD_BUFFER"] = buffer
                if i:  # a fresh Manager, so its peak RSS is this buffer size's
                    stop_process(stack._manager)
                    exports.update(stack._start_manager({**os.environ, **exports}))
                    server, key = exports["DCAS_SERVER"], exports["DCAS_API_KEY"]
                uploads.append(concurrent_uploads(stack, server, key, args.uploads, args.size * MB, args.rounds,
                                                  parse_size(buffer)))
            os.environ["DCAS_UPLOAD_BUFFER"] = args.buffers[0]
            stop_process(stack._manager)
            exports.update(stack._start_manager({**os.environ, **exports}))
            server, key = exports["DCAS_SERVER"], exports["DCAS_API_KEY"]
        if "latency" not in args.skip:
            latency = [status_latency(server, key, args.rate, args.seconds, jobs, stack._manager.pid)
                       for jobs in (1, args.latency_jobs)]
        if has_pipeline:
            from services.stack import PipelineWatcher
            stack._watcher = PipelineWatcher(streaming_pipeline_command(settings), {**os.environ, **exports},
                                             lambda pid: stack._record("pipeline", pid)).start()
            last_byte_to_succeeded(server, key, 100_000, 1)  # the pipeline has started and served a job
            e2e = [last_byte_to_succeeded(server, key, size, repeats) for size, repeats in ((1 * MB, 3), (100 * MB, 2))]
    finally:
        stack.down()
    note = "" if has_pipeline else "Last byte → SUCCEEDED: not measured in this run (no streaming pipeline)."
    block = render(run, uploads, latency, e2e, note)
    print(block)
    print(json.dumps({"uploads": uploads, "latency": latency, "e2e": e2e}, indent=1), file=sys.stderr)
    if not args.no_write:
        write_docs_section("http", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
