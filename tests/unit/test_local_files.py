"""Tests of adapters.local_files: private temp folders, checked publication, special files."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from adapters import local_files
from adapters.local_files import SpecialFileError, UnsafeTempDirError

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="making a file another user owns needs root")


def test_a_fresh_private_dir_is_made_with_mode_0700(tmp_path: Path):
    local_files.private_dir(str(tmp_path / "t"))
    assert stat.S_IMODE((tmp_path / "t").stat().st_mode) == 0o700


def test_a_temp_folder_writable_by_others_is_refused(tmp_path: Path):
    root = tmp_path / local_files.TEMP_DIR_NAME
    root.mkdir()
    root.chmod(0o777)
    with pytest.raises(UnsafeTempDirError, match="writable by other users"):
        local_files.ensure_temp_dir(str(root / "job") + os.sep)
    assert not (root / "job").exists()


@as_root
def test_a_temp_folder_another_user_owns_is_refused(tmp_path: Path):
    root = tmp_path / local_files.TEMP_DIR_NAME
    root.mkdir(mode=0o755)
    os.chown(root, NOBODY, NOBODY)
    with pytest.raises(UnsafeTempDirError, match="belongs to uid 65534"):
        local_files.ensure_temp_dir(str(root / "job") + os.sep)


def test_a_symlink_in_place_of_the_temp_folder_is_refused(tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / local_files.TEMP_DIR_NAME).symlink_to(elsewhere)
    with pytest.raises(UnsafeTempDirError, match="not a folder"):
        local_files.ensure_temp_dir(str(tmp_path / local_files.TEMP_DIR_NAME / "job"))


def test_open_private_never_follows_a_symlink(tmp_path: Path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "planted").symlink_to(victim)
    with pytest.raises(OSError):
        local_files.open_private(str(tmp_path / "planted"), truncate=False)
    assert victim.read_bytes() == b"precious"


def test_publication_refuses_a_file_swapped_in_for_the_one_written(tmp_path: Path):
    temp = tmp_path / "temp"
    temp.write_bytes(b"ours")
    written = os.stat(temp)
    temp.rename(tmp_path / "kept")  # kept, so the new file cannot reuse its inode number
    temp.write_bytes(b"theirs")
    with pytest.raises(UnsafeTempDirError, match="not the one written"):
        local_files.publish_file(str(temp), str(tmp_path / "out"), overwrite=False, written=written)
    assert not (tmp_path / "out").exists()


def test_publication_never_replaces_a_fifo(tmp_path: Path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "temp").write_bytes(b"data")
    with pytest.raises(SpecialFileError):
        local_files.publish_file(str(tmp_path / "temp"), str(tmp_path / "fifo"), overwrite=True)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)


def test_publication_without_overwrite_keeps_an_existing_file(tmp_path: Path):
    (tmp_path / "temp").write_bytes(b"new")
    (tmp_path / "out").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        local_files.publish_file(str(tmp_path / "temp"), str(tmp_path / "out"), overwrite=False)
    assert (tmp_path / "out").read_bytes() == b"old"


def test_devices_and_fifos_are_special_and_files_folders_and_missing_names_are_not(tmp_path: Path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_bytes(b"")
    assert local_files.is_special("/dev/null")
    assert local_files.is_special(tmp_path / "fifo")
    assert not local_files.is_special(tmp_path / "file")
    assert not local_files.is_special(tmp_path)
    assert not local_files.is_special(tmp_path / "missing")


def test_publication_temp_names_are_recognised_for_their_destination_only():
    name = os.path.basename(local_files.publication_temp_path("/d/out.dcz"))
    assert local_files.is_publication_temp_of(name, "out.dcz")
    assert not local_files.is_publication_temp_of(name, "out")
    assert not local_files.is_publication_temp_of(".out.dcz.tmp", "out.dcz")


def test_the_local_files_module_does_not_import_beam():
    import subprocess
    import sys
    code = "import sys, adapters.local_files; sys.exit('apache_beam' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2]).returncode == 0


def _die_holding_a_lease(temp_dir: str) -> None:
    """A child process takes the job's lease, makes its temp files, and dies as kill -9 would."""
    pid = os.fork()
    if pid == 0:
        try:
            with local_files.job_lease(temp_dir):
                local_files.ensure_temp_dir(temp_dir)
                Path(temp_dir, "out.part-00000").write_bytes(b"part")
                os._exit(0)  # no clean-up runs
        finally:
            os._exit(1)
    os.waitpid(pid, 0)


def test_clean_removes_a_dead_jobs_folder_and_never_a_live_one(tmp_path: Path):
    dead = os.path.join(tmp_path, local_files.TEMP_DIR_NAME, "dead-job") + os.sep
    live = os.path.join(tmp_path, local_files.TEMP_DIR_NAME, "live-job") + os.sep
    _die_holding_a_lease(dead)
    recovered = []
    with local_files.job_lease(live):
        local_files.ensure_temp_dir(live)
        Path(live, "out.part-00000").write_bytes(b"in use")
        removed = local_files.clean_leftovers(str(tmp_path), recover=recovered.append)
        assert removed == [os.path.join(local_files.TEMP_DIR_NAME, "dead-job")]
        assert recovered == [dead]
        assert Path(live, "out.part-00000").read_bytes() == b"in use"
        assert sorted(os.listdir(tmp_path / local_files.TEMP_DIR_NAME)) == ["live-job", "live-job.lock"]


def test_clean_leaves_a_temp_folder_without_a_lease_alone(tmp_path: Path):
    job = tmp_path / local_files.TEMP_DIR_NAME / "unknown-job"
    job.mkdir(parents=True)
    assert local_files.clean_leftovers(str(tmp_path)) == []
    assert job.is_dir()


def test_clean_removes_a_dead_writers_publication_temp_and_never_a_live_ones(tmp_path: Path):
    live_path, live_fd = local_files.create_publication_temp(str(tmp_path / "live.dcz"))
    dead_path, dead_fd = local_files.create_publication_temp(str(tmp_path / "dead.dcz"))
    os.close(dead_fd)  # its writer is gone: so is its lock
    try:
        removed = local_files.clean_leftovers(str(tmp_path))
        assert removed == [os.path.basename(dead_path)]
        assert os.path.exists(live_path)
    finally:
        os.close(live_fd)
