"""End-to-end browser test of the Steering page: the embedded MiniLM as both model A and model B on
60 rows of the built-in A/B questions, in a real Chromium. Rimsky's three plots must be drawn (the
cosine per layer is all 1: the same model twice), and steering must show why it is off (MiniLM is
an encoder) with its controls disabled.

Same set-up as tests/browser/test_browser.py (system Chromium, never `playwright install`; skipped without it
unless REPMAP_REQUIRE_BROWSER=1). Set REPMAP_SCREENSHOT_DIR to keep the full-page screenshot
(steering.png); otherwise it goes into the test's tmp_path.
"""
from __future__ import annotations

import re
import time

import pytest

from tests.browser import CHROMIUM_ARGS, grow_viewport_to_content, screenshot_path

COMPUTE_TIMEOUT_S = 120  # MiniLM's activations on a cold cache, on CPU
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.slow
def test_steering_draws_rimsky_plots_and_says_why_an_encoder_is_not_steered(chromium_path, app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    t0 = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page_errors: list[str] = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(f"{app_url}/steering", wait_until="domcontentloaded", timeout=60_000)  # Home is "/"
            expect(page.get_by_role("heading", name="Steering", exact=True)).to_be_visible(timeout=60_000)
            # the page opens on the embedded causal LM (a picker's value carries a note after the id: match its start)
            for name, value in (("Model A (available locally)", "HuggingFaceTB/SmolLM2-135M-Instruct"),
                                ("Model B, optional (available locally)", "(none)"),
                                ("Data set", "builtin:myopic_reward")):
                expect(page.get_by_role("combobox", name=name)).to_have_value(re.compile("^" + re.escape(value)),
                                                                              timeout=10_000)
            for side in ("Model A", "Model B, optional"):  # MiniLM twice: quick, and its 6 layers are known
                page.locator('[data-testid="stSelectbox"]').filter(has_text=side).click()
                page.get_by_role("option", name=MINILM).click()
                expect(page.get_by_role("combobox", name=f"{side} (available locally)")).to_have_value(
                    re.compile("^" + re.escape(MINILM)))
            limit = page.get_by_role("spinbutton", name="Max rows (0 = all)")
            limit.fill("60")
            limit.press("Tab")
            page.get_by_role("button", name="Compute vectors").click()

            charts = page.locator('[data-testid="stPlotlyChart"]')
            # plot 1: one line through MiniLM's 6 layers, all at cosine 1 (the same model twice)
            per_layer = charts.filter(has=page.locator(".gtitle", has_text="Cosine of A: all-MiniLM-L6-v2's and B:"))
            expect(per_layer).to_have_count(1, timeout=COMPUTE_TIMEOUT_S * 1000)
            expect(per_layer.locator(".scatterlayer path.point")).to_have_count(6, timeout=30_000)
            # plot 2: one layer x layer heatmap per model, values in the cells, the diagonal 1.00
            heat = charts.filter(has=page.locator(".heatmaplayer"))
            expect(heat).to_have_count(1, timeout=30_000)
            expect(heat.locator(".heatmaplayer image")).to_have_count(2, timeout=30_000)
            cells = heat.locator(".heatmaplayer text", has_text=re.compile(r"^-?\d\.\d\d$"))
            expect(cells).to_have_count(2 * 36, timeout=30_000)
            assert heat.locator(".heatmaplayer text", has_text=re.compile(r"^1\.00$")).count() >= 2 * 6
            # plot 3: both models on one PCA, each a line through its layers, numbered 0..5
            pca = charts.filter(has=page.locator(".gtitle", has_text="2-D PCA of the normalised per-layer vectors"))
            expect(pca).to_have_count(1, timeout=30_000)
            expect(pca.locator(".scatterlayer .trace")).to_have_count(2)
            expect(pca.locator(".scatterlayer .textpoint", has_text=re.compile(r"^[0-5]$"))).to_have_count(12)

            # steering: the reason, and the controls greyed out; the transfer to B the same
            reason = "Steering needs next-token logits; all-MiniLM-L6-v2 is an encoder."
            # the sweep, the sentiment steering and the transfer to B each say why they are off
            expect(page.locator('[data-testid="stAlert"]').filter(has_text=reason)).to_have_count(3, timeout=30_000)
            expect(page.get_by_role("button", name="Sweep", exact=True)).to_be_disabled()
            expect(page.get_by_role("button", name="Transfer and sweep")).to_be_disabled()
            expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)
            assert page.locator('[data-testid="stException"]').count() == 0, \
                page.locator('[data-testid="stException"]').first.inner_text()

            shot = screenshot_path(tmp_path, "steering.png")
            grow_viewport_to_content(page)
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot: {shot}; drawn in {time.monotonic() - t0:.1f} s")
            assert not page_errors, f"JavaScript errors on the page: {page_errors}"
        finally:
            browser.close()
