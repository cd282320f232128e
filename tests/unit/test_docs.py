"""The deployment documents hold what they promise: the diagram matches its source, commands name real things."""
from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MAKE_TARGETS = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def dot_nodes() -> set[str]:
    return set(re.findall(r"^\s+(\w+)\s+\[label=", (DOCS / "architecture.dot").read_text(), re.MULTILINE))


def test_the_committed_diagram_has_every_node_and_edge_of_its_source():
    svg = (DOCS / "architecture.svg").read_text()
    rendered = set(re.findall(r'<g id="node\d+" class="node">\s*<title>(\w+)</title>', svg))
    assert dot_nodes() and rendered == dot_nodes(), "run `make docs-diagram` and commit docs/architecture.svg"
    edges = len(re.findall(r"^\s+\w+\s+->\s+\w+", (DOCS / "architecture.dot").read_text(), re.MULTILINE))
    assert len(re.findall(r'class="edge"', svg)) == edges


def test_the_architecture_page_shows_the_diagram():
    assert "](architecture.svg)" in (DOCS / "architecture.md").read_text()


def test_every_make_target_the_documents_name_exists():
    for name in ["architecture.md", "operations.md", "troubleshooting.md", "cost.md"]:
        targets = set(re.findall(r"`make ([a-z][a-z0-9-]*)", (DOCS / name).read_text()))
        assert targets <= MAKE_TARGETS, (name, targets - MAKE_TARGETS)


def test_every_repository_path_the_documents_name_exists():
    for name in ["architecture.md", "operations.md", "troubleshooting.md", "cost.md"]:
        text = (DOCS / name).read_text()
        paths = set(re.findall(r"`((?:deploy|templates|pipelines|services|adapters|transforms|benchmarks|tests|docs|"
                               r"\.github)/[\w./-]*\w)`", text))
        missing = {p for p in paths if not (ROOT / p).exists() and not p.startswith("services/http")}
        assert not missing, (name, missing)
