"""report.html in a real browser: headless Chromium (Debian's ``chromium`` package, driven by Playwright
pointed at the system browser, nothing downloaded) opens the file from disk with every request outside
it aborted, and the tables and every picture must render."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.browser import chromium

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from test_report import synthetic_report  # noqa: E402  (tests/ is on sys.path: pytest rootdir insertion)


def test_report_renders_tables_and_images_offline(tmp_path: Path):
    browser_path = chromium()
    path, data = synthetic_report(tmp_path)
    url = path.resolve().as_uri()
    outside: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})

            def only_the_file(route) -> None:
                if route.request.url == url or route.request.url.startswith("data:"):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()
            page.route("**/*", only_the_file)
            page.goto(url)
            page.wait_for_load_state("load")
            sizes = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            rows = page.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('table')).map("
                                 "t => [t.id, t.rows.length]))")
            per_type = page.inner_text("#per-defect")
            shown = page.evaluate("Array.from(document.images).every(i => i.getBoundingClientRect().width > 0)")
            shot = tmp_path / "report_page.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    n_gallery = len(data["fn"]) + len(data["fa"])
    assert len(sizes) == 2 + n_gallery  # scores, PRO curve, the misses
    assert all(ok and w > 0 and h > 0 for ok, w, h in sizes), sizes
    assert shown
    assert rows["metrics"] > 10 and rows["per-defect"] == 1 + len(data["per_defect"]) + 1  # head, types, good
    for name, row in data["per_defect"].items():
        assert name in per_type and f"{row['image_auroc']:.4f}" in per_type
    assert not outside, f"report.html asked for {outside}"
    assert shot.stat().st_size > 20_000
