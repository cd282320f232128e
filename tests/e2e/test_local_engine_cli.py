"""`dcas` on local files and pipes runs the in-process engine: no Beam, bounded memory, clean stops."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from samples import sample_text  # tests/ is on sys.path (conftest dir)

import codec

# Not resolved: run from a copy of the tree, the copy's code is what gets tested.
REPO = Path(__file__).absolute().parent.parent.parent
MiB = 2**20


def env() -> dict:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    environment.pop("DCAS_DEBUG", None)
    return environment


def dcas(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=cwd, input=stdin,
                          capture_output=True, env=env(), timeout=300)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp") or p.name == ".dcas-tmp")


def one_error_line(result) -> str:
    stderr = result.stderr.decode() if isinstance(result.stderr, bytes) else result.stderr
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("dcas: error: ")
    return stderr.strip()


def mixed_file(path: Path, size: int) -> bytes:
    """Text and incompressible stretches, repeated: cheap to make at any size."""
    unit = sample_text(3 * MiB) + np.random.default_rng(5).bytes(MiB)
    data = (unit * (size // len(unit) + 1))[:size]
    path.write_bytes(data)
    return data


# Runs `dcas ARGS` and says whether apache_beam was ever imported in that process.
_BEAM_PROBE = """
import sys
from services import cli
status = cli.main(sys.argv[1:])
print("apache_beam" in sys.modules, file=sys.stderr)
sys.exit(status)
"""


def test_local_files_and_pipes_never_import_beam(tmp_path: Path):
    data = mixed_file(tmp_path / "in.bin", 300_000)
    runs = [
        (["compress", "in.bin", "-o", "a.dcz", "-q"], None),
        (["decompress", "a.dcz", "-o", "a.out", "-q"], None),
        (["compress", "-", "-o", "-", "--chunk-size", "64K", "-q"], data),
        (["compress", "in.bin", "-o", "b.dcz", "--engine", "local", "--threads", "3", "-q"], None),
        (["compress", "a.out", "-o", "a.dcz", "-f", "-q"], None),  # a pair replaced, metadata and all
    ]
    for args, stdin in runs:
        result = subprocess.run([sys.executable, "-c", _BEAM_PROBE, *args], cwd=tmp_path, input=stdin,
                                capture_output=True, env=env(), timeout=300)
        assert result.returncode == 0, result.stderr
        assert result.stderr.decode().strip() == "False", args
    assert (tmp_path / "a.out").read_bytes() == data
    # The probe can tell: the pipeline, when asked for, does import Beam.
    result = subprocess.run([sys.executable, "-c", _BEAM_PROBE, "compress", "in.bin", "-o", "c.dcz",
                             "--engine", "beam", "-q"], cwd=tmp_path, capture_output=True, env=env(),
                            timeout=300)
    assert result.returncode == 0 and result.stderr.decode().strip().endswith("True")


# Runs `dcas ARGS` as the `dcas` program and prints, at exit: whether the collector was off while
# services.cli was imported, whether it is on again, the objects frozen and those it still tracks.
_GC_PROBE = """
import atexit, gc, sys
sys.argv[0] = "dcas"
from services import cli
off_while_importing = not gc.isenabled()
atexit.register(lambda: print(off_while_importing, gc.isenabled(), gc.get_freeze_count(), len(gc.get_objects()),
                              file=sys.stderr))
