"""End-to-end browser test of the Across models page: the embedded MiniLM against itself on the
built-in sentiment data, in a real Chromium. The heatmap, the side-by-side projections and a least
squares fit must be drawn, and a box drawn in one panel must highlight the same rows in both.

Same set-up as tests/browser/test_browser.py (system Chromium, never `playwright install`; skipped without it
unless REPMAP_REQUIRE_BROWSER=1). Set REPMAP_SCREENSHOT_DIR to keep the full-page screenshot
(across.png); otherwise it goes into the test's tmp_path.
"""
from __future__ import annotations

import re
import time

import pytest

from tests.browser import CHROMIUM_ARGS, grow_viewport_to_content, interval_pattern, screenshot_path, tile

COMPUTE_TIMEOUT_S = 120  # MiniLM's activations on a cold cache, on CPU


@pytest.mark.slow
def test_across_models_draws_the_heatmap_and_a_fit(chromium_path, app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    t0 = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page_errors: list[str] = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(f"{app_url}/across", wait_until="domcontentloaded", timeout=60_000)  # Home is "/"
            expect(page.get_by_role("heading", name="Across models")).to_be_visible(timeout=60_000)
            # both pickers default to the embedded MiniLM, the data to builtin:sentiment
            for name, value in (("Source model (available locally)", "sentence-transformers/all-MiniLM-L6-v2"),
                                ("Target model (available locally)", "sentence-transformers/all-MiniLM-L6-v2"),
                                ("Data set", "builtin:sentiment")):
                # (a model's option carries a note after its id: "... (encoder, embedded)")
                expect(page.get_by_role("combobox", name=name)).to_have_value(re.compile("^" + re.escape(value)),
                                                                              timeout=10_000)
            page.get_by_role("button", name="Compute").click()

            charts = page.locator('[data-testid="stPlotlyChart"]')
            heat = charts.filter(has=page.locator(".heatmaplayer"))
            expect(heat).to_have_count(1, timeout=COMPUTE_TIMEOUT_S * 1000)
            expect(heat.locator(".heatmaplayer image").first).to_be_attached(timeout=30_000)
            # one outlined, starred cell per source layer: 6 layers of MiniLM
            expect(heat.locator(".shapelayer path")).to_have_count(6, timeout=30_000)
            expect(heat.locator("text", has_text=re.compile(r"^★ \d\.\d\d$"))).to_have_count(6, timeout=30_000)
            side = charts.filter(has_text="layer 5 (PCA)")
            expect(side).to_have_count(1, timeout=60_000)
            assert side.locator(".scatterlayer path.point").count() == 2 * 800  # every row, in both panels

            # a box drawn in the left panel highlights the same rows in both panels (the linked selection)
            side.hover()
            side.locator('[data-title="Box Select"]').click()
            area = side.locator(".nsewdrag").first.bounding_box()
            x0, y0 = area["x"] + 0.3 * area["width"], area["y"] + 0.3 * area["height"]
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move(x0 + 0.3 * area["width"], y0 + 0.35 * area["height"], steps=10)
            page.mouse.up()
            title = side.locator(".gtitle", has_text=re.compile(r"^\d+ rows selected, highlighted in both$"))
            expect(title).to_have_count(1, timeout=30_000)
            n_selected = int(title.text_content().split()[0])
            assert 0 < n_selected < 800
            expect(page.get_by_role("button", name=f"Clear the selection ({n_selected} rows)")).to_have_count(1)
            page.wait_for_timeout(500)  # plotly restyles the redrawn points
            opaque = "ps => ps.filter(p => parseFloat(getComputedStyle(p).opacity) > 0.99).length"
            lit = [side.locator(f".subplot.{panel} .scatterlayer path.point").evaluate_all(opaque) for panel in ("xy", "x2y2")]
            assert lit == [n_selected, n_selected], lit

            # the selection's rerun must end before the form is submitted: a click on a form button that is
            # being redrawn can be lost (seen once in CI under load)
            expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)
            page.get_by_role("button", name="Fit", exact=True).click()
            r2 = page.locator('[data-testid="stMetric"]').filter(has_text="R² test")
            expect(r2).to_have_count(1, timeout=60_000)
            # the published number stands beside this run's A w as "paper", not as a tile of its own
            expect(page.get_by_text(re.compile(r"^Paper, beside this run's A w .*0\.5025"))).to_have_count(1)
            expect(page.locator('[data-testid="stMetric"]').filter(has_text="Gao")).to_have_count(0)
            expect(tile(page, "Transfer: functional (readout)")).to_contain_text(interval_pattern())
            expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)
            assert page.locator('[data-testid="stException"]').count() == 0, \
                page.locator('[data-testid="stException"]').first.inner_text()

            shot = screenshot_path(tmp_path, "across.png")
            grow_viewport_to_content(page)
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot: {shot}; drawn and fitted in {time.monotonic() - t0:.1f} s; {n_selected} rows selected; "
                  f"{r2.inner_text()!r}")
            assert not page_errors, f"JavaScript errors on the page: {page_errors}"
        finally:
            browser.close()
