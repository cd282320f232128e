"""A container and its metadata are published as one unit: an interrupt or a kill at any step leaves
the old pair or the new pair, never a mix (after recovery, for a kill)."""
from __future__ import annotations

import json
import os

import pytest
from test_transforms import encoded_job, read_bytes, sample_bytes, write  # helpers beside this module

import codec
from adapters import cancellation, storage
from transforms import assemble
from transforms.assemble import METADATA_SUFFIX, publish_container, recover_publications

OLD_CONTAINER = b"the older container"
OLD_META = b'{"the": "older description"}'


class Stop(BaseException):
    """Stands for Ctrl-C or a kill at one publication step."""


def interrupting_publication(monkeypatch, at_call: int, error: BaseException):
    """storage.publish_concatenation raises `error` at its `at_call`-th call (1: the metadata,
    2: the container) instead of publishing."""
    real = storage.publish_concatenation
    calls = []

    def publish(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == at_call:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(storage, "publish_concatenation", publish)
    return calls


@pytest.mark.parametrize("existing", ["none", "old pair"])
def test_ctrl_c_before_the_container_is_published_rolls_the_metadata_back(tmp_path, monkeypatch, existing):
    job, records, table, temp_dir = encoded_job(tmp_path, sample_bytes(3_000, seed=21), 700)
    if existing == "old pair":
        write(job.destination, OLD_CONTAINER)
        write(job.destination + METADATA_SUFFIX, OLD_META)
    calls = interrupting_publication(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        publish_container(job, records, 700, table, temp_dir)
    assert calls[0].endswith(METADATA_SUFFIX)  # the metadata had been published when it stopped
    if existing == "old pair":
        assert read_bytes(job.destination) == OLD_CONTAINER
        assert read_bytes(job.destination + METADATA_SUFFIX) == OLD_META
    else:
        assert not os.path.exists(job.destination)
        assert not os.path.exists(job.destination + METADATA_SUFFIX)


def test_a_stop_request_between_the_steps_rolls_back_and_says_so(tmp_path):
    job, records, table, temp_dir = encoded_job(tmp_path, sample_bytes(3_000, seed=22), 700)
    write(job.destination + METADATA_SUFFIX, OLD_META)
    steps = []

    def checkpoint():
        steps.append("step")
        if len(steps) == 3:  # after the metadata, before the container
            raise cancellation.JobCancelled("interrupted")

    with pytest.raises(cancellation.JobCancelled):
        publish_container(job, records, 700, table, temp_dir, checkpoint=checkpoint)
    assert read_bytes(job.destination + METADATA_SUFFIX) == OLD_META
    assert not os.path.exists(job.destination)


@pytest.mark.parametrize("existing", ["none", "old pair"])
def test_a_kill_after_the_metadata_step_is_undone_by_recovering_the_job_folder(tmp_path, monkeypatch, existing):
    job, records, table, temp_dir = encoded_job(tmp_path, sample_bytes(3_000, seed=23), 700)
    if existing == "old pair":
        write(job.destination, OLD_CONTAINER)
        write(job.destination + METADATA_SUFFIX, OLD_META)
    # A kill: no handler runs, so nothing is rolled back in the process itself.
    monkeypatch.setattr(assemble, "recover_publication", lambda journal: False)
    interrupting_publication(monkeypatch, 2, Stop())
    with pytest.raises(Stop):
        publish_container(job, records, 700, table, temp_dir)
    assert os.path.exists(job.destination + METADATA_SUFFIX)  # the new metadata, orphaned for now
    monkeypatch.undo()
    recover_publications(temp_dir)
    if existing == "old pair":
        assert read_bytes(job.destination) == OLD_CONTAINER
        assert read_bytes(job.destination + METADATA_SUFFIX) == OLD_META
    else:
        assert not os.path.exists(job.destination)
        assert not os.path.exists(job.destination + METADATA_SUFFIX)
    assert not [name for name in os.listdir(temp_dir) if "meta" in name or "publishing" in name]


def test_a_kill_after_the_container_step_keeps_the_new_pair_on_recovery(tmp_path, monkeypatch):
    data = sample_bytes(3_000, seed=24)
    job, records, table, temp_dir = encoded_job(tmp_path, data, 700)
    write(job.destination, OLD_CONTAINER)
    write(job.destination + METADATA_SUFFIX, OLD_META)
    monkeypatch.setattr(assemble, "recover_publication", lambda journal: False)
    monkeypatch.setattr(storage, "delete", lambda paths: None)  # killed before any cleaning up
    publish_container(job, records, 700, table, temp_dir)
    monkeypatch.undo()
    recover_publications(temp_dir)
    assert codec.decode(read_bytes(job.destination)) == data
    assert json.loads(read_bytes(job.destination + METADATA_SUFFIX))["og_size"] == len(data)


def test_recovery_never_touches_metadata_another_writer_put_in_place(tmp_path, monkeypatch):
    job, records, table, temp_dir = encoded_job(tmp_path, sample_bytes(3_000, seed=25), 700)
    monkeypatch.setattr(assemble, "recover_publication", lambda journal: False)
    interrupting_publication(monkeypatch, 2, Stop())
    with pytest.raises(Stop):
        publish_container(job, records, 700, table, temp_dir)
    monkeypatch.undo()
    write(job.destination + METADATA_SUFFIX, b'{"someone": "else"}')
    recover_publications(temp_dir)
    assert read_bytes(job.destination + METADATA_SUFFIX) == b'{"someone": "else"}'