sys.exit(cli.main(sys.argv[1:]))
"""


def test_the_program_imports_without_the_collector_and_leaves_it_almost_nothing_to_traverse_at_exit(
        tmp_path: Path):
    data = mixed_file(tmp_path / "in.bin", 300_000)
    for args in (["compress", "in.bin", "-o", "a.dcz", "-q"], ["decompress", "a.dcz", "-o", "a.out", "-q"]):
        result = subprocess.run([sys.executable, "-c", _GC_PROBE, *args], cwd=tmp_path, capture_output=True,
                                env=env(), timeout=300)
        assert result.returncode == 0, result.stderr
        off_while_importing, on_again, frozen, tracked = result.stderr.decode().split()
        assert (off_while_importing, on_again) == ("True", "True"), args
        # numba's objects, made once, are frozen: the shutdown's collections skip them (~0.25 s)
        assert 10 * int(tracked) < int(frozen), args
    assert (tmp_path / "a.out").read_bytes() == data


# Runs `dcas ARGS` and prints how often numba set up its target context (BaseContext.refresh: the
# imports and registries its compiler needs, ~0.1 s the first time).
_REFRESH_PROBE = """
import sys
from numba.core import base
calls = []
original = base.BaseContext.refresh
def counted(self):
    calls.append(type(self).__name__)
    return original(self)
base.BaseContext.refresh = counted
from services import cli
status = cli.main(sys.argv[1:])
print(len(calls), file=sys.stderr)
sys.exit(status)
"""


def test_kernels_loaded_from_numbas_cache_skip_the_set_up_only_its_compiler_needs(tmp_path: Path):
    data = mixed_file(tmp_path / "in.bin", 300_000)
    runs = [["compress", "in.bin", "-o", "a.dcz", "-f", "-q", "--threads", "2"],
            ["decompress", "a.dcz", "-o", "a.out", "-f", "-q", "--threads", "2"]]
    for args in runs:
        refreshes = []
        for _ in range(2):  # the first run may compile and write the cache; the second loads from it
            result = subprocess.run([sys.executable, "-c", _REFRESH_PROBE, *args], cwd=tmp_path,
                                    capture_output=True, env=env(), timeout=300)
            assert result.returncode == 0, result.stderr
            refreshes.append(int(result.stderr.decode().split()[-1]))
        assert refreshes[1] == 0, (args, refreshes)
    assert (tmp_path / "a.out").read_bytes() == data


def test_replacing_a_pipeline_pair_with_force_writes_the_metadata_of_the_new_container(tmp_path: Path):
    import json
    (tmp_path / "old.txt").write_bytes(sample_text(200_000))
    new = mixed_file(tmp_path / "new.bin", 700_000)
    for args in (["old.txt", "-o", "out.dcz"], ["new.bin", "-o", "beam.dcz"]):
        result = dcas("compress", *args, "--chunk-size", "64K", "--engine", "beam", "-q", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.dcz.meta.json").exists()

    result = dcas("compress", "new.bin", "-o", "out.dcz", "--chunk-size", "64K", "-f", "-q", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    container = (tmp_path / "out.dcz").read_bytes()
    assert codec.decode(container) == new
    meta = json.loads((tmp_path / "out.dcz.meta.json").read_text())
    assert meta["cp_size"] == len(container) and meta["og_size"] == len(new)
    info = json.loads(dcas("info", "out.dcz", cwd=tmp_path).stdout)
    assert meta["checksums"]["content"] == info["content_crc32c"]
    assert meta["checksums"]["chunks"] == [entry["crc32c"] for entry in info["entries"]]
    # The same description the pipeline writes for the same input, but for where and how long.
    pipeline_meta = json.loads((tmp_path / "beam.dcz.meta.json").read_text())
    assert set(meta) == set(pipeline_meta)
    ignored = {"container", "timings"}
    assert {k: v for k, v in meta.items() if k not in ignored} == {
        k: v for k, v in pipeline_meta.items() if k not in ignored}
    assert meta["container"] == "out.dcz" and set(meta["timings"]) == set(pipeline_meta["timings"])
    assert leftovers(tmp_path) == []


def test_a_pipe_replacing_a_container_with_force_takes_its_stale_metadata_away(tmp_path: Path):
    (tmp_path / "old.txt").write_bytes(sample_text(100_000))
    assert dcas("compress", "old.txt", "-o", "out.dcz", "-q", cwd=tmp_path).returncode == 0
    assert (tmp_path / "out.dcz.meta.json").exists()  # the in-process engine wrote it too
    new = sample_text(50_000)[::-1]

    result = dcas("compress", "-", "-o", "out.dcz", "-f", "-q", cwd=tmp_path, stdin=new)

    assert result.returncode == 0, result.stderr
    assert codec.decode((tmp_path / "out.dcz").read_bytes()) == new
    assert not (tmp_path / "out.dcz.meta.json").exists()
    assert leftovers(tmp_path) == []


def test_metadata_left_without_its_container_is_named_when_it_stops_a_run_without_force(tmp_path: Path):
    (tmp_path / "in.txt").write_bytes(sample_text(10_000))
    (tmp_path / "out.dcz.meta.json").write_text('{"old": true}')

    result = dcas("compress", "in.txt", "-o", "out.dcz", "-q", cwd=tmp_path)

    assert result.returncode != 0
    assert one_error_line(result) == ("dcas: error: output file already exists: out.dcz.meta.json "
                                     "(use --force to overwrite)")
    assert not (tmp_path / "out.dcz").exists() and leftovers(tmp_path) == []


def test_every_thread_count_writes_the_same_container_from_a_file_and_round_trips(tmp_path: Path):
    data = mixed_file(tmp_path / "in.bin", 2 * MiB + 17)
    outputs = set()
    for threads in ("1", "2", "3", "8"):
        result = dcas("compress", "in.bin", "-o", f"{threads}.dcz", "--chunk-size", "64K",
                      "--threads", threads, "-q", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        outputs.add((tmp_path / f"{threads}.dcz").read_bytes())
        result = dcas("decompress", f"{threads}.dcz", "-o", f"{threads}.out", "--threads", threads, "-q",
                      cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / f"{threads}.out").read_bytes() == data
    assert len(outputs) == 1


def test_engine_flags_that_cannot_go_together_are_one_line_errors(tmp_path: Path):
    (tmp_path / "in.bin").write_bytes(b"hello")
    for args in (["--engine", "local", "--workers", "2"], ["--engine", "beam", "--threads", "2"],
                 ["--threads", "0"], ["--engine", "fast"]):
        result = dcas("compress", "in.bin", "-o", "x.dcz", *args, cwd=tmp_path)
        assert result.returncode in (1, 2), args
        one_error_line(result)
        assert not (tmp_path / "x.dcz").exists()
    result = dcas("compress", "-", "-o", "x.dcz", "--engine", "beam", cwd=tmp_path, stdin=b"hello")
    assert result.returncode == 1 and "pipe" in one_error_line(result)


def peak_rss_kib(args: list[str], cwd: Path) -> int:
    """Peak resident memory of `dcas ARGS` run as a child of a fresh interpreter."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    result = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "services.cli", *args],
                            cwd=cwd, capture_output=True, env=env(), timeout=300, check=True)
    return int(result.stdout)


