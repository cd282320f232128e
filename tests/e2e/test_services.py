"""Tests of services.compression called directly: round trips, stats, atomic outputs, input checks."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from samples import sample_text  # tests/ is on sys.path (conftest dir)

import codec
from codec import FormatError
from codec.container import FRAME_HEADER_SIZE, HEADER_SIZE
from services import compression
from services.compression import (BeamEngine, InputError, OutputError, OutputExistsError,
                                  compress_file, decompress_file, file_info, original_size,
                                  source_size, verify_file)

CHUNK = 64 * 1024


@pytest.fixture
def original(tmp_path: Path) -> Path:
    path = tmp_path / "sample.txt"
    path.write_bytes(sample_text(3 * CHUNK + 123))
    return path


@pytest.fixture
def container(original: Path) -> Path:
    dst = original.with_name(original.name + ".dcz")
    compress_file(original, dst, chunk_size=CHUNK)
    return dst


def corrupt(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


class ExplodingEngine(compression.StreamEngine):
    """Writes some output, then fails the way a full disk or a Ctrl-C would."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def compress(self, src, dst, *, chunk_size, progress):
        dst.write(b"partial output")
        raise self.error

    def decompress(self, src, dst, *, max_size, progress):
        dst.write(b"partial output")
        raise self.error


def test_compress_then_decompress_round_trips_and_reports_stats(original: Path, tmp_path: Path):
    packed, unpacked = tmp_path / "out.dcz", tmp_path / "out.txt"
    stats = compress_file(original, packed, chunk_size=CHUNK)
    assert stats["original_size"] == original.stat().st_size
    assert stats["compressed_size"] == packed.stat().st_size
    assert stats["chunks"] == 4
    assert stats["seconds"] >= 0
    back = decompress_file(packed, unpacked)
    assert unpacked.read_bytes() == original.read_bytes()
    assert back["original_size"] == original.stat().st_size


