"""The web page in headless Chromium (Debian's, driven by Selenium) on in-memory ports: sign in, upload, live progress, download, decompress, errors."""
from __future__ import annotations

import types

import numpy as np
import pytest

import codec
from adapters.memory import InMemoryBlobStore, InMemoryJobQueue, InMemoryKeyStore, InMemoryStatusStore
from browser import (download, drop_file, pick_file, row_of, screenshot, sign_in, skip_without_chromium,
                     start_browser, stop_browser, wait_for)  # tests/ is on sys.path
from services import keys
from services.http import HttpSettings, create_app
from http_server import running_server
from job_runner import InProcessJobRunner

pytestmark = skip_without_chromium


@pytest.fixture(scope="module")
def stack():
    """The app on in-memory ports with an in-process job runner standing in for the pipeline."""
    adapters = types.SimpleNamespace(queue=InMemoryJobQueue(), status=InMemoryStatusStore(),
                                     blobs=InMemoryBlobStore(), keys=InMemoryKeyStore())
    key = keys.create_key(adapters.keys, "ann")
    app = create_app(adapters, HttpSettings("bkt"))
    with running_server(app) as url, InProcessJobRunner(adapters, chunk_size=64 * 1024, chunk_delay=0.04):
        yield types.SimpleNamespace(url=url, key=key, adapters=adapters)


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    stop_browser(driver)


def test_a_bad_key_is_refused_with_its_reason(stack, browser):
    sign_in(browser, stack.url, "dcas_not-a-key")
    message = wait_for(lambda: browser.find_element("id", "signin-error").text, 10, "the sign-in error")
    assert "unknown API key" in message
    assert not browser.find_element("id", "app").is_displayed()
    screenshot(browser, "1-bad-key")


def test_upload_progress_success_download_and_decompress(stack, browser, tmp_path):
    words = b"compression service upload chunk huffman table browser progress stream status ".split()
    rng = np.random.default_rng(7)
    original = b" ".join(words[i] for i in rng.integers(0, len(words), 400_000))  # ~3 MB of text, ~45 chunks
    source = tmp_path / "sample.txt"
    source.write_bytes(original)
    sign_in(browser, stack.url, stack.key)
    wait_for(lambda: browser.find_element("id", "app").is_displayed(), 10, "the signed-in page")
    screenshot(browser, "2-signed-in")

    pick_file(browser, source)
    fractions, states = set(), []
    def succeeded():
        row = row_of(browser, "sample.txt")
        if row is None:
            return False
        state = row.get_attribute("data-state")
        if not states or states[-1] != state:
            states.append(state)
        value = row.find_element("css selector", "progress").get_attribute("value")
        if state == "RUNNING" and value is not None:
            fractions.add(round(float(value), 2))
            if len(fractions) == 3:
                screenshot(browser, "3-running")
        return state == "SUCCEEDED"
    wait_for(succeeded, 60, "the job to succeed")
    assert states[-1] == "SUCCEEDED" and "RUNNING" in states
    assert len([f for f in fractions if 0 < f < 1]) >= 2, f"progress did not move: {sorted(fractions)}"
    row = row_of(browser, "sample.txt")
    assert row.find_element("css selector", ".ratio").text  # the ratio is shown
    screenshot(browser, "4-succeeded")

    container = download(browser, "sample.txt", "sample.txt.dcz")
    assert codec.decode(container) == original

    packed = tmp_path / "sample.txt.dcz"
    packed.write_bytes(container)
    drop_file(browser, packed)
    wait_for(lambda: (row_of(browser, "sample.txt.dcz") or False)
             and row_of(browser, "sample.txt.dcz").get_attribute("data-state") == "SUCCEEDED", 60,
             "the decompress job")
    assert row_of(browser, "sample.txt.dcz").find_element("css selector", ".operation").text == "decompress"
    assert download(browser, "sample.txt.dcz", "sample.txt") == original


def test_a_corrupt_dcz_shows_its_error(stack, browser, tmp_path):
    damaged = bytearray(codec.encode(b"some text to damage " * 500))
    damaged[len(damaged) // 2] ^= 0xFF
    bad = tmp_path / "broken.dcz"
    bad.write_bytes(bytes(damaged))
    sign_in(browser, stack.url, stack.key)
    wait_for(lambda: browser.find_element("id", "app").is_displayed(), 10, "the signed-in page")
    pick_file(browser, bad)
    wait_for(lambda: (row_of(browser, "broken.dcz") or False)
             and row_of(browser, "broken.dcz").get_attribute("data-state") == "FAILED", 60, "the job to fail")
    reason = row_of(browser, "broken.dcz").find_element("css selector", ".reason").text
    assert "FormatError" in reason
    screenshot(browser, "5-corrupt-dcz")