@pytest.mark.timeout(300)
def test_memory_grows_with_threads_and_chunk_size_not_with_the_input(tmp_path: Path):
    (tmp_path / "tiny").write_bytes(b"hello\n")
    mixed_file(tmp_path / "big", 160 * MiB)
    chunk, threads = 256 * 1024, 2
    flags = ["--chunk-size", str(chunk), "--threads", str(threads), "-q", "-f"]
    base = peak_rss_kib(["compress", "tiny", "-o", "tiny.dcz", *flags], tmp_path)
    grown = peak_rss_kib(["compress", "big", "-o", "big.dcz", *flags], tmp_path) - base
    assert grown * 1024 <= 64 * MiB + (threads + 2) * chunk, grown
    base = peak_rss_kib(["decompress", "tiny.dcz", "-o", "tiny.out", *flags[2:]], tmp_path)
    grown = peak_rss_kib(["decompress", "big.dcz", "-o", "big.out", *flags[2:]], tmp_path) - base
    assert grown * 1024 <= 64 * MiB + (threads + 2) * chunk, grown


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str = "2m"):
    directory.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_full_disk_is_one_line_and_leaves_nothing_on_it(tmp_path: Path, threads: str):
    data = mixed_file(tmp_path / "in.bin", 6 * MiB)
    packed = codec.encode(data, chunk_size=256 * 1024)
    (tmp_path / "in.dcz").write_bytes(packed)
    with small_tmpfs(tmp_path / "full") as full:
        # Compress cannot know its output size in advance: the disk fills while workers write.
        result = dcas("compress", "in.bin", "-o", str(full / "out.dcz"), "--chunk-size", "256K",
                      "--threads", threads, cwd=tmp_path)
        assert result.returncode == 1
        assert one_error_line(result).startswith("dcas: error: No space left on device")
        assert list(full.iterdir()) == []
        # Decompress knows it from the seek table and refuses before writing anything.
        result = dcas("decompress", "in.dcz", "-o", str(full / "out.bin"), "--threads", threads, cwd=tmp_path)
        assert result.returncode == 1
        assert "are free in" in one_error_line(result) and "nothing was written" in one_error_line(result)
        assert list(full.iterdir()) == []


