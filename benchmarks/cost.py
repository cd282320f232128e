"""Budget model: dollars per TB compressed and per month for a stated workload, from measured figures and list prices.

The measured figures (CPU-seconds per GB, compressed size) are read from the Beam pipeline's rows of the end-to-end
table that `make bench-e2e E2E_ARGS=--beam` writes into docs/benchmarks.md, so rerunning the benchmark and then
`python -m benchmarks.cost --write` brings docs/cost.md up to date. Object counts (parts, compose calls) come from
the storage adapter's own planners.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
from pathlib import Path

from adapters.storage import compose_plan, plan_parts
from benchmarks.e2e import BEAM_C, BEAM_D
from benchmarks.run import replace_between_markers

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_DOC = REPO_ROOT / "docs" / "benchmarks.md"
COST_DOC = REPO_ROOT / "docs" / "cost.md"
SECTION = "cost-model"
GB = 1e9
HOURS_PER_MONTH = 730

# List prices in USD, region us-central1, on-demand, no committed-use or free-tier discount, from Google's public
# price pages (cloud.google.com/dataflow/pricing, /storage/pricing, /pubsub/pricing, /firestore/pricing,
# /run/pricing). Checked on 2026-12-01 against stored copies of those pages: GCS storage and class A/B operations
# (a transcript of /storage/pricing read 2026-09-20: $0.000027397 per GiB-hour = $0.020 per GiB-month) and
# Firestore reads/writes (US single-region rates). The copies of the Dataflow, Pub/Sub and Cloud Run pages held no
# price table, so those rates are as last recorded and unverified here. Prices change and differ by region: check
# them before quoting a figure, then edit here.
PRICES = {
    "dataflow_streaming_vcpu_hour": 0.069,
    "dataflow_batch_vcpu_hour": 0.056,
    "dataflow_memory_gb_hour": 0.003557,
    "dataflow_pd_gb_hour": 0.000054,
    "dataflow_shuffle_gb": 0.011,          # batch Dataflow Shuffle, per GB processed
    "streaming_engine_gb": 0.018,          # Streaming Engine, per GB processed
    "gcs_standard_gb_month": 0.020,
    "gcs_class_a_per_1000": 0.005,         # writes, compose, list
    "gcs_class_b_per_1000": 0.0004,        # reads, metadata gets
    "pubsub_tib": 40.0,                    # publish and delivery throughput, 1 KB minimum per message
    "firestore_read_per_100k": 0.03,
    "firestore_write_per_100k": 0.09,
    "cloud_run_vcpu_second": 0.000024,
    "cloud_run_gib_second": 0.0000025,
    "cloud_run_requests_per_million": 0.40,
}


@dataclasses.dataclass(frozen=True)
class Measured:
    """What this repository's end-to-end benchmark measured, per GB of original data."""

    compress_cpu_s_per_gb: float
    decompress_cpu_s_per_gb: float
    ratio: float          # compressed / original
    source: str           # which run and row the figures come from


@dataclasses.dataclass(frozen=True)
class Workload:
    """The stated workload; docs/cost.md explains each choice."""

    tb_per_month: float = 20.0           # original data compressed per month (10^12 bytes)
    job_mb: float = 200.0                 # average job (one object) in MB
    chunk_bytes: int = 4 * 2**20          # the container's default chunk size
    decompress_share: float = 0.05        # of the month's data, decompressed again through the service
    retention_months: float = 12.0        # compressed outputs kept this long (Standard storage)
    original_days: float = 7.0            # originals deleted this long after compression (lifecycle rule)
    status_reads_per_job: int = 10        # status polls or event deliveries per job
    manager_upload_share: float = 0.0     # of the data uploaded through the Manager (the rest: gs:// submit)
    worker_vcpus: int = 2                 # n1-standard-2 streaming workers
    worker_memory_gb: float = 7.5
    worker_disk_gb: float = 30.0          # Streaming Engine workers' boot disk
    min_workers: int = 1                  # the streaming job runs all month
    utilization: float = 0.6              # busy share of billed vCPU time (autoscaling headroom, I/O waits)
    # Assumptions, not measured here (replace with measurements when they exist):
    state_bytes_per_chunk: int = 4096     # Streaming Engine bytes per chunk: a 2 KiB histogram, part records
    upload_cpu_s_per_gb: float = 2.0      # Manager: HTTP body + histogram (kernel alone ~0.7 CPU-s/GB) + GCS upload
    request_cpu_s: float = 0.02           # Manager/Status CPU per small request
    job_overhead_class_a: int = 4         # per job: metadata object, temp listing, status-side writes to GCS
    job_overhead_class_b: int = 6         # per job: input pin, existence checks, seek-table reads


