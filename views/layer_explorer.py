"""Layer explorer: where in the model does the label become linearly separable?"""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from repmap_core.access import cap, cap_rows
from repmap_core.analysis.axes import AXES, AXIS_NAMES, custom_axes
from repmap_core.analysis.projection import MASSIVE_RATIO, STANDARDISED, massive_activations, project, sample_rows
from repmap_core.analysis.separation import best_layer, spread_layers
from repmap_core.analysis.stats import format_estimate, format_null
from repmap_core.capture import memo, speed
from repmap_core.capture.models import site_name
from repmap_core.data.class_names import class_names
from repmap_core.data.load import load_dataset
from repmap_core.errors import RepmapError
from repmap_core.results.view_results import ExplorerResult, explorer_result
from repmap_core.share.figures import METHOD_NAMES, layer_grid, separation_curve
from repmap_ui import exports, urlstate
from repmap_ui.bars import timed_bar
from repmap_ui.common import model_loader, show_error, warm_umap_in_background
from repmap_ui.explorer_form import (
    DEFAULTS,
    URL_REQUEST,
    URL_VIEW,
    VIEW_KEYS,
    VIEWS_2D,
    from_link,
    quick_switch,
    request_form,
    seed_form,
)
from repmap_ui.flow import (
    cap_note,
    drop_kept,
    is_cached,
    keep,
    link_gate,
    run_request,
    seconds_for,
    sync_request,
    view_gate,
    view_may_compute,
)
from repmap_ui.text import md
from repmap_ui.tiles import estimate_tile

st.title("Layer explorer")
st.caption("Each layer's activations projected to 2-D and coloured by label, and how separable the label is "
           "at each depth: a linear probe's cross-validated accuracy (with its 95% interval, beside the same probe "
           "trained on shuffled labels), the silhouette, and a Fisher ratio.")


def massive_note(aset, method: str) -> str | None:
    """A sentence on massive activations beside a PCA: where the largest feature is how many times the median's."""
    layer, (feature, ratio) = max(((L, massive_activations(aset[L])) for L in aset.layer_list), key=lambda t: t[1][1])
    name = aset.manifest["model"].rstrip("/").split("/")[-1]
    found = (f"{md(name)} has massive activations: at layer {layer}, feature {feature} is {ratio:.0f}× the median "
             "feature's magnitude") if ratio >= MASSIVE_RATIO else None
    if method == STANDARDISED:
        return "Every feature is scaled to unit variance before the PCA" + (f" ({found})." if found else ".")
    return (f"{found}, so a few features can decide PCA's axes; *PCA (standardised)* scales every feature to unit "
            "variance first.") if found and method == "pca" else None


def compute(req: dict) -> ExplorerResult:
    with st.status(f"Activations of {md(req['model'])} on {md(req['data'])}", expanded=True) as status:
        with timed_bar("Checking the cache") as progress:
            result = explorer_result(req, loader=model_loader(req["trust"]), progress=progress)
        aset = result.aset
        status.update(label=f"{md(req['model'])} on {md(result.dataset.name)}: {aset.n} rows × {len(aset.layer_list)} layers",
                      state="complete", expanded=False)
    return result


keep(VIEW_KEYS)
linked, view_url = from_link()
try:
    previous = st.session_state.get("explorer.result")
    linked = urlstate.not_shown(linked, previous)
    # one request on screen: the view's, or (none shown yet) the link's waiting for Compute, or the default
    sync_request("explorer", previous.request if previous else None, seed_form, "explorer.model_choice")
    current = previous.request if previous else (linked or DEFAULTS)
    req = request_form(current) or quick_switch(current["model"])
    if req is None and linked:  # a link computes only what is cached, until Compute is pressed
        data = load_dataset(linked["data"], text_col=linked["text_col"] or None, label_col=linked["label_col"] or None,
                            limit=cap_rows(linked["limit"] or None)[0])
        asks = f"{linked['model']} on {data.name} ({len(data):,} rows), layers {linked['layers']}, position {linked['position']}"
        if link_gate("explorer", asks, is_cached(linked["model"], data, linked["layers"], linked["position"],
                                                 max_length=linked["max_length"]),
                     seconds_for(linked["model"], data, linked["layers"], linked["position"])):
            req = linked
    elif req is None and st.session_state.get("explorer.result") is None:
        req = dict(DEFAULTS)  # on first open: the embedded model on the built-in data
    if req is not None:
        run_request("explorer", req, compute, reset=("explorer.shown",))
