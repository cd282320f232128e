"""Tests of the storage adapter: the pure plans, and every operation on local paths and on gs:// (fake-gcs-server)."""
from __future__ import annotations

import errno
import fcntl
import os
import time

import numpy as np
import pytest
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from adapters import storage
from codec import _fileio

TB = 2**40
MiB = 2**20


# ---------------------------------------------------------------------------------------------
# Helpers: an independent model of what a compose plan builds


def simulate_compose_plan(plan: list[list[int]], n_sources: int):
    """Run a plan on lists of source numbers: returns (final content, component count of every made object)."""
    content = {node: [node] for node in range(n_sources)}
    components = {node: 1 for node in range(n_sources)}
    made = []
    for k, inputs in enumerate(plan):
        node = n_sources + k
        assert all(i in content for i in inputs), f"call {k} uses a node that does not exist yet"
        content[node] = [leaf for i in inputs for leaf in content[i]]
        components[node] = sum(components[i] for i in inputs)
        made.append(node)
    return content[made[-1]], [components[node] for node in made]


def read_all(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def write(path: str, data: bytes) -> str:
    with storage.open_write(path) as f:
        f.write(data)
    return path


def list_under(prefix: str) -> list[str]:
    if prefix.startswith("gs://"):
        return [m.path for m in FileSystems.match([prefix + "**"])[0].metadata_list]
    return [os.path.join(root, name) for root, _, names in os.walk(prefix) for name in names]


@pytest.fixture(params=["local", "gcs"])
def base_dir(request, tmp_path) -> str:
    """A fresh folder ending in '/': a local temp dir, or a gs:// folder on fake-gcs-server."""
    if request.param == "local":
        return str(tmp_path) + os.sep
    return request.getfixturevalue("gcs_dir")


# ---------------------------------------------------------------------------------------------
# plan_parts


@pytest.mark.parametrize("chunk_count,max_parts", [(1, 1000), (999, 1000), (1000, 1000), (1001, 1000),
                                                   (262_144, 1000), (7, 3), (10, 1)])
def test_plan_parts_covers_every_chunk_once_in_order_in_even_parts(chunk_count, max_parts):
    parts = storage.plan_parts(chunk_count, max_parts)
    assert len(parts) == min(chunk_count, max_parts)
    assert parts[0][0] == 0 and parts[-1][1] == chunk_count
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    sizes = [stop - start for start, stop in parts]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_plan_parts_of_no_chunks_is_empty():
    assert storage.plan_parts(0) == []


@pytest.mark.parametrize("chunk_count,max_parts", [(-1, 10), (5, 0)])
def test_plan_parts_rejects_impossible_arguments(chunk_count, max_parts):
    with pytest.raises(ValueError):
        storage.plan_parts(chunk_count, max_parts)


# ---------------------------------------------------------------------------------------------
# compose_plan


@pytest.mark.parametrize("n_sources", [1, 2, 31, 32, 33, 64, 70, 1000, 1023, 1024])
def test_compose_plan_concatenates_in_order_within_gcs_limits(n_sources):
    plan = storage.compose_plan(n_sources)
    content, components = simulate_compose_plan(plan, n_sources)
    assert content == list(range(n_sources))
    assert all(1 <= len(call) <= 32 for call in plan)
    assert max(components) <= 1024
    # Every intermediate is used exactly once (nothing composed and thrown away).
    used = [node for call in plan for node in call]
    assert sorted(used) == list(range(n_sources + len(plan) - 1))


def test_compose_plan_for_a_terabyte_file_stays_inside_both_gcs_limits():
    chunk_count = TB // (4 * MiB)
    assert chunk_count == 262_144
    parts = storage.plan_parts(chunk_count)
    n_sources = 1 + len(parts) + 1  # header object + parts + trailer object
    plan = storage.compose_plan(n_sources)
    content, components = simulate_compose_plan(plan, n_sources)
    assert content == list(range(n_sources))
    assert max(len(call) for call in plan) <= storage.GCS_MAX_COMPOSE_SOURCES == 32
    assert components[-1] == n_sources <= storage.GCS_MAX_COMPONENTS == 1024
    assert max(components) <= 1024
    # Two levels suffice, and a part stays near a gigabyte (what one encoder writes).
    assert len(plan) == 1 + -(-n_sources // 32)
    assert max(stop - start for start, stop in parts) * 4 * MiB < 1.1 * 2**30


def test_compose_plan_refuses_more_sources_than_a_composite_object_can_hold():
    with pytest.raises(ValueError, match="plan_parts"):
        storage.compose_plan(1025)


def test_compose_plan_with_a_small_fan_in_builds_a_deeper_tree():
    plan = storage.compose_plan(100, fan_in=3)
    content, _ = simulate_compose_plan(plan, 100)
    assert content == list(range(100))
    assert all(len(call) <= 3 for call in plan)


# ---------------------------------------------------------------------------------------------
# temp_dir_for


def test_temp_dir_for_a_local_file_is_in_the_same_directory(tmp_path):
    destination = str(tmp_path / "out" / "big.dcz")
    temp_dir = storage.temp_dir_for(destination, "job-1")
    assert temp_dir.startswith(str(tmp_path / "out") + os.sep)
    assert "job-1" in temp_dir and temp_dir.endswith(os.sep)


@pytest.mark.parametrize("destination,expected", [
    ("gs://b/out/big.dcz", "gs://b/out/.dcas-tmp/job-1/"),
    ("gs://b/big.dcz", "gs://b/.dcas-tmp/job-1/"),
])
def test_temp_dir_for_a_gcs_object_is_in_the_same_bucket_and_folder(destination, expected):
    assert storage.temp_dir_for(destination, "job-1") == expected


@pytest.mark.parametrize("job_id", ["", "a/b"])
def test_temp_dir_for_rejects_job_ids_that_are_not_one_name(job_id):
    with pytest.raises(ValueError):
        storage.temp_dir_for("gs://b/x", job_id)


# ---------------------------------------------------------------------------------------------
# read_range / open_write / delete, locally and on gs://


def test_read_range_returns_exactly_the_bytes_asked_for(base_dir):
    data = bytes(range(256)) * 40
    path = write(base_dir + "data.bin", data)
    for offset, length in [(0, 1), (0, len(data)), (1000, 4000), (len(data) - 7, 7), (5, 0)]:
        assert storage.read_range(path, offset, length) == data[offset:offset + length]


def test_read_range_past_the_end_raises_instead_of_returning_fewer_bytes(base_dir):
    path = write(base_dir + "short.bin", b"0123456789")
    with pytest.raises(EOFError, match="short.bin"):
        storage.read_range(path, 5, 6)
    with pytest.raises(EOFError):
        storage.read_range(path, 10, 1)
    with pytest.raises(EOFError):
        storage.read_range(path, 50, 1)


def test_reads_of_the_version_taken_at_planning_succeed_until_the_object_is_replaced(base_dir):
    path = write(base_dir + "input.bin", b"0123456789" * 10)
    version = storage.input_version(path)
    assert storage.read_range(path, 10, 5, version) == b"01234"
    assert storage.input_version(path) == version  # reading changes nothing
    time.sleep(0.01)  # a distinct modification time for the rewrite, whatever the clock's tick
    write(path, b"abcdefghij" * 10)
    assert storage.input_version(path) != version
    with pytest.raises(storage.InputChangedError, match="input.bin"):
        storage.read_range(path, 10, 5, version)
    assert storage.read_range(path, 10, 5) == b"abcde"  # without a version, whatever is there now


def test_read_range_into_fills_the_buffer_with_the_bytes_asked_for(base_dir):
    data = bytes(range(256)) * 40
    path = write(base_dir + "data.bin", data)
    for offset, length in [(0, 1), (0, len(data)), (1000, 4000), (len(data) - 7, 7)]:
        buffer = np.zeros(length, dtype=np.uint8)
        assert storage.read_range_into(path, offset, buffer) is buffer
        assert buffer.tobytes() == data[offset:offset + length]
    into = bytearray(3)
    storage.read_range_into(path, 2, into)
    assert into == data[2:5]


def test_read_range_into_fails_as_read_range_does(base_dir):
    path = write(base_dir + "input.bin", b"0123456789" * 10)
    with pytest.raises(EOFError, match="input.bin"):
        storage.read_range_into(path, 95, bytearray(6))
    version = storage.input_version(path)
    storage.read_range_into(path, 0, bytearray(5), version)
    time.sleep(0.01)
    write(path, b"abcdefghij" * 10)
    with pytest.raises(storage.InputChangedError, match="input.bin"):
        storage.read_range_into(path, 0, bytearray(5), version)
    with pytest.raises(FileNotFoundError):
        storage.read_range_into(base_dir + "missing.bin", 0, bytearray(1))


def test_the_version_of_a_missing_object_is_file_not_found(base_dir):
    with pytest.raises(FileNotFoundError):
        storage.input_version(base_dir + "missing.bin")


def test_read_range_of_a_missing_object_raises_file_not_found(base_dir):
    with pytest.raises(FileNotFoundError):
        storage.read_range(base_dir + "missing.bin", 0, 1)


def test_open_write_creates_the_object_with_the_bytes_written(base_dir):
    with storage.open_write(base_dir + "sub/part-0") as f:
        f.write(b"abc")
        f.write(memoryview(b"defg"))
    assert read_all(base_dir + "sub/part-0") == b"abcdefg"


def test_open_write_leaves_no_object_when_the_writer_fails(base_dir):
    path = base_dir + "failed-part"
    with pytest.raises(RuntimeError):
        with storage.open_write(path) as f:
            f.write(b"half a part")
            raise RuntimeError("encoder crashed")
    assert not FileSystems.exists(path)


def test_delete_removes_objects_and_ignores_missing_ones(base_dir):
    paths = [write(base_dir + f"d{i}", b"x") for i in range(3)]
    storage.delete(paths + [base_dir + "never-existed"])
    assert not any(FileSystems.exists(p) for p in paths)
    storage.delete(paths)  # again: already gone is fine


# ---------------------------------------------------------------------------------------------
# publish_concatenation, locally and on gs://


def make_parts(base_dir: str, count: int, prefix: str = "parts/p") -> tuple[list[str], bytes]:
    contents = [f"<part {i}:{'x' * (i % 5)}>".encode() for i in range(count)]
    paths = [write(f"{base_dir}{prefix}{i:04d}", content) for i, content in enumerate(contents)]
    return paths, b"".join(contents)


@pytest.mark.parametrize("count", [1, 3])
def test_publish_concatenation_writes_parts_in_order_and_deletes_them(base_dir, count):
    sources, expected = make_parts(base_dir, count)
    destination = base_dir + "out/file.dcz"
    storage.publish_concatenation(sources, destination)
    assert read_all(destination) == expected
    assert not any(FileSystems.exists(p) for p in sources)


def test_publish_concatenation_of_no_sources_makes_an_empty_object(base_dir):
    destination = base_dir + "empty.dcz"
    storage.publish_concatenation([], destination)
    assert read_all(destination) == b""


def test_publish_concatenation_replaces_an_existing_destination(base_dir):
    destination = write(base_dir + "file.dcz", b"old contents")
    sources, expected = make_parts(base_dir, 2)
    storage.publish_concatenation(sources, destination)
    assert read_all(destination) == expected


def test_failed_publication_leaves_no_destination_and_keeps_the_sources(base_dir):
    sources, _ = make_parts(base_dir, 3)
    broken = sources[:2] + [base_dir + "parts/missing"] + sources[2:]
    destination = base_dir + "out/file.dcz"
    with pytest.raises(Exception):
        storage.publish_concatenation(broken, destination)
    assert not FileSystems.exists(destination)
    assert all(FileSystems.exists(p) for p in sources)


def test_failed_publication_leaves_an_existing_destination_untouched(base_dir):
    destination = write(base_dir + "file.dcz", b"the previous good version")
    sources, _ = make_parts(base_dir, 3)
    with pytest.raises(Exception):
        storage.publish_concatenation(sources + [base_dir + "parts/missing"], destination)
    assert read_all(destination) == b"the previous good version"


@pytest.mark.parametrize("count", [0, 2, 40])
def test_publication_without_overwrite_leaves_an_existing_destination_and_the_sources(base_dir, count):
    # 40 sources: on gs:// the precondition must hold on the last call of a compose tree.
    destination = write(base_dir + "file.dcz", b"created while the job ran")
    sources, _ = make_parts(base_dir, count)
    with pytest.raises(FileExistsError, match="already exists"):
        storage.publish_concatenation(sources, destination, overwrite=False)
    assert read_all(destination) == b"created while the job ran"
    assert all(FileSystems.exists(p) for p in sources)


def test_publication_without_overwrite_publishes_where_nothing_exists(base_dir):
    sources, expected = make_parts(base_dir, 40)
    storage.publish_concatenation(sources, base_dir + "new.dcz", overwrite=False)
    assert read_all(base_dir + "new.dcz") == expected


def test_a_local_file_published_without_overwrite_never_replaces_one_that_appeared(tmp_path):
    (tmp_path / "out.bin").write_bytes(b"someone else's")
    (tmp_path / "decoded").write_bytes(b"ours")
    with pytest.raises(FileExistsError):
        storage.publish_local_file(str(tmp_path / "decoded"), str(tmp_path / "out.bin"), 4, overwrite=False)
    assert (tmp_path / "out.bin").read_bytes() == b"someone else's"
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]
    (tmp_path / "decoded").write_bytes(b"ours")
    storage.publish_local_file(str(tmp_path / "decoded"), str(tmp_path / "new.bin"), 4, overwrite=False)
    assert (tmp_path / "new.bin").read_bytes() == b"ours"
    assert sorted(os.listdir(tmp_path)) == ["new.bin", "out.bin"]


@pytest.mark.parametrize("in_kernel", [True, False], ids=["copy_file_range", "buffer"])
def test_copying_a_range_puts_the_source_at_the_offset_and_leaves_the_rest(tmp_path, in_kernel):
    source = tmp_path / "source"
    source.write_bytes(bytes(range(256)) * 300)
    out = tmp_path / "out"
    out.write_bytes(b"-" * 100_000)
    with open(source, "rb") as src, open(out, "r+b") as dst:
        copied = storage._copy_range(src.fileno(), dst.fileno(), 7, 76_800, in_kernel=in_kernel)
    assert copied == 76_800
    assert out.read_bytes() == b"-" * 7 + bytes(range(256)) * 300 + b"-" * (100_000 - 7 - 76_800)


@pytest.mark.parametrize("in_kernel", [True, False], ids=["copy_file_range", "buffer"])
def test_copying_a_range_stops_where_a_short_source_ends(tmp_path, in_kernel):
    (tmp_path / "source").write_bytes(b"abc")
    with open(tmp_path / "source", "rb") as src, open(tmp_path / "out", "wb") as dst:
        assert storage._copy_range(src.fileno(), dst.fileno(), 0, 10, in_kernel=in_kernel) == 3


def random_parts(directory, sizes: list[int]) -> tuple[list[str], bytes]:
    rng = np.random.default_rng(7)
    contents = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in sizes]
    paths = []
    for i, content in enumerate(contents):
        (directory / f"part{i}").write_bytes(content)
        paths.append(str(directory / f"part{i}"))
    return paths, b"".join(contents)


