"""Fault injection: `dcas` interrupted (SIGINT), terminated (SIGTERM) or killed (SIGKILL) at named
points of a run, for both engines and for local and gs:// outputs. After every fault:

- DST is absent, or the old DST with its old metadata, or the complete new DST with its new
  metadata: never a mix;
- a handled signal leaves no temp file, and exits as documented (130 / 143, or 0 with a note when
  the output was already published), with one line on stderr;
- what a kill leaves is removed by `dcas clean` (locally), and the state invariant still holds.

The process sends itself the signal at the point (DCAS_FAULT, adapters.cancellation.fault_point).
Run alone with `pytest -m faults`. Totals go to $DCAS_FAULTS_REPORT when set (docs/reliability.md).
"""
from __future__ import annotations

import json
import os
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_cli import REPO  # the same tree the other CLI tests run

import codec

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]

SIZE = 600_000
CHUNK = "64K"
TOTALS = {"faults": 0, "checks": 0}
EXIT_BY_SIGNAL = {"INT": 130, "TERM": 143, "KILL": -9}
# Points after which the output is complete: a handled signal there exits 0 and says so.
AFTER_PUBLICATION = {"container-published", "output-published", "job-finished"}


@dataclass(frozen=True)
class Fault:
    operation: str  # compress | decompress
    engine: str     # in-process | pipeline
    where: str      # local | gs
    point: str
    signal: str
    existing: bool  # an old DST (and its metadata) is there, and -f is given

    def __str__(self) -> str:
        return "-".join([self.operation, self.engine, self.where, self.point, self.signal,
                         "over-old" if self.existing else "fresh"])


FAULTS = [
    # Beam pipeline, local output: every stage, and both sides of each publication step.
    Fault("compress", "pipeline", "local", "plan", "INT", False),
    Fault("compress", "pipeline", "local", "plan", "KILL", True),
    Fault("compress", "pipeline", "local", "chunk-encoded", "TERM", True),
    Fault("compress", "pipeline", "local", "chunk-encoded", "KILL", False),
    Fault("compress", "pipeline", "local", "publication-copied", "INT", True),
    Fault("compress", "pipeline", "local", "publication-copied", "KILL", True),
    Fault("compress", "pipeline", "local", "metadata-published", "INT", True),
    Fault("compress", "pipeline", "local", "metadata-published", "TERM", False),
    Fault("compress", "pipeline", "local", "metadata-published", "KILL", True),
    Fault("compress", "pipeline", "local", "metadata-published", "KILL", False),
    Fault("compress", "pipeline", "local", "container-published", "INT", True),
    Fault("compress", "pipeline", "local", "container-published", "KILL", True),
    Fault("compress", "pipeline", "local", "job-finished", "TERM", False),
    Fault("decompress", "pipeline", "local", "plan", "TERM", False),
    Fault("decompress", "pipeline", "local", "chunk-decoded", "INT", True),
    Fault("decompress", "pipeline", "local", "chunk-decoded", "KILL", False),
    Fault("decompress", "pipeline", "local", "output-published", "INT", False),
    Fault("decompress", "pipeline", "local", "job-finished", "KILL", True),
    # The in-process engine: its one publication step, both sides.
    Fault("compress", "in-process", "local", "output-written", "INT", True),
    Fault("compress", "in-process", "local", "output-written", "KILL", False),
    Fault("compress", "in-process", "local", "output-published", "TERM", False),
    # ... and with an old pair replaced (-f): its metadata step, and after the container.
    Fault("compress", "in-process", "local", "metadata-published", "INT", True),
    Fault("compress", "in-process", "local", "metadata-published", "TERM", True),
    Fault("compress", "in-process", "local", "metadata-published", "KILL", True),
    Fault("compress", "in-process", "local", "metadata-published", "KILL", False),
    Fault("compress", "in-process", "local", "output-published", "INT", True),
    Fault("decompress", "in-process", "local", "output-written", "TERM", True),
    Fault("decompress", "in-process", "local", "output-written", "KILL", True),
    Fault("decompress", "in-process", "local", "output-published", "INT", True),
    # gs:// outputs (the pipeline): stages and the metadata/container pair.
    Fault("compress", "pipeline", "gs", "chunk-encoded", "INT", False),
    Fault("compress", "pipeline", "gs", "metadata-published", "INT", True),
    Fault("compress", "pipeline", "gs", "metadata-published", "TERM", False),
    Fault("compress", "pipeline", "gs", "container-published", "TERM", True),
    Fault("decompress", "pipeline", "gs", "chunk-decoded", "TERM", True),
    Fault("decompress", "pipeline", "gs", "output-published", "INT", False),
]


def check(condition: bool, message: str) -> None:
    TOTALS["checks"] += 1
    assert condition, message


@pytest.fixture(scope="module", autouse=True)
def report_totals():
    yield
    path = os.environ.get("DCAS_FAULTS_REPORT")
    if path:
        Path(path).write_text(json.dumps(TOTALS) + "\n")


def original_bytes() -> bytes:
    rng = random.Random(11)
    words = [bytes(rng.choices(b"etaoinshrdlu", k=rng.randint(2, 8))) for _ in range(300)]
    out = bytearray()
    while len(out) < SIZE:
        out += rng.choice(words) + b" "
    return bytes(out[:SIZE])


