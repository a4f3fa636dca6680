"""The page at ``/`` in a real browser: headless Chromium (Debian's ``chromium`` package, driven by
Playwright pointed at the system browser, nothing downloaded) uploads an MVTec bottle test image to
``distillad serve`` started as a command, and the score, decision and heat-map overlay must appear."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers.browser import chromium

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'distillad[serve]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

BOTTLE = Path("mvtec_ad/bottle/test/broken_large/000.png")


@pytest.fixture()
def server(serve_run: Path, tmp_path: Path):
    """``distillad serve`` in a subprocess on a free loopback port: its base URL once /readyz says ready."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "distillad", "serve", "--run", str(serve_run), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    base = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    try:
        while True:
            try:
                if urllib.request.urlopen(base + "/readyz", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() - t0 > 90:
                log.flush()
                pytest.fail(f"distillad serve did not become ready: {(tmp_path / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _until(page, expression: str, timeout: float = 30.0) -> None:
    """Poll a JS expression (``page.wait_for_function`` evaluates strings inside the page, which the
    page's Content-Security-Policy forbids, as it should)."""
    t0 = time.monotonic()
    while not page.evaluate(expression):
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {expression}"
        time.sleep(0.05)


def test_page_uploads_an_image_and_shows_score_and_overlay(server: str, data_root: Path, tmp_path: Path):
    image = data_root / BOTTLE
    if not image.is_file():
        pytest.skip(f"{image}: MVTec AD bottle test image not found")
    browser_path = chromium()
    req = urllib.request.Request(server + "/v1/predict", data=image.read_bytes(), headers={"Content-Type": "image/png"})
    expected = json.loads(urllib.request.urlopen(req, timeout=60).read())
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(server + "/")
            _until(page, "!document.getElementById('model').textContent.startsWith('loading')")
            assert "rd" in page.inner_text("#model")
            page.set_input_files("#file", str(image))
            page.wait_for_selector("#result", state="visible", timeout=60_000)
            _until(page, "document.getElementById('overlay').complete && "
                         "document.getElementById('overlay').naturalWidth > 0")
            score = float(page.inner_text("#score"))
            decision = page.inner_text("#decision")
            error = page.inner_text("#error")
            size = page.evaluate("[document.getElementById('overlay').naturalWidth, "
                                 "document.getElementById('overlay').naturalHeight]")
            shot = tmp_path / "serve_page.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert score == pytest.approx(expected["score"], rel=1e-3)  # the page shows 4 significant digits
    assert decision == ("defective" if expected["is_anomalous"] else "good")
    assert size == [expected["width"], expected["height"]]  # drawn over the uploaded image, at its size
    assert error == "" and shot.stat().st_size > 10_000


def test_docs_page_renders_offline_from_served_assets(server: str):
    """/docs draws Swagger UI from files this server serves: every request outside it is aborted (as on
    an offline line machine), and the page still lists the API's routes."""
    browser_path = chromium()
    outside: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True)
        try:
            page = browser.new_page()

            def only_local(route) -> None:
                if route.request.url.startswith(server):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()
            page.route("**/*", only_local)
            page.goto(server + "/docs")
            page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
            text = page.inner_text(".swagger-ui")
        finally:
            browser.close()
    assert "/v1/predict" in text and "distillad serve" in text
    assert not outside, f"/docs fetched from outside the server: {outside}"
