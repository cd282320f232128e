"""The Dockerfile's pins, user and roles agree with setup.py, the templates and the role script, read as text."""
from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SETUP = (ROOT / "setup.py").read_text()
ROLE_SCRIPT = (ROOT / "deploy" / "image" / "dcas-role").read_text()


def build_arg(name: str) -> str:
    (value,) = re.findall(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.MULTILINE)
    return value


def beam_pin() -> str:
    return re.search(r'"apache-beam\[gcp\]==([0-9.]+)"', SETUP).group(1)


def test_beam_is_pinned_identically_in_setup_py_the_base_image_and_the_build():
    assert build_arg("BEAM_VERSION") == beam_pin()
    assert build_arg("BASE_IMAGE") == f"apache/beam_python3.11_sdk:{beam_pin()}"
    assert '"apache-beam[gcp]==${BEAM_VERSION}"' in DOCKERFILE


def test_the_launcher_image_is_for_the_same_python_as_the_sdk_image():
    python = re.search(r"beam_python(\d)\.(\d+)_sdk", build_arg("BASE_IMAGE")).groups()
    assert f"/python{''.join(python)}-template-launcher-base:" in build_arg("LAUNCHER_IMAGE")


@pytest.mark.parametrize("arg", ["BASE_IMAGE", "LAUNCHER_IMAGE"])
def test_base_images_are_pinned_to_an_exact_tag_never_latest(arg):
    reference = build_arg(arg)
    # Tags, not digests: no digest could be verified from here (no registry), and a wrong one fails every build.
    assert "@" not in reference
    name, _, tag = reference.rpartition(":")
    assert name and re.fullmatch(r"[0-9][0-9A-Za-z._-]*", tag), reference  # a version or a release date


def test_every_from_line_names_a_pinned_build_argument_or_an_earlier_stage():
    froms = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    assert froms == ["${LAUNCHER_IMAGE}", "${BASE_IMAGE}"]


def test_the_build_runs_pip_check():
    assert re.search(r"&& pip check\b", DOCKERFILE)


def test_the_image_ends_as_a_non_root_user_with_the_beam_boot_entrypoint():
    assert DOCKERFILE.rstrip().splitlines()[-1] == 'ENTRYPOINT ["/opt/apache/beam/boot"]'
    (user,) = re.findall(r"^USER (\S+)$", DOCKERFILE, re.MULTILINE)
    assert user == "${RUNTIME_UID}:${RUNTIME_UID}"
    assert int(build_arg("RUNTIME_UID")) >= 1000


def test_the_launcher_runs_a_pipeline_module_that_exists_and_has_a_template():
    assert "ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/dcas/pipelines/${PIPELINE}.py" in DOCKERFILE
    pipeline = build_arg("PIPELINE")
    assert (ROOT / "pipelines" / f"{pipeline}.py").is_file()
    assert (ROOT / "templates" / f"{pipeline}.json").is_file()


def test_the_build_context_admits_every_package_setup_py_installs():
    included = re.search(r"find_packages\(include=\[(.*?)\]\)", SETUP, re.DOTALL).group(1)
    packages = {name for name in re.findall(r'"([a-z_]+)"', included)}
    allowed = set(re.findall(r"^!([a-z_]+)/$", (ROOT / ".dockerignore").read_text(), re.MULTILINE))
    assert packages <= allowed


def test_the_role_script_runs_every_role_the_image_documents():
    roles = {role for roles in re.findall(r"^    ([a-z|]+)\)", ROLE_SCRIPT, re.MULTILINE)
             for role in roles.split("|")}
    assert roles == {"worker", "launcher", "manager", "status", "batch", "streaming", "dcas"}
    assert "exec /opt/apache/beam/boot" in ROLE_SCRIPT
    assert "exec /opt/google/dataflow/python_template_launcher" in ROLE_SCRIPT


def test_every_template_has_the_pipeline_module_its_image_launches_with_pipeline_set_to_its_name():
    # `--build-arg PIPELINE=<template name>` makes the launcher run pipelines/<template name>.py.
    templates = sorted(p.stem for p in (ROOT / "templates").glob("*.json"))
    assert templates == ["batch", "streaming"]
    for name in templates:
        assert (ROOT / "pipelines" / f"{name}.py").is_file(), name


def test_the_image_installs_the_cloud_trace_exporter_and_sends_spans_to_cloud_trace_by_default():
    from adapters.tracing import EXPORTERS, exporter_from_env
    assert '"/tmp/dcas-deps[cloudtrace]"' in DOCKERFILE and "cloudtrace" in SETUP
    assert re.search(r"python -c \"import opentelemetry\.exporter\.cloud_trace\"", DOCKERFILE)
    (value,) = re.findall(r"^\s+DCAS_TRACE_EXPORTER=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert value == "gcp" and value in EXPORTERS
    assert exporter_from_env({"DCAS_TRACE_EXPORTER": value}) == ("gcp", None)