@pytest.fixture
def recorded_writes(tmp_path, monkeypatch):
    """Publication's writes as (direct?, bytes, offset), through 8 KiB stages; skips where the file
    system has no direct I/O (tmpfs)."""
    (tmp_path / "probe").touch()
    probe = storage.open_direct(str(tmp_path / "probe"))
    if probe is None:
        pytest.skip("no direct I/O on this file system")
    os.close(probe)
    monkeypatch.setattr(storage, "_COPY_BUFFER_SIZE", 8192)
    writes = []
    pwrite_all = _fileio.pwrite_all

    def recording(fd, data, offset):
        writes.append((bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT), len(memoryview(data).cast("B")), offset))
        pwrite_all(fd, data, offset)

    monkeypatch.setattr(_fileio, "pwrite_all", recording)
    return writes


def test_a_local_publication_writes_whole_stages_with_direct_io_and_its_last_block_through_the_cache(
        tmp_path, recorded_writes):
    sources, expected = random_parts(tmp_path, [5000, 1, 20000, 0, 3333])
    storage.publish_concatenation(sources, str(tmp_path / "out.dcz"))
    assert (tmp_path / "out.dcz").read_bytes() == expected
    assert recorded_writes == [(True, 8192, 0), (True, 8192, 8192), (True, 8192, 16384), (False, 3758, 24576)]
    assert not any(os.path.exists(source) for source in sources)


