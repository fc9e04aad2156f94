"""The page at / and the offline /docs in a real browser: the system's Chromium driven by Selenium
through the system's chromedriver (no browser or driver download), against a real `unetlite serve`
on loopback. Skips with the reason when Chromium, chromedriver or Selenium is missing
(.ci/run installs the Debian packages chromium and chromium-driver)."""
from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")
pytest.importorskip("swagger_ui_bundle")
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install '.[dev]')")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from serve.serving import start_server  # noqa: E402

from unetlite.infer.io.images import decode_image  # noqa: E402

TOKEN = "page-test-token"
CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Chromium and chromedriver from the system packages "
                                       "(apt-get install chromium chromium-driver)")


def browser(width: int, height: int = 900, offline: bool = False):
    """Headless Chromium at ``width`` CSS pixels. ``offline``: every non-loopback request goes to a
    dead proxy and no host name resolves, so the network beyond this machine is unreachable."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                f"--window-size={width},{height}", "--force-device-scale-factor=1", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-extensions"):
        options.add_argument(arg)
    if offline:
        options.add_argument("--proxy-server=http://127.0.0.1:9")
        options.add_argument("--proxy-bypass-list=127.0.0.1")
        options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def requested_urls(driver) -> list[str]:
    """Every URL the page asked for, from Chrome's performance (DevTools) log."""
    import json
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def assert_only_loopback(urls: list[str]) -> None:
    assert urls, "no request seen in the performance log"
    for url in urls:
        parsed = urlparse(url)
        if parsed.scheme in ("data", "blob", "about", "chrome"):
            continue
        assert parsed.hostname in ("127.0.0.1", "localhost", "::1"), f"request beyond this machine: {url}"


def screenshot(driver, width: int) -> np.ndarray:
    """The whole page at ``width``, as a BGR image."""
    height = driver.execute_script("return Math.max(document.documentElement.scrollHeight, 600)")
    driver.set_window_size(width, min(int(height), 3000))
    png = driver.get_screenshot_as_png()
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def assert_not_blank(picture: np.ndarray, width: int) -> None:
    assert picture is not None and picture.shape[1] == width, None if picture is None else picture.shape
    colours = len(np.unique(picture.reshape(-1, 3)[::7], axis=0))
    assert picture.std() > 20 and colours > 200, (picture.std(), colours)


def wait_cards(driver, count: int, timeout: float = 180) -> list:
    def settled(d):
        cards = d.find_elements(By.CSS_SELECTOR, ".card")
        return len(cards) == count and all(c.get_attribute("data-state") in ("done", "error") for c in cards)
    WebDriverWait(driver, timeout).until(settled)
    return driver.find_elements(By.CSS_SELECTOR, ".card")


