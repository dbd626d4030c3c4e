"""End-to-end browser test: the Layer explorer page draws its plotly charts in a real Chromium.

Needs Chromium (Debian: `apt-get install chromium`) and the `playwright` Python package; the browser
comes from the system, never from `playwright install`. Skipped when either is missing, except with
REPMAP_REQUIRE_BROWSER=1 (CI), where a missing browser fails the test. Set REPMAP_SCREENSHOT_DIR to keep
the full-page screenshot (layer_explorer.png); otherwise it goes into the test's tmp_path.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEALTH_TIMEOUT_S = 60
CHARTS_TIMEOUT_S = 180  # the first open computes the embedded model's activations on CPU

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def _require_or_skip(reason: str):
    if os.environ.get("REPMAP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (REPMAP_REQUIRE_BROWSER=1, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def _find_chromium() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # streamlit was started in its own session/process group
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@pytest.fixture
def chromium_path() -> str:
    path = _find_chromium()
    if path is None:
        _require_or_skip("Chromium not found (shutil.which('chromium') and /usr/bin/chromium); "
                         "install it with `apt-get install chromium`")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _require_or_skip("the `playwright` Python package is not installed")
    return path


@pytest.fixture
def app_url(cache_dir, tmp_path):
    port = _free_port()
    env = dict(os.environ, REPMAP_CACHE=str(cache_dir), REPMAP_NO_WARMUP="1", HF_HUB_OFFLINE="1")
    log_path = tmp_path / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with code {proc.returncode} before answering; log:\n"
                            f"{log_path.read_text(errors='replace')[-4000:]}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer {url}/_stcore/health within {HEALTH_TIMEOUT_S} s; log:\n"
                            f"{log_path.read_text(errors='replace')[-4000:]}", pytrace=False)
            time.sleep(0.5)
        yield url
    finally:
        _stop(proc)
        # keep the server's log visible when run with -s; it explains most failures
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if "Traceback" in text or "Error" in text:
            print(f"\n--- streamlit log ({log_path}) ---\n{text[-4000:]}")


def _screenshot_path(tmp_path: Path) -> Path:
    folder = os.environ.get("REPMAP_SCREENSHOT_DIR")
    target = Path(folder) if folder else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    return target / "layer_explorer.png"


_CONTENT_HEIGHT_JS = """() => {
    // Streamlit scrolls inside its own container, not the document: take the tallest scroll height
    let h = document.documentElement.scrollHeight;
    for (const el of document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"], section, div')) {
        const style = getComputedStyle(el);
        if (/(auto|scroll)/.test(style.overflowY) && el.scrollHeight > el.clientHeight) h = Math.max(h, el.scrollHeight);
    }
    return h;
}"""


def _grow_viewport_to_content(page, max_height: int = 12_000) -> None:
    """Make the viewport as tall as the content so a "full page" screenshot holds every chart."""
    size = page.viewport_size or {"width": 1400, "height": 1000}
    height = min(int(page.evaluate(_CONTENT_HEIGHT_JS)) + 40, max_height)
    if height > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": height})
        page.wait_for_timeout(1500)  # let plotly re-lay out at the new size


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
            page.goto(app_url, wait_until="domcontentloaded", timeout=60_000)

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

            assert page.locator('[data-testid="stException"]').count() == 0, \
                page.locator('[data-testid="stException"]').first.inner_text()

            shot = _screenshot_path(tmp_path)
            _grow_viewport_to_content(page)
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot: {shot}")
            print(f"charts drawn in {time.monotonic() - t0:.1f} s; grid points: {grid_points}; "
                  f"metric: {metric.inner_text()!r}")
            assert not page_errors, f"JavaScript errors on the page: {page_errors}"
        finally:
            browser.close()
