"""What a person takes away from a view: figures (standalone HTML, PNG), tables (CSV), arrays
(safetensors with a JSON manifest). File formats live here and nowhere else; no streamlit.

- `figure_html(fig, title)`: one HTML file with plotly.js inside; opens offline, no CDN.
- `figure_png(fig, scale=2)`: rendered by Chromium (kaleido when it works, else Playwright with the
  system's Chromium); `png_available()` says, cheaply, whether that can work here.
- `table_csv(df)`: UTF-8 CSV; the index is written when it carries meaning.
- `arrays_safetensors(tensors, manifest)` / `read_arrays(data)`: arrays at their own dtype, the
  manifest (what the arrays are, where they came from) as JSON in the header under "manifest".
  `arrays_bundle` adds the manifest as a readable `.json` beside it in a zip. Never pickle. What each
  export's arrays and manifest hold (a within fit, a map, steering vectors) is `results/manifests.py`'s.
"""
from __future__ import annotations

import concurrent.futures
import functools
import html
import io
import json
import os
import re
import shutil
import struct
import threading
import zipfile

import numpy as np

from repmap_core import __version__
from repmap_core.errors import RepmapError
from repmap_core.jsonable import json_default

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_NEEDS_CHROMIUM = "PNG export needs Chromium (apt-get install chromium); the HTML export works without it."
PNG_NEEDS_DRIVER = ("PNG export needs the playwright (or kaleido) Python package to drive Chromium: pip install playwright; "
                    "the HTML export works without it.")
DEFAULT_SIZE = (900, 560)  # px when the figure sets no width/height (plotly's own default is 700 × 500)
_PNG_LOCK = threading.Lock()  # one headless browser at a time: a PNG is seconds, memory is shared


# ---------------------------------------------------------------------------------------------
# figures


def app_template():
    """The app's look for figures drawn outside it (exports, reports): white, light grid lines,
    Streamlit's font and categorical colours, so an exported figure looks like the one on screen."""
    import plotly.graph_objects as go
    import plotly.io as pio

    t = go.layout.Template(pio.templates["plotly_white"])
    t.layout.font = dict(family='"Source Sans Pro", "Source Sans 3", system-ui, sans-serif', color="#31333F", size=13)
    t.layout.paper_bgcolor = t.layout.plot_bgcolor = "white"
    for axis in (t.layout.xaxis, t.layout.yaxis):
        axis.gridcolor, axis.linecolor, axis.zerolinecolor = "#e6eaf1", "#d5dae5", "#d5dae5"
    t.layout.colorway = ["#0068c9", "#83c9ff", "#ff2b2b", "#ffabab", "#29b09d", "#7defa1", "#ff8700", "#ffd16a",
                         "#6d3fc0", "#d5dae5"]
    return t


def portable(fig):
    """A copy of `fig` with the app's look (`app_template`). Inside the app, Streamlit makes its theme
    the default template, whose colours are placeholders (#000011, ...) that only Streamlit's front
    end fills in: a figure exported with them would draw its colour scales near-black anywhere else."""
    import plotly.graph_objects as go

    out = go.Figure(fig)
    out.layout.template = app_template()
    return out


def labelled(fig, source: str):
    """A copy of `fig` that says what it was made from (`source`: models and data, one line) under its title, so
    an exported PNG or HTML file still names them once it is away from the app."""
    import plotly.graph_objects as go

    out = go.Figure(fig)
    title = out.layout.title.text or ""
    line = f"<span style='font-size:11px;color:#6b7080'>{html.escape(source)} · repmap {__version__}</span>"
    top = out.layout.margin.t
    out.update_layout(title_text=f"{title}<br>{line}" if title else line, margin_t=(80 if top is None else top) + 20)
    return out


def figure_html(fig, title: str = "repmap figure") -> bytes:
    """The figure as one self-contained HTML page (plotly.js embedded, no MathJax, no CDN).

    Opens in any browser without a network; zoom, hover and the legend keep working.
    """
    page = portable(fig).to_html(full_html=True, include_plotlyjs=True, include_mathjax=False,
                       config={"displaylogo": False, "responsive": True})
    head = f'<head><title>{html.escape(title)}</title><meta name="generator" content="repmap {__version__}">'
    return page.replace("<head>", head, 1).encode("utf-8")


def find_chromium() -> str | None:
    """Chromium on PATH, or Debian's /usr/bin/chromium; None when there is none."""
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@functools.lru_cache(maxsize=1)
def png_available() -> bool:
    """Whether `figure_png` can work here: a Chromium binary and kaleido or Playwright to drive it.
    Cheap (no browser is started) and cached for the process."""
    return find_chromium() is not None and (_has_module("kaleido") or _has_module("playwright"))


def png_unavailable_reason() -> str | None:
    """None when `figure_png` can work here, else the one sentence saying what is missing."""
    if find_chromium() is None:
        return PNG_NEEDS_CHROMIUM
    return None if png_available() else PNG_NEEDS_DRIVER


def _size(fig) -> tuple[int, int]:
    return int(fig.layout.width or DEFAULT_SIZE[0]), int(fig.layout.height or DEFAULT_SIZE[1])


def _png_kaleido(fig, scale: float) -> bytes:
    width, height = _size(fig)
    return fig.to_image(format="png", width=width, height=height, scale=scale)


