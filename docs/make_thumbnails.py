"""Regenerate docs/thumbnails/<page>.png, the Home page's small screenshots of each view.

    python docs/make_thumbnails.py            # every view in views/home.py's VIEWS
    python docs/make_thumbnails.py steering   # only some

Starts `streamlit run app.py` on a free port with a private cache, opens each page in Debian's
Chromium through Playwright (never `playwright install`), waits until the page has finished
running, screenshots the top of it and stores it small (480 px wide, 64-colour PNG, < 60 KB).
"""
from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import CHROMIUM_ARGS, find_chromium, serving_app  # noqa: E402

OUT = ROOT / "docs" / "thumbnails"
WIDTH, VIEWPORT = 480, {"width": 1280, "height": 820}
MAX_BYTES = 60_000


def shrink(png: bytes) -> bytes:
    """Resize to WIDTH px and quantise to 64 colours; fewer colours if still over MAX_BYTES."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
    for colours in (64, 32, 16):
        buf = io.BytesIO()
        image.quantize(colours, dither=Image.Dither.NONE).save(buf, "PNG", optimize=True)
        if buf.tell() <= MAX_BYTES:
            break
    return buf.getvalue()


def main(only: list[str]) -> None:
    from playwright.sync_api import sync_playwright

    pages = [Path(p).stem for p in sorted(ROOT.glob("views/*.py")) if Path(p).stem != "home"]
    pages = [p for p in pages if not only or p in only]
    chromium = find_chromium()
    if chromium is None:
        sys.exit("Chromium not found; install it with `apt-get install chromium`.")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as cache, serving_app(
            dict(os.environ, REPMAP_CACHE=cache, REPMAP_NO_WARMUP="1", HF_HUB_OFFLINE="1"), timeout_s=60) as url, \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        for name in pages:
            page.goto(f"{url}/{name}", wait_until="domcontentloaded", timeout=60_000)
            page.wait_for_selector('[data-testid="stMain"] h1', timeout=240_000)
            time.sleep(1.0)  # the status widget appears a moment after the first paint
            page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=300_000)
            page.wait_for_timeout(2500)  # plotly lays out after the script ends
            data = shrink(page.screenshot())
            (OUT / f"{name}.png").write_bytes(data)
            print(f"{name}.png: {len(data) / 1000:.1f} KB")
        browser.close()

if __name__ == "__main__":
    main(sys.argv[1:])
