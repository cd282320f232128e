"""End to end on gs://: the batch pipeline compresses and decompresses files on fake-gcs-server (DirectRunner, 2 worker processes)."""
from __future__ import annotations

import random

import pytest
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from codec import stream
from pipelines import batch
from adapters import storage

CHUNK_SIZE = 4096
WORKERS = 2


def text_like(size: int, seed: int) -> bytes:
    """Skewed, compressible bytes (words of a small vocabulary), so a Huffman codec has work to do."""
    rng = random.Random(seed)
    vocabulary = [bytes(rng.choice(b"etaoinshrdlucmfw") for _ in range(rng.randint(2, 9)))
                  for _ in range(300)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(vocabulary) + rng.choice([b" ", b" ", b" ", b", ", b".\n"])
    return bytes(out[:size])


def read_all(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def list_under(prefix: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([prefix + "**"])[0].metadata_list)


@pytest.fixture
def originals(gcs_dir) -> dict[str, bytes]:
    files = {
        "empty.bin": b"",
        "one-byte.bin": b"\x00",
        "small.txt": text_like(3 * CHUNK_SIZE + 17, seed=1),
        # 70 chunks -> 70 parts (+ header and trailer): a compose tree of more than 32 sources.
        "seventy-chunks.txt": text_like(70 * CHUNK_SIZE - 5, seed=2),
        "random.bin": random.Random(3).randbytes(5 * CHUNK_SIZE),  # incompressible: stored chunks
    }
    for name, data in files.items():
        with storage.open_write(f"{gcs_dir}in/{name}") as f:
            f.write(data)
    return files


@pytest.mark.slow  # two whole pipeline runs with worker processes: ~20-35 s on 2 busy cores
@pytest.mark.timeout(300)
def test_files_on_gcs_round_trip_through_the_batch_pipeline(gcs_dir, originals):
    packed = gcs_dir + "packed/"
    stats = batch.run_job(gcs_dir + "in/*", packed, mode="compress", chunk_size=CHUNK_SIZE,
                          workers=WORKERS)
    assert stats["failures"] == []
    assert stats["files_written"] == len(originals)
    assert stats["bytes_in"] == sum(len(data) for data in originals.values())

    for name, data in originals.items():
        container_bytes = read_all(f"{packed}{name}.dcz")
        # An independent reader (the whole-file codec, no Beam) must accept what the compose tree built.
        assert stream.decode(container_bytes) == data, name

    # A damaged container among the good ones: one flipped byte in the middle of a chunk.
    damaged = bytearray(read_all(f"{packed}seventy-chunks.txt.dcz"))
    damaged[len(damaged) // 2] ^= 0x55
    with storage.open_write(f"{packed}damaged.txt.dcz") as f:
        f.write(bytes(damaged))

    unpacked = gcs_dir + "unpacked/"
    stats = batch.run_job(packed + "*.dcz", unpacked, mode="decompress", workers=WORKERS)
    assert [file for file, _ in stats["failures"]] == [f"{packed}damaged.txt.dcz"]
    assert stats["files_written"] == len(originals)
    for name, data in originals.items():
        assert read_all(unpacked + name) == data, name

    # The damaged file left no output, not even a partial one; nothing temporary is left anywhere.
    assert sorted(p[len(unpacked):] for p in list_under(unpacked)
                  if not p.endswith(".failures.csv")) == sorted(originals)
    assert [p for p in list_under(gcs_dir) if storage.TEMP_DIR_NAME in p] == []
