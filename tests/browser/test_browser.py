"""End-to-end browser test: the Layer explorer page draws its plotly charts in a real Chromium.

Needs Chromium (Debian: `apt-get install chromium`) and the `playwright` Python package; the browser
comes from the system, never from `playwright install`. Skipped when either is missing, except with
REPMAP_REQUIRE_BROWSER=1 (CI), where a missing browser fails the test. Set REPMAP_SCREENSHOT_DIR to keep
the full-page screenshot (layer_explorer.png); otherwise it goes into the test's tmp_path.
"""
from __future__ import annotations

import time

import pytest

from tests.browser import (
    CHARTS_TIMEOUT_S,
    CHROMIUM_ARGS,
    grow_viewport_to_content,
    interval_pattern,
    screenshot_path,
    tile,
)


@pytest.mark.slow
def test_layer_explorer_draws_charts(chromium_path, app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    t0 = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page_errors: list[str] = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(f"{app_url}/layer_explorer", wait_until="domcontentloaded", timeout=60_000)  # Home is "/"

            charts = page.locator('[data-testid="stPlotlyChart"]')
            # both charts present and drawn: the separation curve and the per-layer grid with scatter points
            expect(charts).to_have_count(2, timeout=CHARTS_TIMEOUT_S * 1000)
            expect(charts.nth(0).locator(".js-plotly-plot .main-svg").first).to_be_visible(timeout=60_000)
            expect(charts.nth(1).locator(".js-plotly-plot .main-svg").first).to_be_visible(timeout=60_000)
            expect(charts.nth(1).locator(".scatterlayer path.point").first).to_be_attached(timeout=60_000)

            # the script has finished its run (no "Running..." status widget left)
            expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)

            assert charts.count() >= 2
            curve = charts.nth(0)
            expect(curve.locator(".annotation-text").filter(has_text="best: layer")).to_have_count(1, timeout=10_000)
            assert "best: layer" in curve.inner_text() or \
                curve.locator("text", has_text="best: layer").count() >= 1

            grid_points = charts.nth(1).locator(".scatterlayer path.point").count()
            assert grid_points > 0, "the per-layer grid has no scatter points"

            metric = page.locator('[data-testid="stMetric"]').filter(has_text="Best layer")
            expect(metric).to_have_count(1, timeout=10_000)
            expect(metric).to_be_visible()
            # the tile's value with its 95% interval on the line under it
            expect(tile(page, "Probe accuracy there (cv)")).to_contain_text(interval_pattern())
            expect(curve.locator(".legendtext").filter(has_text="shuffled-label null")).to_have_count(1)

            assert page.locator('[data-testid="stException"]').count() == 0, \
                page.locator('[data-testid="stException"]').first.inner_text()

            shot = screenshot_path(tmp_path, "layer_explorer.png")
            grow_viewport_to_content(page)
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot: {shot}")
            print(f"charts drawn in {time.monotonic() - t0:.1f} s; grid points: {grid_points}; "
                  f"metric: {metric.inner_text()!r}")
            assert not page_errors, f"JavaScript errors on the page: {page_errors}"
        finally:
            browser.close()