def test_empty_file_round_trips(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    compress_file(empty, tmp_path / "empty.dcz", chunk_size=CHUNK)
    decompress_file(tmp_path / "empty.dcz", tmp_path / "again")
    assert (tmp_path / "again").read_bytes() == b""


def test_open_binary_files_work_as_source_and_destination(original: Path):
    packed = io.BytesIO()
    with open(original, "rb") as src:
        compress_file(src, packed, chunk_size=CHUNK)
    packed.seek(0)
    unpacked = io.BytesIO()
    decompress_file(packed, unpacked)
    assert unpacked.getvalue() == original.read_bytes()


def test_progress_is_reported_up_to_the_total(original: Path, tmp_path: Path):
    seen: list[int] = []
    compress_file(original, tmp_path / "p.dcz", chunk_size=CHUNK, progress=seen.append)
    assert seen == sorted(seen)
    assert seen[-1] == original.stat().st_size
    seen.clear()
    decompress_file(tmp_path / "p.dcz", tmp_path / "p.txt", progress=seen.append)
    assert seen and seen[-1] == original.stat().st_size


def test_progress_totals_are_the_input_size_and_the_declared_original_size(original, container):
    assert source_size(original) == original.stat().st_size
    assert original_size(container) == original.stat().st_size
    assert source_size(io.BytesIO(b"abc")) is None
    assert original_size(original) is None  # not a container: decompression will say why


def test_existing_output_is_refused_and_left_untouched(original: Path, tmp_path: Path):
    dst = tmp_path / "taken.dcz"
    dst.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        compress_file(original, dst, chunk_size=CHUNK)
    assert dst.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


def test_overwrite_replaces_existing_output(original: Path, tmp_path: Path):
    dst = tmp_path / "taken.dcz"
    dst.write_bytes(b"old")
    compress_file(original, dst, chunk_size=CHUNK, overwrite=True)
    decompress_file(dst, tmp_path / "back.txt")
    assert (tmp_path / "back.txt").read_bytes() == original.read_bytes()


def test_output_gets_the_permissions_a_plain_open_would_give(original: Path, tmp_path: Path):
    old_mask = os.umask(0o027)
    try:
        compress_file(original, tmp_path / "perm.dcz", chunk_size=CHUNK)
    finally:
        os.umask(old_mask)
    assert (tmp_path / "perm.dcz").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failure_mid_write_removes_the_temp_file_and_creates_no_output(original, tmp_path, error):
    dst = tmp_path / "never.dcz"
    with pytest.raises(type(error)):
        compress_file(original, dst, chunk_size=CHUNK, engine=ExplodingEngine(error))
    assert not dst.exists()
    assert leftovers(tmp_path) == []


def test_failure_mid_write_leaves_an_existing_output_untouched(container: Path, tmp_path: Path):
    dst = tmp_path / "keep.txt"
    dst.write_bytes(b"precious")
    with pytest.raises(KeyboardInterrupt):
        decompress_file(container, dst, overwrite=True, engine=ExplodingEngine(KeyboardInterrupt()))
    assert dst.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


def test_corrupt_container_raises_format_error_and_writes_nothing(container: Path, tmp_path: Path):
    corrupt(container, HEADER_SIZE + FRAME_HEADER_SIZE + 100)
    dst = tmp_path / "out.txt"
    with pytest.raises(FormatError):
        decompress_file(container, dst)
    assert not dst.exists()
    assert leftovers(tmp_path) == []


def test_missing_input_is_an_input_error(tmp_path: Path):
    with pytest.raises(InputError, match="not found"):
        compress_file(tmp_path / "nope", tmp_path / "nope.dcz", chunk_size=CHUNK)
    assert not (tmp_path / "nope.dcz").exists()


def test_directory_input_is_an_input_error(tmp_path: Path):
    with pytest.raises(InputError, match="directory"):
        compress_file(tmp_path, tmp_path / "dir.dcz", chunk_size=CHUNK)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_input_is_an_input_error(original: Path, tmp_path: Path):
    original.chmod(0)
    with pytest.raises(InputError, match="cannot read"):
        compress_file(original, tmp_path / "x.dcz", chunk_size=CHUNK)


def test_output_in_a_missing_directory_is_an_output_error(original: Path, tmp_path: Path):
    with pytest.raises(OutputError, match="does not exist"):
        compress_file(original, tmp_path / "no" / "such" / "x.dcz", chunk_size=CHUNK)


def test_output_that_is_the_input_is_refused(original: Path):
    before = original.read_bytes()
    with pytest.raises(OutputError, match="same file"):
        compress_file(original, original, chunk_size=CHUNK, overwrite=True)
    assert original.read_bytes() == before


def test_file_info_describes_the_container(container: Path, original: Path):
    info = file_info(container)
    assert info["file"] == str(container)
    assert info["chunks"] == 4
    assert info["original_size"] == original.stat().st_size
    assert info["compressed_size"] == container.stat().st_size


def test_verify_passes_an_intact_file_and_fails_a_corrupted_one(container: Path):
    assert verify_file(container)["chunks"] == 4
    corrupt(container, HEADER_SIZE + FRAME_HEADER_SIZE + 5)
    with pytest.raises(FormatError):
        verify_file(container)


def test_gs_paths_and_pipeline_options_run_the_beam_pipeline(tmp_path: Path):
    engine = compression.choose_engine(tmp_path / "a", str(tmp_path / "a.dcz"), workers=3)
    assert isinstance(engine, compression.BeamEngine) and engine.workers == 3
    assert isinstance(compression.choose_engine("gs://b/in", "gs://b/in.dcz"), compression.BeamEngine)
    assert isinstance(compression.choose_engine(tmp_path / "a", "gs://b/a.dcz"), compression.BeamEngine)
    for asked in ({"workers": 0}, {"pipeline_args": ["--direct_num_workers=1"]}, {"engine": "beam"},
                  {"runner": "DataflowRunner"}):
        assert isinstance(compression.choose_engine(tmp_path / "a", tmp_path / "a.dcz", **asked),
                          compression.BeamEngine), asked


def test_local_files_of_any_size_run_in_process_on_every_core_unless_told_otherwise(tmp_path: Path):
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(2**31)  # sparse: no disk used; once the pipeline's size, no longer a reason
    engine = compression.choose_engine(big, tmp_path / "big.dcz")
    assert isinstance(engine, compression.LocalEngine) and engine.threads == codec.default_threads()
    engine = compression.choose_engine(big, tmp_path / "big.dcz", engine="local", threads=3)
    assert isinstance(engine, compression.LocalEngine) and engine.threads == 3


def test_engine_choices_that_contradict_each_other_are_refused(tmp_path: Path):
    for contradiction in ({"engine": "local", "workers": 2}, {"engine": "local", "runner": "DataflowRunner"},
                          {"engine": "beam", "threads": 2}, {"engine": "turbo"}):
        with pytest.raises(compression.ServiceError):
            compression.choose_engine(tmp_path / "a", tmp_path / "a.dcz", **contradiction)
    with pytest.raises(compression.ServiceError, match="gs://"):
        compression.choose_engine("gs://b/in", "gs://b/in.dcz", engine="local")
    with pytest.raises(compression.ServiceError, match="pipe"):
        compression.choose_engine(io.BytesIO(), tmp_path / "a.dcz", engine="beam")


def test_pipes_and_names_the_pipeline_would_read_as_globs_use_the_local_engine(tmp_path: Path):
    assert isinstance(compression.choose_engine(io.BytesIO(), tmp_path / "x.dcz"), compression.LocalEngine)
    assert isinstance(compression.choose_engine(tmp_path / "x", io.BytesIO()), compression.LocalEngine)
    assert isinstance(compression.choose_engine(tmp_path / "x[1].bin", tmp_path / "x.dcz"),
                      compression.LocalEngine)


def test_a_remote_runner_for_a_pipe_is_refused():
    with pytest.raises(compression.ServiceError, match="pipe"):
        compression.choose_engine(io.BytesIO(), io.BytesIO(), runner="DataflowRunner")


def test_dataflow_runner_needs_gs_paths(original: Path, tmp_path: Path):
    engine = compression.BeamEngine(runner="DataflowRunner")
    with pytest.raises(compression.ServiceError, match="gs://"):
        compress_file(original, tmp_path / "x.dcz", chunk_size=CHUNK, engine=engine)


def test_pipeline_round_trip_leaves_only_the_output_and_its_metadata(original: Path, tmp_path: Path):
    stats = compress_file(original, tmp_path / "p.dcz", chunk_size=CHUNK, engine=BeamEngine())
    assert stats["chunks"] == 4 and stats["job_id"]
    assert stats["compressed_size"] == (tmp_path / "p.dcz").stat().st_size
    decompress_file(tmp_path / "p.dcz", tmp_path / "p.txt", engine=BeamEngine())
    assert (tmp_path / "p.txt").read_bytes() == original.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.dcz", "p.dcz.meta.json", "p.txt", "sample.txt"]


def test_an_output_that_appears_while_the_pipeline_runs_is_kept_without_overwrite(original: Path,
                                                                                 tmp_path: Path):
    destination = tmp_path / "p.dcz"

    def someone_else_writes_the_output(done: int) -> None:  # progress is first reported as the job starts
        if not destination.exists():
            destination.write_bytes(b"someone else's")

    with pytest.raises(compression.OutputExistsError):
        compress_file(original, destination, chunk_size=CHUNK, progress=someone_else_writes_the_output,
                      engine=BeamEngine())
    assert destination.read_bytes() == b"someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.dcz", "sample.txt"]


