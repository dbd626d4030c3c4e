"""Figures, tables and arrays drawn with a quiet way to take them away (HTML/PNG, CSV, safetensors).

Every file is made only when its button is pressed (Streamlit's deferred download data), so a page
with ten figures does not build ten 5 MB HTML files on each rerun.
"""
from __future__ import annotations

import json
import threading

import streamlit as st

from repmap_core.errors import RepmapError
from repmap_core.share.exports import (
    arrays_safetensors,
    figure_html,
    figure_png,
    labelled,
    manifest_json,
    png_available,
    png_unavailable_reason,
    safe_filename,
    table_csv,
)


def _png_or_explain(fig):
    def make() -> bytes:
        try:
            return figure_png(fig, scale=2)
        except RepmapError as e:  # a deferred download cannot draw an error: the file says it instead
            raise RuntimeError(str(e)) from None

    return make


_source = threading.local()  # what this run's figures were made from (models, data): set by the page


def source(text: str | None) -> None:
    """Name what the figures this page draws from now on were made from (models and data, one line): each
    export's file name and the exported figure then carry it. Reset before every page runs."""
    _source.text = text


def plot(fig, key: str, name: str, *, where=None, **kwargs):
    """`st.plotly_chart(fig)` with an "Export" popover under it: the figure as standalone HTML
    (works offline) and as PNG when Chromium is here. Returns what `st.plotly_chart` returns
    (the selection event when `on_select` is given). `where`: a column or container. The exports name
    the page's `source` (models and data) in their file name and under the figure's title."""
    where = where or st
    event = where.plotly_chart(fig, key=key, **kwargs)
    about = getattr(_source, "text", None)
    exported = labelled(fig, about) if about else fig
    stem = export_stem(name, about)
    with where.popover("Export", icon=":material/download:", type="tertiary"):
        st.download_button("Interactive HTML", lambda: figure_html(exported, name), f"{stem}.html", "text/html",
                           key=f"{key}.export_html", on_click="ignore", icon=":material/code:",
                           help="one file with plotly.js inside: opens offline, zoom and hover work")
        if png_available():
            st.download_button("PNG image", _png_or_explain(exported), f"{stem}.png", "image/png", key=f"{key}.export_png",
                               on_click="ignore", icon=":material/image:", help="rendered by Chromium at 2× size")
        else:
            st.caption(png_unavailable_reason())
    return event


def export_stem(name: str, about: str | None) -> str:
    """The file name (without suffix): `name`, then what it was made from unless `name` already says it."""
    stem = safe_filename(name)
    extra = safe_filename(about) if about else ""
    return stem if not extra or extra.lower() in stem.lower() else f"{stem}__{extra}"[:180]


def table(data, key: str, name: str, *, where=None, static: bool = False, **kwargs):
    """`st.dataframe(data)` (or `st.table` when `static`) with a small CSV download under it.
    `data`: a DataFrame or a Styler of one; the CSV holds the full-precision numbers."""
    where = where or st
    shown = where.table(data) if static else where.dataframe(data, key=key, **kwargs)
    where.download_button("CSV", lambda: table_csv(data), f"{safe_filename(name)}.csv", "text/csv",
                          key=f"{key}.export_csv", on_click="ignore", icon=":material/download:", type="tertiary")
    return shown


def arrays_download(label: str, tensors: dict, manifest: dict, file_name: str, key: str, *, where=None,
                    metadata: dict[str, str] | None = None) -> None:
    """A popover `label` offering the arrays as FILE.safetensors (the manifest in its header) and the
    manifest alone as FILE.json. `file_name`: without suffix."""
    where = where or st
    stem = safe_filename(file_name)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(tensors.items())[:4]) + (" …" if len(tensors) > 4 else "")
    with where.popover(label, icon=":material/download:"):
        st.caption(f"{len(tensors)} array(s): {shapes}. The manifest says what they are and where they came from.")
        st.download_button("Arrays + manifest (safetensors)", lambda: arrays_safetensors(tensors, manifest, metadata),
                           f"{stem}.safetensors", "application/octet-stream", key=f"{key}.safetensors",
                           on_click="ignore", icon=":material/data_array:")
        st.download_button("Manifest only (JSON)", lambda: json.dumps(json.loads(manifest_json(manifest)), indent=2),
                           f"{stem}.json", "application/json", key=f"{key}.manifest", on_click="ignore",
                           icon=":material/description:")
