"""Files through the Manager on the local stack with the real streaming pipeline: the CLI client and the web page."""
from __future__ import annotations

import importlib.util
import json

import httpx
import pytest
from browser import (download, pick_file, row_of, screenshot, sign_in, skip_without_chromium, start_browser,
                     stop_browser, wait_for)  # tests/ is on sys.path (conftest dir)
from samples import sample_text
from test_stack import RunningStack, dcas, error_line

import codec

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("pipelines.streaming") is None,
    reason="the streaming pipeline (pipelines/streaming.py) is not on this branch yet")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = RunningStack(tmp_path_factory.mktemp("http-flow-runtime"))
    yield running
    running.kill()


def test_a_local_file_goes_through_the_manager_and_the_pipeline_and_comes_back(stack, tmp_path):
    env = stack.client_env()
    data = sample_text(2_500_000)
    source = tmp_path / "notes.txt"
    source.write_bytes(data)
    submitted = dcas("submit", str(source), "--wait", env=env, timeout=300)
    assert submitted.returncode == 0, submitted.stderr + stack.stderr()[-3000:]
    job_id = submitted.stdout.splitlines()[-1]

    followed = dcas("status", job_id, "--follow", "--json", env=env)
    states = [json.loads(line)["state"] for line in followed.stdout.splitlines()]
    assert followed.returncode == 0 and states[-1] == "SUCCEEDED"

    packed = tmp_path / "notes.txt.dcz"
    assert dcas("fetch", job_id, "-o", str(packed), env=env).returncode == 0
    assert codec.decode(packed.read_bytes()) == data
    server, key = env["DCAS_SERVER"], env["DCAS_API_KEY"]
    meta = httpx.get(f"{server}/v1/jobs/{job_id}/metadata", headers={"Authorization": f"Bearer {key}"}).json()
    assert (meta["og_size"], meta["cp_size"]) == (len(data), packed.stat().st_size)

    restored = dcas("submit", str(packed), "--decompress", "--wait", env=env, timeout=300)
    assert restored.returncode == 0, restored.stderr
    back = tmp_path / "back.txt"
    assert dcas("fetch", restored.stdout.splitlines()[-1], "-o", str(back), env=env).returncode == 0
    assert back.read_bytes() == data

    listed = dcas("jobs", "--json", env=env)
    assert {job_id, restored.stdout.splitlines()[-1]} <= {json.loads(line)["job_id"] for line in listed.stdout.splitlines()}


def test_a_corrupt_dcz_fails_with_the_pipelines_reason(stack, tmp_path):
    damaged = bytearray(codec.encode(sample_text(200_000)))
    damaged[len(damaged) // 2] ^= 0xFF
    bad = tmp_path / "bad.dcz"
    bad.write_bytes(bytes(damaged))
    failed = dcas("submit", str(bad), "--decompress", "--wait", env=stack.client_env(), timeout=300)
    assert "FAILED" in error_line(failed)


@skip_without_chromium
def test_the_web_page_uploads_follows_and_downloads_on_the_real_stack(stack, tmp_path):
    data = sample_text(6_000_000)
    source = tmp_path / "report.txt"
    source.write_bytes(data)
    browser = start_browser()
    try:
        sign_in(browser, stack.exports["DCAS_SERVER"], stack.exports["DCAS_API_KEY"])
        wait_for(lambda: browser.find_element("id", "app").is_displayed(), 20, "the signed-in page")
        pick_file(browser, source)
        states = []

        def state_of_report():
            row = row_of(browser, "report.txt")
            state = row.get_attribute("data-state") if row is not None else None
            if state and (not states or states[-1] != state):
                states.append(state)
            return state in ("SUCCEEDED", "FAILED")
        wait_for(state_of_report, 240, "the job to end")
        assert states[-1] == "SUCCEEDED", states
        assert states[0] == "UPLOADING" and len(states) >= 3, states  # it moved through the states live
        screenshot(browser, "6-real-stack-succeeded")
        assert codec.decode(download(browser, "report.txt", "report.txt.dcz")) == data
    finally:
        stop_browser(browser)
