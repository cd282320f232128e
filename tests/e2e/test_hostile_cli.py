"""`dcas` against what a hostile neighbour or a careless `-f` sets up: shared temp folders, devices, FIFOs."""
from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from samples import sample_text  # tests/ is on sys.path (conftest dir)
from test_cli import dcas, error_line  # the same runner as the other CLI tests

from adapters.local_files import TEMP_DIR_NAME

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod)")
ENGINES = {"in-process": [], "pipeline": ["--workers", "1"]}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "notes.txt").write_bytes(sample_text(200_000, seed=5))
    result = dcas("compress", "-", "-o", "notes.txt.dcz", "--chunk-size", "64K", "-q", cwd=tmp_path,
                  stdin=(tmp_path / "notes.txt").read_bytes())
    assert result.returncode == 0, result.stderr
    return tmp_path


@pytest.mark.parametrize("owner", ["another user", "you"])
def test_a_shared_temp_folder_someone_else_could_write_into_is_refused_before_any_work(workdir: Path, owner):
    if owner == "another user" and os.geteuid() != 0:
        pytest.skip("making a folder another user owns needs root")
    planted = workdir / TEMP_DIR_NAME
    planted.mkdir()
    (planted / "their-job").mkdir()  # waiting for a symlink swap
    planted.chmod(0o777)
    if owner == "another user":
        os.chown(planted, NOBODY, NOBODY)
    result = dcas("decompress", "notes.txt.dcz", "-o", "out.txt", "--workers", "1", cwd=workdir)
    assert result.returncode == 1
    assert "temp folder" in error_line(result)
    assert not (workdir / "out.txt").exists()
    assert os.listdir(planted) == ["their-job"]


def test_decompressing_to_dev_null_works_without_force_and_leaves_it_a_device(workdir: Path):
    result = dcas("decompress", "notes.txt.dcz", "-o", "/dev/null", "-q", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


@as_root
@pytest.mark.parametrize("engine", ENGINES)
def test_force_over_a_character_device_writes_into_it_instead_of_replacing_it(workdir: Path, engine):
    null = workdir / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a copy of /dev/null
    result = dcas("decompress", "notes.txt.dcz", "-o", "null", "-f", "-q", *ENGINES[engine], cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert os.lstat(null).st_rdev == os.makedev(1, 3)


@pytest.mark.parametrize("force", [[], ["-f"]])
def test_decompressing_into_a_fifo_streams_into_it(workdir: Path, force):
    fifo = workdir / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = dcas("decompress", "notes.txt.dcz", "-o", "fifo", "-q", *force, cwd=workdir)
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert received == [(workdir / "notes.txt").read_bytes()]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
