"""Browser test on a live server (issue 14): a link to a file outside the allowed roots shows one
sentence and the file's content reaches neither the page nor its websocket; a link to an uncached
view computes nothing until Compute is pressed; markdown in URL parameters renders as text."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.browser import CHROMIUM_ARGS
from tests.browser.test_browser_share import page_address

SECRET = "ssn-987-65-4321-never-show"
PAYLOAD = "**[Your session expired - sign in](https://example.org)**"


@pytest.fixture
def narrow_roots(tmp_path_factory, monkeypatch):
    """The server's roots: one empty folder (set before `app_url` starts the server, which reads them)."""
    allowed = tmp_path_factory.mktemp("allowed_only")
    monkeypatch.setenv("REPMAP_DATA_ROOTS", str(allowed))
    monkeypatch.setenv("REPMAP_MODEL_ROOTS", str(allowed))
    return allowed


@pytest.mark.slow
def test_links_cannot_read_outside_the_roots_or_compute_uncached_views(chromium_path, narrow_roots, app_url, cache_dir,
                                                                       tmp_path):
    from playwright.sync_api import expect, sync_playwright

    private = tmp_path / "private"  # not under the server's roots
    private.mkdir()
    secret_file = private / "customers.csv"
    secret_file.write_text(f"user,password\nalice,{SECRET}\n", encoding="utf-8")
    frames: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(
                payload if isinstance(payload, str) else payload.decode("latin-1"))))
            explorer = page_address(app_url, "layer_explorer")

            # 1. a file outside the roots: one sentence, and nothing of the file anywhere
            page.goto(f"{explorer}?data={quote('file:' + str(secret_file))}&text_col=user&label_col=password",
                      wait_until="domcontentloaded")
            alert = page.locator('[data-testid="stAlertContentError"]')
            expect(alert).to_contain_text("reads data files only under", timeout=120_000)
            expect(alert).to_have_count(1)
            page.wait_for_timeout(1500)
            assert SECRET not in page.content() and "alice" not in page.content()
            assert not any(SECRET in f or "alice" in f for f in frames)

            # 2. a link to an uncached view: the card and its button, and an empty cache until it is pressed
            page.goto(f"{explorer}?limit=40&layers=0,2", wait_until="domcontentloaded")
            expect(page.get_by_text("This link asks for")).to_be_visible(timeout=120_000)
            page.wait_for_timeout(1500)
            activations = cache_dir / "activations"
            assert not activations.exists() or not any(activations.iterdir())
            page.get_by_role("button", name="Compute").click()
            expect(page.locator('[data-testid="stMetric"]').first).to_be_visible(timeout=180_000)
            assert any(activations.iterdir())

            # 3. markdown in a URL parameter is text, never a link (the value is echoed in the page's own warning)
            page.goto(f"{explorer}?limit={quote(PAYLOAD)}", wait_until="domcontentloaded")
            warning = page.locator('[data-testid="stAlertContentWarning"]').filter(has_text="The link's limit=")
            expect(warning).to_have_count(1, timeout=120_000)
            # as written (the word joiner that keeps the address from being linked is invisible)
            assert "[Your session expired - sign in](https://example.org)" in warning.inner_text().replace("\u2060", "")
            assert page.locator('a[href*="example.org"]').count() == 0  # nor a bare address autolinked
            assert warning.locator("strong").count() == 0  # no bold injected
        finally:
            browser.close()
