"""Smoke tests of the benchmark harness on small synthetic data, so the benchmark code cannot rot."""
from __future__ import annotations

import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

# benchmarks/ is a top-level folder, not an installed package: pytest.ini puts the root on sys.path.
from benchmarks import corpora, e2e, run


def _write_files(directory: Path, contents: list[bytes]) -> list[Path]:
    paths = []
    for index, content in enumerate(contents):
        path = directory / f"file{index:02d}.txt"
        path.write_bytes(content)
        paths.append(path)
    return paths


def _text_like(size: int, seed: int) -> bytes:
    """Skewed byte frequencies, as in text: compressible by any order-0 coder."""
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"etaoin shrdlu\n(){}=._,:", dtype=np.uint8)
    weights = np.linspace(3.0, 0.2, len(alphabet))
    return rng.choice(alphabet, size=size, p=weights / weights.sum()).tobytes()


# --- corpora -------------------------------------------------------------------------------------

def test_a_corpus_is_the_sources_concatenated_and_cut_at_the_target_size(tmp_path):
    paths = _write_files(tmp_path, [b"a" * 300, b"b" * 300, b"c" * 300])
    out = tmp_path / "corpus.bin"
    manifest = corpora.write_corpus(corpora.read_pieces(paths), 500, out)
    assert out.read_bytes() == b"a" * 300 + b"b" * 200
    assert manifest["size"] == 500 and manifest["files"] == 2
    assert manifest["sources"] == [(str(paths[0]), 300), (str(paths[1]), 200)]
    assert manifest["sha256"] == corpora.sha256_of_file(out)


def test_building_twice_gives_the_same_bytes_and_reuses_the_cache(tmp_path):
    paths = _write_files(tmp_path, [_text_like(5000, seed) for seed in range(4)])
    spec = corpora.CorpusSpec("tiny", "synthetic files", lambda: corpora.read_pieces(paths))
    first, manifest = corpora.build(spec, 12_000, tmp_path / "cache")
    mtime = first.stat().st_mtime_ns
    again, manifest_again = corpora.build(spec, 12_000, tmp_path / "cache")
    assert again == first and again.stat().st_mtime_ns == mtime
    assert manifest_again["sha256"] == manifest["sha256"]
    rebuilt, manifest_rebuilt = corpora.build(spec, 12_000, tmp_path / "cache", rebuild=True)
    assert manifest_rebuilt["sha256"] == manifest["sha256"]


def test_a_cached_corpus_that_was_changed_is_not_reused(tmp_path):
    paths = _write_files(tmp_path, [_text_like(4000, 1)])
    spec = corpora.CorpusSpec("tiny", "synthetic files", lambda: corpora.read_pieces(paths))
    path, _ = corpora.build(spec, 3000, tmp_path / "cache")
    path.write_bytes(b"x" * 3000)
    assert corpora.cached_manifest(path, 3000) is None
    rebuilt, _ = corpora.build(spec, 3000, tmp_path / "cache")
    assert rebuilt.read_bytes() == paths[0].read_bytes()[:3000]


def test_interleave_keeps_the_sources_about_equal_in_bytes():
    big = iter([("big", b"x" * 1000)] * 10)
    small = iter([("small", b"y" * 100)] * 200)
    taken = {"big": 0, "small": 0}
    for index, (name, data) in enumerate(corpora.interleave([big, small])):
        taken[name] += len(data)
        if index == 50:
            break
    assert abs(taken["big"] - taken["small"]) <= 1000


def test_per_file_cap_takes_only_the_head_of_each_file(tmp_path):
    paths = _write_files(tmp_path, [b"1" * 50, b"2" * 5])
    assert list(corpora.read_pieces(paths, max_bytes_per_file=10)) == [
        (str(paths[0]), b"1" * 10), (str(paths[1]), b"2" * 5)]


def test_symlinked_duplicates_count_once(tmp_path):
    (real,) = _write_files(tmp_path, [b"data"])
    (tmp_path / "link.so").symlink_to(real)
    assert corpora.unique_regular_files([tmp_path / "link.so", real]) == [real]


# --- the codec benchmark -------------------------------------------------------------------------

def test_a_file_listed_in_two_groups_stays_only_in_the_first(tmp_path):
    real = tmp_path / "a.json"
    real.write_text("{}")
    (tmp_path / "link.json").symlink_to(real)
    other = tmp_path / "b.json"
    other.write_text("[]")
    assert corpora.once_each([[real], [tmp_path / "link.json", other]]) == [[real], [other]]


