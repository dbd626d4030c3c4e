"""Browser tests on a live server (issue 21): links and files an attacker would send. Each gets one sentence (or
a Compute card) on the page, never a page exception, a live link or image, a read outside the roots, or work
started before someone presses Compute."""
from __future__ import annotations

import json
import os
from urllib.parse import quote

import pytest

from tests.browser import CHARTS_TIMEOUT_S, CHROMIUM_ARGS
from tests.browser.test_browser_access import narrow_roots  # noqa: F401  (a fixture)
from tests.browser.test_browser_share import cache_files, page_address

ERROR = '[data-testid="stAlertContentError"]'


def one_error(page, expect, says: str) -> str:
    """The page's single error alert, once it holds `says`, and no exception box."""
    alert = page.locator(ERROR)
    expect(alert.first).to_contain_text(says, timeout=120_000)
    page.wait_for_timeout(1000)
    expect(alert).to_have_count(1)
    assert page.locator('[data-testid="stException"]').count() == 0
    return alert.first.inner_text()


@pytest.mark.slow
def test_links_outside_the_rules_get_one_sentence_and_touch_nothing(chromium_path, narrow_roots, app_url,  # noqa: F811
                                                                    cache_dir, tmp_path):
    """Items 1, 2, 5 and 11 through a browser: `hf:` specs that are paths, a `.gguf` outside the roots (a FIFO:
    had the server opened it, the page would hang), a path too long for the system, and a GGUF model's layers
    checked without converting it."""
    from playwright.sync_api import expect, sync_playwright

    private = tmp_path / "private"
    private.mkdir()
    os.mkfifo(private / "model.gguf")
    explorer, across = page_address(app_url, "layer_explorer"), page_address(app_url, "across")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            for spec in ("hf:..:train", "hf:..:default:train", "hf:../..:train[:10]", "hf:/etc:train"):
                page.goto(f"{explorer}?data={quote(spec)}&limit=20", wait_until="domcontentloaded")
                one_error(page, expect, "is not a Hugging Face data set id")
                page.goto(f"{across}?source=x%2Fy&target=x%2Fy&data={quote(spec)}", wait_until="domcontentloaded")
                one_error(page, expect, "is not a Hugging Face data set id")
                assert page.get_by_text("This link asks for").count() == 0  # Across opened without its gate
            for target in ("model.gguf", "missing.gguf"):
                page.goto(f"{explorer}?model={quote(str(private / target))}&limit=20", wait_until="domcontentloaded")
                one_error(page, expect, "loads model folders only under")
            page.goto(f"{explorer}?data={quote('file:data/' + 'a' * 990)}&limit=20", wait_until="domcontentloaded")
            text = one_error(page, expect, "check the path")  # too long for the system, or no such folder here
            assert len(text) < 400 and ("file name too long" in text or "does not exist" in text), text
            # a GGUF model's layers, checked from its header: the card, no conversion in the cache
            page.goto(f"{explorer}?model={quote('HuggingFaceTB/SmolLM2-135M-Instruct')}&layers=0,40&limit=20",
                      wait_until="domcontentloaded")
            expect(page.get_by_text("This link asks for")).to_be_visible(timeout=120_000)
            warning = page.locator('[data-testid="stAlertContentWarning"]')
            expect(warning.first).to_contain_text("30 blocks (0 to 29", timeout=30_000)
            assert not (cache_dir / "gguf").exists() or not any((cache_dir / "gguf").iterdir())
        finally:
            browser.close()


