"""Across models: how alike are two models' (or two layers') representations, and does a map
carry one to the other, with its probe?"""
from __future__ import annotations

import numpy as np
import streamlit as st

from repmap_core.access import cap, cap_rows
from repmap_core.analysis.maps import MAP_METHODS
from repmap_core.analysis.projection import METHODS, project, sample_rows
from repmap_core.analysis.similarity import layer_similarity
from repmap_core.analysis.similarity_null import NULL_PERMUTATIONS
from repmap_core.capture import memo
from repmap_core.capture.models import EMBEDDED_MODEL_ID
from repmap_core.data.load import load_dataset
from repmap_core.errors import RepmapError
from repmap_core.results.view_results import AcrossResult, across_result
from repmap_core.share.figures import METHOD_NAMES
from repmap_core.share.figures_across import METRIC_NAMES, best_matches, selected_rows, side_by_side, similarity_heatmap
from repmap_ui import exports, urlstate
from repmap_ui.across_fit import fit, fit_form, short, show_fit
from repmap_ui.bars import timed_bar
from repmap_ui.common import default_causal_model, model_loader, show_error
from repmap_ui.flow import cap_note, check_models, is_cached, keep, link_gate, run_request, seconds_for, sync_request
from repmap_ui.pickers import (
    chosen_data,
    chosen_model,
    seed_data_picker,
    seed_fields,
    seed_model_picker,
    two_models_and_data,
)
from repmap_ui.text import md
from repmap_ui.urlstate import Choice, Float, Int, Text

st.title("Across models")
st.caption("Two models (or one model twice) on the same texts: how alike each pair of layers is, the two chosen "
           "layers side by side, and a map from source to target with the source's probe carried across.")
st.session_state.setdefault("across.result", None)
st.session_state.setdefault("across.fit", None)
st.session_state.setdefault("across.selected", None)

# the page's choices in the URL; "" and -1 stand for the page's own default
URL_REQUEST = [Text("source", ""), Text("target", ""), Text("data", ""),
               Choice("position", "auto", ("auto", "last", "mean", "answer")), Int("limit", 2000, lo=0)]
URL_VIEW = [Choice("metric", "cka_debiased", tuple(METRIC_NAMES)), Int("ls", -1, lo=0), Int("lt", -1, lo=0)]
# the fit form's options: seeded into the form by a link, fitted when Fit is pressed
URL_FIT = [Choice("map", "ridge", tuple(MAP_METHODS)), Text("alpha", "auto"), Int("rank", 8, lo=1),
           Int("steps", 500, lo=10), Float("test", 0.2, lo=0.05, hi=0.9), Int("seed", 0, lo=0, hi=2**32 - 1)]
FIT_WIDGETS = {"map": "across.method", "alpha": "across.alpha", "rank": "across.rank", "steps": "across.steps",
               "test": "across.test_frac", "seed": "across.seed"}
# the view's choices (the layer pair above all), kept through a visit to another page
keep(("across.layer_s", "across.layer_t", "across.metric", "across.projection", *FIT_WIDGETS.values()))


def seed_form(req: dict) -> None:
    """Every widget of the request form shows the request of the view on screen."""
    for side in ("source", "target"):
        seed_model_picker(f"across.{side}", req[side])
    seed_data_picker("across", req["data"])
    seed_fields("across", req, {"position": "position", "limit": "limit"})


def from_link() -> tuple[dict | None, dict]:
    """The request and view choices of a link this page did not write itself, seeded into the widgets."""
    if not urlstate.is_link("across", URL_REQUEST + URL_VIEW + URL_FIT):
        return None, {}
    url, notices = urlstate.read(URL_REQUEST + URL_VIEW + URL_FIT)
    if url["alpha"].lower() != "auto":
        try:
            ok = float(url["alpha"]) > 0
        except ValueError:
            ok = False
        if not ok:
            notices.append(urlstate.notice("alpha", url["alpha"], "is not 'auto' or a positive number", "auto"))
            url["alpha"] = "auto"
    urlstate.show_notices(notices)
    for side in ("source", "target"):
        if url[side]:
            seed_model_picker(f"across.{side}", url[side])
    if url["data"]:
        seed_data_picker("across", url["data"])
    urlstate.seed(url, {"position": "across.position", "limit": "across.limit", "metric": "across.metric",
                        **FIT_WIDGETS})
    return (url if url["source"] and url["target"] and url["data"] else None), url


