"""End-to-end benchmark: `dcas compress` / `dcas decompress` of a ~1 GB real-data file vs pigz --huffman."""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from benchmarks import corpora
from benchmarks.run import OUT_DIR, conditions, write_docs_section

GB = 10**9  # the input: 1 GB of real data (the machine holds a little more than that)
WORK_DIR = OUT_DIR / "e2e"

# Targets from the pipeline issue.
TARGET_COMPRESS_VS_PIGZ = 1.0  # our compress time / pigz --huffman's, at most (same workers)
TARGET_DECOMPRESS_VS_UNPIGZ = 2 / 3  # our decompress time / pigz -d's, at most
TARGET_SIZE_VS_PIGZ = 1.0  # our size / pigz's, at most
TARGET_SCALING = 1.7  # time with 1 worker / time with 2 workers, at least
TARGET_MEMORY_GROWTH = 1.25  # peak RSS per worker at 4 GB / at 1 GB: "independent of file size"


# --- every command line the benchmark runs, in one place -----------------------------------------

@dataclass(frozen=True)
class Command:
    argv: list[str]
    stdout_path: Path | None = None  # where the command's stdout goes (pigz writes to stdout)


def dcas_executable() -> str:
    beside_python = Path(sys.executable).parent / "dcas"
    return str(beside_python) if beside_python.exists() else (shutil.which("dcas") or "dcas")


def dcas_worker_flag() -> list[str] | None:
    """How the current `dcas` takes a worker count, or None while it has no such option (then every
    'workers' setting runs the same serial command, and the report says so)."""
    help_text = subprocess.run([dcas_executable(), "compress", "--help"], capture_output=True,
                               text=True).stdout
    for flag in ("--workers", "--direct_num_workers", "--num-workers"):
        if flag in help_text:
            return [flag, "{workers}"]
    return None


@dataclass(frozen=True)
class Tool:
    name: str
    suffix: str
    compress: Callable[[Path, Path, int], Command]
    decompress: Callable[[Path, Path, int], Command]


def dcas_tool(worker_flag: list[str] | None, name: str = "dcas", beam_args: tuple[str, ...] = ()) -> Tool:
    def workers_args(workers: int) -> list[str]:
        return [arg.format(workers=workers) for arg in worker_flag] if worker_flag else []

    exe = dcas_executable()
    extra = ["--", *beam_args] if beam_args else []
    return Tool(
        name, ".dcz",
        lambda src, dst, w: Command([exe, "compress", str(src), "-o", str(dst), "-f", "-q",
                                     *workers_args(w), *extra]),
        lambda src, dst, w: Command([exe, "decompress", str(src), "-o", str(dst), "-f", "-q",
                                     *workers_args(w), *extra]))


# The pipeline's fixed cost: dcas on a 1 MiB file, in the same runner mode as the big runs (without
# the Beam option, run_job would run so small an input on one in-memory worker).
STARTUP = "dcas start-up (1 MiB)"
STARTUP_INPUT_SIZE = 2**20


def startup_tool(worker_flag: list[str] | None) -> Tool:
    return dcas_tool(worker_flag, STARTUP, ("--direct_running_mode=multi_threading",))


def beam_pipeline_tool() -> Tool:
    """The batch pipeline called directly (what `dcas` runs once it has switched to Beam)."""
    def command(mode: str) -> Callable[[Path, Path, int], Command]:
        return lambda src, dst, w: Command([sys.executable, "-m", "pipelines.batch", "--input", str(src),
                                            "--output", str(dst), "--mode", mode,
                                            f"--direct_num_workers={w}"])
    return Tool("beam pipeline", ".dcz", command("compress"), command("decompress"))


PIGZ = "pigz --huffman"
PIGZ_SYNCED = "pigz --huffman, then sync"


def pigz_tool() -> Tool:
    # pigz compresses with -p threads; its decompression is one thread (plus helper threads for
    # reading, writing and the check), whatever -p says.
    return Tool(
        PIGZ, ".gz",
        lambda src, dst, w: Command(["pigz", "--huffman", "-p", str(w), "-c", str(src)], dst),
        lambda src, dst, w: Command(["pigz", "-d", "-p", str(w), "-c", str(src)], dst))


