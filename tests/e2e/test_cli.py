"""Tests of the `dcas` command run as a real process: exit codes, messages, files it leaves behind."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from samples import sample_text  # tests/ is on sys.path (conftest dir)

from codec.container import FRAME_HEADER_SIZE, HEADER_SIZE, crc32c
from services import cli, compression
# Not resolved: run from a copy of the tree, the copy's code is what gets tested.
REPO = Path(__file__).absolute().parent.parent.parent
CHUNK = 64 * 1024


def corrupt(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def leftovers(directory: Path) -> list[str]:
    """Temp files an interrupted or failed run would have left behind (the pipeline's included)."""
    return sorted(p.name for p in directory.iterdir()
                  if p.name.endswith(".tmp") or p.name == ".dcas-tmp")


class FullDiskEngine(compression.StreamEngine):
    """Writes a little, then fails as `write()` does on a full disk (which a test cannot arrange)."""

    def compress(self, src, dst, *, chunk_size, progress):
        dst.write(b"partial output")
        raise OSError(28, "No space left on device")


def dcas(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Runs `python -m services.cli ARGS` (what the `dcas` console script runs) in `cwd`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("DCAS_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=cwd, input=stdin,
                          capture_output=True, env=env, timeout=300)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one stderr line of a failed run, checked to be exactly one line and no traceback."""
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("dcas: error: ")
    return lines[0]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "notes.txt").write_bytes(sample_text(3 * CHUNK + 17, seed=3))
    return tmp_path


@pytest.fixture
def packed(workdir: Path) -> Path:
    # Through stdin, so the streaming codec makes it in a fraction of a pipeline run's time.
    result = dcas("compress", "-", "-o", "notes.txt.dcz", "--chunk-size", "64K", "--quiet",
                  cwd=workdir, stdin=(workdir / "notes.txt").read_bytes())
    assert result.returncode == 0, result.stderr
    return workdir / "notes.txt.dcz"


def test_compress_then_decompress_round_trips_with_default_names(workdir: Path):
    original = (workdir / "notes.txt").read_bytes()
    compressed = dcas("compress", "notes.txt", cwd=workdir)
    assert compressed.returncode == 0, compressed.stderr
    assert (workdir / "notes.txt.dcz").exists()
    summary = compressed.stderr.decode()
    assert summary.startswith("compressed notes.txt -> notes.txt.dcz: ") and "MB/s" in summary
    (workdir / "notes.txt").unlink()
    decompressed = dcas("decompress", "notes.txt.dcz", cwd=workdir)
    assert decompressed.returncode == 0, decompressed.stderr
    assert (workdir / "notes.txt").read_bytes() == original


def test_explicit_output_names_are_used(workdir: Path):
    assert dcas("compress", "notes.txt", "-o", "a.bin", cwd=workdir).returncode == 0
    assert dcas("decompress", "a.bin", "-o", "b.txt", cwd=workdir).returncode == 0
    assert (workdir / "b.txt").read_bytes() == (workdir / "notes.txt").read_bytes()


def test_quiet_compress_prints_nothing(workdir: Path):
    result = dcas("compress", "notes.txt", "-q", cwd=workdir)
    assert result.returncode == 0
    assert result.stdout == b"" and result.stderr == b""


def test_no_progress_bar_is_drawn_when_stderr_is_not_a_terminal(workdir: Path):
    result = dcas("compress", "notes.txt", "--chunk-size", "4K", cwd=workdir)
    assert b"\r" not in result.stderr
    assert len(result.stderr.decode().splitlines()) == 1  # only the summary


def test_progress_bar_is_drawn_when_stderr_is_a_terminal(workdir: Path):
    pty = pytest.importorskip("pty")
    controller, terminal = pty.openpty()
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run([sys.executable, "-m", "services.cli", "compress", "notes.txt",
                               "--chunk-size", "4K"], cwd=workdir, stderr=terminal, env=env,
                              timeout=300)
        os.close(terminal)
        drawn = b""
        while True:
            try:
                part = os.read(controller, 65536)
            except OSError:  # EIO once the terminal side is closed and drained
                break
            if not part:
                break
            drawn += part
    finally:
        os.close(controller)
    assert proc.returncode == 0
    assert b"\r" in drawn and b"100%" in drawn and b"ETA" in drawn
    assert b"compressed notes.txt -> notes.txt.dcz" in drawn


@pytest.mark.parametrize("size, chunks", [("64K", 4), ("64KiB", 4), ("65536", 4), ("1M", 1)])
def test_chunk_size_accepts_suffixes(workdir: Path, size: str, chunks: int):
    # stdin: the parsing is under test, not the engine, and the streaming codec is quicker to start.
    result = dcas("compress", "-", "-o", "notes.txt.dcz", "--chunk-size", size, "-q", cwd=workdir,
                  stdin=(workdir / "notes.txt").read_bytes())
    assert result.returncode == 0
    info = json.loads(dcas("info", "notes.txt.dcz", cwd=workdir).stdout)
    assert info["chunks"] == chunks


@pytest.mark.parametrize("text, size", [("4M", 4 * 2**20), ("4MiB", 4 * 2**20), ("4mb", 4 * 2**20),
                                        ("64K", 65536), ("64k", 65536), ("1G", 2**30), ("100", 100)])
def test_parse_size_reads_binary_suffixes(text: str, size: int):
    assert cli.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "4Q", "-1", "1.5M", "4 MiB extra"])
def test_parse_size_rejects_what_is_not_a_size(text: str):
    with pytest.raises(ValueError):
        cli.parse_size(text)


@pytest.mark.parametrize("size", ["4Q", "0", "2G"])
def test_bad_chunk_size_is_a_usage_error(workdir: Path, size: str):
    result = dcas("compress", "notes.txt", "--chunk-size", size, cwd=workdir)
    assert result.returncode == 2
    assert "--chunk-size" in error_line(result)
    assert not (workdir / "notes.txt.dcz").exists()


@pytest.mark.parametrize("args", [[], ["compress"], ["frobnicate", "x"], ["info"]])
def test_wrong_arguments_are_a_one_line_usage_error(workdir: Path, args: list[str]):
    result = dcas(*args, cwd=workdir)
    assert result.returncode == 2
    error_line(result)


def test_decompress_needs_an_output_name_when_the_input_lacks_dcz(workdir: Path):
    result = dcas("decompress", "notes.txt", cwd=workdir)
    assert result.returncode == 2
    assert "-o" in error_line(result)


def test_missing_input_is_a_one_line_error(workdir: Path):
    result = dcas("compress", "absent.txt", cwd=workdir)
    assert result.returncode == 1
    assert error_line(result) == "dcas: error: input file not found: absent.txt"


def test_directory_input_is_a_one_line_error(workdir: Path):
    (workdir / "folder").mkdir()
    result = dcas("compress", "folder", cwd=workdir)
    assert result.returncode == 1
    assert "is a directory" in error_line(result)
    assert not (workdir / "folder.dcz").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_input_is_a_one_line_error(workdir: Path):
    (workdir / "notes.txt").chmod(0)
    result = dcas("compress", "notes.txt", cwd=workdir)
    assert result.returncode == 1
    assert "cannot read" in error_line(result)


def test_non_container_input_is_a_one_line_format_error(workdir: Path):
    result = dcas("decompress", "notes.txt", "-o", "out.txt", cwd=workdir)
    assert result.returncode == 1
    assert error_line(result).startswith("dcas: error: notes.txt: ")
    assert not (workdir / "out.txt").exists()


def test_existing_output_is_refused_without_force(workdir: Path):
    (workdir / "notes.txt.dcz").write_bytes(b"precious")
    result = dcas("compress", "notes.txt", cwd=workdir)
    assert result.returncode == 1
    assert "--force" in error_line(result)
    assert (workdir / "notes.txt.dcz").read_bytes() == b"precious"


def test_force_overwrites_existing_output(workdir: Path):
    (workdir / "notes.txt.dcz").write_bytes(b"old")
    result = dcas("compress", "notes.txt", "--force", "-q", cwd=workdir)
    assert result.returncode == 0
    assert dcas("verify", "notes.txt.dcz", cwd=workdir).returncode == 0


@pytest.mark.parametrize("engine_args, reason", [
    ([], "notes.txt.dcz: chunk"),  # small file: decoded in this process
    (["--workers", "1"], "notes.txt.dcz: decode part 0: FormatError: chunk 0"),  # through the pipeline
], ids=["in-process", "pipeline"])
def test_corrupt_input_creates_no_output(packed: Path, workdir: Path, engine_args, reason):
    corrupt(packed, HEADER_SIZE + FRAME_HEADER_SIZE + 1000)
    result = dcas("decompress", "notes.txt.dcz", "-o", "fresh.txt", *engine_args, cwd=workdir)
    assert result.returncode == 1
    assert reason in error_line(result)
    assert not (workdir / "fresh.txt").exists()
    assert leftovers(workdir) == []


def test_corrupt_input_leaves_existing_output_untouched_even_with_force(packed: Path, workdir: Path):
    corrupt(packed, packed.stat().st_size - 40)  # in the seek table
    result = dcas("decompress", "notes.txt.dcz", "--force", cwd=workdir)
    assert result.returncode == 1
    error_line(result)
    assert (workdir / "notes.txt").read_bytes() == sample_text(3 * CHUNK + 17, seed=3)
    assert leftovers(workdir) == []


def test_info_prints_json_with_chunks_sizes_ratio_and_checksums(packed: Path, workdir: Path):
    result = dcas("info", "notes.txt.dcz", cwd=workdir)
    assert result.returncode == 0
    info = json.loads(result.stdout)
    original = (workdir / "notes.txt").read_bytes()
    assert info["file"] == "notes.txt.dcz"
    assert info["chunk_size"] == CHUNK
    assert info["chunks"] == len(info["entries"]) == 4
    assert info["original_size"] == len(original)
    assert info["compressed_size"] == packed.stat().st_size
    assert info["ratio"] == pytest.approx(len(original) / packed.stat().st_size, abs=1e-4)
    first = original[:CHUNK]
    assert info["entries"][0]["crc32c"] == f"{crc32c(first):08x}"


def test_verify_accepts_an_intact_file(packed: Path, workdir: Path):
    result = dcas("verify", "notes.txt.dcz", cwd=workdir)
    assert result.returncode == 0
    assert result.stdout.decode().startswith("notes.txt.dcz: OK")


def test_verify_rejects_a_corrupted_file(packed: Path, workdir: Path):
    corrupt(packed, HEADER_SIZE + FRAME_HEADER_SIZE + 3)
    result = dcas("verify", "notes.txt.dcz", cwd=workdir)
    assert result.returncode == 1
    assert error_line(result).startswith("dcas: error: notes.txt.dcz: ")


def test_stdin_to_file_and_file_to_stdout_round_trip(workdir: Path):
    original = (workdir / "notes.txt").read_bytes()
    assert dcas("compress", "-", "-o", "piped.dcz", cwd=workdir, stdin=original).returncode == 0
    result = dcas("decompress", "piped.dcz", "-o", "-", cwd=workdir)
    assert result.returncode == 0
    assert result.stdout == original


def test_stdin_to_stdout_round_trips_through_pipes(workdir: Path):
    original = (workdir / "notes.txt").read_bytes()
    packed = dcas("compress", "-", "--chunk-size", "64K", cwd=workdir, stdin=original)
    assert packed.returncode == 0, packed.stderr
    assert packed.stderr.decode().startswith("compressed stdin -> stdout: ")
    unpacked = dcas("decompress", "-", "-q", cwd=workdir, stdin=packed.stdout)
    assert unpacked.returncode == 0, unpacked.stderr
    assert unpacked.stdout == original


def test_truncated_container_on_stdin_is_a_one_line_error(packed: Path, workdir: Path):
    result = dcas("decompress", "-", cwd=workdir, stdin=packed.read_bytes()[:-10])
    assert result.returncode == 1
    assert error_line(result).startswith("dcas: error: stdin: ")


def test_ctrl_c_exits_130_and_leaves_no_output(workdir: Path):
    # Compressing a pipe that never ends blocks in read(); SIGINT must land there cleanly.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "compress", "-", "-o", "cut.dcz"],
                            cwd=workdir, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(b"some bytes, and more to come")
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while not leftovers(workdir) and time.monotonic() < deadline:  # temp file = work started
            time.sleep(0.05)
        assert leftovers(workdir), "dcas never started writing"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert stderr.decode().strip() == "dcas: error: interrupted"
    assert not (workdir / "cut.dcz").exists()
    assert leftovers(workdir) == []


def test_disk_errors_are_reported_in_one_line(workdir: Path, monkeypatch):
    # In-process, because the failing engine has to be put in place of the real one.
    monkeypatch.setattr(compression, "choose_engine", lambda *args, **kwargs: FullDiskEngine())
    stderr = io.StringIO()
    status = cli.main(["compress", str(workdir / "notes.txt")], stderr=stderr)
    assert status == 1
    assert stderr.getvalue() == "dcas: error: No space left on device\n"
    assert not (workdir / "notes.txt.dcz").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_round_trip_in_worker_processes_with_beam_options_after_double_dash(workdir: Path):
    beam_options = ["--", "--direct_running_mode=multi_processing"]
    packed = dcas("compress", "notes.txt", "-o", "w.dcz", "--chunk-size", "16K", "--workers", "2",
                  "-q", *beam_options, cwd=workdir)
    assert packed.returncode == 0, packed.stderr
    assert packed.stderr == b""  # the workers' start-up warnings stay out of the terminal
    unpacked = dcas("decompress", "w.dcz", "-o", "w.txt", "--workers", "2", "-q", *beam_options,
                    cwd=workdir)
    assert unpacked.returncode == 0, unpacked.stderr
    assert (workdir / "w.txt").read_bytes() == (workdir / "notes.txt").read_bytes()
    assert json.loads((workdir / "w.dcz.meta.json").read_text())["chunks"] == 13
    assert leftovers(workdir) == []


def test_help_says_which_engine_runs_and_how_to_reach_dataflow():
    stdout = io.StringIO()
    with pytest.raises(SystemExit):
        cli.main(["compress", "--help"], stdout=stdout)
    # argparse prints help to sys.stdout; the parser is what we check.
    text = cli.build_parser()._subparsers._group_actions[0].choices["compress"].format_help()
    for phrase in ("--threads", "--engine", "without Beam", "--workers", "--runner", "DataflowRunner",
                   "after '--'"):
        assert phrase in " ".join(text.split())


def test_pipeline_options_are_refused_for_commands_that_run_no_pipeline(packed: Path, workdir: Path):
    stderr = io.StringIO()
    assert cli.main(["info", str(packed), "--", "--project=p"], stderr=stderr) == 2
    assert stderr.getvalue().startswith("dcas: error: info takes no pipeline options")


def test_a_remote_runner_on_a_pipe_is_a_one_line_error(workdir: Path):
    result = dcas("compress", "-", "-o", "x.dcz", "--runner", "DataflowRunner", cwd=workdir, stdin=b"x")
    assert result.returncode == 1
    assert "a pipe cannot be split" in error_line(result)


def test_console_script_is_installed_and_runs():
    script = Path(sys.executable).parent / "dcas"
    if not script.exists():
        pytest.skip("the dcas console script is not installed beside this interpreter")
    result = subprocess.run([str(script), "--help"], capture_output=True, timeout=120)
    assert result.returncode == 0
    for command in (b"compress", b"decompress", b"info", b"verify"):
        assert command in result.stdout


def test_summary_line_reports_sizes_ratio_time_and_speed_of_original_bytes():
    stats = {"original_size": 27_100_000, "compressed_size": 13_550_000, "seconds": 0.5}
    assert cli.summary_line("compressed", "a", "a.dcz", stats) == \
        "compressed a -> a.dcz: 27.1 MB -> 13.6 MB, ratio 2.00, 0.50 s, 54.2 MB/s"
    assert cli.summary_line("decompressed", "a.dcz", "a", stats).startswith(
        "decompressed a.dcz -> a: 13.6 MB -> 27.1 MB, ratio 2.00")


def test_summary_line_of_an_empty_input_has_no_ratio():
    stats = {"original_size": 0, "compressed_size": 52, "seconds": 0.0}
    assert cli.summary_line("compressed", "e", "e.dcz", stats) == "compressed e -> e.dcz: 0 B -> 52 B, 0.00 s"


@pytest.mark.parametrize("command, src, dst", [("compress", "a.txt", "a.txt.dcz"),
                                               ("decompress", "dir/a.txt.dcz", "dir/a.txt"),
                                               ("compress", "-", "-"), ("decompress", "-", "-")])
def test_default_output_names(command: str, src: str, dst: str):
    assert cli.default_output(command, src) == dst


@pytest.mark.parametrize("src", ["a.txt", ".dcz", "a.dcz.bak"])
def test_decompress_has_no_default_output_for_names_without_dcz(src: str):
    with pytest.raises(cli.UsageError):
        cli.default_output("decompress", src)


def test_the_cli_and_the_pipeline_read_sizes_with_one_parser():
    from pipelines import batch
    assert cli.parse_size is batch.parse_size