def request_form(expanded: bool) -> dict | None:
    with st.expander("Models and data", expanded=expanded), st.form("across.form"):
        source, target, data = two_models_and_data("across", (("source", "Source model"), ("target", "Target model")))
        c4, c5 = st.columns(2)
        position = c4.selectbox("Token position", ["auto", "last", "mean", "answer"], key="across.position",
                                help="auto: mean for encoders, last for causal LMs (each model on its own)")
        limit = c5.number_input("Max rows (0 = all)", min_value=0, value=2000, step=500, key="across.limit")
        if not st.form_submit_button("Compute", type="primary"):
            return None
    return {"source": chosen_model(*source), "target": chosen_model(*target), "data": chosen_data(*data),
            "position": position, "limit": int(limit)}


def compute(req: dict) -> AcrossResult:
    with st.status(f"Activations of both models on {md(req['data'])}", expanded=True) as status:
        with timed_bar("source: checking the cache") as progress:
            result = across_result(req, loader=model_loader(False), progress=progress)
        src, tgt = result.source, result.target
        status.update(label=f"{md(result.dataset.name)}: {len(result.dataset)} rows · source {src.d} wide × "
                            f"{len(src.layers)} layers, target {tgt.d} × {len(tgt.layers)}",
                      state="complete", expanded=False)
    # a model against itself: last -> last would be the identity
    st.session_state.update({"across.layer_s": src.layer_list[-2 if result.same_model and len(src.layers) > 1 else -1],
                             "across.layer_t": tgt.layer_list[-1], "across.fit": None, "across.selected": None})
    return result


def similarity(result: AcrossResult, metric: str):
    if metric not in result.sims:  # kept with the result: switching metric back is free
        # debiased CKA with its shuffled-row null: 1.7 s for 6 x 6 MiniLM layers on 800 rows here (values 0.15 s)
        with st.spinner(f"{METRIC_NAMES[metric]} of every layer pair"):
            result.sims[metric] = layer_similarity(
                result.source.layers, result.target.layers, metric,
                null_permutations=NULL_PERMUTATIONS if metric == "cka_debiased" else 0)
    return result.sims[metric]


def use_best_match(best: dict) -> None:
    st.session_state["across.layer_t"] = best[st.session_state["across.layer_s"]]


def store_selection() -> None:
    event = st.session_state.get("across.pairs")
    rows = selected_rows(event["selection"]["points"]) if event else []
    if rows:  # the redrawn figure is a new chart with no selection of its own: keep ours
        st.session_state["across.selected"] = rows


linked, view_url = from_link()
linked = urlstate.not_shown(linked, st.session_state["across.result"])
def small_to_large() -> dict | None:
    """One click to the pair the papers study, scaled down: the embedded MiniLM (22M) into SmolLM2 (135M)."""
    if (causal := default_causal_model()) is None or not st.button(
            f"MiniLM (22M) → {short(causal)} (135M) on the built-in reviews", key="across.quick",
            icon=":material/compare_arrows:", help="both models' activations on 800 real reviews; about a minute the "
                                                   "first time here, then from the cache"):
        return None
    return {"source": EMBEDDED_MODEL_ID, "target": causal, "data": "builtin:sentiment", "position": "auto", "limit": 2000}


try:
    shown = st.session_state["across.result"]
    sync_request("across", shown.request if shown else None, seed_form, "across.source.model_choice")
    req = request_form(expanded=shown is None and linked is None)
    if req is None and linked:  # a link computes only what is cached, until Compute is pressed
        check_models(linked["source"], linked["target"])
        data = load_dataset(linked["data"], limit=cap_rows(linked["limit"] or None)[0])
        cached = all(is_cached(linked[k], data, "all", linked["position"]) for k in ("source", "target"))
        seconds = sum(filter(None, (seconds_for(linked[k], data, "all", linked["position"]) for k in ("source", "target"))))
        if link_gate("across", f"{linked['source']} and {linked['target']} on {data.name} ({len(data):,} rows)", cached,
                     seconds or None):
            req = linked
    if req is None and st.session_state["across.result"] is None:
        req = small_to_large()
    if req is not None:
        run_request("across", req, compute)
except RepmapError as e:
    show_error(e)  # the last good result below stays on screen

result = st.session_state["across.result"]
if result is None:
    st.info("Pick a source and a target model (the same one twice compares its layers) and a data set, then Compute.")
    st.stop()