@dataclasses.dataclass(frozen=True)
class LineItem:
    name: str
    per_month: float
    basis: str


# One row of the e2e table, as benchmarks/e2e.py's `result_rows` writes it:
# | 4.00 GB | dcas --engine beam --workers 2 compress | 109.93 | 23.4 | 385 MiB | 2,408,798,970 |
_E2E_ROW = re.compile(r"^\| (?P<size>[\d.]+) GB \| (?P<command>(?:[^|\\]|\\.)+) \| [\d.]+ \| (?P<cpu>[\d.]+) \| "
                      r"[^|]+ \| (?P<bytes>[\d,]+) \|$", re.MULTILINE)
_E2E_BLOCK = re.compile(r"<!-- e2e-benchmark:begin[^\n]*\n(?P<body>.*?)<!-- e2e-benchmark:end -->", re.DOTALL)
_E2E_RUN = re.compile(r"^Run [^\n]*?commit `(?P<commit>\w+)`", re.MULTILINE)


def _beam_rows(body: str, command: str) -> dict[float, tuple[float, int]]:
    """{input GB: (CPU s, output bytes)} of one command's rows."""
    return {float(m["size"]): (float(m["cpu"]), int(m["bytes"].replace(",", "")))
            for m in _E2E_ROW.finditer(body) if m["command"].strip() == command}


def _per_gb_beyond_start_up(rows: dict[float, tuple[float, int]]) -> float:
    small, big = min(rows), max(rows)
    per_gb = (rows[big][0] - rows[small][0]) / (big - small)
    if per_gb <= 0:
        raise ValueError(f"the end-to-end table's CPU time does not grow from {small:.2f} to {big:.2f} GB "
                         f"({rows[small][0]} -> {rows[big][0]} s): rerun `make bench-e2e E2E_ARGS=--beam`")
    return per_gb


def measured_from_benchmarks(text: str) -> Measured:
    """The Beam pipeline's rows (`dcas --engine beam`: the graph that Dataflow runs), CPU-seconds per GB
    beyond start-up: (CPU at the largest input − CPU at the smallest) ÷ the difference in GB. The streaming
    job starts once and then runs all month, so its start-up is not a per-GB cost. The ratio is the
    pipeline's output at the largest input."""
    block = _E2E_BLOCK.search(text)
    body = block["body"] if block else ""
    compress, decompress = _beam_rows(body, BEAM_C), _beam_rows(body, BEAM_D)
    if len(compress) < 2 or len(decompress) < 2:
        raise ValueError(f"no `{BEAM_C}` / `decompress` rows at two input sizes in the end-to-end table of "
                         f"docs/benchmarks.md: run `make bench-e2e E2E_ARGS=--beam`")
    small, big = min(compress), max(compress)
    run = _E2E_RUN.search(body)
    where = f"commit {run['commit']}" if run else "docs/benchmarks.md"
    return Measured(_per_gb_beyond_start_up(compress), _per_gb_beyond_start_up(decompress),
                    compress[big][1] / (big * GB),
                    f"{where}, the `dcas --engine beam` rows: CPU s at {big:.2f} GB − at {small:.2f} GB, "
                    f"÷ {big - small:.2f} GB")


def gcs_operations_per_job(job_bytes: float, chunk_bytes: int, workload: Workload) -> tuple[int, int]:
    """(class A, class B) operations of one compress job: the pipeline reads every chunk twice (its histogram,
    then its encoding), writes one object per part and composes the parts into the output."""
    chunks = max(1, math.ceil(job_bytes / chunk_bytes))
    parts = len(plan_parts(chunks))
    composes = len(compose_plan(parts))
    return parts + composes + workload.job_overhead_class_a, 2 * chunks + workload.job_overhead_class_b


