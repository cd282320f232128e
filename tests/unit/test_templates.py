"""The flex templates' metadata and the pipelines' options agree both ways, values included."""
from __future__ import annotations

import json
import pathlib
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec.container import MAX_CHUNK_SIZE
from codec.sizes import parse_size
from pipelines import batch

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
# Values for the required options, so that one option at a time can be tried.
BATCH_REQUIRED = {"input": "gs://b/in/*", "output": "gs://b/out/"}


def metadata(name: str) -> dict:
    return json.loads((TEMPLATES / f"{name}.json").read_text())


def parameters(name: str) -> dict[str, dict]:
    return {p["name"]: p for p in metadata(name)["parameters"]}


def template_regex(parameter: dict) -> re.Pattern:
    # Dataflow checks values with Java regexes, whose \s, \d and [a-z] are ASCII: Python's re.ASCII reads them alike.
    (pattern,) = parameter["regexes"]
    return re.compile(pattern, re.ASCII)


def batch_options() -> dict[str, object]:
    return {action.dest: action for action in batch._parser()._actions if action.option_strings
            and action.dest != "help"}


def batch_accepts(name: str, value: str) -> bool:
    """Whether `python -m pipelines.batch` accepts --name=value as the template launcher passes it."""
    argv = [f"--{k}={v}" for k, v in BATCH_REQUIRED.items() if k != name] + [f"--{name}={value}"]
    try:
        batch.parse_args(argv)
    except SystemExit:
        return False
    return True


def test_the_batch_template_is_described_and_is_not_streaming():
    meta = metadata("batch")
    assert meta["name"] and meta["description"]
    assert meta["streaming"] is False


def test_every_batch_template_parameter_has_a_label_help_text_and_one_anchored_regex():
    for parameter in parameters("batch").values():
        assert parameter["label"] and parameter["helpText"], parameter["name"]
        assert isinstance(parameter["isOptional"], bool), parameter["name"]
        (pattern,) = parameter["regexes"]
        assert pattern.startswith("^") and pattern.endswith("$"), parameter["name"]


def test_every_batch_template_parameter_is_an_option_of_the_batch_pipeline():
    assert set(parameters("batch")) <= set(batch_options())


def test_every_option_of_the_batch_pipeline_is_a_template_parameter():
    assert set(batch_options()) <= set(parameters("batch"))


def test_required_template_parameters_are_exactly_the_options_the_pipeline_requires():
    required = {dest for dest, action in batch_options().items() if action.required}
    assert {name for name, p in parameters("batch").items() if not p["isOptional"]} == required
    assert set(BATCH_REQUIRED) == required


@pytest.mark.parametrize("name", sorted(parameters("batch")))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_value_a_batch_template_regex_admits_is_accepted_by_the_pipeline(name, data):
    value = data.draw(st.from_regex(template_regex(parameters("batch")[name]), fullmatch=True))
    if name == "chunk_size" and not 1 <= parse_size(value) <= MAX_CHUNK_SIZE:
        # The range (1 byte to 1 GiB) is the pipeline's check, with its own message; a regex would be unreadable.
        assert not batch_accepts(name, value)
        return
    assert batch_accepts(name, value), (name, value)


@pytest.mark.parametrize("name, accepted, rejected", [
    ("chunk_size", ["65536", "64K", "64KiB", "64kb", "4M", "4MiB", "1GiB", "1G", "7B", " 4 MiB "],
     ["", "4.5M", "-1", "4TB", "M", "\u0664M", "4\u212a"]),
    ("mode", ["compress", "decompress"], ["", "Compress", "squash"]),
    ("job_id", ["a", "nightly-2026-12-01", "0x"], ["", "-a", "Has Spaces", "a_b"]),
    ("keep_existing", ["true", "false"], ["", "yes", "True", "1"]),
])
def test_a_batch_template_regex_admits_what_the_pipeline_accepts_and_no_more(name, accepted, rejected):
    regex = template_regex(parameters("batch")[name])
    for value in accepted:
        assert batch_accepts(name, value) and regex.fullmatch(value), value
    for value in rejected:
        assert not batch_accepts(name, value) and not regex.fullmatch(value), value


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
