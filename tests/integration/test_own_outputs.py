"""A batch run whose input pattern covers its own output folder does not compress its outputs (issue 11, defect 9)."""
from __future__ import annotations

import os

from apache_beam.io.filesystem import FileMetadata

import codec
from pipelines import batch
from transforms.planning import COMPRESS, is_own_output, plan_jobs


def test_a_second_run_over_its_own_folder_compresses_only_the_inputs(tmp_path):
    for name in ("a.txt", "b.log"):
        (tmp_path / name).write_bytes(name.encode() * 2000)
    for _ in range(2):
        stats = batch.run_job(str(tmp_path / "*"), str(tmp_path) + os.sep, mode="compress", workers=1)
        assert stats["failures"] == []
        assert stats["files_written"] == 2
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "a.txt.dcz", "a.txt.dcz.meta.json",
                                            "b.log", "b.log.dcz", "b.log.dcz.meta.json"]
    assert codec.decode((tmp_path / "a.txt.dcz").read_bytes()) == b"a.txt" * 2000


def test_own_outputs_are_skipped_only_for_patterns():
    matched = [FileMetadata("/d/x.dcz", 1), FileMetadata("/d/x.dcz.meta.json", 1),
               FileMetadata("/d/dcas-20261201-100406-0865bf13.failures.csv", 1), FileMetadata("/d/x", 1)]
    jobs, failures = plan_jobs(matched, "/d/", COMPRESS, output_names_file=False)
    assert [job.source for job in jobs] == ["/d/x"]
    jobs, _ = plan_jobs(matched[:1], "/d/y.dcz", COMPRESS, output_names_file=True)
    assert [job.source for job in jobs] == ["/d/x.dcz"]  # named alone: compressed as asked


def test_own_outputs_are_recognised_by_name():
    assert is_own_output("gs://b/out/x.bin.dcz")
    assert is_own_output("/o/x.bin.dcz.meta.json")
    assert not is_own_output("/o/notes.json")
    assert not is_own_output("/o/my.failures.csv")
