"""Compressing a gs:// object proves that the chunks encoded are its bytes: their combined CRC32C
must equal the CRC32C GCS keeps for the object (fake-gcs-server computes it too)."""
from __future__ import annotations

import json

import google_crc32c
import pytest

import codec
from adapters import storage
from pipelines import batch
from test_gcs_e2e import read_all, text_like  # helpers beside this module


@pytest.fixture
def source(gcs_dir) -> tuple[str, bytes]:
    data = text_like(50_000, seed=9)
    with storage.open_write(gcs_dir + "in.txt") as f:
        f.write(data)
    return gcs_dir + "in.txt", data


def test_the_metadata_and_footer_carry_the_content_crc_gcs_keeps(gcs_dir, source):
    path, data = source
    assert storage.stored_crc32c(path) == google_crc32c.value(data)
    stats = batch.run_job(path, gcs_dir + "out.dcz", chunk_size=8192, workers=1)
    assert stats["files_written"] == 1, stats["failures"]
    meta = json.loads(read_all(gcs_dir + "out.dcz.meta.json"))
    assert meta["checksums"]["content"] == f"{google_crc32c.value(data):08x}"
    assert codec.info(read_all(gcs_dir + "out.dcz"))["content_crc32c"] == meta["checksums"]["content"]


def test_chunks_that_are_not_the_objects_bytes_fail_the_job(gcs_dir, source, monkeypatch):
    path, data = source
    real = storage.read_range

    def misread(p, offset, length, version=None):  # one bad read (a flaky network, a bug of ours)
        got = real(p, offset, length, version)
        return bytes([got[0] ^ 1]) + got[1:] if p == path and offset == 8192 else got

    monkeypatch.setattr(storage, "read_range", misread)
    stats = batch.run_job(path, gcs_dir + "out.dcz", chunk_size=8192, workers=1)
    assert stats["files_written"] == 0
    assert "not all read as stored" in stats["failures"][0][1]
    assert storage.stored_crc32c(gcs_dir + "out.dcz") is None
