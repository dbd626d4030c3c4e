"""Browser test: views survive a new session. Share, opened directly in a fresh session, finds the views
computed in another one (from the cache, nothing recomputed) and lists both; a refreshed layer explorer
draws the same figure again from the cache."""
from __future__ import annotations

import pytest

from tests.browser import CHARTS_TIMEOUT_S, CHROMIUM_ARGS
from tests.browser.test_browser_share import cache_files, open_link, page_address, wait_for_view

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.slow
def test_share_finds_views_of_another_session_and_a_refresh_keeps_the_view(chromium_path, app_url, cache_dir):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            first = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
            open_link(first, expect, page_address(app_url, "layer_explorer") + "?limit=60&layers=0,3,5")
            shown = wait_for_view(first, expect)
            # the same model twice on Across models, from the cache the explorer filled (layers 0, 3, 5 of 60 rows
            # are there; Across asks for every layer, so it extracts the others once)
            open_link(first, expect, f"{app_url}/across?source={MINILM}&target={MINILM}&data=builtin:sentiment&limit=60")
            charts = first.locator('[data-testid="stPlotlyChart"]')
            expect(charts.nth(1)).to_be_attached(timeout=CHARTS_TIMEOUT_S * 1000)  # the heatmap and the side by side
            expect(first.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)

            before = cache_files(cache_dir)
            share = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()  # a fresh session
            share.goto(f"{app_url}/share", wait_until="domcontentloaded")
            expect(share.get_by_text("Rebuilt from the cache")).to_be_visible(timeout=120_000)
            chosen = share.locator('[data-testid="stMultiSelect"]').first
            expect(chosen).to_contain_text("Layer explorer", timeout=60_000)
            expect(chosen).to_contain_text("Across models")
            share.get_by_role("button", name="Make the bundle").click()
            expect(share.get_by_role("button", name="Download the bundle")).to_be_visible(timeout=120_000)
            assert share.locator('[data-testid="stException"]').count() == 0

            first.goto(page_address(app_url, "layer_explorer") + "?limit=60&layers=0,3,5", wait_until="domcontentloaded")
            first.reload(wait_until="domcontentloaded")  # a refresh: a new session on the same address
            again = wait_for_view(first, expect)
            assert again == shown
            new = {f for f, _ in cache_files(cache_dir)} - {f for f, _ in before}
            assert not [f for f in new if f.startswith("activations/")], new  # nothing was extracted again
        finally:
            browser.close()