def test_a_file_system_that_refuses_a_direct_write_gets_the_stages_through_the_cache(tmp_path, monkeypatch,
                                                                                     recorded_writes):
    recording = _fileio.pwrite_all

    def refusing(fd, data, offset):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        recording(fd, data, offset)

    monkeypatch.setattr(_fileio, "pwrite_all", refusing)
    sources, expected = random_parts(tmp_path, [10000, 9000])
    storage.publish_concatenation(sources, str(tmp_path / "out.dcz"))
    assert (tmp_path / "out.dcz").read_bytes() == expected
    assert recorded_writes == [(False, 8192, 0), (False, 8192, 8192), (False, 2616, 16384)]


def test_a_source_shorter_than_its_size_fails_the_direct_copy_naming_it(tmp_path):
    sources, _ = random_parts(tmp_path, [6000, 100])
    with open(tmp_path / "out", "wb") as out:
        with pytest.raises(RuntimeError, match="part1 ended after 100 of its 101 bytes"):
            storage._copy_files_direct(sources, [6000, 101], out.fileno())


@pytest.mark.parametrize("sizes, groups", [
    ([], 4), ([5], 4), ([1, 1, 1, 1], 2), ([100, 1, 1, 1, 1], 2), ([1, 1, 1, 100], 3),
    ([0, 0, 0], 2), ([3, 3, 3, 3, 3, 3, 3], 4), (list(range(50)), 4),
])
def test_copy_groups_cover_every_source_once_in_order_in_at_most_the_groups_asked(sizes, groups):
    runs = storage.copy_groups(sizes, groups)
    assert [i for run in runs for i in run] == list(range(len(sizes)))
    assert len(runs) <= groups and all(len(run) > 0 for run in runs)


