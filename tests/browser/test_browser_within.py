"""Browser test: the Within-model fit page, opened by its URL on a fresh server, fits by gradient
descent and shows the live curve and Table 1 filling in, then the final table."""
from __future__ import annotations

import re

import pytest

from repmap_core.data.load import load_dataset
from repmap_core.finetune.train import FinetuneConfig, finetune
from tests.browser import CHROMIUM_ARGS, grow_viewport_to_content, interval_pattern, screenshot_path, tile


@pytest.fixture
def finetuned(cache_dir, tiny_models):
    """A tiny finetuned GPT-2 in the test's cache before the server starts (the page opens on it)."""
    data = load_dataset("builtin:sentiment", limit=120)
    return finetune(str(tiny_models["gpt2"]), data, FinetuneConfig(epochs=1, batch_size=16, lr=1e-3))


@pytest.mark.slow
def test_within_fit_shows_the_live_table(finetuned, chromium_path, app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # what the server sent, in order: Streamlit's frontend batches the deltas that arrive within a few
            # ms, so a short fit's live table can be sent and cleared in one batch the DOM never shows
            frames: list[bytes] = []
            page.on("websocket", lambda ws: ws.on(
                "framereceived", lambda f: frames.append(f if isinstance(f, bytes) else f.encode())))
            # the page's own URL on a server no session has visited yet: the app's navigation must hold
            page.goto(f"{app_url}/within_fit", wait_until="domcontentloaded", timeout=60_000)
            expect(page.get_by_role("heading", name="Within-model fit")).to_be_visible(timeout=120_000)
            expect(page.locator('[data-testid="stSidebarNav"]')).to_contain_text("Layer explorer", timeout=30_000)
            fit_button = page.get_by_role("button", name="Fit", exact=True)
            expect(fit_button).to_be_visible(timeout=120_000)

            page.locator('[data-testid="stSelectbox"]').filter(has_text="Method").click()
            page.get_by_role("option", name="gradient descent (live)").click()
            steps = page.get_by_label("GD steps (at most)")
            steps.fill("20000")
            steps.press("Tab")
            # while it fits: the live curve and the live table (base, finetuned, modelled rows). A fast
            # fit can end before a poll from here sees it, so the page itself records whether a table was
            # ever drawn while no final "Table 1" heading was there
            assert page.locator('[data-testid="stDataFrame"]').count() == 0
            page.evaluate("""() => {
                window.sawLiveTable = false;
                const check = () => {
                    const table = document.querySelector('[data-testid="stDataFrame"]');
                    const done = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')]
                        .some(h => h.textContent.includes('Table 1'));
                    if (table && !done) window.sawLiveTable = true;
                };
                new MutationObserver(check).observe(document.body, {childList: true, subtree: true});
            }""")
            sent_before_fit = len(frames)
            fit_button.click()
            live_table = page.locator('[data-testid="stDataFrame"]')
            expect(live_table.first).to_be_visible(timeout=60_000)
            expect(page.locator('[data-testid="stPlotlyChart"]').filter(has_text="held-out R²")).to_have_count(
                1, timeout=30_000)
            # and when it is done, the final Table 1 with the paper's five representations
            expect(page.get_by_role("heading", name="Table 1")).to_be_visible(timeout=180_000)
            expect(page.locator('[data-testid="stMetric"]').filter(has_text="Held-out R²")).to_have_count(1)
            expect(tile(page, "Held-out R²")).to_contain_text(interval_pattern(signed=True))  # with its 95% interval
            # gradient descent says which step it reports, on the curve and in a sentence
            expect(page.get_by_text(re.compile(r"the parameters reported are those of step \d+"))).to_have_count(1)
            # the live table (a dataframe whose rows are base, finetuned, modeled) was drawn before the fit's
            # final sentence: seen in the page when the fit lasted long enough to render, else in what was sent
            after_click = frames[sent_before_fit:]
            final = next(i for i, f in enumerate(after_click) if b"the parameters reported are those of step" in f)
            sent_live = any(b"index_columns" in f and b"modeled" in f for f in after_click[:final])
            assert page.evaluate("window.sawLiveTable") or sent_live, "the table was drawn only after the fit, not while it ran"
            assert page.locator('[data-testid="stException"]').count() == 0
            grow_viewport_to_content(page)
            shot = screenshot_path(tmp_path, "within_fit.png")
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot: {shot}")
            assert not errors, errors
        finally:
            browser.close()