class _EngineWhileSomeoneAppends(compression.StreamEngine):
    """The in-process engine, with the input growing under it after the first chunk is read."""

    def compress(self, src, dst, *, chunk_size, progress):
        appended = []

        def append_after_first_chunk(done: int) -> None:
            if not appended:  # once: a file that keeps growing is never read to its end
                appended.append(done)
                with open(src.name, "ab") as f:
                    f.write(b"appended while dcas was reading")
        return super().compress(src, dst, chunk_size=chunk_size, progress=append_after_first_chunk)


def test_an_input_that_changes_while_it_is_read_in_process_publishes_nothing(original: Path, tmp_path: Path):
    with pytest.raises(InputError, match="changed while it was read"):
        compress_file(original, tmp_path / "p.dcz", chunk_size=CHUNK, engine=_EngineWhileSomeoneAppends())
    assert not (tmp_path / "p.dcz").exists()
    assert [p.name for p in tmp_path.iterdir()] == [original.name]


def test_pipeline_decompress_honours_max_size_before_any_work(container: Path, tmp_path: Path):
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(FormatError, match="limit"):
        decompress_file(container, tmp_path / "big.txt", max_size=CHUNK, engine=BeamEngine())
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_pipeline_progress_ends_at_the_total_only_after_success(original: Path, tmp_path: Path):
    seen: list[int] = []
    compress_file(original, tmp_path / "p.dcz", chunk_size=CHUNK, progress=seen.append,
                  engine=BeamEngine())
    size = original.stat().st_size
    assert seen[-1] == size and all(done < size for done in seen[:-1])
    assert seen == sorted(seen)


def test_pipeline_progress_never_reaches_the_total_when_the_file_fails(container: Path, tmp_path: Path):
    corrupt(container, HEADER_SIZE + FRAME_HEADER_SIZE + 100)
    seen: list[int] = []
    with pytest.raises(FormatError):
        decompress_file(container, tmp_path / "out.txt", progress=seen.append, engine=BeamEngine())
    assert all(done < original_size(container) for done in seen)


def test_compress_progress_counts_complete_frames_of_a_part_being_written(tmp_path: Path):
    from codec.container import encode_frame
    frames = [encode_frame(sample_text(1000, seed))[0] for seed in range(3)]
    part = tmp_path / "x.dcz.part-00000"
    part.write_bytes(b"".join(frames[:2]) + frames[2][:30])  # two and a bit frames written so far
    # 3000 chunks make 1000 parts (the most a file gets) of three chunks each.
    probe = compression._encoded_input_probe(str(tmp_path) + os.sep, str(tmp_path / "x.dcz"),
                                             size=3_000_000, chunk_size=1000)
    assert probe() == 2000
    part.write_bytes(b"".join(frames))
    assert probe() == 3000
    assert compression._complete_frames_input(str(part), len(frames[0]) - 1) == 0


def test_local_decompress_progress_counts_what_decoders_wrote_into_the_sparse_temp_file(tmp_path: Path):
    from transforms.decode import decoded_temp_path
    probe = compression._decoded_bytes_probe(str(tmp_path), str(tmp_path / "out.bin"))
    assert probe() == 0  # the decoders have not created it yet
    decoded = Path(decoded_temp_path(str(tmp_path), str(tmp_path / "out.bin")))
    with open(decoded, "wb") as f:
        f.truncate(8 * 2**20)  # full size from the start, as the pipeline makes it
        f.seek(2**20)
        f.write(b"x" * 2**20)  # one decoder has written one MiB at its offset
        f.flush()
    assert 2**20 <= probe() < 8 * 2**20