def test_a_missing_source_directory_drops_out_of_its_corpus(tmp_path):
    present = tmp_path / "x.py"
    present.write_bytes(b"print(1)\n")
    assert corpora._under(None, ".py") == []
    assert corpora._under(tmp_path / "absent", ".py") == []
    pieces = corpora.interleave([corpora.read_pieces(corpora._under(tmp_path / "absent", ".py")),
                                 corpora.read_pieces(corpora._under(tmp_path, ".py"))])
    assert list(pieces) == [(str(present), b"print(1)\n")]


def test_the_bench_and_held_out_corpora_have_distinct_names():
    assert not set(corpora.CORPORA) & set(corpora.HELD_OUT)
    assert {"source", "json"} <= set(corpora.CORPORA)


def test_entropy_bound_of_two_equally_frequent_symbols_is_one_bit_each():
    assert run.order0_entropy_bytes(b"ab" * 800) == 200
    assert run.order0_entropy_bytes(b"a" * 1000) == 0


def test_codec_benchmark_measures_every_codec_and_renders_the_targets():
    data = _text_like(300_000, seed=7)
    codecs = [run.our_codec(), run.zlib_huffman_codec(), run.zstd_codec(3)]
    run.warm_up(codecs, data[:4096])
    measurements = run.measure_corpus(data, codecs, repeats=2)
    assert [m.codec for m in measurements] == [c.name for c in codecs]
    assert all(len(m.encode_cpu) == 2 and len(m.decode_wall) == 2 for m in measurements)
    zlib_size = len(zlib.compress(data, 9))
    assert measurements[1].size < len(data) and measurements[2].size <= zlib_size * 1.2
    result = run.CorpusResult("synthetic", len(data), run.order0_entropy_bytes(data),
                              {"description": "skewed bytes", "files": 1, "sha256": "0" * 64},
                              measurements)
    ratios = run.target_ratios(result)
    assert ratios["size"] == measurements[0].size / measurements[1].size
    conditions = {**run.conditions(), "repeats": 2}
    text = run.render_markdown([result], conditions)
    assert "| zlib Huffman-only |" in text and "order-0 entropy bound" in text
    assert text.count("met**") == 3


def test_a_codec_that_loses_data_fails_the_benchmark():
    broken = run.Codec("broken", lambda d: d, lambda b: b[:-1])
    with pytest.raises(AssertionError, match="broken"):
        run.measure_corpus(b"some bytes", [broken], repeats=1)


def test_rerunning_replaces_only_its_own_section_of_the_document():
    document = "# Benchmarks\n\nprose stays\n"
    once = run.replace_between_markers(document, "codec-benchmark", "table one\n")
    twice = run.replace_between_markers(once, "codec-benchmark", "table two\n")
    both = run.replace_between_markers(twice, "e2e-benchmark", "e2e table\n")
    assert "prose stays" in both and "table two" in both and "table one" not in both
    assert "e2e table" in both and both.count("table two") == 1
    assert run.replace_between_markers(both, "e2e-benchmark", "e2e table\n") == both


def test_peak_memory_sees_a_large_allocation():
    _, peak = run.peak_memory(lambda: np.ones(20_000_000, dtype=np.uint8).sum())
    assert peak["rss_peak_extra"] >= 19_000_000 and peak["traced_peak"] >= 19_000_000


def test_memory_probe_reports_encode_and_decode_of_one_chunk(tmp_path):
    corpus = tmp_path / "corpus.bin"
    corpus.write_bytes(_text_like(1 << 18, seed=3))
    report = run.measure_memory(corpus, chunk_size=1 << 18)
    assert report is not None and report["chunk_size"] == 1 << 18
    assert {"rss_peak_extra", "traced_peak"} <= set(report["encode"]) and "decode" in report


# --- the end-to-end benchmark --------------------------------------------------------------------

_ALLOCATE_AND_SPAWN = """
import subprocess, sys, time
held = bytearray(60_000_000)
child = subprocess.Popen([sys.executable, "-c",
                          "import time; held = bytearray(30_000_000); time.sleep(1.0)"])
time.sleep(1.0)
child.wait()
"""


def test_watching_a_command_finds_the_peak_memory_of_its_processes():
    stats = e2e.run_watched(e2e.Command([sys.executable, "-c", _ALLOCATE_AND_SPAWN]), interval=0.05)
    assert stats.peak_rss_root >= 60_000_000
    assert 30_000_000 <= stats.peak_rss_worker < 60_000_000
    assert stats.peak_rss_sum >= 90_000_000 and stats.processes == 2
    assert stats.wall >= 1.0