def interrupt_when(proc: subprocess.Popen, started, timeout: float = 60) -> tuple[int, str, float]:
    """SIGINT once `started()` is true; returns (exit status, stderr, seconds from signal to exit)."""
    deadline = time.monotonic() + timeout
    while not started() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "dcas finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=30)
    return proc.returncode, stderr.decode(), time.monotonic() - sent


def feed_forever(proc: subprocess.Popen, data: bytes) -> threading.Thread:
    def feed():
        with contextlib.suppress(OSError, ValueError):
            while True:
                proc.stdin.write(data)
    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("threads", ["1", "2"])
def test_ctrl_c_while_workers_compress_a_stream_stops_promptly_and_leaves_nothing(tmp_path: Path, threads):
    block = sample_text(MiB)
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "compress", "-", "-o", "cut.dcz",
                             "--chunk-size", "256K", "--threads", threads], cwd=tmp_path,
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    try:
        feed_forever(proc, block)

        def coding() -> bool:  # frames are reaching the temp output
            return any(p.stat().st_size > MiB for p in tmp_path.glob("*.tmp"))
        status, stderr, seconds = interrupt_when(proc, coding)
    finally:
        proc.kill()
    assert status == 130
    assert stderr.strip() == "dcas: error: interrupted"
    assert seconds < 10
    assert not (tmp_path / "cut.dcz").exists() and leftovers(tmp_path) == []


def test_sigterm_cleans_up_like_ctrl_c_and_exits_143(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "compress", "-", "-o", "cut.dcz",
                             "--chunk-size", "256K", "--threads", "2"], cwd=tmp_path,
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    try:
        feed_forever(proc, sample_text(MiB))
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size > MiB for p in tmp_path.glob("*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143
    assert stderr.decode().strip() == "dcas: error: terminated"
    assert not (tmp_path / "cut.dcz").exists() and leftovers(tmp_path) == []


@pytest.mark.timeout(300)
def test_ctrl_c_while_workers_decompress_a_file_in_place_stops_promptly_and_leaves_nothing(tmp_path: Path):
    data = mixed_file(tmp_path / "big", 256 * MiB)
    with open(tmp_path / "big", "rb") as src, open(tmp_path / "big.dcz", "wb") as dst:
        codec.compress_stream(src, dst, chunk_size=MiB, threads=2)
    del data
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "decompress", "big.dcz", "-o", "cut",
                             "--threads", "2"], cwd=tmp_path, stderr=subprocess.PIPE, env=env())
    try:
        status, stderr, seconds = interrupt_when(proc, lambda: bool(leftovers(tmp_path)))
    finally:
        proc.kill()
    assert status == 130
    assert stderr.strip() == "dcas: error: interrupted"
    assert seconds < 10
    assert not (tmp_path / "cut").exists() and leftovers(tmp_path) == []
