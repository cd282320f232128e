"""Local files without Beam: private temp folders, checked publication by rename, file versions."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import uuid
from typing import Callable, Iterator

__all__ = [
    "TEMP_DIR_NAME", "UnsafeTempDirError", "SpecialFileError", "private_dir", "ensure_temp_dir",
    "create_publication_temp", "publication_temp_path", "is_publication_temp_of", "open_new_private", "open_private",
    "publish_file", "fsync_directory", "file_version", "local_version", "has_glob", "is_special",
    "remove_if_empty", "check_free_space", "JOURNAL_SUFFIX", "LOCK_SUFFIX", "job_lease", "hold_lock", "clean_leftovers",
]

# The folder beside an output that holds its jobs' temp files: `DIR/.dcas-tmp/<job id>/`.
TEMP_DIR_NAME = ".dcas-tmp"
# In a job's temp folder, the journal of a container publication in progress: `NAME.publishing.json`.
JOURNAL_SUFFIX = ".publishing.json"
_PUBLICATION_TEMP = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{32}\.tmp")


class UnsafeTempDirError(PermissionError):
    """A temp folder that someone else owns or may write into: using it would let them replace
    our files (a symlink swapped in for a file we are about to write, a folder of their own)."""


class SpecialFileError(OSError):
    """A device, FIFO or socket where a regular file would be published: it is never replaced."""


def private_dir(path: str) -> None:
    """Makes the folder `path` (mode 0700) or checks the existing one: a real folder (not a
    symlink), owned by this process's user, writable by nobody else. UnsafeTempDirError otherwise.

    Once that holds, nobody else can add, rename or remove what is inside, so names in it are ours."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeTempDirError(f"temp folder {path} is not a folder (a symlink or file is in its "
                                 "place): remove it and run again")
    uid = os.geteuid()
    if st.st_uid != uid:
        raise UnsafeTempDirError(f"temp folder {path} belongs to uid {st.st_uid}, not to you (uid {uid}): "
                                 "remove it, or write the output to another folder")
    if st.st_mode & 0o022:
        raise UnsafeTempDirError(f"temp folder {path} is writable by other users (mode "
                                 f"{stat.S_IMODE(st.st_mode):o}): remove it, or chmod go-w it")


def ensure_temp_dir(temp_dir: str) -> None:
    """Makes a job's local temp folder `DIR/.dcas-tmp/<job>/` and its parent, both private_dir."""
    job_dir = temp_dir.rstrip(os.sep)
    root = os.path.dirname(job_dir)
    if os.path.basename(root) != TEMP_DIR_NAME:
        raise ValueError(f"{temp_dir!r} is not a job folder under {TEMP_DIR_NAME}")
    os.makedirs(os.path.dirname(root), exist_ok=True)  # the output's folder, as any writer would
    private_dir(root)
    private_dir(job_dir)


def open_private(path: str, *, truncate: bool = True, mode: int = 0o666) -> int:
    """A write-only fd on the regular file `path` (created if missing), never through a symlink; for
    files in a private_dir, where a retried writer may open the same name again. The folder makes
    it private; `mode` (less the umask) is what the published output will have."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags | (os.O_TRUNC if truncate else 0), mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeTempDirError(f"{path} is not a regular file")
    return fd


def open_new_private(path: str, mode: int = 0o600) -> int:
    """A write-only fd on a file `path` that this call creates (O_EXCL: never an existing file or
    a symlink someone put there)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                   mode)


def create_publication_temp(destination: str, mode: int = 0o666) -> tuple[str, int]:
    """(path, fd) of a new temp file beside `destination` (publication_temp_path, O_EXCL), locked
    by this process for as long as the fd is open, so that clean_leftovers never takes it for a dead
    run's. If a cleaner removed it between its creation and our lock, a new one is made."""
    while True:
        path = publication_temp_path(destination)
        fd = open_new_private(path, mode)
        hold_lock(fd)
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.lstat(path)):
                return path, fd
        os.close(fd)


def publication_temp_path(destination: str) -> str:
    """`DIR/.NAME.<uuid hex>.tmp`: where a whole output is assembled beside its destination."""
    directory, name = os.path.split(os.path.abspath(destination))
    return os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")


def is_publication_temp_of(file_name: str, destination_name: str) -> bool:
    match = _PUBLICATION_TEMP.fullmatch(file_name)
    return bool(match) and match["name"] == destination_name


