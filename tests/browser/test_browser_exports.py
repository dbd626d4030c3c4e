"""Exports clicked in a real browser: the layer explorer's curve downloads as HTML that then draws
offline in a fresh page, and its table downloads as CSV with the numbers on screen."""
from __future__ import annotations

import io

import pandas as pd
import pytest

from tests.browser import CHARTS_TIMEOUT_S, CHROMIUM_ARGS


@pytest.mark.slow
def test_export_menu_downloads_html_that_draws_offline_and_the_table_as_csv(chromium_path, app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(f"{app_url}/layer_explorer?limit=120", wait_until="domcontentloaded", timeout=60_000)
            page.get_by_role("button", name="Compute").click()  # a link asks before it computes
            charts = page.locator('[data-testid="stPlotlyChart"]')
            expect(charts).to_have_count(2, timeout=CHARTS_TIMEOUT_S * 1000)
            expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)

            page.get_by_role("button", name="Export").first.click()  # the separation curve's menu
            with page.expect_download(timeout=60_000) as html_download:
                page.get_by_role("button", name="Interactive HTML").first.click()
            html_path = tmp_path / html_download.value.suggested_filename
            html_download.value.save_as(html_path)
            assert html_path.name.startswith("layer_separation_") and html_path.suffix == ".html"

            with page.expect_download(timeout=60_000) as csv_download:
                page.locator('[data-testid="stDownloadButton"]').filter(has_text="CSV").last.click()
            table = pd.read_csv(io.BytesIO(csv_download.value.path().read_bytes()))
            assert list(table["layer"]) == [0, 1, 2, 3, 4, 5] and table["probe_cv_acc"].between(0, 1).all()
            best = page.locator('[data-testid="stMetric"]').filter(has_text="Best layer")
            assert best.locator('[data-testid="stMetricValue"]').inner_text().strip() == \
                str(int(table.loc[table["probe_cv_acc"].idxmax(), "layer"]))

            # the downloaded page draws with every network request refused
            offline = browser.new_context()
            offline.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:")
                          else route.continue_())
            figure = offline.new_page()
            errors: list[str] = []
            figure.on("pageerror", lambda e: errors.append(str(e)))
            figure.goto(html_path.as_uri(), wait_until="load", timeout=60_000)
            expect(figure.locator(".js-plotly-plot .main-svg").first).to_be_visible(timeout=30_000)
            assert figure.locator(".scatterlayer .trace").count() >= 2 and not errors, errors
            assert figure.title().startswith("layer_separation_")
        finally:
            browser.close()
