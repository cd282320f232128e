"""A local user who plants folders and symlinks beside someone else's output gets none of its writes."""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

import codec
from adapters import local_files, storage
from transforms.decode import ContainerJob, decode_part_in_place, decode_part_tasks, decoded_temp_path
from transforms.planning import FileJob

NOBODY = 65534


@pytest.fixture
def shared():
    """A sticky world-writable folder like /tmp that `nobody` can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="dcas-shared-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _planted_job(shared: Path, job_id: str, victim: Path, *, root_mode: int = 0o777):
    """An attacker's `.dcas-tmp` (mode `root_mode`) holding a job folder whose decoded temp file
    is a symlink to `victim`; returns the decode task an honest job would run there."""
    data = b"decoded bytes " * 100
    blob = codec.encode(data, chunk_size=256)
    source = shared / "in.dcz"
    source.write_bytes(blob)
    destination = str(shared / "out")
    temp_dir = storage.temp_dir_for(destination, job_id)
    os.makedirs(temp_dir)
    os.chmod(os.path.dirname(temp_dir.rstrip(os.sep)), root_mode)
    os.chmod(temp_dir, 0o777)
    os.symlink(victim, decoded_temp_path(temp_dir, destination))
    job = FileJob(str(source), len(blob), destination)
    with open(source, "rb") as f:
        entries = tuple(codec.container.read_seek_table(f, len(blob)))
    return decode_part_tasks(ContainerJob(job, entries))[0], decoded_temp_path(temp_dir, destination)


def test_the_decoder_never_writes_through_a_symlink_planted_in_a_shared_temp_folder(tmp_path: Path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"root-only secret")
    victim.chmod(0o600)
    task, path = _planted_job(tmp_path, "job-1", victim)
    with pytest.raises(OSError):
        decode_part_in_place(task, path)
    assert victim.read_bytes() == b"root-only secret"


def test_writing_a_part_refuses_a_temp_folder_writable_by_others(tmp_path: Path):
    temp_dir = storage.temp_dir_for(str(tmp_path / "out.dcz"), "job-2")
    os.makedirs(temp_dir)
    os.chmod(os.path.dirname(temp_dir.rstrip(os.sep)), 0o777)
    with pytest.raises(local_files.UnsafeTempDirError):
        with storage.open_write(os.path.join(temp_dir, "out.dcz.part-00000")) as f:
            f.write(b"x")
    assert os.listdir(temp_dir) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_a_non_root_victim_in_a_sticky_folder_refuses_a_temp_folder_someone_else_made(shared: Path):
    # The scene: /tmp-like sticky folder, `.dcas-tmp` pre-made 0777 by another user (here
    # root), a job folder with a symlink to the victim's own file. The victim runs as `nobody` in a
    # forked child (everything it needs is imported already).
    victim = shared / "victims-file"
    victim.write_bytes(b"mine")
    os.chown(victim, NOBODY, NOBODY)
    task, path = _planted_job(shared, "job-3", victim)
    pid = os.fork()
    if pid == 0:  # the victim
        status = 3
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                decode_part_in_place(task, path)
                status = 0  # it wrote: the hijack worked
            except local_files.UnsafeTempDirError:
                status = 1  # refused, as it must be
            except BaseException as e:  # noqa: BLE001
                print(f"victim failed otherwise: {e!r}", flush=True)
                status = 2
        finally:
            os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 1
    assert victim.read_bytes() == b"mine"
    assert stat.S_ISLNK(os.lstat(path).st_mode)
