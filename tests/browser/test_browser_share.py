"""Browser test: a view's link, copied from the page, reopens the same view in a fresh session, served
from the activation and projection caches (nothing new is computed or written)."""
from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.browser import CHARTS_TIMEOUT_S, CHROMIUM_ARGS, grow_viewport_to_content, screenshot_path


def page_address(app_url: str, name: str) -> str:
    """A page's address: its own path, or "/" while it is the app's default page (which has no other)."""
    from repmap_ui.pages import PAGES

    page = next(p for p in PAGES if p.file == f"views/{name}.py")
    return f"{app_url}/" if page.default else f"{app_url}/{page.url_path or name}"


def cache_files(root: Path) -> list[tuple[str, int]]:
    """Every file under the cache with its size, lock files aside (they are kept on purpose, empty)."""
    return sorted((p.relative_to(root).as_posix(), p.stat().st_size) for p in root.rglob("*")
                  if p.is_file() and p.suffix != ".lock")


def wait_for_view(page, expect) -> dict[str, str]:
    """Both charts drawn with points, the run finished; the metrics as label -> value."""
    charts = page.locator('[data-testid="stPlotlyChart"]')
    expect(charts).to_have_count(2, timeout=CHARTS_TIMEOUT_S * 1000)
    expect(charts.nth(1).locator(".scatterlayer path.point").first).to_be_attached(timeout=60_000)
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)
    out = {}
    for m in page.locator('[data-testid="stMetric"]').all():
        out[m.locator('[data-testid="stMetricLabel"]').inner_text().strip()] = \
            m.locator('[data-testid="stMetricValue"]').inner_text().strip()
    return out


def open_link(page, expect, url: str) -> None:
    """Open a link to a view that is not cached yet: the page waits for Compute (a link never starts
    work on its own), which a person presses."""
    page.goto(url, wait_until="domcontentloaded", timeout=60_000)
    expect(page.get_by_text("This link asks for")).to_be_visible(timeout=120_000)
    page.get_by_role("button", name="Compute").click()


def copied_link(page, expect, must_hold: str) -> str:
    """The URL in the sidebar's "Copy link" box, once it holds `must_hold` (the last run's choice)."""
    page.locator('[data-testid="stSidebar"] [data-testid="stPopoverButton"]').filter(has_text="Copy link").click()
    code = page.locator('[data-testid="stPopoverBody"] [data-testid="stCode"]')
    expect(code).to_contain_text(must_hold, timeout=30_000)
    text = code.inner_text().strip()
    page.keyboard.press("Escape")
    return text


@pytest.mark.slow
def test_copied_url_restores_view(chromium_path, app_url, cache_dir, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            first = browser.new_context(viewport={"width": 1400, "height": 1100})
            page = first.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # a small view of the embedded model: 60 rows, three layers
            open_link(page, expect, page_address(app_url, "layer_explorer") + "?limit=60&layers=0,3,5")
            wait_for_view(page, expect)
            # a choice made on the page: t-SNE axes with seed 4
            page.locator('[data-testid="stButtonGroup"]').get_by_role("radio", name="t-SNE").click()
            expect(page.locator('[data-testid="stPlotlyChart"]').nth(1)).to_contain_text("t-SNE", timeout=120_000)
            wait_for_view(page, expect)
            seed = page.get_by_label("Seed")
            seed.fill("4")
            seed.press("Enter")
            page.wait_for_function("() => location.search.includes('seed=4')", timeout=60_000)
            shown = wait_for_view(page, expect)
            assert shown["Rows"] == "60", shown
            link = copied_link(page, expect, "seed=4")
            query = dict(parse_qsl(urlsplit(link).query))
            assert link.startswith(app_url), link  # the page's own address ("/" while it is the default page)
            assert query == {"limit": "60", "layers": "0,3,5", "method": "tsne", "seed": "4"}, link
            assert dict(parse_qsl(urlsplit(page.url).query)) == query  # the address bar says the same
            first.close()

            before = cache_files(cache_dir)
            second = browser.new_context(viewport={"width": 1400, "height": 1100})  # a fresh session
            page = second.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            t0 = time.monotonic()
            page.goto(link, wait_until="domcontentloaded", timeout=60_000)
            again = wait_for_view(page, expect)
            seconds = time.monotonic() - t0
            assert again == shown  # Rows, Best layer, probe accuracy, width
            selected = page.locator('[data-testid="stButtonGroup"] [role="radio"][aria-checked="true"]')
            expect(selected).to_have_text("t-SNE")
            expect(page.get_by_label("Seed")).to_have_value("4")
            expect(page.get_by_label("Max rows (0 = all)")).to_have_value("60")
            grid = page.locator('[data-testid="stPlotlyChart"]').nth(1)
            expect(grid).to_contain_text("t-SNE")
            for layer in (0, 3, 5):
                expect(grid).to_contain_text(f"layer {layer}")
            assert cache_files(cache_dir) == before, "the linked view recomputed something instead of reading the cache"
            assert page.locator('[data-testid="stException"]').count() == 0
            assert page.locator('[data-testid="stAlert"]').count() == 0, page.locator('[data-testid="stAlert"]').first.inner_text()

            shot = screenshot_path(tmp_path, "shared_link.png")
            grow_viewport_to_content(page)
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nlink: {link}\nreopened from the cache in {seconds:.1f} s; metrics {again}; screenshot: {shot}")
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            browser.close()
