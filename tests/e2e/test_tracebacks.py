"""Errors that used to print tracebacks are one `dcas: error:` line (issue 11, defect 7)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from samples import sample_text  # tests/ is on sys.path (conftest dir)
from test_cli import REPO, dcas, error_line

from adapters import storage


def test_a_gs_destination_in_a_bucket_that_does_not_exist_is_one_line(tmp_path: Path, gcs_bucket):
    (tmp_path / "in.txt").write_bytes(sample_text(5000))
    result = dcas("compress", "in.txt", "-o", "gs://no-such-bucket-dcas/x.dcz", cwd=tmp_path)
    assert result.returncode == 1
    assert "no-such-bucket-dcas" in error_line(result)


def test_a_file_name_that_is_not_utf8_goes_through_the_pipeline(tmp_path: Path):
    name = b"caf\xe9.txt"  # Latin-1, not UTF-8
    data = sample_text(5000)
    with open(os.path.join(os.fsencode(tmp_path), name), "wb") as f:
        f.write(data)
    args = [sys.executable, "-m", "services.cli", "compress", name, "-o", b"out.dcz", "--workers", "1", "-q"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, env=env, timeout=300)
    assert result.returncode in (0, 1)
    if result.returncode == 1:
        assert b"Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    else:
        back = dcas("decompress", "out.dcz", "-o", "back", "-q", cwd=tmp_path)
        assert back.returncode == 0 and (tmp_path / "back").read_bytes() == data


def test_info_and_verify_read_gs_paths(tmp_path: Path, gcs_dir):
    (tmp_path / "in.txt").write_bytes(sample_text(5000))
    packed = dcas("compress", "-", "-o", "in.dcz", "-q", cwd=tmp_path, stdin=(tmp_path / "in.txt").read_bytes())
    assert packed.returncode == 0
    with storage.open_write(gcs_dir + "in.dcz") as f:
        f.write((tmp_path / "in.dcz").read_bytes())
    info = dcas("info", gcs_dir + "in.dcz", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert f'"file": "{gcs_dir}in.dcz"' in info.stdout.decode()
    verify = dcas("verify", gcs_dir + "in.dcz", cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr
    missing = dcas("verify", gcs_dir + "missing.dcz", cwd=tmp_path)
    assert missing.returncode == 1
    assert f"input file not found: {gcs_dir}missing.dcz" in error_line(missing)


@pytest.mark.parametrize("delay", [0.3, 0.8])
def test_ctrl_c_during_start_up_is_one_line(tmp_path: Path, delay):
    (tmp_path / "in.txt").write_bytes(sample_text(5000))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "compress", "in.txt", "--workers", "1"],
                            cwd=tmp_path, stderr=subprocess.PIPE, env=env)
    time.sleep(delay)  # imports (numba, Beam) take longer than this
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert b"Traceback" not in stderr, stderr.decode()
    assert proc.returncode in (130, -signal.SIGINT)
    assert stderr.decode().strip() in ("", "dcas: error: interrupted")
