"""The web page in headless Chromium (Debian's, driven by Selenium): sign in, upload, live progress, download, decompress, errors."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import pytest

import codec
from adapters.memory import InMemoryBlobStore, InMemoryJobQueue, InMemoryKeyStore, InMemoryStatusStore
from services import keys
from services.http import HttpSettings, create_app
from http_server import running_server  # tests/ is on sys.path
from job_runner import InProcessJobRunner

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="Debian's chromium and chromedriver are not installed: `make chromium` installs them with "
           "apt-get (as root; `make test` runs it first and says so when it cannot)")


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
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix="dcas-chromium-")
    downloads = tempfile.mkdtemp(prefix="dcas-downloads-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1200,800"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": downloads,
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.downloads = Path(downloads)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(downloads, ignore_errors=True)


def wait_for(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def screenshot(driver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def sign_in(driver, url: str, key: str) -> None:
    driver.get(url)
    driver.execute_script("sessionStorage.clear()")
    driver.get(url)
    field = driver.find_element("id", "key")
    field.clear()
    field.send_keys(key)
    driver.find_element("id", "signin").click()


def pick_file(driver, path: Path) -> None:
    picker = driver.find_element("id", "file")
    driver.execute_script("arguments[0].style.display = 'block'", picker)  # hidden behind its label
    picker.send_keys(str(path))
    driver.execute_script("arguments[0].style.display = ''", picker)


def drop_file(driver, path: Path) -> None:
    """A real drop event on the drop zone, carrying the file (Selenium cannot drag from the desktop)."""
    holder = driver.execute_script(
        "const i = document.createElement('input'); i.type = 'file'; i.id = 'drop-source';"
        "document.body.append(i); return i;")
    holder.send_keys(str(path))
    driver.execute_script(
        "const input = document.getElementById('drop-source');"
        "const data = new DataTransfer(); data.items.add(input.files[0]);"
        "document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true}));"
        "input.remove();")


def row_of(driver, filename: str):
    for row in driver.find_elements("css selector", "#jobs tbody tr"):
        if row.find_element("css selector", ".name").text == filename:
            return row
    return None


def download(driver, filename: str, output_name: str) -> bytes:
    for old in driver.downloads.iterdir():
        old.unlink()
    row_of(driver, filename).find_element("css selector", "button.download").click()
    target = driver.downloads / output_name
    wait_for(lambda: target.exists() and not list(driver.downloads.glob("*.crdownload")), 30, "the download")
    return target.read_bytes()


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