def _png_playwright(fig, scale: float, chromium: str) -> bytes:
    from playwright.sync_api import sync_playwright

    width, height = _size(fig)
    sized = fig.to_dict()
    sized.setdefault("layout", {}).update(width=width, height=height)
    import plotly.graph_objects as go

    page_html = figure_html(go.Figure(sized)).decode("utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                    "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": width + 40, "height": height + 40}, device_scale_factor=scale)
            page.set_content(page_html, wait_until="load")
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
            page.wait_for_timeout(200)  # let the first draw settle (fonts, legend)
            return page.locator(".js-plotly-plot").first.screenshot(type="png", animations="disabled")
        finally:
            browser.close()


def figure_png(fig, *, scale: float = 2, engine: str = "auto") -> bytes:
    """The figure as PNG bytes, `scale` × its size in pixels (width/height from its layout, else
    900 × 560), rendered by Chromium.

    engine: "kaleido", "playwright" (the system Chromium, a screenshot of `figure_html`), or "auto"
    (kaleido if it works, else Playwright). Raises `RepmapError` when there is no browser.
    """
    if engine not in ("auto", "kaleido", "playwright"):
        raise RepmapError(f"Unknown PNG engine '{engine}'; use auto, kaleido or playwright.")
    chromium = find_chromium()
    if chromium is None:
        raise RepmapError(PNG_NEEDS_CHROMIUM)
    engines = ["kaleido", "playwright"] if engine == "auto" else [engine]
    engines = [e for e in engines if _has_module(e)]
    if not engines:
        raise RepmapError(PNG_NEEDS_DRIVER)
    errors = []
    with _PNG_LOCK:
        for name in engines:
            # a worker thread of its own: Playwright's sync API refuses to run inside an asyncio loop,
            # and Streamlit may call this from one
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                job = pool.submit(_png_kaleido, portable(fig), scale) if name == "kaleido" else \
                    pool.submit(_png_playwright, fig, scale, chromium)  # figure_html makes it portable
                try:
                    data = job.result(timeout=120)
                except Exception as e:  # noqa: BLE001 - try the next engine, report all if none works
                    errors.append(f"{name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                    continue
            if data.startswith(PNG_SIGNATURE):
                return data
            errors.append(f"{name}: returned something that is not a PNG")
    raise RepmapError(f"PNG export failed with Chromium at {chromium} ({'; '.join(errors)}); "
                      "the HTML export works without it.")


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's header."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise RepmapError("These bytes are not a PNG image.")
    return struct.unpack(">II", data[16:24])


# ---------------------------------------------------------------------------------------------
# tables


def table_csv(table) -> bytes:
    """A pandas DataFrame (or a Styler of one) as UTF-8 CSV bytes, with full precision (the
    Styler's display format is not applied). The index is written unless it is a plain 0..n-1."""
    import pandas as pd

    df = table.data if hasattr(table, "data") and not isinstance(table, pd.DataFrame) else table
    if not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(df)
    plain = isinstance(df.index, pd.RangeIndex) and df.index.name is None and df.index.start == 0 and df.index.step == 1
    return df.to_csv(index=not plain).encode("utf-8")


# ---------------------------------------------------------------------------------------------
# arrays


def manifest_json(manifest: dict) -> str:
    return json.dumps(manifest, sort_keys=True, default=json_default, ensure_ascii=False)


def _check_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, value in tensors.items():
        a = np.asarray(value)
        if a.dtype.kind not in "biuf":
            raise RepmapError(f"Array '{name}' has dtype {a.dtype}; only numbers and booleans are exported.")
        out[str(name)] = np.ascontiguousarray(a)  # kept at its own dtype
    if not out:
        raise RepmapError("There are no arrays to export.")
    return out


def arrays_safetensors(tensors: dict[str, np.ndarray], manifest: dict, metadata: dict[str, str] | None = None) -> bytes:
    """Arrays as safetensors bytes, the manifest as JSON in the header's metadata under "manifest".

    tensors: name -> numeric array (any shape; float arrays keep their dtype). metadata: further
    string entries for the header (e.g. "repmap" for `steering.load_vectors`).
    """
    from safetensors.numpy import save

    return save(_check_tensors(tensors), metadata={**(metadata or {}), "manifest": manifest_json(manifest)})


def arrays_bundle(tensors: dict[str, np.ndarray], manifest: dict, name: str = "arrays") -> bytes:
    """A zip of NAME.safetensors (arrays + manifest in its header) and NAME.json (the same manifest,
    readable without any tool)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # float arrays hardly compress
        z.writestr(f"{name}.safetensors", arrays_safetensors(tensors, manifest))
        z.writestr(f"{name}.json", json.dumps(json.loads(manifest_json(manifest)), indent=2, ensure_ascii=False))
    return buf.getvalue()


def _header(data: bytes) -> dict:
    if len(data) < 8:
        raise RepmapError("The file is too short to be safetensors.")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or n > 100_000_000:
        raise RepmapError("The file's safetensors header is truncated or malformed.")
    try:
        return json.loads(data[8:8 + n])
    except ValueError:
        raise RepmapError("The file's safetensors header is not valid JSON.") from None


def read_arrays(data: bytes) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors, manifest) from `arrays_safetensors` bytes or an `arrays_bundle` zip. Safetensors
    only: nothing is unpickled."""
    from safetensors.numpy import load

    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = [n for n in z.namelist() if n.endswith(".safetensors")]
            if len(names) != 1:
                raise RepmapError("The zip should hold exactly one .safetensors file.")
            data = z.read(names[0])
    meta = _header(data).get("__metadata__") or {}
    try:
        tensors = load(data)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise RepmapError(f"The file is not valid safetensors: {str(e).splitlines()[0]}.") from None
    return tensors, json.loads(meta.get("manifest", "{}"))


def safe_filename(text: str) -> str:
    """`text` with anything but letters, digits, '.', '_' and '-' replaced by '_' (for download names)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "export"