class Place:
    """A folder, local or gs://, with the few operations the checks need."""

    def __init__(self, root: str):
        self.root = root
        self.remote = root.startswith("gs://")

    def path(self, name: str) -> str:
        return self.root + name if self.remote else os.path.join(self.root, name)

    def write(self, name: str, data: bytes) -> None:
        if self.remote:
            from adapters import storage
            with storage.open_write(self.path(name)) as f:
                f.write(data)
        else:
            Path(self.path(name)).write_bytes(data)

    def read(self, name: str) -> bytes | None:
        if self.remote:
            from apache_beam.io.filesystem import CompressionTypes
            from apache_beam.io.filesystems import FileSystems
            if not FileSystems.exists(self.path(name)):
                return None
            with FileSystems.open(self.path(name), compression_type=CompressionTypes.UNCOMPRESSED) as f:
                return f.read()
        try:
            return Path(self.path(name)).read_bytes()
        except FileNotFoundError:
            return None

    def names(self) -> list[str]:
        if self.remote:  # listed by prefix: test names hold '[', which a match would read as a pattern
            from google.cloud import storage as gcs
            bucket, _, prefix = self.root[len("gs://"):].partition("/")
            return sorted(blob.name[len(prefix):] for blob in gcs.Client().list_blobs(bucket, prefix=prefix))
        found = []
        for directory, folders, files in os.walk(self.root):
            for name in folders + files:
                found.append(os.path.relpath(os.path.join(directory, name), self.root))
        return sorted(found)


def dcas(*args: str, cwd: str, fault: str | None = None):
    import subprocess
    import sys
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("DCAS_DEBUG", None)
    env.pop("DCAS_FAULT", None)
    if fault:
        env["DCAS_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=cwd, capture_output=True,
                          env=env, timeout=300)


def temp_leftovers(place: Place) -> list[str]:
    return [name for name in place.names()
            if ".dcas-tmp" in name or name.endswith(".tmp") or "failures.csv" in name]


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_a_fault_at_any_point_leaves_the_old_pair_the_new_pair_or_nothing(fault: Fault, tmp_path: Path, request):
    if fault.where == "gs":  # not gcs_dir: test ids hold '[', which dcas would take for a pattern
        place = Place(f"gs://{request.getfixturevalue('gcs_bucket')}/faults-{uuid.uuid4().hex[:12]}/")
    else:
        place = Place(str(tmp_path) + os.sep)
    original = original_bytes()
    packed = codec.encode(original, chunk_size=64 * 1024)
    old_container, old_meta = codec.encode(b"an older file " * 500, chunk_size=1024), b'{"old": true}\n'
    if fault.operation == "compress":
        src, dst, new = "in.txt", "out.dcz", None
        place.write(src, original)
    else:
        src, dst = "in.dcz", "out.txt"
        place.write(src, packed)
    old = old_container if fault.operation == "compress" else b"an older decoded file"
    if fault.existing:
        place.write(dst, old)
        if fault.operation == "compress":
            place.write(dst + ".meta.json", old_meta)
    args = [fault.operation, place.path(src), "-o", place.path(dst), "-q"]
    if fault.operation == "compress":
        args += ["--chunk-size", CHUNK]
    if fault.existing:
        args.append("-f")
    if fault.engine == "pipeline" and fault.where == "local":
        args += ["--workers", "1"]
    before = set(place.names())

    result = dcas(*args, cwd=str(tmp_path), fault=f"{fault.point}:{fault.signal}")
    TOTALS["faults"] += 1
    stderr = result.stderr.decode(errors="replace")

    if fault.signal == "KILL":
        check(result.returncode == -9, f"killed, exit {result.returncode}: {stderr}")
        if fault.where == "local":
            cleaned = dcas("clean", str(tmp_path), "-q", cwd=str(tmp_path))
            check(cleaned.returncode == 0, cleaned.stderr.decode())
            check(temp_leftovers(place) == [], f"left after dcas clean: {temp_leftovers(place)}")
    else:
        published = fault.point in AFTER_PUBLICATION
        expected_status = 0 if published else EXIT_BY_SIGNAL[fault.signal]
        check(result.returncode == expected_status, f"exit {result.returncode}, not {expected_status}: {stderr}")
        check("Traceback" not in stderr and len(stderr.splitlines()) == 1, f"not one line: {stderr}")
        said = "terminated" if fault.signal == "TERM" else "interrupted"
        check(stderr.startswith("dcas: interrupted after" if published else f"dcas: error: {said}"), stderr)
        check(temp_leftovers(place) == [], f"temp files left: {temp_leftovers(place)}")
        check(set(place.names()) - before <= {dst, dst + ".meta.json"}, f"new names: {set(place.names()) - before}")

    # The state invariant: nothing, the old pair, or the complete new pair.
    out, meta = place.read(dst), place.read(dst + ".meta.json")
    if fault.operation == "compress":
        if out is None:
            check(meta is None, "metadata without its container")
            check(not fault.existing, "the old container was lost")
        elif out == old_container:
            check(meta == old_meta, "the old container with new metadata")
        else:
            check(codec.decode(out) == original, "a new container that is not the input's")
            # Both engines write the metadata of a file compressed by path.
            check(meta is not None and json.loads(meta)["og_size"] == len(original)
                  and json.loads(meta)["cp_size"] == len(out), "the new container without its own metadata")
    else:
        if out is None:
            check(not fault.existing, "the old output was lost")
        else:
            check(out in (old, original), "a partial or mixed output")
