"""`dcas` as the Manager's client: submit a local file, follow it, list, fetch, with the server on uvicorn."""
from __future__ import annotations

import io
import json
import types

import pytest

import codec
from adapters.memory import InMemoryBlobStore, InMemoryJobQueue, InMemoryKeyStore, InMemoryStatusStore
from services import keys
from services.cli import main
from services.http import HttpSettings, create_app
from http_server import running_server  # tests/ is on sys.path
from job_runner import InProcessJobRunner


@pytest.fixture(scope="module")
def server():
    adapters = types.SimpleNamespace(queue=InMemoryJobQueue(), status=InMemoryStatusStore(),
                                     blobs=InMemoryBlobStore(), keys=InMemoryKeyStore())
    key = keys.create_key(adapters.keys, "ann")
    with running_server(create_app(adapters, HttpSettings("bkt"))) as url, \
            InProcessJobRunner(adapters, chunk_size=64 * 1024, chunk_delay=0.01):
        yield types.SimpleNamespace(url=url, key=key, adapters=adapters)


def dcas(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_submit_wait_status_jobs_and_fetch_through_the_manager(server, tmp_path):
    data = b"a local file for the manager " * 20_000
    source = tmp_path / "notes.txt"
    source.write_bytes(data)
    login = ["--server", server.url, "--key", server.key]
    code, out, err = dcas("submit", str(source), "--wait", *login)
    assert code == 0, err
    job_id = out.strip().splitlines()[-1]
    assert job_id.startswith("job-")

    code, out, _ = dcas("status", job_id, "--json", *login)
    status = json.loads(out)
    assert code == 0 and status["state"] == "SUCCEEDED" and status["bytes_in"] == len(data)

    code, out, _ = dcas("status", job_id, "--follow", *login)
    assert code == 0 and out.strip().splitlines()[-1].startswith(f"{job_id}: SUCCEEDED")

    code, out, _ = dcas("jobs", "--state", "succeeded", *login)
    assert code == 0 and job_id in out and "notes.txt" in out

    target = tmp_path / "notes.txt.dcz"
    code, _, err = dcas("fetch", job_id, "-o", str(target), *login)
    assert code == 0, err
    assert codec.decode(target.read_bytes()) == data

    code, _, err = dcas("fetch", job_id, "-o", str(target), *login)
    assert code == 1 and "exists" in err and "--force" in err

    code, out, err = dcas("submit", str(target), "--decompress", "--wait", *login)
    assert code == 0, err
    back = tmp_path / "back.txt"
    assert dcas("fetch", out.strip().splitlines()[-1], "-o", str(back), *login)[0] == 0
    assert back.read_bytes() == data


def test_a_failed_job_makes_submit_wait_exit_1_with_its_reason(server, tmp_path):
    bad = tmp_path / "bad.dcz"
    bad.write_bytes(b"DCZ" + b"\x00" * 100)
    code, out, err = dcas("submit", str(bad), "--decompress", "--wait", "--server", server.url, "--key", server.key)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("dcas: error: job ") and "FAILED" in err and "FormatError" in err


def test_a_wrong_key_is_one_error_line(server, tmp_path):
    source = tmp_path / "x"
    source.write_bytes(b"x")
    code, out, err = dcas("submit", str(source), "--server", server.url, "--key", "dcas_wrong")
    assert code == 1 and err == "dcas: error: the server answered 401: unknown API key\n"


def test_an_unreachable_server_is_one_error_line(tmp_path):
    source = tmp_path / "x"
    source.write_bytes(b"x")
    code, _, err = dcas("submit", str(source), "--server", "http://127.0.0.1:9", "--key", "k")
    assert code == 1 and err.startswith("dcas: error: cannot reach the server at http://127.0.0.1:9")


def test_a_local_file_without_a_server_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.delenv("DCAS_SERVER", raising=False)
    source = tmp_path / "x"
    source.write_bytes(b"x")
    code, _, err = dcas("submit", str(source))
    assert code == 2 and "--server" in err and err.startswith("dcas: error:")


def test_another_owners_job_is_not_found_for_the_cli_either(server, tmp_path):
    other = keys.create_key(server.adapters.keys, "bob")
    source = tmp_path / "mine.txt"
    source.write_bytes(b"mine")
    job_id = dcas("submit", str(source), "--server", server.url, "--key", server.key)[1].strip()
    code, _, err = dcas("fetch", job_id, "-o", str(tmp_path / "o"), "--server", server.url, "--key", other)
    assert code == 1 and "404" in err


def test_cancel_of_a_finished_job_is_one_error_line_and_delete_removes_it(server, tmp_path):
    source = tmp_path / "done.txt"
    source.write_bytes(b"done " * 100)
    login = ["--server", server.url, "--key", server.key]
    job_id = dcas("submit", str(source), "--wait", *login)[1].strip().splitlines()[-1]
    code, _, err = dcas("cancel", job_id, *login)
    assert code == 1 and err.startswith("dcas: error: the server answered 409") and "SUCCEEDED" in err
    code, out, _ = dcas("status", job_id, *login)
    assert code == 0 and "SUCCEEDED" in out
    assert dcas("delete", job_id, *login)[:2] == (0, f"{job_id}: deleted (it was SUCCEEDED)\n")
    code, _, err = dcas("status", job_id, *login)
    assert code == 1 and "404" in err and len(err.splitlines()) == 1
    assert job_id not in dcas("jobs", *login)[1]
