"""Job-service benchmark: publish-to-SUCCEEDED latency and throughput on the local stack, beside `dcas compress`."""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import corpora
from benchmarks.run import OUT_DIR, conditions, write_docs_section

WORK_DIR = OUT_DIR / "service"
KB, MB = 1000, 10**6


def start_stack(runtime: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    """`dcas stack up` in its own process group; returns it and the variables it exports."""
    from services.processes import start_process
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_EMULATOR_HOST") and not k.startswith("DCAS_") and k != "GOOGLE_CLOUD_PROJECT"}
    env["DCAS_RUNTIME_DIR"] = str(runtime)
    stack = start_process([sys.executable, "-m", "services.cli", "stack", "up"], env=env,
                          stdout=subprocess.PIPE, stderr=open(runtime / "stack.err", "w"))
    exports = {}
    for line in iter(stack.stdout.readline, b""):
        text = line.decode().strip()
        if text == "# ready":
            return stack, exports
        name, _, value = text.removeprefix("export ").partition("=")
        exports[name] = value
    raise RuntimeError(f"the stack ended before it was ready:\n{(runtime / 'stack.err').read_text()[-3000:]}")


def stop_stack(stack: subprocess.Popen, runtime: Path) -> None:
    from services.processes import stop_process
    subprocess.run([sys.executable, "-m", "services.cli", "stack", "down"],
                   env={**os.environ, "DCAS_RUNTIME_DIR": str(runtime)}, capture_output=True, timeout=120)
    stop_process(stack, timeout=30)


def seconds_between(status, first: str, last: str) -> float:
    from datetime import datetime
    return (datetime.fromisoformat(status.times[last]) - datetime.fromisoformat(status.times[first])).total_seconds()


def run_jobs(adapters, bucket: str, name: str, blobs: list[bytes], timeout: float = 1800):
    """Uploads the inputs, submits one compress job each at once, waits for all; returns their statuses."""
    from adapters import storage
    from services import jobs
    requests = []
    for i, data in enumerate(blobs):
        source = f"gs://{bucket}/bench/{name}-{i}.bin"
        with storage.open_write(source) as f:
            f.write(data)
        requests.append(jobs.new_request(source, source + ".dcz"))
    for request in requests:
        jobs.submit(adapters, request)
    statuses = [jobs.wait(adapters, r.job_id, timeout, poll_interval=0.05) for r in requests]
    failed = [s for s in statuses if s.state.value != "SUCCEEDED"]
    if failed:
        raise RuntimeError(f"{len(failed)} job(s) did not succeed: {failed[0].error}")
    return statuses


def dcas_compress_seconds(paths: list[Path]) -> list[float]:
    """Wall time of one `dcas compress` process per file, as a user runs it."""
    seconds = []
    for path in paths:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "services.cli", "compress", str(path), "-o", f"{path}.dcz", "-f", "-q"],
                       check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    return seconds