def pigz_synced_tool() -> Tool:
    """pigz followed by `sync FILE` (fsync of its output): context for our times, which include an
    fsync before the output is renamed into place; pigz alone leaves its output in the page cache."""
    def command(pigz_args: str) -> Callable[[Path, Path, int], Command]:
        script = f'pigz {pigz_args} -p "$0" -c "$1" > "$2" && sync "$2"'
        return lambda src, dst, w: Command(["sh", "-c", script, str(w), str(src), str(dst)])
    return Tool(PIGZ_SYNCED, ".gz", command("--huffman"), command("-d"))


# --- running one command and watching its processes ----------------------------------------------

@dataclass
class RunStats:
    wall: float
    cpu: float  # user + system seconds of all the command's processes
    peak_rss_root: int  # bytes, high-water mark of the process we started
    peak_rss_worker: int  # bytes, largest high-water mark among its descendants (0 if none)
    peak_rss_sum: int  # bytes, largest sampled sum of current RSS over the whole process tree
    processes: int


def _read_proc(pid: int, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/{name}") as f:
            return f.read()
    except OSError:
        return None


def _status_kib(status: str, key: str) -> int:
    for line in status.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants, from the parent pids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read_proc(int(entry), "stat")
        if stat is None:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])  # comm may hold spaces and parentheses
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def run_watched(command: Command, interval: float = 0.1) -> RunStats:
    """Runs `command`, sampling its process tree every `interval` s: each process's own VmHWM (its
    exact peak, as of the last sample that saw it) and the sum of VmRSS across the tree."""
    hwm: dict[int, int] = {}
    peak_sum, seen = 0, set()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    stdout = open(command.stdout_path, "wb") if command.stdout_path else subprocess.DEVNULL
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(command.argv, stdout=stdout, stderr=subprocess.PIPE)
        while True:
            done = proc.poll() is not None
            if not done:
                total = 0
                for pid in process_tree(proc.pid):
                    status = _read_proc(pid, "status")
                    if status is None:
                        continue
                    seen.add(pid)
                    hwm[pid] = max(hwm.get(pid, 0), _status_kib(status, "VmHWM"))
                    total += _status_kib(status, "VmRSS")
                peak_sum = max(peak_sum, total)
            if done:
                break
            time.sleep(interval)
        wall = time.perf_counter() - start
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    finally:
        if command.stdout_path:
            stdout.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command.argv)} failed ({proc.returncode}): {stderr.strip()[-800:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # A command that ended before the first sample: the children's ru_maxrss, if this one raised it.
    root_hwm = hwm.get(proc.pid) or (after.ru_maxrss if after.ru_maxrss > before.ru_maxrss else 0)
    workers = [v for pid, v in hwm.items() if pid != proc.pid]
    return RunStats(wall, cpu, root_hwm * 1024, max(workers, default=0) * 1024, peak_sum * 1024,
                    len(seen))


# --- the benchmark -------------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    return corpora.sha256_of_file(path)


def input_file(size_gb: int, work_dir: Path = WORK_DIR) -> tuple[Path, dict, bool]:
    """The input of `size_gb` GB: the 1 GB machine-mix corpus, or that corpus repeated (a Huffman
    coder and pigz --huffman have no match finder, so repetition does not flatter either). Returns
    (path, manifest of the 1 GB corpus, whether the caller should delete the file afterwards)."""
    one_gb, manifest = corpora.build(corpora.MACHINE_MIX, GB)
    if size_gb == 1:
        return one_gb, manifest, False
    path = work_dir / f"input-{size_gb}GB.bin"
    work_dir.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        for _ in range(size_gb):
            with open(one_gb, "rb") as src:
                shutil.copyfileobj(src, out, 2**24)
    return path, manifest, True


@dataclass
class Case:
    tool: str
    workers: int
    size_gb: int
    original_size: int
    compressed_size: int = 0
    compress: list[RunStats] = field(default_factory=list)
    decompress: list[RunStats] = field(default_factory=list)

    def median(self, phase: str, key: str = "wall") -> float:
        return statistics.median(getattr(s, key) for s in getattr(self, phase))

    def peak(self, phase: str, key: str) -> int:
        return max(getattr(s, key) for s in getattr(self, phase))


def run_case(tool: Tool, workers: int, src: Path, size_gb: int, repeats: int, work_dir: Path,
             source_sha: str) -> Case:
    case = Case(tool.name, workers, size_gb, src.stat().st_size)
    packed, unpacked = work_dir / f"packed{tool.suffix}", work_dir / "unpacked.bin"
    try:
        for round_index in range(repeats):
            case.compress.append(run_watched(tool.compress(src, packed, workers)))
            case.compressed_size = packed.stat().st_size
            case.decompress.append(run_watched(tool.decompress(packed, unpacked, workers)))
            if round_index == 0 and sha256_of(unpacked) != source_sha:
                raise AssertionError(f"{tool.name} with {workers} workers did not round-trip {src}")
            unpacked.unlink()
            packed.unlink()
            print(f"  {tool.name} ×{workers}: compress {case.compress[-1].wall:.1f} s, "
                  f"decompress {case.decompress[-1].wall:.1f} s", file=sys.stderr, flush=True)
    finally:
        # Also the side files a tool writes next to its output (the pipeline's .meta.json).
        for path in [*work_dir.glob(packed.name + "*"), *work_dir.glob(unpacked.name + "*")]:
            path.unlink(missing_ok=True)
    return case


def warm_up(tools: list[Tool], src: Path, work_dir: Path, size: int = 2**20) -> None:
    """One untimed round trip of a small head of the input per tool, so that a JIT compile (numba
    rebuilding its on-disk cache after a codec change) or a cold page cache is not timed."""
    sample = work_dir / "warm-up.bin"
    with open(src, "rb") as f:
        sample.write_bytes(f.read(size))
    print("warm-up:", file=sys.stderr, flush=True)
    try:
        for tool in tools:
            run_case(tool, 1, sample, 0, 1, work_dir, sha256_of(sample))
    finally:
        sample.unlink(missing_ok=True)


def run_startup(tool: Tool, src: Path, workers: int, repeats: int, work_dir: Path) -> Case:
    """The start-up case: `tool` (startup_tool) on the first STARTUP_INPUT_SIZE bytes of `src`."""
    sample = work_dir / "start-up.bin"
    with open(src, "rb") as f:
        sample.write_bytes(f.read(STARTUP_INPUT_SIZE))
    try:
        return run_case(tool, workers, sample, 0, repeats, work_dir, sha256_of(sample))
    finally:
        sample.unlink(missing_ok=True)


def run_benchmark(sizes_gb: list[int], workers_list: list[int], tools: list[Tool], repeats: int,
                  work_dir: Path = WORK_DIR, given_input: Path | None = None,
                  startup: Tool | None = None) -> tuple[list[Case], dict]:
    """Every tool × worker count × input size; `given_input` replaces the built inputs (small runs).
    With `startup`, also that tool's fixed cost on a small head of the first input (STARTUP)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    manifest: dict = {}
    for size_gb in sizes_gb:
        if given_input is None:
            src, manifest, delete_after = input_file(size_gb, work_dir)
        else:
            src, delete_after = given_input, False
            manifest = {"description": f"given file {given_input}", "size": given_input.stat().st_size}
        try:
            source_sha = sha256_of(src)
            print(f"{src}: {src.stat().st_size:,} bytes", file=sys.stderr, flush=True)
            warm_up(tools, src, work_dir)
            if startup is not None and not any(c.tool == startup.name for c in cases):
                cases.append(run_startup(startup, src, max(workers_list), repeats, work_dir))
            for workers in workers_list:
                for tool in tools:
                    cases.append(run_case(tool, workers, src, size_gb, repeats, work_dir, source_sha))
        finally:
            if delete_after:
                src.unlink(missing_ok=True)
    return cases, manifest


# --- the report ----------------------------------------------------------------------------------

def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n else "–"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _find(cases: list[Case], tool: str, workers: int, size_gb: int) -> Case | None:
    return next((c for c in cases if c.tool == tool and c.workers == workers and c.size_gb == size_gb),
                None)


OUR_TOOLS = ("dcas", "beam pipeline")


def target_lines(cases: list[Case], tool: str = "dcas", size_gb: int = 1, workers: int = 2) -> list[str]:
    """Rows of the targets table for one of our tools, for whichever comparisons the run has."""
    ours, pigz = _find(cases, tool, workers, size_gb), _find(cases, PIGZ, workers, size_gb)
    lines = []
    if ours and pigz:
        c = ours.median("compress") / pigz.median("compress")
        d = ours.median("decompress") / pigz.median("decompress")
        s = ours.compressed_size / pigz.compressed_size
        lines += [f"| {tool}: compress time ÷ pigz --huffman -p {workers}'s | ≤ {TARGET_COMPRESS_VS_PIGZ:.2f} "
                  f"| {c:.2f} | {_met(c <= TARGET_COMPRESS_VS_PIGZ)} |",
                  f"| {tool}: decompress time ÷ pigz -d's | ≤ {TARGET_DECOMPRESS_VS_UNPIGZ:.2f} | {d:.2f} | "
                  f"{_met(d <= TARGET_DECOMPRESS_VS_UNPIGZ)} |",
                  f"| {tool}: compressed size ÷ pigz's | ≤ {TARGET_SIZE_VS_PIGZ:.2f} | {s:.4f} | "
                  f"{_met(s <= TARGET_SIZE_VS_PIGZ)} |"]
    synced = _find(cases, PIGZ_SYNCED, workers, size_gb)
    if ours and synced:
        for phase in ("compress", "decompress"):
            x = ours.median(phase) / synced.median(phase)
            lines.append(f"| context: {tool} {phase} time ÷ {PIGZ_SYNCED}'s | – | {x:.2f} | |")
    one = _find(cases, tool, 1, size_gb)
    startup = next((c for c in cases if c.tool == STARTUP), None)
    if ours and one and workers == 2:
        for phase in ("compress", "decompress"):
            x = one.median(phase) / ours.median(phase)
            lines.append(f"| {tool} {phase}: time with 1 worker ÷ with 2 | ≥ {TARGET_SCALING:.1f} | "
                         f"{x:.2f} | {_met(x >= TARGET_SCALING)} |")
            if startup:
                fixed = startup.median(phase)
                beyond = (one.median(phase) - fixed) / max(ours.median(phase) - fixed, 1e-9)
                lines.append(f"| context: {tool} {phase}, the same beyond the {fixed:.1f} s start-up | – | "
                             f"{beyond:.2f} | |")
    big = max((c.size_gb for c in cases), default=size_gb)
    ours_big = _find(cases, tool, workers, big)
    if ours and ours_big and big > size_gb:
        for phase in ("compress", "decompress"):
            key = "peak_rss_worker" if ours.peak(phase, "peak_rss_worker") else "peak_rss_root"
            g = ours_big.peak(phase, key) / ours.peak(phase, key)
            lines.append(f"| {tool} {phase}: peak RSS per worker at {big} GB ÷ at {size_gb} GB | "
                         f"≤ {TARGET_MEMORY_GROWTH:.2f} | {g:.2f} | {_met(g <= TARGET_MEMORY_GROWTH)} |")
    return lines


def render_markdown(cases: list[Case], run: dict, manifest: dict, worker_flag: list[str] | None) -> str:
    v = ", ".join(f"{k} {val}" for k, val in run["versions"].items())
    load = " → ".join(f"{a[0]:.1f}" for a in (run["load_before"], run.get("load_after", run["load_before"])))
    pigz_version = run.get("pigz", "pigz")
    lines = [
        f"Run {run['date']}, commit `{run['commit']}`, {run['nproc']} × {run['cpu']}; {v}; {pigz_version}.",
        f"{run['repeats']} rounds, medians of wall-clock time; 1-minute load average {load}.",
        f"Input: {manifest.get('description', '')}"
        + (f" ({manifest['files']} files, sha256 `{manifest['sha256'][:16]}…`); larger sizes repeat it."
           if "sha256" in manifest else "."),
    ]
    if worker_flag is None and any(c.tool == "dcas" for c in cases):
        lines.append("**`dcas` had no worker option in this run: every dcas row ran the same serial "
                     "command, so its 1- and 2-worker rows measure the same thing.**")
    lines += ["",
              "| size | tool | workers | compress s | decompress s | compressed bytes | ratio | "
              "CPU s (c / d) | peak RSS: main / largest worker / sum (c) | same (d) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for c in cases:
        mem = {phase: f"{_mib(c.peak(phase, 'peak_rss_root'))} / {_mib(c.peak(phase, 'peak_rss_worker'))} / "
               f"{_mib(c.peak(phase, 'peak_rss_sum'))}" for phase in ("compress", "decompress")}
        lines.append(
            f"| {c.original_size / 1e9:.2f} GB | {c.tool} | {c.workers} | {c.median('compress'):.1f} | "
            f"{c.median('decompress'):.1f} | {c.compressed_size:,} | {c.compressed_size / c.original_size:.2%} | "
            f"{c.median('compress', 'cpu'):.1f} / {c.median('decompress', 'cpu'):.1f} | "
            f"{mem['compress']} | {mem['decompress']} |")
    targets = [line for tool in OUR_TOOLS for line in target_lines(cases, tool)]
    if targets:
        lines += ["", "| target | goal | measured | |", "|---|---|---|---|", *targets]
    return "\n".join(lines) + "\n"


def pigz_version() -> str:
    try:
        proc = subprocess.run(["pigz", "--version"], capture_output=True, text=True)
    except FileNotFoundError:
        return "pigz not installed"
    return (proc.stdout or proc.stderr).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1", help="input sizes in GB, comma-separated (e.g. 1,4)")
    parser.add_argument("--workers", default="2,1", help="worker counts, comma-separated")
    parser.add_argument("--tools", default="pigz,pigz-sync,dcas",
                        help="comma-separated: pigz, pigz-sync (pigz then sync FILE), dcas, beam "
                        "(python -m pipelines.batch directly)")
    parser.add_argument("--no-startup", action="store_true",
                        help=f"skip the start-up case ({STARTUP})")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--input", type=Path, help="benchmark this file instead of the built 1 GB input")
    args = parser.parse_args(argv)

    worker_flag = dcas_worker_flag()
    available = {"pigz": pigz_tool(), "pigz-sync": pigz_synced_tool(), "dcas": dcas_tool(worker_flag),
                 "beam": beam_pipeline_tool()}
    tools = [available[name] for name in args.tools.split(",")]
    startup = None if args.no_startup or "dcas" not in args.tools.split(",") else startup_tool(worker_flag)
    if "pigz" in args.tools and shutil.which("pigz") is None:
        parser.error("pigz is not installed: run `make bench-e2e`, which installs Debian's pigz")
    run = {**conditions(), "repeats": args.repeats, "pigz": pigz_version()}
    cases, manifest = run_benchmark([int(s) for s in args.sizes.split(",")],
                                    [int(w) for w in args.workers.split(",")], tools, args.repeats,
                                    given_input=args.input, startup=startup)
    run["load_after"] = os.getloadavg()
    block = render_markdown(cases, run, corpora.summary(manifest), worker_flag)
    print(block)
    (OUT_DIR / "e2e.json").write_text(
        json.dumps({"run": run, "cases": [asdict(c) for c in cases]}, indent=1) + "\n")
    if not args.no_docs:
        write_docs_section("e2e-benchmark", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
