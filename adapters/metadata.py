"""A container's `DST.meta.json` and the journal that publishes it with its container, without Beam."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from importlib import metadata as package_metadata
from typing import Protocol

from adapters import cancellation, local_files
from codec import container

__all__ = ["METADATA_SUFFIX", "Files", "LOCAL_FILES", "container_metadata", "metadata_bytes", "journal_entry",
           "recover_publication", "recover_local_publications", "publish_local_pair"]

# The metadata object beside each container: `name.dcz` -> `name.dcz.meta.json`.
METADATA_SUFFIX = ".meta.json"


def _package_version() -> str:
    try:
        return package_metadata.version("dcas")
    except package_metadata.PackageNotFoundError:
        return "unknown"


def container_metadata(source: str, destination: str, original_size: int, entries, chunk_size: int, table,
                       compressed_size: int, timings: dict) -> dict:
    """The JSON metadata of one container: the seed's `filename`/`og_size`/`cp_size` and more.

    `ratio` is og_size / cp_size (how many times smaller; 0 for an empty file); `frequencies` is
    the shared byte-frequency table the encoders were given (all zero for an empty file).
    """
    return {
        "filename": source.rstrip("/").rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1],
        "source": source,
        "container": destination,
        "og_size": original_size,
        "cp_size": compressed_size,
        "ratio": round(original_size / compressed_size, 6) if original_size else 0.0,
        "chunks": len(entries),
        "chunk_size": chunk_size,
        "checksums": {"algorithm": "crc32c", "content": f"{container.content_crc(entries):08x}",
                      "chunks": [f"{e.crc:08x}" for e in entries]},
        "codec": {"name": "dcz", "format_version": container.FORMAT_VERSION,
                  "dcas_version": _package_version()},
        "frequencies": [int(count) for count in table] if table is not None else [0] * 256,
        "timings": timings,
    }


def metadata_bytes(description: dict) -> bytes:
    return json.dumps(description, separators=(",", ":")).encode("utf-8") + b"\n"


def journal_entry(destination: str, metadata: str, backup: str | None, container_size: int, tail: bytes,
                  metadata_written: bytes | None) -> dict:
    """What recover_publication needs to complete or undo one publication of a container and its
    metadata: the container by its size and the CRC32C of its last bytes (its seek table holds
    every chunk's CRC), the new metadata by its size and CRC32C (None: the old one is removed)."""
    return {"destination": destination, "metadata": metadata, "backup": backup,
            "container_size": container_size, "trailer_size": len(tail), "trailer_crc": container.crc32c(tail),
            "metadata_size": None if metadata_written is None else len(metadata_written),
            "metadata_crc": None if metadata_written is None else container.crc32c(metadata_written)}


class Files(Protocol):
    """The few file operations recovery needs, for local paths (LOCAL_FILES) or Beam's filesystems."""

    def size(self, path: str) -> int | None: ...

    def read(self, path: str, offset: int, length: int) -> bytes: ...

    def delete(self, paths: list[str]) -> None: ...

    def move(self, source: str, destination: str) -> None: ...


class _LocalFiles:
    @staticmethod
    def size(path: str) -> int | None:
        try:
            return os.stat(path).st_size
        except OSError:
            return None

    @staticmethod
    def read(path: str, offset: int, length: int) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    @staticmethod
    def delete(paths: list[str]) -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    @staticmethod
    def move(source: str, destination: str) -> None:
        os.replace(source, destination)


LOCAL_FILES: Files = _LocalFiles()


def recover_publication(journal_path: str, files: Files = LOCAL_FILES) -> bool:
    """Completes or undoes the publication a journal describes; True if its container is in place.

    The container is published last and atomically, so it is either the new one (the publication
    is complete: only the backup is left to remove) or not; if not, metadata this publication put
    in place is replaced by the backup it made (or removed when there was none), and metadata it
    removed comes back from the backup. Metadata that is not this publication's (another writer's,
    or the old one still there) is never touched. Idempotent: safe to run again after it was
    itself interrupted.
    """
    try:
        size = files.size(journal_path)
        journal = json.loads(files.read(journal_path, 0, size)) if size else None
    except Exception:  # noqa: BLE001 - a journal cut short by a kill: nothing was published yet
        journal = None
    if not isinstance(journal, dict):
        files.delete([journal_path])
        return False
    backup = journal.get("backup")
    metadata = journal["metadata"]
    published = _holds(files, journal["destination"], journal["container_size"], journal["trailer_size"],
                       journal["trailer_crc"], tail=True)
    if not published:
        written = journal.get("metadata_size")
        ours = written is not None and _holds(files, metadata, written, written, journal["metadata_crc"])
        removed = files.size(metadata) is None  # by this publication, or never there
        have_backup = bool(backup) and files.size(backup) is not None
        if have_backup and (ours or removed):
            files.move(backup, metadata)
        elif ours:
            files.delete([metadata])
    files.delete([path for path in (backup, journal_path) if path])
    return published


def recover_local_publications(temp_dir: str, suffix: str) -> None:
    """recover_publication for every journal (`*suffix`) in a killed job's local temp folder."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(temp_dir):
            if entry.name.endswith(suffix):
                recover_publication(entry.path)


def _holds(files: Files, path: str, size: int, checked: int, crc: int, tail: bool = False) -> bool:
    """True when `path` has `size` bytes and its first (or last) `checked` bytes have CRC32C `crc`."""
    try:
        if files.size(path) != size:
            return False
        return container.crc32c(files.read(path, size - checked if tail else 0, checked)) == crc
    except Exception:  # noqa: BLE001 - "cannot tell" means "not there"
        return False



def publish_local_pair(temp: str, destination: str, metadata: bytes | None, *, overwrite: bool,
                       written: os.stat_result) -> None:
    """Publishes the finished container `temp` (fstat `written`) as `destination` together with its
    metadata `DST.meta.json` (`metadata`; None removes a stale one): a reader finds the old pair,
    the new pair, or nothing of either, whatever stops this.

    The pipeline's order and journal (transforms.assemble.publish_container): the journal first, in
    a leased job folder `DIR/.dcas-tmp/<id>/`, then the old metadata kept as a backup, the new
    metadata put in place (or the old one removed), the container renamed last. Any exception or
    signal undoes the metadata step unless the container made it; after a kill, the next run or
    `dcas clean` does (local_files.clean_leftovers calls recover_local_publications).
    `overwrite=False`: an existing metadata object is FileExistsError, like the container.
    """
    directory, name = os.path.split(os.path.abspath(destination))
    meta_path = destination + METADATA_SUFFIX
    had_meta = os.path.lexists(meta_path)
    if had_meta and not overwrite:
        raise FileExistsError(errno.EEXIST, "already exists and overwriting was not allowed", meta_path)
    job_dir = os.path.join(directory, local_files.TEMP_DIR_NAME, f"publish-{uuid.uuid4().hex}")
    try:
        with local_files.job_lease(job_dir):
            try:
                local_files.ensure_temp_dir(job_dir)
                _publish_pair(temp, destination, meta_path, metadata, had_meta, overwrite, written, job_dir,
                              name)
            finally:
                shutil.rmtree(job_dir, ignore_errors=True)
    finally:
        local_files.remove_if_empty(os.path.dirname(job_dir))  # the shared .dcas-tmp, once unused


def _publish_pair(temp, destination, meta_path, metadata, had_meta, overwrite, written, job_dir, name) -> None:
    backup = os.path.join(job_dir, f"{name}.meta-before") if had_meta else None
    size = written.st_size
    tail = _LocalFiles.read(temp, max(0, size - _TAIL_CHECKED), min(size, _TAIL_CHECKED))
    journal_path = os.path.join(job_dir, name + local_files.JOURNAL_SUFFIX)
    _write_new(journal_path, json.dumps(journal_entry(destination, meta_path, backup, size, tail, metadata))
               .encode("utf-8"))
    meta_temp = os.path.join(job_dir, f"{name}.meta")
    meta_written = _write_new(meta_temp, metadata, 0o666) if metadata is not None else None
    try:
        if backup is not None:
            _keep_copy(meta_path, backup)
        if meta_written is not None:
            local_files.publish_file(meta_temp, meta_path, overwrite=overwrite, written=meta_written)
        elif had_meta:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(meta_path)
        cancellation.fault_point("metadata-published")
        local_files.publish_file(temp, destination, overwrite=overwrite, written=written)
        local_files.fsync_directory(os.path.dirname(os.path.abspath(destination)))
    except BaseException:
        recover_publication(journal_path)
        raise
    _LocalFiles.delete([path for path in (backup, journal_path) if path])


# The container's last bytes the journal identifies it by: its seek table, with every chunk's CRC.
_TAIL_CHECKED = 64 * 1024


def _write_new(path: str, data: bytes, mode: int = 0o600) -> os.stat_result:
    fd = local_files.open_new_private(path, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        return os.fstat(f.fileno())


def _keep_copy(path: str, backup: str) -> None:
    """`backup` holds what `path` holds now, whatever later replaces `path`: a hard link, or a copy."""
    try:
        os.link(path, backup, follow_symlinks=False)
    except OSError:
        shutil.copyfile(path, backup + ".partial", follow_symlinks=False)
        os.replace(backup + ".partial", backup)
