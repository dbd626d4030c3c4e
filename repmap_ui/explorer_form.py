"""The Layer explorer's request: its defaults, its choices in the URL, the form, the one-click switch between
the embedded models, and the widgets set from the view on screen (one request: `flow.sync_request`)."""
from __future__ import annotations

import streamlit as st

from repmap_core.analysis.projection import METHODS, STANDARDISED
from repmap_core.capture.models import EMBEDDED_MODEL_ID
from repmap_ui import urlstate
from repmap_ui.common import default_causal_model, table_uploader
from repmap_ui.pickers import (
    chosen_data,
    chosen_model,
    data_picker,
    model_picker,
    seed_data_picker,
    seed_fields,
    seed_model_picker,
)
from repmap_ui.urlstate import Choice, Int, IntList, Layers, Text

DEFAULTS = {"model": EMBEDDED_MODEL_ID, "data": "builtin:sentiment", "layers": "all", "position": "auto",
            "limit": 2000, "max_length": 512, "text_col": "", "label_col": "", "trust": False}
# the page's choices in the URL (never `trust`: a link must not run a model's own code)
URL_REQUEST = [Text("model", DEFAULTS["model"]), Text("data", DEFAULTS["data"]), Layers("layers", "all"),
               Choice("position", "auto", ("auto", "last", "mean", "answer")), Int("limit", DEFAULTS["limit"], lo=0),
               Int("max_length", DEFAULTS["max_length"], lo=2, hi=32768), Text("text_col", ""), Text("label_col", "")]
# the projections (PCA also on standardised features), and custom axes (directions named by the user)
VIEWS_2D = ("pca", STANDARDISED, *METHODS[1:], "axes")
URL_VIEW = [Choice("method", "pca", VIEWS_2D), IntList("shown", ()), Int("seed", 0, lo=0, hi=2**32 - 1), Int("points", 3000, lo=100)]
URL_WIDGETS = {**{k: f"explorer.{k}" for k in ("layers", "position", "limit", "max_length", "text_col", "label_col",
                                               "method", "seed")}, "points": "explorer.max_points"}
# the view's choices, kept through a visit to another page; the request form's widgets, set from the view shown
VIEW_KEYS = ("explorer.method", "explorer.shown", "explorer.seed", "explorer.max_points", "explorer.x_axis",
             "explorer.y_axis")
FORM_FIELDS = {k: k for k in ("layers", "position", "limit", "max_length", "text_col", "label_col", "trust")}


def seed_form(req: dict) -> None:
    """Every widget of the request form shows the request of the view on screen."""
    seed_model_picker("explorer", req["model"])
    seed_data_picker("explorer", req["data"])
    seed_fields("explorer", req, FORM_FIELDS)


def from_link() -> tuple[dict | None, dict]:
    """The request and view choices of a link this page did not write itself ((None, {}) without one),
    seeded into the widgets; a bad value falls back to its default with one sentence."""
    if not urlstate.is_link("explorer", URL_REQUEST + URL_VIEW):
        return None, {}
    url, notices = urlstate.read(URL_REQUEST + URL_VIEW)
    url["layers"], note = urlstate.layers_in_range("layers", url["layers"], url["model"])
    urlstate.show_notices(notices + ([note] if note else []))
    seed_model_picker("explorer", url["model"])
    seed_data_picker("explorer", url["data"])
    urlstate.seed(url, URL_WIDGETS)
    return {k: url[k] for k in DEFAULTS if k in url} | {"trust": False}, url


def request_form(current: dict) -> dict | None:
    label = f"Model, data and layers · {current['model'].split('/')[-1]} on {current['data'].split('/')[-1]}"
    with st.expander(label, expanded=False), st.form("explorer.form"):
        c1, c2 = st.columns(2)
        with c1:
            model = model_picker("explorer")
        with c2:
            data = data_picker("explorer", with_upload=False)
        upload = table_uploader("…or upload a table (CSV, TSV, JSONL, JSON, parquet)", key="explorer.upload")
        c3, c4, c5, c6 = st.columns(4)
        for key in ("layers", "limit", "max_length"):  # defaults through the session state, where links and views set them
            st.session_state.setdefault(f"explorer.{key}", DEFAULTS[key])
        layers = c3.text_input("Layers", key="explorer.layers", help="all, or e.g. 0,3,-1")
        position = c4.selectbox("Token position", ["auto", "last", "mean", "answer"], key="explorer.position",
                                help="auto: mean for encoders, last for causal LMs; answer: the answer letter of A/B rows")
        limit = c5.number_input("Max rows (0 = all)", min_value=0, step=500, key="explorer.limit")
        max_length = c6.number_input("Max tokens per text", min_value=2, max_value=32768,
                                     key="explorer.max_length")
        with st.expander("Columns and trust"):
            text_col = st.text_input("Text column (tables of another schema)", key="explorer.text_col")
            label_col = st.text_input("Label column (0/1 or -1/+1)", key="explorer.label_col")
            trust = st.checkbox("Trust remote code (runs the model's own Python code)", key="explorer.trust")
        submitted = st.form_submit_button("Compute", type="primary")
    if not submitted:
        return None
    return {"model": chosen_model(*model), "data": chosen_data(data[0], data[1], upload), "layers": layers,
            "position": position, "limit": int(limit), "max_length": int(max_length), "text_col": text_col.strip(),
            "label_col": label_col.strip(), "trust": bool(trust)}


def quick_switch(current: str) -> dict | None:
    """One click between the embedded encoder and the embedded causal LM (SmolLM2), on the built-in reviews."""
    other = default_causal_model() if current == EMBEDDED_MODEL_ID else EMBEDDED_MODEL_ID
    if other is None or other == current:
        return None
    label = (f"Show {other.split('/')[-1]} instead (causal LM, 30 blocks; the first time converts it and extracts "
             "for about a minute here)" if other != EMBEDDED_MODEL_ID else f"Show {other.split('/')[-1]} instead (encoder)")
    return dict(DEFAULTS, model=other) if st.button(label, key="explorer.quick", icon=":material/swap_horiz:") else None
