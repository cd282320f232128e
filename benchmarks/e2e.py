"""End-to-end benchmark: `dcas` on 1 GB of real data (a local file, a pipe) against pigz with the same durability."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import corpora, io_bytes
from benchmarks.run import OUT_DIR, conditions, write_docs_section

GB = 10**9  # the input: 1 GB of real data (the machine holds a little more than that)
MiB = 2**20
WORK_DIR = OUT_DIR / "e2e"
THREADS = 2  # the machine's cores; pigz gets as many
CHUNK_SIZE = 4 * MiB  # dcas's default

# Targets from the in-process engine issue: our time / pigz's, at most, unless said otherwise.
TARGET_COMPRESS = 0.5  # dcas compress --threads 2 vs pigz -H -p 2, both fsynced
TARGET_DECOMPRESS = 0.5  # dcas decompress vs pigz -d, both fsynced
TARGET_PIPE = 0.6  # cat | dcas compress - -o - > out vs cat | pigz -H -p 2 > out, both synced
TARGET_SCALING = 1.7  # compress time with 1 thread / with 2, at least
MEMORY_ALLOWANCE = 64 * MiB + (THREADS + 2) * CHUNK_SIZE  # peak RSS above the 6-byte run's
TARGET_BEAM_COMPRESS_PER_GB = 0.7  # (t4 - t1) / 3 of `dcas --engine beam` vs pigz -H -p 2's
TARGET_BEAM_DECOMPRESS_PER_GB = 0.6  # the same vs pigz -d's


# --- the commands, in one place ------------------------------------------------------------------

def dcas_executable() -> str:
    beside_python = Path(sys.executable).parent / "dcas"
    return str(beside_python) if beside_python.exists() else (shutil.which("dcas") or "dcas")


@dataclass(frozen=True)
class Command:
    argv: list[str]
    stdout_path: Path | None = None  # where the command's stdout goes


def dcas(mode: str, src: Path, dst: Path, threads: int = THREADS, *extra: str) -> Command:
    return Command([dcas_executable(), mode, str(src), "-o", str(dst), "-f", "-q",
                    "--threads", str(threads), *extra])


def dcas_beam(mode: str, src: Path, dst: Path, workers: int = THREADS) -> Command:
    return Command([dcas_executable(), mode, str(src), "-o", str(dst), "-f", "-q", "--engine", "beam",
                    "--workers", str(workers)])


def shell(script: str, *args: Path | str) -> Command:
    """`sh -c SCRIPT ARGS`: $0, $1, ... are the arguments (no quoting to get wrong)."""
    return Command(["sh", "-c", script, *map(str, args)])


def pigz_compress(src: Path, dst: Path, threads: int = THREADS) -> Command:
    # Same durability as dcas, which fsyncs its output before renaming it into place.
    return shell('pigz -H -p "$0" -c "$1" > "$2" && sync "$2"', threads, src, dst)


def pigz_decompress(src: Path, dst: Path) -> Command:
    return shell('pigz -d -c "$0" > "$1" && sync "$1"', src, dst)


def dcas_pipe(src: Path, dst: Path, threads: int = THREADS) -> Command:
    return shell('cat "$0" | "$1" compress - -o - -q --threads "$2" > "$3" && sync "$3"',
                 src, dcas_executable(), threads, dst)


def pigz_pipe(src: Path, dst: Path, threads: int = THREADS) -> Command:
    return shell('cat "$0" | pigz -H -p "$1" > "$2" && sync "$2"', src, threads, dst)


# --- running one command and watching its processes ----------------------------------------------

@dataclass
class RunStats:
    wall: float
    cpu: float  # user + system seconds of the command and its descendants
    peak_rss_root: int  # bytes: the high-water mark (VmHWM) of the process we started, as last sampled
    peak_rss_worker: int  # bytes, largest high-water mark sampled among its descendants (0 if none)
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
    """`root` and all its descendants. Walked down from `root` through /proc/PID/task/TID/children
    (a few reads per sample, where scanning every /proc/*/stat cost ~1.7 ms of CPU each time, taken
    from the very cores a 2-thread run is measured on); by parent pids where the kernel lacks them."""
    if not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
        return _process_tree_by_parents(root)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # gone meanwhile
        for tid in threads:
            children = _read_proc(pid, f"task/{tid}/children")
            todo.extend(int(child) for child in (children or "").split())
    return tree


def _process_tree_by_parents(root: int) -> list[int]:
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
    exact peak, as of the last sample that saw it) and the sum of VmRSS across the tree; CPU time
    (the command's and its descendants') comes from wait4, and the wall time from a thread blocked
    in it, so that it ends when the command does, not at the next sample. Each sample costs ~1 ms
    of CPU, taken from the cores a 2-thread run is measured on: hence 0.1 s, not less."""
    hwm: dict[int, int] = {}
    peak_sum, seen = 0, set()
    stdout = open(command.stdout_path, "wb") if command.stdout_path else subprocess.DEVNULL
    ended = threading.Event()
    outcome: list = []
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(command.argv, stdout=stdout, stderr=stderr)

            def wait() -> None:
                _, status, usage = os.wait4(proc.pid, 0)
                outcome.extend((time.perf_counter() - start, status, usage))
                ended.set()

            waiter = threading.Thread(target=wait, daemon=True)
            waiter.start()
            while not ended.is_set():
                total = 0
                for child in process_tree(proc.pid):
                    text = _read_proc(child, "status")
                    if text is None:
                        continue  # gone meanwhile (a pid is not reused within microseconds)
                    seen.add(child)
                    hwm[child] = max(hwm.get(child, 0), _status_kib(text, "VmHWM"))
                    total += _status_kib(text, "VmRSS")
                peak_sum = max(peak_sum, total)
                ended.wait(interval)
            waiter.join()
            wall, status, usage = outcome
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait
        finally:
            if command.stdout_path:
                stdout.close()
        if proc.returncode != 0:
            stderr.seek(0)
            message = stderr.read().decode(errors="replace").strip()[-800:]
            raise RuntimeError(f"{' '.join(command.argv)} failed ({proc.returncode}): {message}")
    workers = [v for child, v in hwm.items() if child != proc.pid]
    # wait4's ru_maxrss would be exact, but it also counts the forked copy of this (large) process
    # before the exec: the sampled high-water mark of the command's own image is what is wanted.
    root_peak = (hwm.get(proc.pid) or usage.ru_maxrss) * 1024
    return RunStats(wall, usage.ru_utime + usage.ru_stime, root_peak, max(workers, default=0) * 1024,
                    peak_sum * 1024, len(seen))


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
        # On disk before the first round: its writeback would otherwise fall on the first commands.
        out.flush()
        os.fsync(out.fileno())
    return path, manifest, True


@dataclass
class Step:
    """One command of a round: `make(src, work_dir)` builds it; `output` names the file it writes
    (relative to the work dir), `check` whether that output must decode to the input, `reads` the
    outputs of earlier steps it reads, and `reads_source` whether it reads the round's input."""
    name: str
    make: object  # Callable[[Path, Path], Command]
    output: str
    check: str = ""  # "" nothing, "same-as-input": the output must equal the input
    reads: tuple[str, ...] = ()
    reads_source: bool = True


@dataclass
class Result:
    name: str
    size: int
    runs: list[RunStats] = field(default_factory=list)
    output_size: int = 0

    def median(self, key: str = "wall") -> float:
        return statistics.median(getattr(r, key) for r in self.runs)

    def peak(self, key: str = "peak_rss_root") -> int:
        return max(getattr(r, key) for r in self.runs)

    def largest_process(self) -> int:
        """The largest peak RSS of any one process of the command (for `sh -c` lines, the tools)."""
        return max(self.peak("peak_rss_root"), self.peak("peak_rss_worker"))


# Names of the steps, used by the targets.
C2, C1, PIGZ_C = "dcas compress, 2 threads", "dcas compress, 1 thread", "pigz -H -p 2, then sync"
D2, D1, PIGZ_D = "dcas decompress, 2 threads", "dcas decompress, 1 thread", "pigz -d, then sync"
PIPE, PIGZ_PIPE = "cat | dcas compress - -o - (2 threads), then sync", "cat | pigz -H -p 2, then sync"
TINY_C, TINY_D = "dcas compress, 6-byte file", "dcas decompress, 6-byte file"
BEAM_C, BEAM_D = "dcas --engine beam --workers 2 compress", "dcas --engine beam --workers 2 decompress"


def local_steps(tiny: Path) -> list[Step]:
    """One interleaved round: every compressor, then every decompressor of the files just written."""
    return [
        Step(C2, lambda src, w: dcas("compress", src, w / "c2.dcz"), "c2.dcz"),
        Step(PIGZ_C, lambda src, w: pigz_compress(src, w / "c.gz"), "c.gz"),
        Step(C1, lambda src, w: dcas("compress", src, w / "c1.dcz", 1), "c1.dcz"),
        Step(PIPE, lambda src, w: dcas_pipe(src, w / "pipe.dcz"), "pipe.dcz"),
        Step(PIGZ_PIPE, lambda src, w: pigz_pipe(src, w / "pipe.gz"), "pipe.gz"),
        Step(D2, lambda src, w: dcas("decompress", w / "c2.dcz", w / "d2.bin"), "d2.bin", "same-as-input",
             ("c2.dcz",), reads_source=False),
        Step(PIGZ_D, lambda src, w: pigz_decompress(w / "c.gz", w / "d.bin"), "d.bin", "same-as-input", ("c.gz",),
             reads_source=False),
        Step(D1, lambda src, w: dcas("decompress", w / "c1.dcz", w / "d1.bin", 1), "d1.bin", "same-as-input",
             ("c1.dcz",), reads_source=False),
        Step(TINY_C, lambda src, w: dcas("compress", tiny, w / "tiny.dcz"), "tiny.dcz", reads_source=False),
        Step(TINY_D, lambda src, w: dcas("decompress", w / "tiny.dcz", w / "tiny.out"), "tiny.out", "", ("tiny.dcz",),
             reads_source=False),
    ]


def beam_steps() -> list[Step]:
    return [
        Step(BEAM_C, lambda src, w: dcas_beam("compress", src, w / "b.dcz"), "b.dcz"),
        Step(PIGZ_C, lambda src, w: pigz_compress(src, w / "c.gz"), "c.gz"),
        Step(BEAM_D, lambda src, w: dcas_beam("decompress", w / "b.dcz", w / "bd.bin"), "bd.bin",
             "same-as-input", ("b.dcz",), reads_source=False),
        Step(PIGZ_D, lambda src, w: pigz_decompress(w / "c.gz", w / "d.bin"), "d.bin", "same-as-input", ("c.gz",),
             reads_source=False),
    ]


def run_rounds(steps: list[Step], src: Path, repeats: int, work_dir: Path) -> dict[str, Result]:
    """`repeats` rounds of every step in turn (interleaved, so load from others falls on all alike);
    the first round checks every decompressed output against the input. Each output is removed as
    soon as no later step of its round reads it: kept to the end of the round, the 4 GB rounds' files
    (up to 24 GB) filled the page cache, and reclaiming it slowed whichever command came next.
    Between steps, everything is synced, and before each step the files it reads are read once,
    untimed (bring_into_page_cache): every command starts with its input in the page cache."""
    work_dir.mkdir(parents=True, exist_ok=True)
    source_sha = sha256_of(src)
    results = {step.name: Result(step.name, src.stat().st_size) for step in steps}
    try:
        for round_index in range(repeats):
            for index, step in enumerate(steps):
                bring_into_page_cache(([src] if step.reads_source else []) + [work_dir / r for r in step.reads])
                stats = run_watched(step.make(src, work_dir))
                result = results[step.name]
                result.runs.append(stats)
                output = work_dir / step.output
                result.output_size = output.stat().st_size
                if step.check and round_index == 0 and sha256_of(output) != source_sha:
                    raise AssertionError(f"{step.name} did not give back {src}")
                print(f"  round {round_index + 1}: {step.name}: {stats.wall:.2f} s", file=sys.stderr,
                      flush=True)
                if round_index == 0 and step.name == C1:
                    if (work_dir / "c2.dcz").read_bytes() != (work_dir / "c1.dcz").read_bytes():
                        raise AssertionError("1 and 2 threads wrote different containers")
                still_read = {name for later in steps[index + 1:] for name in later.reads}
                for done in steps[:index + 1]:
                    if done.output not in still_read:
                        _remove_output(work_dir, done.output)
                # The root file system here is mounted with `discard`: freeing a file's blocks sends
                # the disk discards at the next journal commit. Committed now, untimed, they do not
                # fall on the next command.
                os.sync()
    finally:
        for step in steps:
            _remove_output(work_dir, step.output)
    return results


def bring_into_page_cache(paths: list[Path], block: int = 8 * MiB) -> None:
    """Reads each file to its end. Why: without it, commands met their inputs in different states.
    dcas writes its containers with direct I/O, so its decompressors read them from the disk while
    pigz -d found its own output cached; and this machine's kernel evicts page-cache pages unused
    for about a minute (DAMON `pageout`), so the first command of a round read part of the input
    from the disk (1.2 of a 2-thread compress's 3.4 s, once) and the next, pigz, did not."""
    buffer = bytearray(block)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass


def _remove_output(work_dir: Path, name: str) -> None:
    for path in work_dir.glob(name + "*"):  # and the pipeline's .meta.json
        path.unlink(missing_ok=True)


def warm_up(src: Path, work_dir: Path, size: int = MiB) -> None:
    """One untimed round trip of a small head of the input, so that a JIT compile (numba rebuilding
    its cache after a codec change) or a cold page cache is not timed; then the input is read once."""
    sample = work_dir / "warm-up.bin"
    work_dir.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as f:
        sample.write_bytes(f.read(size))
    try:
        for command in (dcas("compress", sample, work_dir / "w.dcz"), dcas("decompress", work_dir / "w.dcz",
                                                                         work_dir / "w.bin")):
            run_watched(command)
    finally:
        for name in ("warm-up.bin", "w.dcz", "w.bin"):
            (work_dir / name).unlink(missing_ok=True)
    sha256_of(src)


# --- the report ----------------------------------------------------------------------------------

def _mib(n: int) -> str:
    return f"{n / MiB:,.0f} MiB"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def target_rows(results: dict[str, Result], label: str = "") -> list[str]:
    """The issue's targets, for whichever of them the results hold."""
    rows = []

    def ratio(name: str, ours: str, theirs: str, goal: float, at_most: bool = True) -> None:
        if ours in results and theirs in results:
            x = results[ours].median() / results[theirs].median()
            ok = x <= goal if at_most else x >= goal
            rows.append(f"| {_cell(name)}{label} | {'≤' if at_most else '≥'} {goal:.2f} | {x:.2f} | {_met(ok)} |")
            if at_most:  # on a shared machine the CPU each side used is the steadier figure
                cpu = results[ours].median("cpu") / results[theirs].median("cpu")
                rows.append(f"| context: the same in CPU time{label} | – | {cpu:.2f} | |")

    ratio("local compress, 2 threads: time ÷ pigz -H -p 2 (then sync)", C2, PIGZ_C, TARGET_COMPRESS)
    ratio("local decompress, 2 threads: time ÷ pigz -d (then sync)", D2, PIGZ_D, TARGET_DECOMPRESS)
    ratio("pipe compress: time ÷ cat | pigz -H -p 2 (then sync)", PIPE, PIGZ_PIPE, TARGET_PIPE)
    ratio("compress: time with 1 thread ÷ with 2", C1, C2, TARGET_SCALING, at_most=False)
    if C1 in results and C2 in results:
        # Where a shortfall comes from: CPU the second thread added (1.00: none; more when the two
        # cores contend), and the scaling of the time beyond a 6-byte run's (start-up, exit).
        cpu = results[C2].median("cpu") / results[C1].median("cpu")
        rows.append(f"| context: compress: CPU time with 2 threads ÷ with 1{label} | – | {cpu:.2f} | |")
        if TINY_C in results:
            fixed = results[TINY_C].median()
            beyond = (results[C1].median() - fixed) / (results[C2].median() - fixed)
            rows.append(f"| context: compress: time beyond the 6-byte run's, 1 thread ÷ 2{label} | – | "
                        f"{beyond:.2f} | |")
    if D1 in results and D2 in results:
        x = results[D1].median() / results[D2].median()
        rows.append(f"| context: decompress: time with 1 thread ÷ with 2{label} | – | {x:.2f} | |")
    for big, tiny in ((C2, TINY_C), (D2, TINY_D)):
        if big in results and tiny in results:
            grown = results[big].peak() - results[tiny].peak()
            rows.append(f"| {big}: peak RSS above the 6-byte run's{label} | ≤ {_mib(MEMORY_ALLOWANCE)} | "
                        f"{_mib(grown)} | {_met(grown <= MEMORY_ALLOWANCE)} |")
    return rows


def beam_rows(one: dict[str, Result], four: dict[str, Result]) -> list[str]:
    """Cost per GB beyond start-up, (t4 − t1) / 3, of the pipeline against pigz's."""
    rows = []
    for ours, theirs, goal in ((BEAM_C, PIGZ_C, TARGET_BEAM_COMPRESS_PER_GB),
                               (BEAM_D, PIGZ_D, TARGET_BEAM_DECOMPRESS_PER_GB)):
        if ours in one and ours in four and theirs in one and theirs in four:
            per_gb = (four[ours].median() - one[ours].median()) / 3
            pigz_per_gb = (four[theirs].median() - one[theirs].median()) / 3
            x = per_gb / pigz_per_gb
            rows.append(f"| {ours}: s per GB beyond start-up ÷ {theirs}'s ({per_gb:.2f} ÷ {pigz_per_gb:.2f}) | "
                        f"≤ {goal:.2f} | {x:.2f} | {_met(x <= goal)} |")
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # `cat | pigz` inside a table cell


def result_rows(results: dict[str, Result]) -> list[str]:
    return [f"| {r.size / 1e9:.2f} GB | {_cell(r.name)} | {r.median():.2f} | {r.median('cpu'):.1f} | "
            f"{_mib(r.largest_process())} | {r.output_size:,} |" for r in results.values()]


def render_markdown(sections: list[tuple[str, dict[str, Result]]], run: dict, manifest: dict,
                    extra_rows: list[str] = ()) -> str:
    v = ", ".join(f"{k} {val}" for k, val in run["versions"].items())
    load = " → ".join(f"{a[0]:.1f}" for a in (run["load_before"], run.get("load_after", run["load_before"])))
    lines = [
        f"Run {run['date']}, commit `{run['commit']}`, {run['nproc']} × {run['cpu']}; {v}; {run.get('pigz', 'pigz')}.",
        f"{run['repeats']} interleaved rounds"
        + (f" ({run['big_repeats']} above 1 GB)" if run.get("big_repeats") not in (None, run["repeats"]) else "")
        + f", medians of wall-clock time; 1-minute load average {load}"
        + (f"; {run['note']}" if run.get("note") else "") + ".",
        f"Input: {manifest.get('description', '')}"
        + (f" ({manifest['files']} files, sha256 `{manifest['sha256'][:16]}…`); larger sizes repeat it."
           if "sha256" in manifest else "."),
        "",
        "| input | command | wall s | CPU s | peak RSS (largest process) | output bytes |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for _, results in sections:
        lines += result_rows(results)
    targets = [row for label, results in sections for row in target_rows(results, label)]
    targets += list(extra_rows)
    if targets:
        lines += ["", "| target | goal | measured | |", "|---|---|---|---|", *targets]
    return "\n".join(lines) + "\n"


def pigz_version() -> str:
    try:
        proc = subprocess.run(["pigz", "--version"], capture_output=True, text=True)
    except FileNotFoundError:
        return "pigz not installed"
    return (proc.stdout or proc.stderr).strip()


def save(path: Path, run: dict, manifest: dict, sections: list[tuple[str, dict[str, Result]]]) -> None:
    """The raw figures, which `rerender` reads back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(
        {"run": run, "manifest": manifest,
         "sections": [{"label": label, "results": {k: asdict(v) for k, v in results.items()}}
                      for label, results in sections]}, indent=1) + "\n")


def rerender(path: Path = OUT_DIR / "e2e.json") -> str:
    """The report again from a run's raw figures (after a change to the report alone)."""
    raw = json.loads(path.read_text())
    sections = [(section["label"], {name: Result(r["name"], r["size"], [RunStats(**s) for s in r["runs"]],
                                                 r["output_size"])
                                    for name, r in section["results"].items()})
                for section in raw["sections"]]
    beam = {label: results for label, results in sections if "beam" in label}
    one, four = beam.get(" (1 GB, beam)"), beam.get(" (4 GB, beam)")
    manifest = raw.get("manifest") or corpora.summary(corpora.build(corpora.MACHINE_MIX, GB)[1])
    return render_markdown(sections, raw["run"], manifest, beam_rows(one, four) if one and four else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1", help="input sizes in GB for the local engine, e.g. 1,4")
    parser.add_argument("--beam", action="store_true",
                        help="also the Beam pipeline's cost per GB beyond start-up (runs 1 and 4 GB)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big-repeats", type=int, default=None,
                        help="rounds for inputs above 1 GB (default: --repeats)")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--note", default="", help="a remark for the report's second line")
    parser.add_argument("--input", type=Path, help="benchmark this file instead of the built 1 GB input")
    parser.add_argument("--rerender", action="store_true",
                        help="rewrite the report from benchmarks/out/e2e.json without running anything")
    args = parser.parse_args(argv)
    if args.rerender:
        block = rerender()
        print(block)
        if not args.no_docs:
            write_docs_section("e2e-benchmark", block)
        return 0
    if shutil.which("pigz") is None:
        parser.error("pigz is not installed: run `make bench-e2e`, which installs Debian's pigz")

    run = {**conditions(), "repeats": args.repeats, "big_repeats": args.big_repeats, "pigz": pigz_version(),
           "note": args.note}
    tiny = WORK_DIR / "tiny.txt"
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    tiny.write_bytes(b"hello\n")
    sections, manifest, beam, block = [], {}, {}, ""
    sizes = [int(s) for s in args.sizes.split(",")]
    for size_gb in sorted(set(sizes) | ({1, 4} if args.beam else set())):
        if args.input is not None:
            src, delete_after = args.input, False
            manifest = {"description": f"given file {args.input}", "size": args.input.stat().st_size}
        else:
            src, manifest, delete_after = input_file(size_gb)
        try:
            print(f"{src}: {src.stat().st_size:,} bytes", file=sys.stderr, flush=True)
            warm_up(src, WORK_DIR)
            repeats = args.repeats if size_gb <= 1 or args.big_repeats is None else args.big_repeats
            if size_gb in sizes:
                results = run_rounds(local_steps(tiny), src, repeats, WORK_DIR)
                sections.append((f" ({size_gb} GB)", results))
                block = report(run, manifest, sections, beam, not args.no_docs)
            if args.beam:
                beam[size_gb] = run_rounds(beam_steps(), src, repeats, WORK_DIR)
                sections.append((f" ({size_gb} GB, beam)", beam[size_gb]))
                block = report(run, manifest, sections, beam, not args.no_docs)
                if size_gb == 1:  # what the pipeline reads and writes per input byte (issue 8)
                    print(io_bytes.render(io_bytes.measure(src, WORK_DIR, "beam", THREADS),
                                          f"dcas --engine beam --workers {THREADS}, {size_gb} GB:"),
                          file=sys.stderr, flush=True)
        finally:
            if delete_after:
                src.unlink(missing_ok=True)
        if args.input is not None:
            break
    print(block)
    return 0


def report(run: dict, manifest: dict, sections: list, beam: dict, docs: bool) -> str:
    """Saves and renders what has been measured so far: a long run that is stopped keeps its
    finished sections."""
    run["load_after"] = os.getloadavg()
    manifest = corpora.summary(manifest) if "sha256" in manifest else manifest
    block = render_markdown(sections, run, manifest, beam_rows(beam[1], beam[4]) if 1 in beam and 4 in beam else [])
    save(OUT_DIR / "e2e.json", run, manifest, sections)
    if docs:
        write_docs_section("e2e-benchmark", block)
    return block


if __name__ == "__main__":
    sys.exit(main())
