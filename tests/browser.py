"""Helpers for the web page's tests: Debian's chromium driven by Selenium, and the page's parts."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

skip_without_chromium = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="Debian's chromium and chromedriver are not installed: `make chromium` installs them with "
           "apt-get (as root; `make test` runs it first and says so when it cannot)")


def start_browser():
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
    driver.temp_dirs = (profile, downloads)
    return driver


def stop_browser(driver) -> None:
    driver.quit()
    for folder in driver.temp_dirs:
        shutil.rmtree(folder, ignore_errors=True)


def wait_for(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def screenshot(driver, name: str) -> None:
    """Saved only when DCAS_SCREENSHOTS names a folder (`make screenshots` sets docs/screenshots):
    a test run leaves the repository as it was."""
    folder = os.environ.get("DCAS_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


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


