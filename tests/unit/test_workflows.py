"""The CI and release workflows parse and point at make targets, files and names that exist in this repository."""
from __future__ import annotations

import pathlib
import re

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
MAKE_TARGETS = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / f"{name}.yml").read_text())


def triggers(name: str) -> dict:
    data = workflow(name)
    return data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` key as true


def steps(name: str) -> list[dict]:
    return [step for job in workflow(name)["jobs"].values() for step in job["steps"]]


def run_text(name: str) -> str:
    return "\n".join(step.get("run", "") for step in steps(name))


@pytest.mark.parametrize("name", ["ci", "release"])
def test_every_make_target_a_workflow_runs_exists(name):
    targets = set(re.findall(r"\bmake ([a-z][a-z0-9-]*)", run_text(name)))
    assert targets and targets <= MAKE_TARGETS, targets - MAKE_TARGETS


@pytest.mark.parametrize("name", ["ci", "release"])
def test_every_action_is_pinned_to_a_release_and_every_job_has_a_timeout(name):
    for step in steps(name):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+(\.\d+)*", step["uses"]), step["uses"]
    for job_name, job in workflow(name)["jobs"].items():
        assert 0 < job["timeout-minutes"] <= 40, job_name


def test_ci_runs_the_lint_and_the_whole_suite_on_every_push_with_the_emulators_the_code_starts():
    assert {"push", "pull_request"} <= set(triggers("ci"))
    assert workflow("ci")["permissions"] == {"contents": "read"}
    runs = run_text("ci")
    assert "make lint" in runs and "make test\n" in runs + "\n"
    (gcloud,) = [s for s in steps("ci") if s.get("uses", "").startswith("google-github-actions/setup-gcloud")]
    components = set(gcloud["with"]["install_components"].split(","))
    # services/emulators.py names the components it needs in its error message.
    needed = set(re.findall(r"components ([\w-]+) and ([\w-]+)", (ROOT / "services" / "emulators.py").read_text())[0])
    assert needed <= components and "beta" in components  # `gcloud beta emulators pubsub start`


def test_ci_builds_the_image_on_the_real_bases_and_runs_its_entry_points():
    runs = run_text("ci")
    assert "make image IMAGE=dcas:ci" in runs and "make test-image-run IMAGE=dcas:ci" in runs
    assert "STANDIN" not in runs and "image-local" not in runs


def test_the_release_runs_on_version_tags_only_and_orders_image_templates_rollout():
    assert triggers("release") == {"push": {"tags": ["v*.*.*"]}}
    assert workflow("release")["permissions"] == {"contents": "read", "id-token": "write"}
    jobs = workflow("release")["jobs"]
    assert jobs["templates"]["needs"] == "image" and jobs["rollout"]["needs"] == "templates"


def test_the_release_builds_a_flex_template_for_every_template_file_with_the_matching_image():
    runs = run_text("release")
    (loop,) = re.findall(r"for pipeline in ([a-z ]+);", runs)
    assert sorted(loop.split()) == sorted(p.stem for p in (ROOT / "templates").glob("*.json"))
    assert '--metadata-file "templates/$pipeline.json"' in runs
    assert 'IMAGE_ARGS="--build-arg PIPELINE=streaming"' in runs
    assert re.search(r"^ARG PIPELINE=", (ROOT / "Dockerfile").read_text(), re.MULTILINE)


def test_the_release_rolls_out_the_argo_cd_application_and_image_name_the_manifests_use():
    application = yaml.safe_load((ROOT / "deploy" / "argocd" / "application.yaml").read_text())
    (image,) = yaml.safe_load((ROOT / "deploy" / "k8s" / "kustomization.yaml").read_text())["images"]
    runs = run_text("release")
    name = application["metadata"]["name"]
    assert f"argocd app set {name} --kustomize-image \"{image['name']}=$REGISTRY/dcas:$TAG\"" in runs
    assert f"argocd app wait {name} --health" in runs


def test_the_local_ci_entry_point_runs_the_same_make_targets_as_the_ci_workflow():
    local = (ROOT / ".ci" / "run").read_text()
    assert "make lint" in local and "make test" in local
