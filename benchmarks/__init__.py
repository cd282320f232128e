"""Benchmarks: corpora built from real files on the machine, the codec benchmark and the end-to-end run."""
from __future__ import annotations