def line_items(measured: Measured, workload: Workload, prices: dict = PRICES) -> list[LineItem]:
    """The month's costs of the streaming job service under `workload`, term by term."""
    w, p = workload, prices
    gb = w.tb_per_month * 1000
    job_bytes = w.job_mb * 1e6
    jobs = gb * GB / job_bytes * (1 + w.decompress_share)
    chunks = gb * GB / w.chunk_bytes

    cpu_s = gb * measured.compress_cpu_s_per_gb + gb * w.decompress_share * measured.decompress_cpu_s_per_gb
    demand_vcpu_h = cpu_s / w.utilization / 3600
    floor_vcpu_h = w.min_workers * w.worker_vcpus * HOURS_PER_MONTH
    vcpu_h = max(demand_vcpu_h, floor_vcpu_h)
    worker_h = vcpu_h / w.worker_vcpus
    class_a, class_b = gcs_operations_per_job(job_bytes, w.chunk_bytes, w)
    stored_gb_months = gb * measured.ratio * w.retention_months + gb * w.original_days / 30
    state_gb = chunks * (1 + w.decompress_share) * w.state_bytes_per_chunk / GB
    transitions = 3  # QUEUED, RUNNING, SUCCEEDED: one transactional write each
    job_cpu_s = job_bytes / GB * measured.compress_cpu_s_per_gb
    progress_writes = min(len(plan_parts(max(1, math.ceil(job_bytes / w.chunk_bytes)))),
                          max(1, math.ceil(job_cpu_s / w.worker_vcpus)))  # coalesced: at most one a second
    requests = jobs * (1 + w.status_reads_per_job)
    run_cpu_s = requests * w.request_cpu_s + gb * w.manager_upload_share * w.upload_cpu_s_per_gb

    return [
        LineItem("Dataflow streaming vCPU", vcpu_h * p["dataflow_streaming_vcpu_hour"],
                 f"{vcpu_h:,.0f} vCPU-h: {cpu_s / 3600:,.0f} CPU-h measured ÷ {w.utilization:.0%} busy, "
                 f"at least {w.min_workers} × {w.worker_vcpus} vCPU all month"),
        LineItem("Dataflow worker memory", worker_h * w.worker_memory_gb * p["dataflow_memory_gb_hour"],
                 f"{worker_h:,.0f} worker-h × {w.worker_memory_gb} GB"),
        LineItem("Dataflow worker disk", worker_h * w.worker_disk_gb * p["dataflow_pd_gb_hour"],
                 f"{worker_h:,.0f} worker-h × {w.worker_disk_gb:.0f} GB"),
        LineItem("Streaming Engine data", state_gb * p["streaming_engine_gb"],
                 f"{state_gb:,.1f} GB of per-chunk state (histograms, part records; not the data)"),
        LineItem("GCS storage", stored_gb_months * p["gcs_standard_gb_month"],
                 f"{stored_gb_months / 1000:,.0f} TB-months: outputs at {measured.ratio:.1%} kept "
                 f"{w.retention_months:g} months, originals {w.original_days:g} days"),
        LineItem("GCS class A (writes, compose)", jobs * class_a / 1000 * p["gcs_class_a_per_1000"],
                 f"{class_a} per {w.job_mb:g} MB job (parts, compose calls, metadata)"),
        LineItem("GCS class B (reads)", jobs * class_b / 1000 * p["gcs_class_b_per_1000"],
                 f"{class_b} per job (every chunk read twice)"),
        LineItem("Pub/Sub", jobs * 2 * 1000 / 2**40 * p["pubsub_tib"],
                 f"{jobs:,.0f} jobs × (publish + delivery) at the 1 KB minimum"),
        LineItem("Firestore", jobs * ((transitions + progress_writes) * p["firestore_write_per_100k"]
                                      + (2 + w.status_reads_per_job) * p["firestore_read_per_100k"]) / 1e5,
                 f"{transitions + progress_writes} writes and {2 + w.status_reads_per_job} reads per job"),
        LineItem("Cloud Run (Manager, Status)",
                 run_cpu_s * (p["cloud_run_vcpu_second"] + 0.5 * p["cloud_run_gib_second"])
                 + requests / 1e6 * p["cloud_run_requests_per_million"],
                 f"{requests:,.0f} requests, {run_cpu_s:,.0f} vCPU-s (0.5 GiB per vCPU)"),
    ]