def is_special(path: str | os.PathLike) -> bool:
    """True for an existing device, FIFO or socket (symlinks followed): written into, never replaced."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def publish_file(path: str, destination: str, *, overwrite: bool, written: os.stat_result | None = None) -> None:
    """Renames the finished file `path` to `destination`. Without `overwrite`, only if nothing is
    at `destination` at that moment (a hard link fails on an existing name; a rename would replace
    it): FileExistsError. A device, FIFO or socket at `destination` is never replaced
    (SpecialFileError). With `written` (the fstat of the fd that wrote the file), the published
    inode must be that one: if `path` was swapped for another file meanwhile, the output is removed
    and UnsafeTempDirError raised. The caller removes `path` on failure and fsyncs the folder."""
    if is_special(destination):
        raise SpecialFileError(errno.EEXIST, "is a device, FIFO or other special file: not replaced",
                               destination)
    if overwrite:
        os.replace(path, destination)
    else:
        try:
            os.link(path, destination)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "already exists and overwriting was not allowed",
                                  destination) from None
        except OSError:
            # No hard links here (some FUSE and network filesystems): check, then rename.
            if os.path.lexists(destination):
                raise FileExistsError(errno.EEXIST, "already exists and overwriting was not allowed",
                                      destination) from None
            os.replace(path, destination)
        else:
            os.remove(path)
    if written is not None:
        published = os.lstat(destination)
        if (published.st_dev, published.st_ino) != (written.st_dev, written.st_ino):
            with contextlib.suppress(OSError):
                os.remove(destination)
            raise UnsafeTempDirError(f"{destination}: the file published is not the one written "
                                     "(its temp file was replaced meanwhile); nothing was published")


def remove_if_empty(directory: str) -> None:
    """Removes a folder of ours once it is empty (the shared .dcas-tmp when no job uses it); a
    folder someone else owns is theirs to remove, even where we could."""
    with contextlib.suppress(OSError):
        if os.lstat(directory).st_uid == os.geteuid():
            os.rmdir(directory)


def check_free_space(destination: str, needed: int) -> None:
    """OSError(ENOSPC) if the filesystem where `destination` will be written has fewer than
    `needed` bytes free for this user: checked before any work, so a container that declares more
    than fits (a decompression bomb, or just too big) writes nothing. Unknown free space passes."""
    directory = os.path.dirname(os.path.abspath(destination))
    try:
        st = os.statvfs(directory)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    if needed > free:
        raise OSError(errno.ENOSPC, f"the output needs {needed} bytes, {free} are free in {directory}; "
                      "nothing was written", destination)


def fsync_directory(directory: str | os.PathLike) -> None:
    """Makes a rename in `directory` durable; not possible on every platform, which is fine."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def local_version(st: os.stat_result) -> str:
    """What changes when a local file is modified or replaced: device, inode, size, mtime."""
    return f"local:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def file_version(fd: int) -> str | None:
    """local_version of an open regular file; None for pipes, devices and the like."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return local_version(st) if stat.S_ISREG(st.st_mode) else None


def has_glob(path: str) -> bool:
    """True if the name holds wildcard characters, so the pipeline would read it as a pattern."""
    return any(c in path for c in "*?[")


# Leases: a job's launcher holds `DIR/.dcas-tmp/<job>.lock` locked (flock) while the job runs, and a
# writer holds its publication temp file locked while it writes. The kernel drops a lock when its
# process dies, however it dies, so a lock anyone can take marks what a dead process left behind.
LOCK_SUFFIX = ".lock"


def hold_lock(fd: int) -> None:
    """Locks the file open at `fd` for as long as it stays open in this process."""
    fcntl.flock(fd, fcntl.LOCK_EX)


@contextlib.contextmanager
def job_lease(temp_dir: str) -> Iterator[None]:
    """Holds the lease of the job whose temp folder is `temp_dir` (DIR/.dcas-tmp/<job>/), so that
    clean_leftovers never touches it; the caller removes the folder before the lease ends."""
    job_dir = temp_dir.rstrip(os.sep)
    private_dir(os.path.dirname(job_dir))
    lock_path = job_dir + LOCK_SUFFIX
    while True:
        fd = open_private(lock_path, truncate=False, mode=0o600)
        hold_lock(fd)
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.lstat(lock_path)):
                break
        os.close(fd)  # a cleaner removed the file between our open and our lock: take a new one
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)


def _lock_if_dead(path: str) -> int | None:
    """An fd holding the lock of `path` if no live process holds it (its owner died), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.path.samestat(os.fstat(fd), os.lstat(path)):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def clean_leftovers(directory: str, recover: Callable[[str], None] | None = None) -> list[str]:
    """Removes what dead jobs left in `directory`: their folders under .dcas-tmp (after
    `recover(job_dir)`, which completes or undoes a publication they were in the middle of) and
    publication temp files beside the outputs. Only what this user owns and no live process holds
    the lease of: a live job's files, and folders without a lease, are never touched. Returns the
    names removed."""
    removed: list[str] = []
    uid = os.geteuid()
    root = os.path.join(directory, TEMP_DIR_NAME)
    try:
        root_st = os.lstat(root)
        entries = list(os.scandir(root)) if stat.S_ISDIR(root_st.st_mode) and root_st.st_uid == uid else []
    except OSError:
        entries = []
    for entry in entries:
        if not entry.name.endswith(LOCK_SUFFIX):
            continue
        fd = _lock_if_dead(entry.path)
        if fd is None:
            continue
        try:
            job = entry.name[:-len(LOCK_SUFFIX)]
            job_dir = os.path.join(root, job)
            if recover is not None and os.path.isdir(job_dir) and not os.path.islink(job_dir):
                recover(job_dir + os.sep)
            shutil.rmtree(job_dir, ignore_errors=True)
            for other in os.listdir(root):  # the job's failures CSV and its temp file
                if other.startswith(job + ".") and other != entry.name:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(root, other))
            os.unlink(entry.path)
            removed.append(os.path.join(TEMP_DIR_NAME, job))
        finally:
            os.close(fd)
    remove_if_empty(root)
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if not _PUBLICATION_TEMP.fullmatch(entry.name):
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
                    continue
                fd = _lock_if_dead(entry.path)
                if fd is None:
                    continue
                try:
                    os.unlink(entry.path)
                    removed.append(entry.name)
                finally:
                    os.close(fd)
    return removed
