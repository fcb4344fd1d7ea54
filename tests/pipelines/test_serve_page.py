"""The web page of `streamvid serve` in a real headless Chromium (Selenium): add an RTSP
stream, see it become live, ask a question, see the answer with its keyframe thumbnail, see an
alert fire; then the same page at a phone's width."""

from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.live_helpers import RtspServer, ServeProcess, free_port, gst_available  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(ok: bool, what: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"{what} is missing in CI; fix: run .ci/system-deps.sh")
        pytest.skip(f"{what} not installed (see .ci/system-deps.sh)")


@pytest.fixture()
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_exe = shutil.which("chromedriver")
    _need(bool(chromium and driver_exe), "chromium and chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_exe))
    yield driver
    driver.quit()


@pytest.mark.rtsp
@pytest.mark.slow
def test_page_add_stream_ask_and_alert(tmp_path, browser):
    _need(gst_available(), "the GStreamer RTSP server stack")
    cam = RtspServer(free_port(), fps=10).start()
    srv = ServeProcess(tmp_path / "store", "--commit-every", "1").start()
    try:
        b = browser
        # the page redraws its tables as events arrive: an element read mid-redraw is retried
        wait = WebDriverWait(b, 120, poll_frequency=0.3,
                             ignored_exceptions=[StaleElementReferenceException])
        b.get(srv.url + "/")
        wait.until(lambda d: d.find_element(By.ID, "conn").text == "connected")

        b.find_element(By.ID, "stream-uri").send_keys(cam.url)
        b.find_element(By.ID, "stream-id").send_keys("door")
        b.find_element(By.CSS_SELECTOR, "#add-stream button").click()
        row = '#streams tr[data-source-id="door"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row + " td.state-live"))
        wait.until(lambda d: int(d.find_element(By.CSS_SELECTOR, row + " td.clips").text) > 0)

        b.find_element(By.ID, "alert-text").send_keys("ball")
        thr = b.find_element(By.ID, "alert-threshold")
        thr.clear()
        thr.send_keys("0")
        b.find_element(By.CSS_SELECTOR, "#add-alert button").click()
        wait.until(lambda d: "ball" in d.find_element(By.ID, "alerts").text)
        fired = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#events li.alert"))
        assert "ALERT" in fired[0].text and "door" in fired[0].text

        b.find_element(By.ID, "question").send_keys("what is shown?")
        b.find_element(By.CSS_SELECTOR, "#ask button[type=submit]").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#evidence li"))
        assert b.find_element(By.ID, "answer-text").text.strip()
        img = b.find_element(By.CSS_SELECTOR, "#evidence li img")
        assert "/keyframe" in img.get_attribute("src")
        wait.until(lambda d: d.execute_script(
            "const i = document.querySelector('#evidence li img'); return i.complete && i.naturalWidth > 0;"))
        first = b.find_element(By.CSS_SELECTOR, "#evidence a.time")
        assert "door" in b.find_element(By.CSS_SELECTOR, "#evidence li").text
        first.click()  # a time narrows the next question to that moment
        assert b.find_element(By.ID, "ask-sources").get_attribute("value") == "door"
        assert b.find_element(By.ID, "ask-end").get_attribute("value") != ""
        shot = os.environ.get("STREAMVID_SCREENSHOT")
        if shot:
            b.save_screenshot(shot)

        b.set_window_size(390, 844)  # a phone
        b.refresh()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
        assert b.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        assert b.find_element(By.ID, "question").is_displayed()
        assert b.find_element(By.CSS_SELECTOR, "#ask button[type=submit]").is_displayed()
    finally:
        assert srv.stop() == 0
        cam.stop()