def test_a_watched_command_is_timed_to_its_exit_not_to_the_next_sample():
    stats = e2e.run_watched(e2e.Command(["sleep", "0.05"]), interval=2.0)
    assert 0.05 <= stats.wall < 1.0


def test_a_failing_command_is_reported_with_its_error():
    with pytest.raises(RuntimeError, match="boom"):
        e2e.run_watched(e2e.Command([sys.executable, "-c", "import sys; sys.exit('boom')"]))


def test_the_harness_runs_interleaved_rounds_checks_round_trips_and_cleans_up(tmp_path):
    source = tmp_path / "input.bin"
    source.write_bytes(_text_like(1 << 20, seed=5))
    tiny = tmp_path / "tiny.txt"
    tiny.write_bytes(b"hello\n")
    steps = [step for step in e2e.local_steps(tiny) if "pigz" not in step.name]  # no Debian package needed
    work = tmp_path / "work"
    results = e2e.run_rounds(steps, source, repeats=2, work_dir=work)
    assert list(results) == [step.name for step in steps]
    assert all(len(r.runs) == 2 and r.median() > 0 for r in results.values())
    assert results[e2e.C2].output_size == results[e2e.C1].output_size == results[e2e.PIPE].output_size
    assert results[e2e.D2].output_size == source.stat().st_size
    assert sorted(p.name for p in work.iterdir()) == []  # outputs cleaned up
    conditions = {**run.conditions(), "repeats": 2}
    text = e2e.render_markdown([(" (1 MiB)", results)], conditions, {"description": "1 MiB of text"})
    assert f"| {e2e.C2} |" in text and "time with 1 thread ÷ with 2 (1 MiB)" in text
    e2e.save(tmp_path / "e2e.json", conditions, {"description": "1 MiB of text"}, [(" (1 MiB)", results)])
    assert e2e.rerender(tmp_path / "e2e.json") == text


def test_every_step_finds_the_files_it_reads_just_read_into_the_page_cache(tmp_path, monkeypatch):
    source = tmp_path / "input.bin"
    source.write_bytes(_text_like(1 << 16, seed=6))
    steps = [step for step in e2e.local_steps(tmp_path / "tiny") if "pigz" not in step.name]
    (tmp_path / "tiny").write_bytes(b"tiny\n")
    events = []
    real_run_watched = e2e.run_watched
    monkeypatch.setattr(e2e, "bring_into_page_cache", lambda paths: events.append([p.name for p in paths]))
    monkeypatch.setattr(e2e, "run_watched", lambda command: events.append("run") or real_run_watched(command))
    e2e.run_rounds(steps, source, repeats=1, work_dir=tmp_path / "work")
    cached = [events[i - 1] for i, event in enumerate(events) if event == "run"]
    assert dict(zip((step.name for step in steps), cached)) == {
        e2e.C2: ["input.bin"], e2e.C1: ["input.bin"], e2e.PIPE: ["input.bin"],
        e2e.D2: ["c2.dcz"], e2e.D1: ["c1.dcz"], e2e.TINY_C: [], e2e.TINY_D: ["tiny.dcz"]}


def test_a_decompressor_that_does_not_give_the_input_back_fails_the_benchmark(tmp_path):
    source = tmp_path / "input.bin"
    source.write_bytes(b"the input")
    wrong = e2e.Step("wrong", lambda src, w: e2e.shell('printf x > "$0"', w / "out"), "out", "same-as-input")
    with pytest.raises(AssertionError, match="did not give back"):
        e2e.run_rounds([wrong], source, repeats=1, work_dir=tmp_path / "work")


def _result(name: str, wall: float, peak: int = 2**20) -> e2e.Result:
    stats = e2e.RunStats(wall=wall, cpu=wall, peak_rss_root=peak, peak_rss_worker=0, peak_rss_sum=peak,
                         processes=1)
    return e2e.Result(name, 10**9, [stats], 6 * 10**8)


