"""End-to-end runs of the batch pipeline on local files: round trips, byte-exact output, failures."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

import codec
from codec import container
from pipelines.batch import run_job
from transforms.assemble import METADATA_SUFFIX
from adapters import storage
from adapters.storage import TEMP_DIR_NAME

CHUNK_SIZE = 64 * 1024
# The in-process runner: the same stages and code as multi_processing, without starting workers.
IN_PROCESS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def text_bytes(size: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    words = [b"compress", b"chunk", b"the", b"a", b"parallel", b"beam", b"huffman", b"\n", b"  "]
    picks = rng.integers(0, len(words), size=size // 3 + 1)
    return b" ".join(words[i] for i in picks)[:size]


def write_inputs(directory, files: dict[str, bytes]) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def leftovers(directory) -> list[str]:
    """Anything besides final outputs: temp folders, part objects, temp files."""
    return sorted(name for name in os.listdir(directory)
                  if name == TEMP_DIR_NAME or ".part-" in name or name.endswith(".tmp"))


ROUND_TRIP_FILES = {
    "empty": b"",
    "one-byte": b"\x00",
    "many-chunks.txt": text_bytes(24 * CHUNK_SIZE + 123, seed=1),   # 25 chunks, last one short
    "exactly-one-chunk.bin": text_bytes(CHUNK_SIZE, seed=2),
    "random.bin": np.random.default_rng(3).bytes(3 * CHUNK_SIZE),   # incompressible: stored chunks
}


# The tests on the round_trip fixture are marked slow: they share two pipeline runs with 2 worker
# processes each (~25-35 s on 2 busy cores, most of it starting workers that import Beam).
@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """Compresses ROUND_TRIP_FILES and decompresses the result, each with 2 worker processes."""
    root = tmp_path_factory.mktemp("round-trip")
    write_inputs(root / "in", ROUND_TRIP_FILES)
    # The inputs are small, so the worker processes must be asked for (see IN_PROCESS_BELOW).
    workers = ["--direct_running_mode=multi_processing"]
    compressed = run_job(str(root / "in" / "*"), str(root / "dcz") + "/", "compress", CHUNK_SIZE,
                         workers=2, extra_args=workers)
    decompressed = run_job(str(root / "dcz" / "*.dcz"), str(root / "back") + "/", "decompress",
                           workers=2, extra_args=workers)
    return root, compressed, decompressed


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_file_round_trips_through_worker_processes(round_trip):
    root, compressed, decompressed = round_trip
    assert compressed["files_failed"] == decompressed["files_failed"] == 0
    assert sorted(os.listdir(root / "back")) == sorted(ROUND_TRIP_FILES)
    for name, data in ROUND_TRIP_FILES.items():
        assert read(root / "back" / name) == data, name


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_compressed_files_are_the_bytes_codec_encode_writes_and_codec_decode_reads(round_trip):
    root, _, _ = round_trip
    for name, data in ROUND_TRIP_FILES.items():
        blob = read(root / "dcz" / f"{name}.dcz")
        assert codec.decode(blob) == data, name
        assert blob == codec.encode(data, CHUNK_SIZE, shared_histogram=codec.histogram(data)), name


def test_compressing_reads_each_input_byte_once(tmp_path, monkeypatch):
    data = text_bytes(5 * CHUNK_SIZE + 7, seed=4)
    write_inputs(tmp_path, {"in.txt": data})
    source = str(tmp_path / "in.txt")
    read_from_source = []
    read_range, read_range_into = storage.read_range, storage.read_range_into

    def counted(path, offset, length, version=None):
        if path == source:
            read_from_source.append(length)
        return read_range(path, offset, length, version)

    def counted_into(path, offset, buffer, version=None):
        if path == source:
            read_from_source.append(len(buffer))
        return read_range_into(path, offset, buffer, version)

    monkeypatch.setattr(storage, "read_range", counted)
    monkeypatch.setattr(storage, "read_range_into", counted_into)
    run_job(source, str(tmp_path / "in.dcz"), "compress", chunk_size=CHUNK_SIZE, extra_args=IN_PROCESS)
    assert codec.decode(read(tmp_path / "in.dcz")) == data
    assert sum(read_from_source) == len(data)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_each_container_has_its_metadata_with_sizes_and_checksums(round_trip):
    root, _, _ = round_trip
    for name, data in ROUND_TRIP_FILES.items():
        path = root / "dcz" / f"{name}.dcz"
        meta = json.loads(read(str(path) + METADATA_SUFFIX))
        with open(path, "rb") as f:
            entries = container.read_seek_table(f, os.path.getsize(path))
        assert (meta["filename"], meta["og_size"], meta["cp_size"]) == (name, len(data), os.path.getsize(path))
        assert meta["chunks"] == len(entries) == -(-len(data) // CHUNK_SIZE)
        assert meta["checksums"]["chunks"] == [f"{e.crc:08x}" for e in entries]
        if data:
            assert meta["frequencies"] == codec.histogram(data).tolist()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_job_stats_count_bytes_chunks_and_files(round_trip):
    _, compressed, decompressed = round_trip
    total = sum(len(data) for data in ROUND_TRIP_FILES.values())
    chunks = sum(-(-len(data) // CHUNK_SIZE) for data in ROUND_TRIP_FILES.values())
    assert (compressed["files_written"], compressed["bytes_in"], compressed["chunks"]) == (
        len(ROUND_TRIP_FILES), total, chunks)
    assert (decompressed["bytes_in"], decompressed["bytes_out"]) == (compressed["bytes_out"], total)
    assert compressed["failures"] == [] and compressed["failures_path"] is None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_temp_folder_or_part_object_is_left_behind(round_trip):
    root, _, _ = round_trip
    assert leftovers(root / "dcz") == leftovers(root / "back") == []
    assert not [name for name in os.listdir(root / "dcz") if name.endswith(".failures.csv")]


def test_damaged_containers_fail_alone_and_leave_no_output(tmp_path):
    good = {"good-1": text_bytes(5 * 4096, seed=4), "good-2": b"", "damaged": text_bytes(6 * 4096, seed=5)}
    os.makedirs(tmp_path / "in")
    for name, data in good.items():
        (tmp_path / "in" / f"{name}.dcz").write_bytes(codec.encode(data, 4096))
    damaged = bytearray(read(tmp_path / "in" / "damaged.dcz"))
    with open(tmp_path / "in" / "damaged.dcz", "rb") as f:
        offset = container.frame_offsets(container.read_seek_table(f, len(damaged)))[4]
    damaged[offset + container.FRAME_HEADER_SIZE + 10] ^= 0x40
    (tmp_path / "in" / "damaged.dcz").write_bytes(bytes(damaged))
    (tmp_path / "in" / "not-a-container.dcz").write_bytes(b"plain text, not a container\n" * 5)
    os.makedirs(tmp_path / "out")
    (tmp_path / "out" / "not-a-container").write_bytes(b"an older output that must survive")
    failures_path = str(tmp_path / "failures.csv")

    stats = run_job(str(tmp_path / "in" / "*.dcz"), str(tmp_path / "out"), "decompress",
                    extra_args=IN_PROCESS, failures=failures_path)

    for name in ("good-1", "good-2"):
        assert read(tmp_path / "out" / name) == good[name]
    assert not (tmp_path / "out" / "damaged").exists()
    assert read(tmp_path / "out" / "not-a-container") == b"an older output that must survive"
    with open(failures_path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "error"]
    reasons = dict(rows[1:])
    assert sorted(reasons) == [str(tmp_path / "in" / n) for n in ("damaged.dcz", "not-a-container.dcz")]
    assert "chunk 4 " in reasons[str(tmp_path / "in" / "damaged.dcz")]
    assert "not a .dcz container" in reasons[str(tmp_path / "in" / "not-a-container.dcz")]
    assert (stats["files_written"], stats["files_failed"]) == (2, 2)
    assert sorted(stats["failures"]) == sorted(reasons.items())
    assert leftovers(tmp_path / "out") == []


def test_one_literal_input_is_written_to_the_output_file_name_given(tmp_path):
    data = text_bytes(100_000, seed=6)
    (tmp_path / "report.txt").write_bytes(data)
    stats = run_job(str(tmp_path / "report.txt"), str(tmp_path / "custom-name.dcz"), "compress",
                    chunk_size=16 * 1024, extra_args=IN_PROCESS)
    assert stats["files_written"] == 1
    assert codec.decode(read(tmp_path / "custom-name.dcz")) == data
    assert (tmp_path / ("custom-name.dcz" + METADATA_SUFFIX)).exists()


def test_keeping_existing_outputs_fails_only_the_files_whose_output_exists(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "in" / "new").write_bytes(b"new file")
    (tmp_path / "in" / "old").write_bytes(b"old file")
    (tmp_path / "out" / "old.dcz").write_bytes(b"not ours")
    stats = run_job(str(tmp_path / "in" / "*"), str(tmp_path / "out") + "/", extra_args=IN_PROCESS,
                    overwrite=False)
    assert codec.decode(read(tmp_path / "out" / "new.dcz")) == b"new file"
    assert read(tmp_path / "out" / "old.dcz") == b"not ours"
    assert not (tmp_path / "out" / ("old.dcz" + METADATA_SUFFIX)).exists()
    assert [(file, "FileExistsError" in error) for file, error in stats["failures"]] == [
        (str(tmp_path / "in" / "old"), True)]


def test_an_explicit_failures_file_is_written_even_when_nothing_failed(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    stats = run_job(str(tmp_path / "a"), str(tmp_path / "out") + "/", extra_args=IN_PROCESS,
                    failures=str(tmp_path / "f.csv"))
    assert stats["files_failed"] == 0
    assert read(tmp_path / "f.csv") == b"file,error\n"


def test_decompressing_a_file_without_the_dcz_suffix_into_a_directory_fails_that_file(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.dcz").write_bytes(codec.encode(b"fine"))
    (tmp_path / "in" / "b.zip").write_bytes(codec.encode(b"fine too"))
    stats = run_job(str(tmp_path / "in" / "*"), str(tmp_path / "out") + "/", "decompress", extra_args=IN_PROCESS)
    assert read(tmp_path / "out" / "a") == b"fine"
    assert [file for file, _ in stats["failures"]] == [str(tmp_path / "in" / "b.zip")]
    assert os.path.basename(stats["failures_path"]) == f"{stats['job_id']}.failures.csv"


def test_an_input_that_matches_nothing_is_an_error_before_anything_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file matches"):
        run_job(str(tmp_path / "missing-*"), str(tmp_path / "out") + "/")
