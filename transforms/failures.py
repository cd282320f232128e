"""The dead-letter side of the pipeline: failed files as `(file, error)` and the `file,error` CSV."""
from __future__ import annotations

import csv
import dataclasses
import io

import apache_beam as beam

from transforms import storage
from transforms.observability import inc_counter

__all__ = ["FAILED", "failure", "failures_csv", "WriteFailures"]

# The tag of every DoFn's dead-letter output; elements are `(source path, reason)` pairs.
FAILED = "failed"


def failure(source: str, stage: str, error: BaseException | str) -> tuple[str, str]:
    """A dead-letter element: the input file and a one-line reason naming the stage that failed."""
    if isinstance(error, BaseException):
        reason = f"{type(error).__name__}: {error}"
    else:
        reason = str(error)
    return source, f"{stage}: {' '.join(reason.split())}"


def failures_csv(failures) -> str:
    """`file,error` CSV text (header row first, rows sorted by file), quoted as the csv module does."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", "error"])
    writer.writerows(sorted(failures))
    return out.getvalue()


def _count_failure(failed: tuple[str, str]) -> tuple[str, str]:
    inc_counter("files-failed")
    return failed


def _write_failures_csv(failures, path: str, write_when_empty: bool) -> int:
    """Writes `file,error` rows to `path` (atomically); with no failures only if `write_when_empty`."""
    failures = list(failures)
    if failures or write_when_empty:
        temp_path = path + ".tmp"
        with storage.open_write(temp_path) as f:
            f.write(failures_csv(failures).encode("utf-8"))
        storage.publish_concatenation([temp_path], path)
    return len(failures)


@dataclasses.dataclass
class WriteFailures(beam.PTransform):
    """Counts failed files and writes them as one CSV at `path`; emits the number of failed files.

    An explicitly requested path is always written (a header alone means nothing failed), so a
    scheduler can rely on it; a default path is written only when something failed.
    """

    path: str
    write_when_empty: bool = False

    def expand(self, failures):
        return (
            failures
            | "Count failures" >> beam.Map(_count_failure)
            | "Collect failures" >> beam.combiners.ToList()
            | "Write failures CSV" >> beam.Map(_write_failures_csv, self.path, self.write_when_empty))