def test_copy_groups_share_even_sources_evenly():
    runs = storage.copy_groups([10] * 240, 2)
    assert [len(run) for run in runs] == [120, 120]


def test_local_publication_of_many_large_parts_copies_them_all_in_order(tmp_path, monkeypatch):
    # A low threshold so the threaded copy runs on a small test; the bytes are what must not change.
    monkeypatch.setattr(storage, "_PARALLEL_COPY_ABOVE", 1)
    contents = [bytes([i]) * (1000 + 37 * i) for i in range(40)]
    sources = []
    for i, content in enumerate(contents):
        (tmp_path / f"p{i:03d}").write_bytes(content)
        sources.append(str(tmp_path / f"p{i:03d}"))
    storage.publish_concatenation(sources, str(tmp_path / "out" / "file.dcz"))
    assert (tmp_path / "out" / "file.dcz").read_bytes() == b"".join(contents)
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_local_publication_leaves_no_temp_file_behind(tmp_path):
    sources, _ = make_parts(str(tmp_path) + os.sep, 2)
    storage.publish_concatenation(sources, str(tmp_path / "file.dcz"))
    with pytest.raises(FileNotFoundError):
        storage.publish_concatenation([str(tmp_path / "missing")], str(tmp_path / "other.dcz"))
    assert sorted(os.listdir(tmp_path)) == ["file.dcz", "parts"]