def test_target_rows_compare_with_pigz_with_the_same_durability_and_check_the_memory_allowance():
    results = {r.name: r for r in [
        _result(e2e.C2, 3.0, 250 * 2**20), _result(e2e.C1, 4.5), _result(e2e.PIGZ_C, 8.0),
        _result(e2e.D2, 2.0, 150 * 2**20), _result(e2e.D1, 3.0), _result(e2e.PIGZ_D, 5.0),
        _result(e2e.PIPE, 4.0), _result(e2e.PIGZ_PIPE, 8.0),
        _result(e2e.TINY_C, 1.0, 160 * 2**20), _result(e2e.TINY_D, 0.5, 120 * 2**20)]}
    rows = "\n".join(e2e.target_rows(results))
    assert "time ÷ pigz -H -p 2 (then sync) | ≤ 0.50 | 0.38 | **met**" in rows
    assert "time ÷ pigz -d (then sync) | ≤ 0.50 | 0.40 | **met**" in rows
    assert "pipe compress: time ÷ cat \\| pigz -H -p 2 (then sync) | ≤ 0.60 | 0.50 | **met**" in rows
    assert "time with 1 thread ÷ with 2 | ≥ 1.70 | 1.50 | **not met**" in rows
    assert "CPU time with 2 threads ÷ with 1 | – | 0.67 |" in rows  # _result's CPU is its wall time
    assert "time beyond the 6-byte run's, 1 thread ÷ 2 | – | 1.75 |" in rows  # (4.5 - 1) / (3 - 1)
    # 250 - 160 = 90 MiB above the 6-byte run: over 64 MiB + 4 chunks of 4 MiB; 150 - 120 = 30 is not.
    assert f"{e2e.C2}: peak RSS above the 6-byte run's | ≤ 80 MiB | 90 MiB | **not met**" in rows
    assert f"{e2e.D2}: peak RSS above the 6-byte run's | ≤ 80 MiB | 30 MiB | **met**" in rows


def test_beam_cost_per_gb_beyond_start_up_is_the_slope_between_1_and_4_gb():
    one = {r.name: r for r in [_result(e2e.BEAM_C, 10.0), _result(e2e.PIGZ_C, 8.0),
                               _result(e2e.BEAM_D, 8.0), _result(e2e.PIGZ_D, 5.0)]}
    four = {r.name: r for r in [_result(e2e.BEAM_C, 22.0), _result(e2e.PIGZ_C, 32.0),
                                _result(e2e.BEAM_D, 17.0), _result(e2e.PIGZ_D, 20.0)]}
    rows = "\n".join(e2e.beam_rows(one, four))
    assert "(4.00 ÷ 8.00) | ≤ 0.70 | 0.50 | **met**" in rows  # (22 - 10) / 3 against (32 - 8) / 3
    assert "(3.00 ÷ 5.00) | ≤ 0.60 | 0.60 | **met**" in rows


def test_pigz_commands_sync_their_output_as_dcas_fsyncs_its_own():
    command = e2e.pigz_compress(Path("in.bin"), Path("out.gz"))
    assert command.argv[:2] == ["sh", "-c"] and command.argv[3:] == ["2", "in.bin", "out.gz"]
    assert 'pigz -H -p "$0" -c "$1" > "$2" && sync "$2"' in command.argv[2]
    assert e2e.pigz_decompress(Path("a.gz"), Path("a")).argv[2].endswith('&& sync "$1"')
    assert e2e.dcas_pipe(Path("in"), Path("out")).argv[2].endswith('&& sync "$3"')


def test_the_process_tree_walked_down_from_the_root_is_the_one_found_by_parent_pids():
    import subprocess
    import time
    shell = subprocess.Popen(["sh", "-c", "sleep 5 & (sleep 5 & wait) & wait"])
    try:
        deadline = time.monotonic() + 5
        while len(e2e._process_tree_by_parents(shell.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        tree = e2e.process_tree(shell.pid)
        assert len(tree) == 4 and tree[0] == shell.pid  # sh, a sleep, a subshell and its sleep
        assert sorted(tree) == sorted(e2e._process_tree_by_parents(shell.pid))
    finally:
        for pid in reversed(e2e.process_tree(shell.pid)):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        shell.wait()


def test_a_round_removes_each_output_once_no_later_step_reads_it(tmp_path):
    src = tmp_path / "input.bin"
    src.write_bytes(b"data")
    work, listing = tmp_path / "work", tmp_path / "listing"
    steps = [
        e2e.Step("a", lambda s, w: e2e.shell('cp "$0" "$1"', s, w / "a.out"), "a.out"),
        e2e.Step("b", lambda s, w: e2e.shell('cp "$0" "$1"', s, w / "b.out"), "b.out"),
        e2e.Step("c", lambda s, w: e2e.shell('cp "$0" "$1"', w / "a.out", w / "c.out"), "c.out", reads=("a.out",)),
        e2e.Step("d", lambda s, w: e2e.shell('ls "$0" > "$1" && cp "$2" "$3"', w, listing, w / "b.out", w / "d.out"),
                 "d.out", reads=("b.out",)),
    ]
    results = e2e.run_rounds(steps, src, 1, work)
    # When d runs, a.out (last read by c) and c.out (read by nobody) are gone; b.out is kept for d.
    assert listing.read_text().split() == ["b.out"]
    assert results["d"].output_size == 4 and sorted(os.listdir(work)) == []
