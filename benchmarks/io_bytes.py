"""Bytes read and written per input byte by one `dcas` run, from the kernel's I/O accounting (/proc/self/io)."""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks import corpora

MiB = 2**20
FIELDS = ("rchar", "wchar", "read_bytes", "write_bytes", "cancelled_write_bytes")


@dataclass(frozen=True)
class IoCounts:
    """What the kernel counted for a process tree: `rchar`/`wchar` every byte passed to read-like
    and write-like calls (copy_file_range included, page cache or not), `write_bytes` what was sent
    towards the disk, less `cancelled_write_bytes` (dirty pages of files removed or truncated before
    they were written back)."""

    rchar: int = 0
    wchar: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    cancelled_write_bytes: int = 0

    def __sub__(self, other: "IoCounts") -> "IoCounts":
        return IoCounts(*(getattr(self, f) - getattr(other, f) for f in FIELDS))

    @property
    def stored(self) -> int:
        """Bytes that reached (or will reach) the disk."""
        return self.write_bytes - self.cancelled_write_bytes


def parse_proc_io(text: str) -> IoCounts:
    """The fields of a /proc/<pid>/io text."""
    values = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return IoCounts(*(int(values.get(f, 0)) for f in FIELDS))


def own_io() -> IoCounts:
    with open("/proc/self/io") as f:
        return parse_proc_io(f.read())


def run_counted(argv: list[str]) -> IoCounts:
    """Runs `argv` to the end and returns what it and all its descendants read and wrote.

    The kernel adds a reaped child's counts (and those of the children it reaped) to its parent's,
    so the difference in this process's own counts around the wait is the command's whole tree,
    threads and worker processes alike, plus the few bytes of the fork itself."""
    before = own_io()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    after = own_io()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()[-800:]}")
    return after - before


def per_input_byte(big: IoCounts, tiny: IoCounts, size: int) -> dict[str, float]:
    """Read and write figures of a run on `size` input bytes beyond those of the same command on a
    tiny input (start-up: imports, numba's cache, Beam's own files), per input byte."""
    extra = big - tiny
    return {"read": extra.rchar / size, "written": extra.wchar / size, "stored": extra.stored / size}


def dcas_command(mode: str, src: Path, dst: Path, engine: str, workers: int) -> list[str]:
    from benchmarks.e2e import dcas_executable
    argv = [dcas_executable(), mode, str(src), "-o", str(dst), "-f", "-q", "--engine", engine]
    return argv + (["--workers", str(workers)] if engine == "beam" else ["--threads", str(workers)])


def measure(src: Path, directory: Path, engine: str = "beam", workers: int = 2) -> list[tuple[str, dict]]:
    """`[(mode, figures)]` for compress then decompress of `src` (figures per byte of each run's
    own input: the original file, then its container), with the output/input ratio for scale.
    Works in a temp folder under `directory`, which it removes."""
    with tempfile.TemporaryDirectory(dir=directory) as work:
        return _measure(src, Path(work), engine, workers)


def _measure(src: Path, work_dir: Path, engine: str, workers: int) -> list[tuple[str, dict]]:
    tiny = work_dir / "tiny.txt"
    tiny.write_bytes(b"hello\n")
    packed, unpacked = work_dir / "io.dcz", work_dir / "io.out"
    rows = []
    for mode, given, out in (("compress", src, packed), ("decompress", packed, unpacked)):
        tiny_in = tiny if mode == "compress" else work_dir / "tiny.dcz"
        tiny_out = work_dir / "tiny.dcz" if mode == "compress" else work_dir / "tiny.out"
        small = run_counted(dcas_command(mode, tiny_in, tiny_out, engine, workers))
        big = run_counted(dcas_command(mode, given, out, engine, workers))
        size = given.stat().st_size
        figures = per_input_byte(big, small, size)
        figures["output/input"] = out.stat().st_size / size
        rows.append((mode, figures))
    return rows


def render(rows: list[tuple[str, dict]], label: str) -> str:
    lines = ["| run | read / input byte | written / input byte | stored (to disk) / input byte | output / input |",
             "|---|---:|---:|---:|---:|"]
    for mode, f in rows:
        lines.append(f"| {label} {mode} | {f['read']:.2f} | {f['written']:.2f} | {f['stored']:.2f} | "
                     f"{f['output/input']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", type=Path, help="file to measure (default: a machine-mix corpus of --size)")
    parser.add_argument("--size", type=int, default=128, help="MiB of the built corpus (default 128)")
    parser.add_argument("--engine", choices=("beam", "local"), default="beam")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    src = args.input or corpora.build(corpora.MACHINE_MIX, args.size * MiB)[0]
    rows = measure(src, src.parent, args.engine, args.workers)  # the input's filesystem, as a user's run
    print(render(rows, f"dcas --engine {args.engine}, {src.stat().st_size / MiB:.0f} MiB:"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