cap_note("across")
src, tgt, dataset = result.source, result.target, result.dataset
urlstate.write("across", URL_REQUEST, result.request)
for side, aset in (("s", src), ("t", tgt)):  # a link's layer pair, when the computed models have it
    if view_url.get(f"l{side}", -1) >= 0:
        layer, note = urlstate.layers_among(f"l{side}", view_url[f"l{side}"], aset.layer_list,
                                            st.session_state[f"across.layer_{side}"])
        st.session_state[f"across.layer_{side}"] = layer
        urlstate.show_notices([note] if note else [])
same = result.same_model
names = (short(src.manifest["model"]), short(tgt.manifest["model"]))
exports.source(f"{names[0]} → {names[1]} · {dataset.name}")
left, right = st.columns([3, 2])
metric = right.selectbox("Similarity", list(METRIC_NAMES), format_func=METRIC_NAMES.get, key="across.metric",
                         help="debiased linear CKA is ~0 for unrelated layers at any width, and comes with a shuffled-row "
                              "null; the biased form drifts up when rows are few for the width")
if metric in ("svcca", "procrustes"):
    right.warning("SVCCA and Procrustes take an SVD per layer: slower than linear CKA on wide models.")
try:
    sim = similarity(result, metric)
except RepmapError as e:
    show_error(e)
    sim = similarity(result, "cka_debiased")
best = best_matches(sim, exclude_same_layer=same)
exports.plot(similarity_heatmap(sim, names[0], names[1], exclude_same_layer=same), "across.heatmap",
             f"{metric}_{names[0]}__{names[1]}", where=left)
right.caption(("One model against itself: each layer against itself (the diagonal) is left out of the best matches. "
               if same else "")
              + "Best match per source layer: " + ", ".join(f"{a}→{b}" for a, b in best.items()))
layer_s = right.selectbox("Source layer", src.layer_list, key="across.layer_s")
layer_t = right.selectbox("Target layer", tgt.layer_list, key="across.layer_t")
urlstate.write("across", URL_VIEW, {"metric": metric, "ls": layer_s, "lt": layer_t})
right.button("Use the best match", key="across.best", on_click=use_best_match, args=(best,),
             help="Set the target layer to the source layer's best match")

projection = st.segmented_control("Projection", METHODS, default="pca", key="across.projection",
                                  format_func=METHOD_NAMES.get,
                                  help="each side on its own axes; t-SNE and UMAP as in Gao et al.'s Figure 1") or "pca"
most, note = cap(3000, "max_embed_rows" if projection != "pca" else "max_points", "points per side")
rows = sample_rows(src.labels, most, 0)
if note:
    st.caption(note)
try:
    with st.spinner(f"{METHOD_NAMES[projection]} of both layers (cached after the first time)"):
        coords = [project(np.asarray(a[L])[rows], projection, 0,
                          memo=memo.disk_memo({"activations": a.manifest["key"], "layer": L, "rows": len(rows)}))
                  for a, L in ((src, layer_s), (tgt, layer_t))]
    name = METHOD_NAMES[projection]
    exports.plot(side_by_side(coords[0], coords[1], src.labels[rows], [dataset.texts[i] for i in rows],
                              selected=st.session_state["across.selected"], row_ids=rows,
                              titles=(f"{names[0]} layer {layer_s} ({name})", f"{names[1]} layer {layer_t} ({name})")),
                 "across.pairs", f"{projection}_{names[0]}_L{layer_s}__{names[1]}_L{layer_t}",
                 on_select=store_selection, selection_mode=("box", "lasso"))
except RepmapError as e:
    show_error(e)
if st.session_state["across.selected"]:
    st.button(f"Clear the selection ({len(st.session_state['across.selected'])} rows)", key="across.clear",
              on_click=lambda: st.session_state.update({"across.selected": None}))

st.header("Fit a map")
try:
    fit_req = fit_form()
    urlstate.write("across", URL_FIT, {k: st.session_state[w] for k, w in FIT_WIDGETS.items()})
    if fit_req is not None:
        st.session_state["across.fit"] = fit(result, (layer_s, layer_t), fit_req)
except RepmapError as e:
    show_error(e)  # the previous fit stays below
if st.session_state["across.fit"] is not None:
    show_fit(st.session_state["across.fit"], sim)
