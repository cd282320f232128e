"""The flex template's metadata must name only options the batch pipeline accepts."""
from __future__ import annotations

import json
import pathlib

import pytest

from pipelines import batch

TEMPLATES = pathlib.Path(__file__).resolve().parent.parent.parent / "templates"


def template_parameters() -> list[dict]:
    return json.loads((TEMPLATES / "metadata.json").read_text())["parameters"]


@pytest.mark.parametrize("parameter", template_parameters(), ids=lambda p: p["name"])
def test_every_template_parameter_is_an_option_of_the_batch_pipeline(parameter):
    option_names = {a.dest for a in batch._parser()._actions}
    assert parameter["name"] in option_names


def test_required_template_parameters_are_required_by_the_pipeline_too():
    required = {a.dest for a in batch._parser()._actions if a.required}
    assert {p["name"] for p in template_parameters() if not p.get("isOptional")} == required


def test_the_image_runs_the_batch_pipeline_module_that_exists():
    dockerfile = (TEMPLATES / "Dockerfile").read_text()
    assert "FLEX_TEMPLATE_PYTHON_PY_FILE=/dcas/pipelines/batch.py" in dockerfile
    assert (TEMPLATES.parent / "pipelines" / "batch.py").is_file()
    # Beam in the image must be the version setup.py pins.
    setup = (TEMPLATES.parent / "setup.py").read_text()
    version = dockerfile.split("beam_python3.11_sdk:")[1].split()[0]
    assert f"apache-beam[gcp]=={version}" in setup
