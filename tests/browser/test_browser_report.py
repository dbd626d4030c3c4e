"""The HTML report in a real Chromium, offline: opened from a file:// URL with every other request
aborted, each figure must be drawn by the inlined plotly.js (a `.main-svg` in every plot div), and
a full-page screenshot must show them. System Chromium via Playwright (never `playwright install`);
skipped without it unless REPMAP_REQUIRE_BROWSER=1. REPMAP_SCREENSHOT_DIR keeps report.png."""
from __future__ import annotations

import struct

import pytest

from repmap_core.share.report import build_report
from tests.browser import CHROMIUM_ARGS, screenshot_path
from tests.share.test_bundle import synthetic_states

ALL = ["explorer", "shift", "within", "across", "steering", "finetune"]


@pytest.mark.slow
def test_report_draws_every_figure_offline(chromium_path, tmp_path):
    from playwright.sync_api import sync_playwright

    html = build_report(synthetic_states(), {"explorer.shown": [0, 1, 2]}, ALL, meta={"repmap": "0.1.0"})
    n_figures = html.count('class="figure plot"')
    assert n_figures >= 10
    path = tmp_path / "report.html"
    path.write_text(html, encoding="utf-8")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            blocked: list[str] = []
            page_errors: list[str] = []

            def only_files(route):
                if route.request.url.startswith(("file://", "data:", "blob:")):
                    route.continue_()
                else:  # offline: nothing may leave the page
                    blocked.append(route.request.url)
                    route.abort()

            page.route("**/*", only_files)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(path.as_uri(), wait_until="load", timeout=60_000)
            page.wait_for_function(
                "n => document.querySelectorAll('.figure.plot .main-svg').length > 0 && "
                "[...document.querySelectorAll('.figure.plot')].every(d => d.querySelector('.main-svg'))",
                arg=n_figures, timeout=60_000)
            plots = page.locator(".figure.plot")
            assert plots.count() == n_figures
            drawn = page.evaluate("[...document.querySelectorAll('.figure.plot')].filter("
                                  "d => d.querySelector('.main-svg') && d._fullLayout).length")
            assert drawn == n_figures
            # real marks, not empty axes: points in the scatters, cells in the heatmaps, lines in the curves
            assert page.locator(".figure.plot .scatterlayer path.point").count() > 100
            assert page.locator(".figure.plot .heatmaplayer image").count() >= 2
            assert page.locator(".figure.plot .scatterlayer path.js-line").count() > 5
            assert not page_errors, page_errors
            assert not blocked, blocked
            shot = screenshot_path(tmp_path, "report.png")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()

    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1200 and height > 3000  # the whole page, every section
    assert len(data) > 100_000  # drawn figures, not a blank page