def blob_bytes(driver, url: str) -> bytes:
    """The bytes behind a blob: URL of the page."""
    encoded = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then(r => r.arrayBuffer()).then(buf => {
            let s = ""; const b = new Uint8Array(buf);
            for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode.apply(null, b.subarray(i, i + 8192));
            done(btoa(s));
        });""", url)
    return base64.b64decode(encoded)


@pytest.fixture(scope="module")
def server():
    srv = start_server(env={"UNETLITE_TOKEN": TOKEN})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def photo(pets_dir) -> Path:
    name = (pets_dir / "test.txt").read_text().split()[0]
    return pets_dir / "images" / f"{name}.jpg"


def sof_patched(data: bytes, height: int, width: int) -> bytes:
    """A real JPEG whose frame header claims another size."""
    pos = 2
    while data[pos] == 0xFF and data[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    at = pos + 5
    return data[:at] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[at + 4:]


def test_page_segments_a_photo_with_the_token(server, photo, tmp_path):
    driver = browser(1280)
    try:
        driver.get(server.url + "/")
        assert driver.title.startswith("unetlite")
        WebDriverWait(driver, 30).until(lambda d: "access token" in d.find_element(By.ID, "server-line").text)
        upload = driver.find_element(By.ID, "files")

        upload.send_keys(str(photo.resolve()))  # no token yet: the card says so in words
        [card] = wait_cards(driver, 1)
        assert card.get_attribute("data-state") == "error"
        assert "needs an access token" in card.find_element(By.CSS_SELECTOR, ".card-error").text

        token = driver.find_element(By.ID, "token")
        token.send_keys(TOKEN)
        driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", token)
        WebDriverWait(driver, 180).until(lambda d: card.get_attribute("data-state") == "done")
        height, width = decode_image(photo.read_bytes()).shape[:2]
        result = card.find_element(By.CSS_SELECTOR, "img.result")
        assert result.is_displayed() and result.size["width"] > 100
        assert driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]",
                                     result) == [width, height]
        shown = blob_bytes(driver, result.get_attribute("src"))  # exactly what the API answers
        direct = httpx.post(f"{server.url}/v1/segment", params={"format": "cutout", "threshold": "0.5"},
                            content=photo.read_bytes(), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
        assert direct.status_code == 200 and shown == direct.content
        cutout = cv2.imdecode(np.frombuffer(shown, np.uint8), cv2.IMREAD_UNCHANGED)
        assert cutout.shape == (height, width, 4) and 0 < (cutout[..., 3] > 0).mean() < 1
        download = card.find_element(By.CSS_SELECTOR, ".card-download")
        assert download.get_attribute("download") == f"{photo.stem}_cutout.png"
        assert download.get_attribute("href").startswith("blob:")
        assert "Traceback" not in server.text() and TOKEN not in server.text()

        driver.find_element(By.CSS_SELECTOR, '[data-view="mask"]').click()  # another view: another answer
        WebDriverWait(driver, 180).until(lambda d: card.get_attribute("data-state") == "done"
                                         and card.find_element(By.CSS_SELECTOR, ".result-caption").text == "Mask")
        mask = cv2.imdecode(np.frombuffer(blob_bytes(driver, result.get_attribute("src")), np.uint8),
                            cv2.IMREAD_UNCHANGED)
        assert mask.shape == (height, width) and set(np.unique(mask)) <= {0, 255}

        driver.find_element(By.CSS_SELECTOR, '[data-view="background"]').click()  # composited in the page
        WebDriverWait(driver, 180).until(lambda d: card.get_attribute("data-state") == "done"
                                         and "background" in card.find_element(By.CSS_SELECTOR,
                                                                               ".result-caption").text)
        WebDriverWait(driver, 30).until(lambda d: card.find_element(By.CSS_SELECTOR, ".card-download")
                                        .get_attribute("download").endswith("_background.png"))

        bomb = tmp_path / "huge.jpg"  # a header that claims 140 MP: the error in words
        bomb.write_bytes(sof_patched(photo.read_bytes(), 10000, 14000))
        driver.find_element(By.CSS_SELECTOR, '[data-view="cutout"]').click()
        upload.send_keys(str(bomb.resolve()))
        cards = wait_cards(driver, 2)
        failed = [c for c in cards if c.get_attribute("data-state") == "error"]
        assert len(failed) == 1
        text = failed[0].find_element(By.CSS_SELECTOR, ".card-error").text
        assert text == "too large: 140 MP (14000×10000), the limit is 100 MP", text

        wide = screenshot(driver, 1280)
        assert_not_blank(wide, 1280)
        driver.set_window_size(390, 900)
        WebDriverWait(driver, 10).until(lambda d: d.execute_script("return window.innerWidth") == 390)
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 390  # nothing sideways
        narrow = screenshot(driver, 390)
        assert_not_blank(narrow, 390)
        assert_only_loopback(requested_urls(driver))
    finally:
        driver.quit()


def test_docs_work_offline(server):
    html = httpx.get(f"{server.url}/docs").text
    assert not re.findall(r"https?://", html), "the docs page references another host"
    driver = browser(1280, offline=True)
    try:
        driver.get(server.url + "/docs")
        WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 8)
        paths = {e.text for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
        assert {"/v1/segment", "/v1/model", "/healthz", "/metrics", "/v2/models/{model}/infer"} <= paths, paths
        assert not driver.find_elements(By.CSS_SELECTOR, ".errors-wrapper"), "Swagger UI reports errors"
        assert_not_blank(screenshot(driver, 1280), 1280)
        assert_only_loopback(requested_urls(driver))
    finally:
        driver.quit()