# ---------------------------------------------------------------------------------------------
# The compose tree on fake-gcs-server


def test_compose_tree_of_seventy_parts_gives_the_exact_concatenation(gcs_dir):
    sources, expected = make_parts(gcs_dir, 70)
    destination = gcs_dir + "out/file.dcz"
    temp_dir = storage.temp_dir_for(destination, "job-70")
    storage.publish_concatenation(sources, destination, temp_dir=temp_dir)
    assert read_all(destination) == expected
    assert list_under(gcs_dir + "parts/") == []
    assert list_under(temp_dir) == []  # intermediates are gone too


def test_failure_inside_the_compose_tree_leaves_no_destination_and_no_intermediates(gcs_dir):
    sources, _ = make_parts(gcs_dir, 70)
    # The missing source sits in the last group, so earlier intermediates are made before it fails.
    broken = sources[:65] + [gcs_dir + "parts/missing"] + sources[65:]
    destination = gcs_dir + "out/file.dcz"
    temp_dir = storage.temp_dir_for(destination, "job-broken")
    with pytest.raises(Exception):
        storage.publish_concatenation(broken, destination, temp_dir=temp_dir)
    assert not FileSystems.exists(destination)
    assert list_under(temp_dir) == []
    assert all(FileSystems.exists(p) for p in sources)