except RepmapError as e:
    show_error(e)  # the last good result below stays on screen

result = st.session_state.get("explorer.result")
if result is not None:
    cap_note("explorer")
    urlstate.write("explorer", URL_REQUEST, result.request)  # what is shown, not a request that failed
    aset, rows, dataset = result.aset, result.rows, result.dataset
    m = aset.manifest
    best = best_layer(rows)
    best_row = next(r for r in rows if r.layer == best)
    cv = best_row.cv_estimate()
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Best layer", f"{best}", help=site_name(best))
    estimate_tile("Probe accuracy there (cv)", cv, where=c2,
                  help=f"share of rows classified right when held out, 95% interval; shuffled labels: {format_null(cv, 3)}")
    c3.metric("Rows", f"{aset.n:,}", help=f"{int(aset.labels.sum())} labelled 1")
    c4.metric("Width", f"{aset.d}", help=f"{m['n_layers']} blocks")
    exports.source(f"{m['model'].rstrip('/').split('/')[-1]} · {m['dataset_spec']}")
    quant = f" ({m['quantization']} GGUF, dequantized)" if m.get("quantization") else ""
    st.caption(f"{md(m['model'])}{md(quant)} @ {md(m['revision'])} · {md(m['dataset_spec'])} · position "
               f"**{md(m['position'])}** · {md(m['dtype'])} · cache {md(str(m['key'])[:12])}")
    if m.get("fp32_recomputed_rows"):
        st.caption(f"{m['fp32_recomputed_rows']:,} of {aset.n:,} rows were recomputed in float32 automatically because "
                   f"{m['dtype']} overflowed (NaN or inf) in their batch; every value shown is finite.")
    stem = f"{m['model'].rstrip('/').split('/')[-1]}_{dataset.name}"
    exports.plot(separation_curve(rows), "explorer.curve", f"layer_separation_{stem}")
    st.caption(f"Band: the cross-validated accuracy's 95% interval. Grey: the same cross-validation (same probe, same "
               f"folds) on shuffled labels, {best_row.null_permutations} shuffles a layer"
               + (f" on a seeded sample of {best_row.null_rows:,} rows" if 0 < best_row.null_rows < aset.n else "")
               + f", its mean (dashed) up to its 95th percentile: what a probe reads when there is nothing to find. "
               f"At layer {best}: {format_estimate(cv)} against {format_null(cv, 3) or 'no null'}. The dotted line, one "
               "held-out 20% split, is noisier than the cross-validated one and has no null drawn.")

    first_shown = spread_layers(aset.layer_list, best)  # a spread over the depth that holds the best layer
    if view_url.get("shown"):
        shown_url, note = urlstate.layers_among("shown", view_url["shown"], aset.layer_list, first_shown)
        st.session_state["explorer.shown"] = list(shown_url)
        urlstate.show_notices([note] if note else [])
    if not set(st.session_state.get("explorer.shown") or []) <= set(aset.layer_list):  # another view's layers
        drop_kept(("explorer.shown",))
    v1, v2, v3, v4 = st.columns([3, 3, 1, 1])  # the projection's five choices fit on one line
    for key, default in (("method", "pca"), ("shown", first_shown), ("seed", 0), ("max_points", 3000)):
        st.session_state.setdefault(f"explorer.{key}", default)  # a link, a kept choice or the default: one way in
    method = v1.segmented_control("Projection", VIEWS_2D, key="explorer.method",
                                  format_func=lambda k: METHOD_NAMES.get(k, "Custom axes"),
                                  help="Custom axes: each row's coordinate along two directions you pick, such as the "
                                       "class-mean difference against the largest variation it leaves") or "pca"
    if note := massive_note(aset, method):
        st.caption(note)
    if method == "axes":
        a1, a2, _ = st.columns([1, 1, 2])
        x_axis = a1.selectbox("x axis", AXES, format_func=AXIS_NAMES.get, key="explorer.x_axis")
        y_axis = a2.selectbox("y axis", AXES, index=AXES.index("pc1_rest"), format_func=AXIS_NAMES.get,
                              key="explorer.y_axis")
    shown = v2.multiselect("Layers shown", aset.layer_list, key="explorer.shown")
    seed = v3.number_input("Seed", min_value=0, max_value=2**32 - 1, key="explorer.seed")
    max_points = v4.number_input("Max points", min_value=100, step=500, key="explorer.max_points")
    urlstate.write("explorer", URL_VIEW, {"method": method, "seed": int(seed), "points": int(max_points),
                                          "shown": () if shown == first_shown else tuple(shown)})
    max_points, note = cap(int(max_points), "max_points", "points per projection")
    if method in ("tsne", "umap"):
        max_points, note = cap(int(max_points), "max_embed_rows", f"points with {METHOD_NAMES[method]}")
    if note:
        st.caption(note)
    rows_idx = sample_rows(aset.labels, int(max_points), int(seed))
    if len(rows_idx) < aset.n:
        st.caption(f"Showing a seeded sample of {len(rows_idx):,} of {aset.n:,} rows (both classes kept in proportion).")
    may_compute = view_may_compute("explorer", {"method": method, "seed": int(seed), "points": int(max_points),
                                                 "shown": tuple(shown)}, from_link=bool(view_url))

    def coords_of(may: bool) -> dict:  # a link's uncached t-SNE or UMAP waits for Compute (NotCached)
        name, out = METHOD_NAMES.get(method, "Custom axes"), {}
        with timed_bar(f"{name} of {len(shown)} layers (cached after the first time)",
                       speed.predicted(method, len(rows_idx) * len(shown))) as progress:
            computed = [0, 0.0]  # points and seconds of the layers computed now (not read back), for the next estimate
            for i, layer in enumerate(shown):
                part = lambda f, msg, i=i: progress((i + f) / len(shown), f"layer {shown[i]} ({i + 1} of {len(shown)}): {msg}")  # noqa: E731
                part(0.0, name)
                t0 = time.perf_counter()
                out[layer] = (custom_axes(aset[layer][rows_idx], aset.labels[rows_idx], x_axis, y_axis) if method == "axes"
                              else project(aset[layer][rows_idx], method, int(seed), progress=part, memo=memo.disk_memo(
                                  {"activations": m["key"], "layer": layer, "rows": len(rows_idx)}, may_compute=may)))
                if (took := time.perf_counter() - t0) > 1.0:
                    computed[0], computed[1] = computed[0] + len(rows_idx), computed[1] + took
        if method in ("tsne", "umap"):
            speed.record_run(method, *computed)
        return out

    try:
        try:
            coords = coords_of(may_compute)
        except memo.NotCached:
            asks = f"a {METHOD_NAMES[method]} of {len(shown)} layers ({len(rows_idx):,} points, seed {int(seed)})"
            coords = coords_of(True) if view_gate("explorer", asks) else {}
        if coords:
            title = (f"Each layer along {AXIS_NAMES[x_axis]} (x) and {AXIS_NAMES[y_axis]} (y), coloured by label"
                     if method == "axes" else None)
            exports.plot(layer_grid(coords, aset.labels[rows_idx], [dataset.texts[i] for i in rows_idx],
                                    method=method, label_names=class_names(dataset), title=title),
                         "explorer.grid", f"layers_{method}_{stem}")
    except RepmapError as e:
        show_error(e)
    table = pd.DataFrame([dict(r.as_dict(), site=site_name(r.layer)) for r in rows]).set_index("layer")
    exports.table(table.style.format(precision=3, na_rep="–").highlight_max(subset=["probe_cv_acc"], color="#cde7ea"),
                  "explorer.table", f"layer_separation_{stem}")
    warm_umap_in_background()