def batch_cost_per_tb(measured: Measured, prices: dict = PRICES, utilization: float = 0.6,
                      memory_gb_per_vcpu: float = 3.75, chunk_bytes: int = 4 * 2**20) -> float:
    """A batch reprocessing run over a prefix (pipelines/batch.py on Dataflow), per TB: batch workers, the
    shuffle of the small per-chunk records, GCS reads and writes. Worker start-up (~3 minutes per job) is
    not included: it is per run, not per TB."""
    gb = 1000
    vcpu_h = gb * measured.compress_cpu_s_per_gb / utilization / 3600
    chunks = gb * GB / chunk_bytes
    workload = Workload()
    class_a, class_b = gcs_operations_per_job(GB, chunk_bytes, workload)  # 1 GB objects
    return (vcpu_h * (prices["dataflow_batch_vcpu_hour"] + memory_gb_per_vcpu * prices["dataflow_memory_gb_hour"])
            + chunks * 4096 / GB * prices["dataflow_shuffle_gb"]
            + gb * (class_a / 1000 * prices["gcs_class_a_per_1000"] + class_b / 1000 * prices["gcs_class_b_per_1000"]))


def render(measured: Measured, workload: Workload, prices: dict = PRICES) -> str:
    items = line_items(measured, workload, prices)
    total = sum(item.per_month for item in items)
    storage = next(item for item in items if item.name == "GCS storage")
    processing = total - storage.per_month
    dominant = max(items, key=lambda item: item.per_month)
    dominant_processing = max((i for i in items if i is not storage), key=lambda item: item.per_month)
    floor_tb = (workload.min_workers * workload.worker_vcpus * HOURS_PER_MONTH * workload.utilization * 3600
                / measured.compress_cpu_s_per_gb / 1000)
    saved = workload.tb_per_month * 1000 * (1 - measured.ratio) * prices["gcs_standard_gb_month"]
    lines = [
        f"Measured ({measured.source}): compress {measured.compress_cpu_s_per_gb:.2f} CPU-s/GB, decompress "
        f"{measured.decompress_cpu_s_per_gb:.2f} CPU-s/GB, output {measured.ratio:.2%} of the input.",
        f"Workload: {workload.tb_per_month:g} TB/month in {workload.job_mb:g} MB jobs, "
        f"{workload.decompress_share:.0%} decompressed again, outputs kept {workload.retention_months:g} months.",
        "",
        "| term | $ / month | share | basis |",
        "|---|---:|---:|---|",
    ]
    for item in sorted(items, key=lambda item: -item.per_month):
        lines.append(f"| {item.name} | {item.per_month:,.2f} | {item.per_month / total:.1%} | {item.basis} |")
    lines += [
        f"| **total** | **{total:,.2f}** | 100% | |",
        "",
        f"- **Per month: ${total:,.0f}**, of which storage (steady state, {workload.retention_months:g} months "
        f"of outputs) ${storage.per_month:,.0f} and processing ${processing:,.0f}.",
        f"- **Per TB compressed: ${processing / workload.tb_per_month:,.2f}** of processing (everything but "
        f"storage), plus ${measured.ratio * 1000 * prices['gcs_standard_gb_month']:,.2f} per month for every "
        f"month its output is kept.",
        f"- **Dominant term: {dominant.name}** ({dominant.per_month / total:.0%} of the total); of processing "
        f"alone, {dominant_processing.name} ({dominant_processing.per_month / processing:.0%} of processing).",
        f"- Compression saves ${saved:,.0f} of Standard storage for each month's data for each month it is "
        f"kept: the month's processing pays for itself after {processing / saved:.2f} months of retention.",
        f"- The streaming floor ({workload.min_workers} × {workload.worker_vcpus} vCPU all month) is used up at "
        f"{floor_tb:,.0f} TB/month; below that, processing costs about the same whatever the volume.",
        f"- A batch reprocessing run over a prefix (batch workers, no streaming floor): "
        f"${batch_cost_per_tb(measured, prices):,.2f} per TB, plus ~3 minutes of worker start-up per run.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cost", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite the generated section of {COST_DOC.name}")
    parser.add_argument("--tb-per-month", type=float, default=Workload.tb_per_month)
    parser.add_argument("--job-mb", type=float, default=Workload.job_mb)
    parser.add_argument("--retention-months", type=float, default=Workload.retention_months)
    args = parser.parse_args(argv)
    workload = Workload(tb_per_month=args.tb_per_month, job_mb=args.job_mb, retention_months=args.retention_months)
    block = render(measured_from_benchmarks(BENCHMARKS_DOC.read_text()), workload)
    if args.write:
        COST_DOC.write_text(replace_between_markers(COST_DOC.read_text(), SECTION, block))
    print(block, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