def measure(latency_repeats: int, jobs_count: int, job_size: int) -> dict:
    from services.bootstrap import bootstrap
    from services.config import Settings

    total = jobs_count * job_size
    corpus, _ = corpora.build(corpora.MACHINE_MIX, max(total, 4 * MB), WORK_DIR)
    data = corpus.read_bytes()
    sizes = {"1 KB": KB, "4 MB": 4 * MB}
    results: dict = {"latency": {}, "dcas_latency": {}}
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as scratch:
        scratch = Path(scratch)
        local = {label: scratch / f"{label.replace(' ', '')}.bin" for label in sizes}
        for label, size in sizes.items():
            local[label].write_bytes(data[:size])
            results["dcas_latency"][label] = statistics.median(dcas_compress_seconds([local[label]] * latency_repeats))
        pieces = [data[i * job_size:(i + 1) * job_size] for i in range(jobs_count)]
        piece_paths = []
        for i, piece in enumerate(pieces):
            piece_paths.append(scratch / f"piece-{i}.bin")
            piece_paths[-1].write_bytes(piece)
        dcas_all = dcas_compress_seconds(piece_paths)
        results["dcas_throughput"] = {"seconds": sum(dcas_all), "mb_s": total / MB / sum(dcas_all)}

        runtime = scratch / "runtime"
        runtime.mkdir()
        stack, exports = start_stack(runtime)
        try:
            os.environ.update(exports)
            adapters = bootstrap(Settings.from_env())
            bucket = exports["DCAS_BUCKET"]
            run_jobs(adapters, bucket, "warm-up", [data[:KB]])  # the pipeline's first job loads the codec
            for label, size in sizes.items():
                statuses = [run_jobs(adapters, bucket, f"latency-{size}-{i}", [data[:size]])[0]
                            for i in range(latency_repeats)]
                results["latency"][label] = {
                    "queued_to_succeeded": statistics.median(seconds_between(s, "QUEUED", "SUCCEEDED") for s in statuses),
                    "running_to_succeeded": statistics.median(seconds_between(s, "RUNNING", "SUCCEEDED") for s in statuses)}
            statuses = run_jobs(adapters, bucket, "throughput", pieces)
            first = min(statuses, key=lambda s: s.times["QUEUED"])
            last = max(statuses, key=lambda s: s.times["SUCCEEDED"])
            from datetime import datetime
            elapsed = (datetime.fromisoformat(last.times["SUCCEEDED"])
                       - datetime.fromisoformat(first.times["QUEUED"])).total_seconds()
            results["throughput"] = {"seconds": elapsed, "mb_s": total / MB / elapsed,
                                     "ratio": statistics.median(s.ratio for s in statuses)}
            adapters.close()
        finally:
            stop_stack(stack, runtime)
    results.update(jobs=jobs_count, job_size=job_size, repeats=latency_repeats)
    return results


def render(results: dict, run: dict) -> str:
    n, size = results["jobs"], results["job_size"]
    lines = [
        f"Run {run['date']}, commit `{run['commit']}`, {run['nproc']} × {run['cpu']}; 1-minute load "
        f"{run['load_before'][0]:.1f} → {run['load_after'][0]:.1f} (a machine shared with other work: "
        f"read the figures as rough). Inputs are slices of the machine-mix corpus.",
        "",
        "The job service on the local stack (`dcas stack up`: Pub/Sub, Firestore and GCS emulators, the "
        "streaming pipeline on Beam's BundleBasedDirectRunner), against `dcas compress` of the same bytes "
        "from a local file (one process per file, its start-up included).",
        "",
        "| job | service: QUEUED → SUCCEEDED | service: RUNNING → SUCCEEDED | `dcas compress` (local file) |",
        "|---|---:|---:|---:|",
    ]
    for label, figures in results["latency"].items():
        lines.append(f"| one {label} job (median of {results['repeats']}) | {figures['queued_to_succeeded']:.2f} s | "
                     f"{figures['running_to_succeeded']:.2f} s | {results['dcas_latency'][label]:.2f} s |")
    service, local = results["throughput"], results["dcas_throughput"]
    lines += [
        f"| {n} jobs of {size // MB} MB submitted at once | {service['seconds']:.1f} s, "
        f"{service['mb_s']:.1f} MB/s | | {local['seconds']:.1f} s, {local['mb_s']:.1f} MB/s (one after another) |",
        "",
        "Times are the status document's own (`times.QUEUED` is written by submit before the message is "
        "published). MB = 10^6 bytes of input.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--job-size", type=int, default=10 * MB)
    parser.add_argument("--no-docs", action="store_true", help="print the table; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    run = conditions()
    results = measure(args.repeats, args.jobs, args.job_size)
    run["load_after"] = os.getloadavg()
    block = render(results, run)
    print(block)
    if not args.no_docs:
        write_docs_section("service-benchmark", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