def test_compose_refuses_sources_from_another_bucket(gcs_dir):
    with pytest.raises(ValueError, match="one bucket"):
        storage.publish_concatenation(["gs://some-other-bucket/p0"], gcs_dir + "out.dcz")


def test_compose_refuses_more_parts_than_a_composite_object_can_hold(gcs_dir):
    sources = [f"{gcs_dir}p{i}" for i in range(1025)]
    with pytest.raises(ValueError, match="1024"):
        storage.publish_concatenation(sources, gcs_dir + "out.dcz")


def test_remove_temp_dir_removes_everything_under_it(base_dir):
    temp_dir = storage.temp_dir_for(base_dir + "file.dcz", "job-x")
    write(temp_dir + "a", b"1")
    write(temp_dir + "deeper/b", b"2")
    storage.remove_temp_dir(temp_dir)
    assert list_under(temp_dir) == []


# ---------------------------------------------------------------------------------------------
# Direct I/O helpers


def test_aligned_buffers_start_on_a_page_and_hold_the_size_asked():
    for size in (1, 4096, 4 * 2**20 + 3):
        buffer = storage.aligned_buffer(size)
        assert buffer.shape == (size,) and buffer.dtype.name == "uint8"
        assert buffer.ctypes.data % storage.DIRECT_IO_ALIGNMENT == 0
        assert not buffer.any()


@pytest.mark.parametrize("offset, length, allowed", [
    (0, 4096, True), (8192, 4 * 2**20, True), (0, 0, False), (4096, 100, False), (100, 4096, False)])
def test_direct_io_takes_only_aligned_writes(offset, length, allowed):
    assert storage.direct_io_allows(offset, length) is allowed


def test_a_direct_write_of_an_aligned_buffer_lands_where_asked(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"-" * 3 * 4096)
    fd = storage.open_direct(str(path))
    if fd is None:
        pytest.skip("no direct I/O on this filesystem")
    buffer = storage.aligned_buffer(4096)
    buffer[:] = 7
    try:
        storage.pwrite_all(fd, buffer, 4096)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"-" * 4096 + b"\x07" * 4096 + b"-" * 4096


def test_opening_a_missing_file_for_direct_io_gives_none(tmp_path):
    assert storage.open_direct(str(tmp_path / "missing")) is None


def test_two_attempts_of_one_job_never_share_a_temp_dir():
    folders = {storage.temp_dir_for("gs://b/out/big.dcz", "job-1", attempt) for attempt in (1, 2, 3)}
    assert len(folders) == 3
    assert storage.temp_dir_for("gs://b/out/big.dcz", "job-1", 2) == "gs://b/out/.dcas-tmp/job-1.a2/"
