"""The flex templates' metadata (batch, streaming) and their pipelines' options agree both ways, values included."""
from __future__ import annotations

import json
import pathlib
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec.container import MAX_CHUNK_SIZE
from codec.sizes import parse_size
from pipelines import batch, streaming

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
PIPELINES = {"batch": batch, "streaming": streaming}
# Values for each pipeline's required options, so that one option at a time can be tried.
REQUIRED = {
    "batch": {"input": "gs://b/in/*", "output": "gs://b/out/"},
    "streaming": {"project": "dcas-test", "subscription": "projects/dcas-test/subscriptions/jobs",
                  "jobs_topic": "projects/dcas-test/topics/jobs", "dead_letter_topic": "projects/dcas-test/topics/dead"},
}


def metadata(name: str) -> dict:
    return json.loads((TEMPLATES / f"{name}.json").read_text())


def parameters(name: str) -> dict[str, dict]:
    return {p["name"]: p for p in metadata(name)["parameters"]}


def template_regex(parameter: dict) -> re.Pattern:
    # Dataflow checks values with Java regexes, whose \s, \d and [a-z] are ASCII: Python's re.ASCII reads them alike.
    (pattern,) = parameter["regexes"]
    return re.compile(pattern, re.ASCII)


def options(name: str) -> dict[str, object]:
    return {action.dest: action for action in PIPELINES[name]._parser()._actions if action.option_strings
            and action.dest != "help"}


def accepts(name: str, option: str, value: str) -> bool:
    """Whether `python -m pipelines.NAME` accepts --option=value as the template launcher passes it."""
    argv = [f"--{k}={v}" for k, v in REQUIRED[name].items() if k != option] + [f"--{option}={value}"]
    try:
        PIPELINES[name].parse_args(argv)
    except SystemExit:
        return False
    return True


def all_parameters() -> list[tuple[str, str]]:
    return [(name, parameter) for name in PIPELINES for parameter in sorted(parameters(name))]


@pytest.mark.parametrize("name, streaming_flag", [("batch", False), ("streaming", True)])
def test_each_template_is_described_and_says_whether_it_is_streaming(name, streaming_flag):
    meta = metadata(name)
    assert meta["name"] and meta["description"]
    assert meta["streaming"] is streaming_flag


@pytest.mark.parametrize("name", PIPELINES)
def test_every_template_parameter_has_a_label_help_text_and_one_anchored_regex(name):
    for parameter in parameters(name).values():
        assert parameter["label"] and parameter["helpText"], parameter["name"]
        assert isinstance(parameter["isOptional"], bool), parameter["name"]
        (pattern,) = parameter["regexes"]
        assert pattern.startswith("^") and pattern.endswith("$"), parameter["name"]


@pytest.mark.parametrize("name", PIPELINES)
def test_every_template_parameter_is_an_option_of_its_pipeline(name):
    assert set(parameters(name)) <= set(options(name))


@pytest.mark.parametrize("name", PIPELINES)
def test_every_option_of_the_pipeline_is_a_template_parameter(name):
    assert set(options(name)) <= set(parameters(name))


@pytest.mark.parametrize("name", PIPELINES)
def test_required_template_parameters_are_exactly_the_options_the_pipeline_requires(name):
    required = {dest for dest, action in options(name).items() if action.required}
    assert {p for p, spec in parameters(name).items() if not spec["isOptional"]} == required
    assert set(REQUIRED[name]) == required


# The ranges of numbers are the pipelines' own checks, with their own messages: a regex for them would be unreadable.
OUT_OF_RANGE = {
    ("batch", "chunk_size"): lambda value: not 1 <= parse_size(value) <= MAX_CHUNK_SIZE,
}


@pytest.mark.parametrize("name, option", all_parameters())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_value_a_template_regex_admits_is_accepted_by_the_pipeline(name, option, data):
    value = data.draw(st.from_regex(template_regex(parameters(name)[option]), fullmatch=True))
    if OUT_OF_RANGE.get((name, option), lambda value: False)(value):
        assert not accepts(name, option, value)
        return
    assert accepts(name, option, value), (name, option, value)


@pytest.mark.parametrize("name, option, accepted, rejected", [
    ("batch", "chunk_size", ["65536", "64K", "64KiB", "64kb", "4M", "4MiB", "1GiB", "1G", "7B", " 4 MiB "],
     ["", "4.5M", "-1", "4TB", "M", "\u0664M", "4\u212a"]),
    ("batch", "mode", ["compress", "decompress"], ["", "Compress", "squash"]),
    ("batch", "job_id", ["a", "nightly-2026-12-01", "0x"], ["", "-a", "Has Spaces", "a_b"]),
    ("batch", "keep_existing", ["true", "false"], ["", "yes", "True", "1"]),
    ("streaming", "max_attempts", ["1", "3", "10"], ["0", "-1", "", "x"]),
    ("streaming", "assembly_timeout", ["600", "0.5", ".5", "30.25"], ["0", "-1", "", "soon"]),
    ("streaming", "threads", ["0", "1", "16"], ["-1", "", "many"]),
])
def test_a_template_regex_admits_what_the_pipeline_accepts_and_no_more(name, option, accepted, rejected):
    regex = template_regex(parameters(name)[option])
    for value in accepted:
        assert accepts(name, option, value) and regex.fullmatch(value), value
    for value in rejected:
        assert not accepts(name, option, value) and not regex.fullmatch(value), value


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("0123456789 \tkKmMgGiIbBxX.-\u0664\u212a"), max_size=8))
def test_the_chunk_size_regex_and_parse_size_agree_on_any_text(text):
    try:
        parse_size(text)
        parsed = True
    except ValueError:
        parsed = False
    assert bool(template_regex(parameters("batch")["chunk_size"]).fullmatch(text)) == parsed


def test_parse_size_rejects_digits_of_other_scripts_and_the_kelvin_sign():
    for text in ["\u0664M", "\u0664", "4\u212a"]:
        with pytest.raises(ValueError, match="not a size"):
            parse_size(text)


def test_keep_existing_takes_a_template_value_or_stands_alone():
    assert batch.parse_args(["--input=a", "--output=b", "--keep_existing=true"])[0].keep_existing is True
    assert batch.parse_args(["--input=a", "--output=b", "--keep_existing=false"])[0].keep_existing is False
    assert batch.parse_args(["--input=a", "--output=b", "--keep_existing"])[0].keep_existing is True
