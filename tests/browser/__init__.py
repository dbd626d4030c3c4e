"""Browser-test support: Debian's Chromium driven by Playwright (never `playwright install`), a
streamlit server per test. Missing Chromium skips a test, or fails it when REPMAP_REQUIRE_BROWSER=1 (CI)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from repmap_core.share.exports import find_chromium  # noqa: F401  (the tests and docs/make_thumbnails.py use it from here)

ROOT = Path(__file__).resolve().parents[2]
HEALTH_TIMEOUT_S = 60
CHARTS_TIMEOUT_S = 180  # the first open computes the embedded model's activations on CPU

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def require_or_skip(reason: str):
    if os.environ.get("REPMAP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (REPMAP_REQUIRE_BROWSER=1, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)



def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_server(proc: subprocess.Popen) -> None:
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


@contextmanager
def serving_app(env: dict, timeout_s: float = HEALTH_TIMEOUT_S):
    """`streamlit run app.py` on a free local port with `env`, as a base URL once its health check answers; stopped
    (its whole process group) on leaving. For the docs' screenshot scripts."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url, t0 = f"http://127.0.0.1:{port}", time.time()
    try:
        while time.time() - t0 < timeout_s:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        stop_server(proc)


def screenshot_path(tmp_path: Path, name: str) -> Path:
    """Where a browser test keeps its screenshot: $REPMAP_SCREENSHOT_DIR/name, else the test's tmp_path."""
    folder = os.environ.get("REPMAP_SCREENSHOT_DIR")
    target = Path(folder) if folder else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    return target / name


CONTENT_HEIGHT_JS = """() => {
    // Streamlit scrolls inside its own container, not the document: take the tallest scroll height
    let h = document.documentElement.scrollHeight;
    for (const el of document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"], section, div')) {
        const style = getComputedStyle(el);
        if (/(auto|scroll)/.test(style.overflowY) && el.scrollHeight > el.clientHeight) h = Math.max(h, el.scrollHeight);
    }
    return h;
}"""


def grow_viewport_to_content(page, max_height: int = 12_000) -> None:
    """Make the viewport as tall as the content so a "full page" screenshot holds every chart."""
    size = page.viewport_size or {"width": 1400, "height": 1000}
    height = min(int(page.evaluate(CONTENT_HEIGHT_JS)) + 40, max_height)
    if height > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": height})
        page.wait_for_timeout(1500)  # let plotly re-lay out at the new size


def tile(page, label: str):
    """A metric tile with the caption under it (`repmap_ui.tiles`: the value in the tile, its 95% interval on the line
    below), as the innermost column holding the tile labelled `label`."""
    metric = page.locator('[data-testid="stMetric"]').filter(has_text=label)
    return page.locator('[data-testid="stColumn"]').filter(has=metric).last


def interval_pattern(signed: bool = False):
    """A tile's value and the '95% [low, high]' line under it, as drawn."""
    import re

    n = r"-?\d\.\d{3}" if signed else r"\d\.\d{3}"
    return re.compile(rf"{n}\s*95% \[{n}, {n}\]")
