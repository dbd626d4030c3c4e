"""A self-contained HTML report of chosen views: figures, tables, and the settings behind them.

`build_report(states, settings, views)` takes the same session states a bundle carries (see
`bundle.VIEWS`) and returns one HTML page: plotly.js inlined once (no CDN; it opens offline),
every figure drawn by `Plotly.newPlot` on load from JSON in the page, tables as HTML, and for
each view the manifests that produced it (model ids and revisions, data spec and fingerprint,
layers, position, dtype, fit settings) with the repmap version and date.

Example:
    >>> b = load_bundle("session.zip")
    >>> Path("report.html").write_text(report_from_bundle(b, ["explorer", "across"]))
"""
from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from repmap_core import __version__
from repmap_core.errors import RepmapError
from repmap_core.jsonable import json_default
from repmap_core.share.bundle import VIEWS, Bundle
from repmap_core.share.report_sections import (  # noqa: F401
    MANIFEST_KEYS,
    REPORT_GRID_LAYERS,
    REPORT_POINTS,
    SECTIONS,
    Section,
    _fmt,
    activation_manifest,
)

COLUMN_NAMES = {"r2_test": "held-out R²", "r2_train": "training R²", "probe_train_acc": "probe training acc",
                "probe_test_acc": "probe held-out acc", "probe_cv_acc": "probe cv acc", "probe_cv_std": "cv sd",
                "fisher": "Fisher ratio", "null_acc": "null (shuffled labels)", "null_high": "null, 95th percentile"}
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#222}
h1{margin-bottom:.2rem} h2{border-bottom:2px solid #00798c;padding-bottom:.2rem;margin-top:2.5rem}
.meta{color:#555} .metrics{display:flex;flex-wrap:wrap;gap:1.5rem;margin:1rem 0}
.metric{min-width:9rem} .metric .label{font-size:.85rem;color:#555} .metric .value{font-size:1.5rem}
.figure{width:100%;min-height:320px;margin:1rem 0}
div.table{max-width:100%;overflow-x:auto}
table.dataframe{border-collapse:collapse;font-size:.85rem;margin:.5rem 0 1rem}
table.dataframe th,table.dataframe td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;vertical-align:top;
max-width:24rem;overflow-wrap:anywhere}
table.dataframe th{background:#f3f6f7} caption{caption-side:top;text-align:left;font-weight:600;padding:.3rem 0}
details{margin:.4rem 0} pre{background:#f6f8fa;padding:.6rem;overflow-x:auto;font-size:.8rem}
"""


def report_time() -> str:
    """Now, as a report's header gives it: '2026-12-07 17:45 UTC' (the machine's own time zone)."""
    return datetime.now(UTC).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _figure_json(fig: go.Figure) -> dict:
    from repmap_core.share.exports import portable

    spec = json.loads(pio.to_json(portable(fig), validate=False))
    for trace in spec.get("data", []):
        if trace.get("type") == "scattergl":  # SVG in a report: no WebGL context limit, prints, draws headless
            trace["type"] = "scatter"
    return {"data": spec.get("data", []), "layout": spec.get("layout", {})}


def _json_for_script(value: Any) -> str:
    """JSON safe inside <script>: no "</script>" or "<!--" can close or confuse the tag."""
    return json.dumps(value, allow_nan=False, default=str).replace("<", "\\u003c").replace(">", "\\u003e").replace(
        "&", "\\u0026")


def readable(name: object) -> str:
    """A column's name for people: 'r2_test' -> 'r2 test' ('held-out R²' where a known key has a name)."""
    text = str(name)
    return COLUMN_NAMES.get(text, text.replace("_", " "))


def _cell_html(value: object) -> object:
    """A cell as HTML: text escaped with its line breaks kept (pandas wrote them as a literal backslash-n)."""
    return html.escape(value).replace("\n", "<br>") if isinstance(value, str) else value


def _table_html(frame: pd.DataFrame, caption: str) -> str:
    frame = frame.copy()
    for col in frame.columns:
        if pd.api.types.is_float_dtype(frame[col]):
            frame[col] = frame[col].map(lambda x: "" if pd.isna(x) else f"{x:.3f}")
        else:
            frame[col] = frame[col].map(_cell_html)
    frame.columns = [html.escape(readable(c)) for c in frame.columns]
    frame.index = frame.index.map(_cell_html)
    if frame.index.name is not None:
        frame.index.name = html.escape(readable(frame.index.name))
    body = frame.to_html(escape=False, border=0, index=frame.index.name is not None or not isinstance(frame.index, pd.RangeIndex))
    if caption:
        body = body.replace(">", f"><caption>{html.escape(caption)}</caption>", 1) if body.startswith("<table") else body
    return f'<div class="table">{body}</div>'  # scrolls sideways inside the page when it must, never widens it


def _settings_html(name: str, values: dict) -> str:
    text = json.dumps(values, indent=2, sort_keys=True, default=json_default, ensure_ascii=False)
    # folded: the settings are there to check, not to read first (the page stays about its figures)
    return f"<details><summary>{html.escape(name)}</summary><pre>{html.escape(text, quote=False)}</pre></details>"


def plotly_js() -> str:
    """plotly.js, minified, as bundled with the plotly package (the same version that made the figures)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def render_html(sections: list[Section], meta: dict, title: str = "repmap report") -> str:
    """The page for `sections`: plotly.js once, then each section; figures drawn on load."""
    figures, parts = [], []
    for sec in sections:
        parts.append(f'<section id="view-{sec.view}"><h2>{html.escape(sec.title)}</h2>')
        for kind, value in sec.blocks:
            if kind == "metrics":
                cells = "".join(f'<div class="metric"><div class="label">{html.escape(str(k))}</div>'
                                f'<div class="value">{html.escape(_fmt(v))}</div></div>' for k, v in value.items())
                parts.append(f'<div class="metrics">{cells}</div>')
            elif kind == "figure":
                fig, name = value
                fig_id = f"figure-{len(figures)}"
                figures.append(dict(_figure_json(fig), id=fig_id))
                parts.append(f'<div class="figure plot" id="{fig_id}" data-name="{html.escape(name)}"></div>')
            elif kind == "table":
                parts.append(_table_html(*value))
            elif kind == "text":
                parts.append(f"<p>{html.escape(value)}</p>")
            elif kind == "settings":
                parts.append(_settings_html(*value))
        parts.append("</section>")
    def text(key: str, default: Any = "") -> str:  # every meta value escaped, whatever its type or origin
        return html.escape(str(meta.get(key, default)))

    rows = meta.get("max_rows")
    meta = dict(meta, report_created=meta.get("report_created") or report_time())  # every report says when it was made
    head_meta = (f"repmap {text('repmap', __version__)} · report made {text('report_created')}"
                 + (f" · from a session bundle made {text('created')}" if meta.get("created") else "")
                 + (f" · data sets subsampled to at most {html.escape(f'{rows:,}' if isinstance(rows, int) else str(rows))} "
                    f"rows (seed {text('seed', 0)})" if rows else ""))
    draw = ("window.addEventListener('load',function(){var figs=JSON.parse(document.getElementById('repmap-figures')"
            ".textContent);figs.forEach(function(f){Plotly.newPlot(f.id,f.data,f.layout,"
            "{responsive:true,displaylogo:false});});});")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"generator\" content=\"repmap {html.escape(__version__)}\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style>"
            f"<script type=\"text/javascript\">{plotly_js()}</script></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=\"meta\">{head_meta}</p>"
            f"<p class=\"meta\">{len(figures)} figures; every number below was computed from the stored activations "
            "and fits.</p>"
            + "<nav class=\"contents\"><strong>Contents</strong><ol>"
            + "".join(f'<li><a href="#view-{html.escape(s.view)}">{html.escape(s.title)}</a></li>' for s in sections)
            + "</ol></nav>"
            + "".join(parts)
            + f"<script type=\"application/json\" id=\"repmap-figures\">{_json_for_script(figures)}</script>"
            + f"<script type=\"text/javascript\">{draw}</script></body></html>")


def build_sections(states: dict, settings: dict | None = None, views: list[str] | None = None, *,
                   beside: dict[str, str] | None = None) -> list[Section]:
    """One `Section` per chosen view that has its state (all such views when `views` is None). `beside`:
    view -> a paper's published number, as a sentence, to print beside this run's (none when None)."""
    settings, beside = settings or {}, beside or {}
    views = views if views is not None else list(VIEWS)
    unknown = [v for v in views if v not in SECTIONS]
    if unknown:
        raise RepmapError(f"Unknown view '{unknown[0]}'; the views are {', '.join(SECTIONS)}.")
    chosen = [v for v in views if states.get(VIEWS[v].required) is not None]
    if not chosen:
        raise RepmapError("None of the chosen views has a result to report; run a view first (or pick others).")
    return [SECTIONS[v](states, settings, beside) for v in chosen]


def build_report(states: dict, settings: dict | None = None, views: list[str] | None = None, *,
                 meta: dict | None = None, title: str = "repmap report", beside: dict[str, str] | None = None) -> str:
    """The HTML page (a str) for the chosen `views` of `states` (session key -> state); `beside` as in
    `build_sections` (the callers hand `papers.published.BESIDE_A_RUN`)."""
    meta = dict(meta or {}, report_created=report_time())
    return render_html(build_sections(states, settings, views, beside=beside), meta, title)


def report_from_bundle(bundle: Bundle, views: list[str] | None = None, title: str = "repmap report", *,
                       beside: dict[str, str] | None = None) -> str:
    """The report of a loaded bundle's views (all of them when `views` is None)."""
    return build_report(bundle.states, bundle.settings, views if views is not None else bundle.views,
                        meta=bundle.meta, title=title, beside=beside)