@pytest.mark.slow
def test_a_linked_tsne_waits_for_compute_and_is_computed_once(chromium_path, app_url, cache_dir):
    """Item 6: `?method=tsne&seed=12345` computed an uncached projection on open. With the activations cached,
    the link now opens on a card; nothing is projected until Compute, then it is drawn and cached."""
    from playwright.sync_api import expect, sync_playwright

    explorer = page_address(app_url, "layer_explorer")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(f"{explorer}?limit=40&layers=0,2", wait_until="domcontentloaded")
            page.get_by_role("button", name="Compute").click(timeout=120_000)
            expect(page.locator('[data-testid="stPlotlyChart"]')).to_have_count(2, timeout=CHARTS_TIMEOUT_S * 1000)
            before = cache_files(cache_dir)

            fresh = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            fresh.goto(f"{explorer}?limit=40&layers=0,2&method=tsne&seed=12345", wait_until="domcontentloaded")
            card = fresh.get_by_text("This link asks for a t-SNE of 2 layers")
            expect(card).to_be_visible(timeout=120_000)
            expect(fresh.locator('[data-testid="stMetric"]').first).to_be_visible()  # the cached activations, shown
            fresh.wait_for_timeout(3000)
            assert cache_files(cache_dir) == before  # no projection computed or written
            expect(fresh.locator('[data-testid="stPlotlyChart"]')).to_have_count(1)  # the curve only
            fresh.get_by_role("button", name="Compute").click()
            charts = fresh.locator('[data-testid="stPlotlyChart"]')
            expect(charts).to_have_count(2, timeout=CHARTS_TIMEOUT_S * 1000)
            expect(charts.nth(1)).to_contain_text("t-SNE", timeout=60_000)
            assert len(cache_files(cache_dir)) > len(before)
        finally:
            browser.close()


@pytest.mark.slow
def test_a_crafted_bundle_shows_no_live_markup_and_a_broken_one_changes_nothing(chromium_path, app_url, tmp_path):
    """Items 4 and 10 on the Share page: a bundle whose meta holds markdown shows it as text (no link, no external
    image); a bundle nested 5,000 deep or with a reshaped array is one sentence, and the page keeps working."""
    from playwright.sync_api import expect, sync_playwright

    from repmap_core.share.bundle import bundle_bytes
    from tests.share.test_bundle import _with_doc, synthetic_states
    from tests.share.test_bundle_checks import DEEP, SHAPES, _arrays

    good = bundle_bytes({"explorer.result": synthetic_states()["explorer.result"]})
    files = {"markdown.zip": _with_doc(good, lambda d: d.update(repmap="**[Sign in](https://evil.example)**",
                                                               created="![p](https://evil.example/p.png)")),
             "deep.zip": DEEP["5,000 nested brackets"](good),
             "reshaped.zip": _arrays(good, SHAPES["a layer with fewer rows"][0]),
             "max_rows.zip": _with_doc(good, lambda d: d.update(max_rows="lots"))}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    share = page_address(app_url, "share")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            fetched: list[str] = []
            page.on("request", lambda r: fetched.append(r.url))
            page.goto(share, wait_until="domcontentloaded")
            upload = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
            upload.set_input_files(str(tmp_path / "markdown.zip"))
            success = page.locator('[data-testid="stAlertContentSuccess"]')
            expect(success).to_contain_text("Imported markdown.zip", timeout=120_000)
            # the text as written (the word joiner that keeps the address from being linked is invisible)
            assert "**[Sign in](https://evil.example)**" in success.inner_text().replace("\u2060", "")
            links = page.locator('a[href^="https://evil.example"]')
            assert links.count() == 0, [links.nth(i).evaluate("e => e.parentElement.outerHTML") for i in range(links.count())]
            assert page.locator('img[src^="https://evil.example"]').count() == 0
            assert not any("evil.example" in url for url in fetched)
            for name, says in (("deep.zip", "nests values more than 64 deep"),
                               ("reshaped.zip", "every layer must hold 120 rows"),
                               ("max_rows.zip", "max_rows is 'lots'")):
                upload.set_input_files(str(tmp_path / name))
                one_error(page, expect, says)
                expect(success).not_to_contain_text(name)  # no new import was claimed: the earlier one stays
            assert json.dumps(fetched).count("evil.example") == 0
        finally:
            browser.close()
