"""The batch pipeline's argument parsing and naming rules, checked without running a pipeline."""
from __future__ import annotations

import os
import tempfile

import apache_beam as beam
import pytest
from apache_beam.pipeline import PipelineVisitor

from codec.container import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE
from pipelines.batch import build_pipeline, default_failures_path, new_pipeline, parse_args, parse_size
from transforms.planning import output_is_file

BASE = ["--input", "in/*", "--output", "out/"]


def test_parse_args_returns_known_args_and_leaves_beam_args_for_beam():
    known, pipeline_args = parse_args(BASE + ["--mode", "decompress", "--chunk_size", "64KiB",
                                              "--runner", "DataflowRunner", "--project", "p"])
    assert (known.input, known.output, known.mode, known.chunk_size) == ("in/*", "out/", "decompress", 65536)
    assert pipeline_args == ["--runner", "DataflowRunner", "--project", "p"]


def test_defaults_are_compress_with_the_container_default_chunk_size():
    known, _ = parse_args(BASE)
    assert known.mode == "compress"
    assert known.chunk_size == DEFAULT_CHUNK_SIZE
    assert known.failures is None and known.job_id is None
    assert known.keep_existing is False
    assert parse_args(BASE + ["--keep_existing"])[0].keep_existing is True


def test_without_a_runner_the_local_runner_uses_worker_threads_on_every_core():
    _, pipeline_args = parse_args(BASE)
    assert pipeline_args == ["--runner=FnApiRunner", "--direct_running_mode=multi_threading",
                             "--direct_num_workers=0"]


def test_worker_processes_can_still_be_asked_for():
    _, pipeline_args = parse_args(BASE + ["--direct_running_mode=multi_processing"])
    assert pipeline_args == ["--direct_running_mode=multi_processing", "--runner=FnApiRunner",
                             "--direct_num_workers=0"]


def test_explicit_direct_runner_settings_are_kept():
    _, pipeline_args = parse_args(BASE + ["--runner=DirectRunner", "--direct_num_workers", "2",
                                          "--direct_running_mode=multi_threading"])
    assert pipeline_args == ["--runner=DirectRunner", "--direct_num_workers", "2",
                             "--direct_running_mode=multi_threading"]


def test_dataflow_runner_gets_no_direct_runner_settings():
    _, pipeline_args = parse_args(BASE + ["--runner=DataflowRunner", "--region=europe-west1"])
    assert pipeline_args == ["--runner=DataflowRunner", "--region=europe-west1"]


@pytest.mark.parametrize("argv", [
    ["--output", "out/"],                                   # no --input
    ["--input", "in/*"],                                    # no --output
    BASE + ["--mode", "squash"],
    BASE + ["--chunk_size", "0"],
    BASE + ["--chunk_size", str(MAX_CHUNK_SIZE + 1)],
    BASE + ["--chunk_size", "lots"],
    BASE + ["--job_id", "Has Spaces"],
])
def test_bad_arguments_exit_with_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("text, size", [
    ("65536", 65536), ("64K", 65536), ("64KiB", 65536), ("64kb", 65536),
    ("4M", 4 * 2**20), ("4MiB", 4 * 2**20), ("1GiB", 2**30), ("7B", 7),
])
def test_parse_size_reads_binary_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "4.5M", "-1", "4TB", "M"])
def test_parse_size_rejects_what_is_not_a_size(text):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize("input_pattern, output, names_file", [
    ("data/a.txt", "out/a.dcz", True),
    ("data/a.txt", "out/", False),                     # trailing slash: a directory
    ("data/*.txt", "out", False),                      # a glob may match many files
    ("data/a?.txt", "out.dcz", False),
    ("gs://b/a.txt", "gs://b/out/a.dcz", True),
    ("gs://b/a.txt", "gs://b/out/", False),
])
def test_output_names_a_file_only_for_one_literal_input(input_pattern, output, names_file):
    assert output_is_file(input_pattern, output, is_directory=lambda path: False) is names_file


def test_an_existing_local_directory_is_an_output_directory_even_without_a_slash(tmp_path):
    assert output_is_file("data/a.txt", str(tmp_path)) is False
    assert output_is_file("data/a.txt", str(tmp_path / "a.dcz")) is True


def test_default_failures_file_is_named_for_the_job_beside_the_output():
    assert default_failures_path("/out", False, "dcas-x") == "/out/dcas-x.failures.csv"
    assert default_failures_path("/out/a.dcz", True, "dcas-x") == "/out/dcas-x.failures.csv"
    assert default_failures_path("gs://b/out/", False, "dcas-x") == "gs://b/out/dcas-x.failures.csv"


def top_level_labels(pipeline: beam.Pipeline) -> list[str]:
    labels = []

    class Visitor(PipelineVisitor):
        def enter_composite_transform(self, node):
            if node.full_label and "/" not in node.full_label:
                labels.append(node.full_label)

        def visit_transform(self, node):
            self.enter_composite_transform(node)

    pipeline.visit(Visitor())
    return labels


def stage_boundaries(pipeline: beam.Pipeline) -> list[str]:
    """Transforms that end a stage on the FnApiRunner: groupings and Flattens of several inputs."""
    boundaries = []

    class Visitor(PipelineVisitor):
        def visit_transform(self, node):
            if isinstance(node.transform, beam.GroupByKey) or (
                    isinstance(node.transform, beam.Flatten) and len(node.inputs) > 1):
                boundaries.append(node.full_label)

    pipeline.visit(Visitor())
    return boundaries


@pytest.fixture
def beam_temp_dir(tmp_path, monkeypatch):
    """The system temp dir, private to this test: where beam.Pipeline() makes its local temp folder."""
    directory = tmp_path / "system-tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.mark.parametrize("mode, stages, boundaries", [
    ("compress", ["Plan files", "Encode", "Publish", "Report failures"], 5),
    ("decompress", ["Plan files", "Seek tables", "Plan parts", "Spread parts", "Decode", "Publish",
                    "Report failures"], 5),
])
def test_building_the_graph_names_every_stage_and_touches_no_file(tmp_path, beam_temp_dir, mode, stages,
                                                                  boundaries):
    known, pipeline_args = parse_args(["--input", str(tmp_path / "missing" / "*"),
                                       "--output", str(tmp_path / "out"), "--mode", mode])
    with new_pipeline(pipeline_args) as pipeline:
        build_pipeline(pipeline, known, "dcas-test")
    assert [label for label in top_level_labels(pipeline) if label in stages] == stages
    # Each boundary is a stage run after the others (~20-85 ms each on the local runner).
    assert len(stage_boundaries(pipeline)) == boundaries
    assert sorted(os.listdir(tmp_path)) == ["system-tmp"]
    assert os.listdir(beam_temp_dir) == []  # no beam-pipeline-temp* folder left behind


def test_pipeline_options_share_values_between_views_made_once_per_class(beam_temp_dir):
    from apache_beam.options.pipeline_options import DebugOptions, DirectOptions, TypeOptions

    with new_pipeline(["--direct_num_workers=3", "--experiments=a"]) as pipeline:
        options = pipeline.options
        assert options.view_as(DirectOptions) is options.view_as(DirectOptions)
        assert options.view_as(DirectOptions).direct_num_workers == 3
        options.view_as(DebugOptions).experiments.append("b")
        options.view_as(TypeOptions).pipeline_type_check = False
        assert options.get_all_options()["experiments"] == ["a", "b"]
        assert options.get_all_options()["pipeline_type_check"] is False
