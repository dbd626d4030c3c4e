"""Regenerate docs/screens/<page>.png: each page as a user sees it after pressing its main button, full length.

    REPMAP_CACHE=/path/to/warm/cache python docs/make_screens.py            # every page
    REPMAP_CACHE=/path/to/warm/cache python docs/make_screens.py steering   # only some

Starts `streamlit run app.py` on a free port on the cache named by REPMAP_CACHE (one where the demo tour and the
default weak-to-strong run have been computed, so each press reads results back instead of computing for minutes),
opens each page in Debian's Chromium through Playwright (never `playwright install`), presses the page's main
button where it has one (the clicks below), waits until the app is idle, and stores the whole page, 1,000 px wide,
as a 128-colour PNG. Nothing here is asserted: the screens are for people, who should look at them.
"""
from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import CHROMIUM_ARGS, find_chromium, grow_viewport_to_content, serving_app  # noqa: E402

OUT = ROOT / "docs" / "screens"
WIDTH, VIEWPORT = 1000, {"width": 1400, "height": 900}
MAX_HEIGHT = 4200  # px of the stored screen; a longer page is cut at its bottom
# page -> the buttons pressed in turn (their visible text), each followed by a wait until the app is idle
CLICKS: dict[str, list[str]] = {
    "home": [],
    "layer_explorer": ["Show SmolLM2-135M-Instruct instead"],
    "across": ["MiniLM (22M) →", "Fit"],
    "steering": ["Compute vectors", "Sweep"],
    "shift": ["Compare"],
    "within_fit": ["Fit"],
    "finetune": [],
    "weak_to_strong": ["Run weak to strong"],
    "tour": [],
    "presets": [],
    "share": [],
    "cache": [],
}


def shrink(png: bytes) -> bytes:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
    image = image.crop((0, 0, WIDTH, min(image.height, MAX_HEIGHT)))
    buf = io.BytesIO()
    image.quantize(128, dither=Image.Dither.NONE).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def idle(page, timeout_ms: int = 600_000) -> None:
    """Wait until the app has shown no running-status widget for 3 s in a row (a rerun starts a moment after a
    press, and a page may rerun itself once its result is in)."""
    quiet, t0 = 0.0, time.time()
    while quiet < 3.0 and time.time() - t0 < timeout_ms / 1000:
        time.sleep(0.5)
        quiet = 0.0 if page.locator('[data-testid="stStatusWidget"]').count() else quiet + 0.5
    page.wait_for_timeout(2000)  # plotly lays out after the script ends


def press(page, text: str) -> bool:
    """Press the first visible button whose text starts with `text` (opening a collapsed expander that holds it)."""
    button = page.locator("button", has_text=text).first
    print(f"  pressing '{text}'", flush=True)
    if page.locator("button", has_text=text).count() == 0:
        print(f"  no button '{text}'")
        return False
    if not button.is_visible():
        for summary in page.locator("details:not([open]) > summary").all():
            summary.click()
            if button.is_visible():
                break
    button.click()
    idle(page)
    return True


def main(only: list[str]) -> None:
    from playwright.sync_api import sync_playwright

    if not os.environ.get("REPMAP_CACHE"):
        sys.exit("Set REPMAP_CACHE to a warm cache (the demo tour and weak to strong computed in it).")
    pages = [p for p in CLICKS if not only or p in only]
    chromium = find_chromium()
    if chromium is None:
        sys.exit("Chromium not found; install it with `apt-get install chromium`.")
    OUT.mkdir(parents=True, exist_ok=True)
    with serving_app(dict(os.environ, REPMAP_NO_WARMUP="1", HF_HUB_OFFLINE="1")) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)  # one session: a page may show what an earlier one made
        for name in pages:
            t0 = time.time()
            page.goto(url if name == "home" else f"{url}/{name}", wait_until="domcontentloaded", timeout=60_000)
            page.wait_for_selector('[data-testid="stMain"] h1', timeout=240_000)
            idle(page)
            for text in CLICKS[name]:
                press(page, text)
            cancel = page.locator("button", has_text="Cancel")  # a job in the background: its result, not its bar
            for _ in range(600):
                if cancel.count() == 0:
                    break
                page.wait_for_timeout(1000)
            idle(page)
            grow_viewport_to_content(page, max_height=8000)  # Streamlit scrolls its main area inside the window
            data = shrink(page.screenshot())
            page.set_viewport_size(VIEWPORT)
            (OUT / f"{name}.png").write_bytes(data)
            print(f"{name}.png: {len(data) / 1000:.0f} KB, {time.time() - t0:.0f} s", flush=True)
        browser.close()

if __name__ == "__main__":
    main(sys.argv[1:])
