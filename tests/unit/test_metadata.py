"""adapters.metadata: the container description both engines write, and undoing a publication."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import codec
from adapters import metadata
from codec import container


def _journal(tmp_path: Path, new_container: bytes, new_meta: bytes | None, with_backup: bool) -> str:
    backup = str(tmp_path / "job" / "out.dcz.meta-before") if with_backup else None
    (tmp_path / "job").mkdir()
    entry = metadata.journal_entry(str(tmp_path / "out.dcz"), str(tmp_path / "out.dcz.meta.json"), backup,
                                   len(new_container), new_container[-64:], new_meta)
    path = tmp_path / "job" / "out.dcz.publishing.json"
    path.write_text(json.dumps(entry))
    return str(path)


def test_metadata_a_publication_removed_comes_back_when_its_container_never_made_it(tmp_path: Path):
    (tmp_path / "out.dcz").write_bytes(b"old container")
    journal = _journal(tmp_path, codec.encode(b"new " * 100), None, with_backup=True)
    (tmp_path / "job" / "out.dcz.meta-before").write_bytes(b'{"old": true}')  # the step before the removal

    assert metadata.recover_publication(journal) is False

    assert (tmp_path / "out.dcz.meta.json").read_bytes() == b'{"old": true}'
    assert sorted(os.listdir(tmp_path / "job")) == []


def test_new_metadata_stays_and_the_backup_goes_once_the_container_is_in_place(tmp_path: Path):
    new_container, new_meta = codec.encode(b"new " * 100), b'{"new": true}\n'
    journal = _journal(tmp_path, new_container, new_meta, with_backup=True)
    (tmp_path / "job" / "out.dcz.meta-before").write_bytes(b'{"old": true}')
    (tmp_path / "out.dcz.meta.json").write_bytes(new_meta)
    (tmp_path / "out.dcz").write_bytes(new_container)

    assert metadata.recover_publication(journal) is True

    assert (tmp_path / "out.dcz.meta.json").read_bytes() == new_meta
    assert sorted(os.listdir(tmp_path / "job")) == []


def test_the_description_names_the_container_by_its_chunks_and_their_combined_crc():
    data = b"abc" * 5000
    packed = codec.encode(data, chunk_size=4096)
    table = container.read_seek_table(io.BytesIO(packed), len(packed))
    described = metadata.container_metadata("dir/in.txt", "out.dcz", len(data), table, 4096, None, len(packed),
                                            {"worker_seconds": 0.0})
    assert described["filename"] == "in.txt" and described["cp_size"] == len(packed)
    assert described["chunks"] == len(table) == 4
    assert described["checksums"]["content"] == f"{container.content_crc(table):08x}"
    assert described["frequencies"] == [0] * 256

