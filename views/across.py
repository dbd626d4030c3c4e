"""Across models: how alike are two models' (or two layers') representations, and does a map
carry one to the other, with its probe?"""
from __future__ import annotations

import time

import numpy as np
import streamlit as st

from repmap_core.activations import get_activations
from repmap_core.data import load_dataset
from repmap_core.errors import RepmapError
from repmap_core.experiments import GAO_BETWEEN_VECTOR_ACCURACY, between_models, transferred_probe
from repmap_core.exports import map_export
from repmap_core.figures_across import (METRIC_NAMES, best_matches, fit_curve, map_manifest,
                                        per_dim_error, selected_rows, side_by_side, similarity_heatmap,
                                        similarity_table, transfer_table)
from repmap_core.maps import MAP_METHODS, r2_score
from repmap_core.probes import train_test_split_groups
from repmap_core.projection import METHODS, project, sample_rows
from repmap_core.similarity import layer_similarity
from repmap_core.similarity_null import NULL_PERMUTATIONS
from repmap_core.stats import format_estimate, format_null
from repmap_ui import exports
from repmap_core.models import EMBEDDED_MODEL_ID
from repmap_core.access import cap, cap_rows
from repmap_core.figures import METHOD_NAMES
from repmap_core.recent import remember
from repmap_ui.flow import is_cached, link_gate, seconds_for
from repmap_ui.common import default_causal_model, model_loader, show_error
from repmap_ui import urlstate
from repmap_ui.pickers import chosen_data, chosen_model, data_picker, model_picker, seed_data_picker, seed_model_picker
from repmap_ui.urlstate import Choice, Float, Int, Text
from repmap_ui.text import md

st.title("Across models")
st.caption("Two models (or one model twice) on the same texts: how alike each pair of layers is, the two chosen "
           "layers side by side, and a map from source to target with the source's probe carried across.")
st.session_state.setdefault("across.result", None)
st.session_state.setdefault("across.fit", None)
st.session_state.setdefault("across.selected", None)
METHOD_HELP = {"lstsq": "least squares", "ridge": "ridge", "gd": "gradient descent (Gao et al.)",
               "procrustes": "Procrustes (orthogonal)", "lowrank": "low-rank",
               "updown": "up/down pair, round-trip loss (LRT, stitching)", "mlp": "MLP (non-linear)"}


# the page's choices in the URL; "" and -1 stand for the page's own default
URL_REQUEST = [Text("source", ""), Text("target", ""), Text("data", ""),
               Choice("position", "auto", ("auto", "last", "mean", "answer")), Int("limit", 2000, lo=0)]
URL_VIEW = [Choice("metric", "cka_debiased", tuple(METRIC_NAMES)), Int("ls", -1, lo=0), Int("lt", -1, lo=0)]
# the fit form's options: seeded into the form by a link, fitted when Fit is pressed
URL_FIT = [Choice("map", "ridge", tuple(MAP_METHODS)), Text("alpha", "auto"), Int("rank", 8, lo=1),
           Int("steps", 500, lo=10), Float("test", 0.2, lo=0.05, hi=0.9), Int("seed", 0, lo=0, hi=2**32 - 1)]
FIT_WIDGETS = {"map": "across.method", "alpha": "across.alpha", "rank": "across.rank", "steps": "across.steps",
               "test": "across.test_frac", "seed": "across.seed"}


def short(name: str) -> str:
    return name.rstrip("/").split("/")[-1]


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
        c1, c2, c3 = st.columns(3)
        with c1:
            source = model_picker("across.source", "Source model")
        with c2:
            target = model_picker("across.target", "Target model")
        with c3:
            data = data_picker("across")
        c4, c5 = st.columns(2)
        position = c4.selectbox("Token position", ["auto", "last", "mean", "answer"], key="across.position",
                                help="auto: mean for encoders, last for causal LMs (each model on its own)")
        limit = c5.number_input("Max rows (0 = all)", min_value=0, value=2000, step=500, key="across.limit")
        if not st.form_submit_button("Compute", type="primary"):
            return None
    return {"source": chosen_model(*source), "target": chosen_model(*target), "data": chosen_data(*data),
            "position": position, "limit": int(limit)}


def compute(req: dict) -> dict:
    dataset = load_dataset(req["data"], limit=req["limit"] or None)  # one data set: both sides get the same rows
    sets = {}
    with st.status(f"Activations of both models on {md(dataset.name)}", expanded=True) as status:
        for side in ("source", "target"):
            bar = st.progress(0.0, text=f"{side}: checking the cache")
            sets[side] = get_activations(req[side], dataset, "all", req["position"], loader=model_loader(False),
                                         progress=lambda f, m, b=bar: b.progress(min(max(f, 0.0), 1.0), text=m))
        status.update(label=f"{md(dataset.name)}: {len(dataset)} rows · source {sets['source'].d} wide × "
                            f"{len(sets['source'].layers)} layers, target {sets['target'].d} × {len(sets['target'].layers)}",
                      state="complete", expanded=False)
    same = sets["source"].manifest["key"] == sets["target"].manifest["key"]  # last -> last would be the identity
    st.session_state.update({"across.layer_s": sets["source"].layer_list[-2 if same and len(sets["source"].layers) > 1 else -1],
                             "across.layer_t": sets["target"].layer_list[-1], "across.fit": None, "across.selected": None})
    return {"request": req, "dataset": dataset, "source": sets["source"], "target": sets["target"], "sims": {}}


def similarity(result: dict, metric: str):
    if metric not in result["sims"]:  # kept with the result: switching metric back is free
        # debiased CKA with its shuffled-row null: 1.7 s for 6 x 6 MiniLM layers on 800 rows here (values 0.15 s)
        with st.spinner(f"{METRIC_NAMES[metric]} of every layer pair"):
            result["sims"][metric] = layer_similarity(
                result["source"].layers, result["target"].layers, metric,
                null_permutations=NULL_PERMUTATIONS if metric == "cka_debiased" else 0)
    return result["sims"][metric]


def use_best_match(best: dict) -> None:
    st.session_state["across.layer_t"] = best[st.session_state["across.layer_s"]]


def store_selection() -> None:
    event = st.session_state.get("across.pairs")
    rows = selected_rows(event["selection"]["points"]) if event else []
    if rows:  # the redrawn figure is a new chart with no selection of its own: keep ours
        st.session_state["across.selected"] = rows


def map_params(method: str, alpha: str, rank: int, steps: int, seed: int) -> dict:
    if method == "ridge":
        if alpha.strip().lower() == "auto":
            return {"alpha": None, "seed": seed}
        try:
            value = float(alpha)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise RepmapError(f"Ridge alpha must be 'auto' or a positive number, not '{alpha}'.")
        return {"alpha": value}
    # GD keeps the parameters best on a held-out tenth of the training rows (n ≈ d overfits otherwise)
    return {"lowrank": {"rank": rank}, "gd": {"max_steps": steps, "seed": seed, "val_frac": 0.1},
            "updown": {"max_steps": steps, "seed": seed}, "mlp": {"seed": seed}}.get(method, {})


def live_monitor(S, T, aset, test_frac: float, seed: int, history: list, chart):
    """A GDMap monitor: held-out R² on the split `between_models` will use, the curve redrawn ~3×/s."""
    _, te = train_test_split_groups(aset.labels, aset.pair_ids, test_frac, seed)
    shown = [0.0]

    def monitor(step: int, loss: float, W: np.ndarray, c: np.ndarray, best_step: int) -> None:
        history.append((int(step), float(loss), r2_score(T[te], S[te] @ W + c), int(best_step)))
        if time.monotonic() - shown[0] > 0.3:
            shown[0] = time.monotonic()
            chart.plotly_chart(fit_curve(history))

    return monitor


def fit(result: dict, layers: tuple[int, int], req: dict) -> dict:
    src, tgt = result["source"], result["target"]
    S, T = np.asarray(src[layers[0]]), np.asarray(tgt[layers[1]])
    params = map_params(req["method"], req["alpha"], req["rank"], req["steps"], req["seed"])
    history: list = []
    extra = {}
    chart = st.empty()
    if req["method"] == "gd":
        extra["monitor"] = live_monitor(S, T, src, req["test_frac"], req["seed"], history, chart)
    with st.spinner(f"Fitting {METHOD_HELP[req['method']]}: layer {layers[0]} → layer {layers[1]}"):
        res, fitted = between_models(S, T, src.labels, pair_ids=src.pair_ids, method=req["method"],
                                     test_frac=req["test_frac"], seed=req["seed"], map_params=dict(params, **extra))
    chart.empty()
    manifest = map_manifest(src.manifest, tgt.manifest, layers, req["method"], params, res, req["test_frac"], req["seed"])
    arrays = None
    if hasattr(fitted, "A_"):  # an affine map: A, b and the source probe carried through it
        probe = transferred_probe(S, src.labels, fitted, target=T, pair_ids=src.pair_ids, test_frac=req["test_frac"],
                                  seed=req["seed"])
        arrays = map_export(fitted.A_, fitted.b_, manifest, probe)
    return {"result": res, "layers": layers, "request": req, "history": history,
            "A": getattr(fitted, "A_", None), "b": getattr(fitted, "b_", None), "manifest": manifest, "arrays": arrays}


def fit_form() -> dict | None:
    with st.form("across.fit_form"):
        c = st.columns(6)
        method = c[0].selectbox("Map", list(MAP_METHODS), index=list(MAP_METHODS).index("ridge"), key="across.method",
                                format_func=METHOD_HELP.get, help="ridge (alpha chosen on held-out rows) is the safe default")
        alpha = c[1].text_input("Alpha (ridge)", value="auto", key="across.alpha", help="auto: chosen on held-out rows")
        rank = c[2].number_input("Rank (low-rank)", min_value=1, value=8, key="across.rank")
        steps = c[3].number_input("Max steps (GD, up/down)", min_value=10, value=500, step=100, key="across.steps",
                                  help="stops earlier when the loss stops improving")
        test_frac = c[4].number_input("Test fraction", min_value=0.05, max_value=0.9, value=0.2, step=0.05,
                                      key="across.test_frac")
        seed = c[5].number_input("Seed", min_value=0, max_value=2**32 - 1, value=0, key="across.seed")
        if not st.form_submit_button("Fit", type="primary"):
            return None
    return {"method": method, "alpha": alpha, "rank": int(rank), "steps": int(steps), "test_frac": float(test_frac),
            "seed": int(seed)}


def show_fit(fit_: dict, sim) -> None:
    res, (ls, lt), m = fit_["result"], fit_["layers"], fit_["result"].map
    iv = res.intervals
    st.subheader(f"{METHOD_HELP[m['method']]}: source layer {ls} → target layer {lt}")
    c = st.columns(5)
    c[0].metric("R² train", format_estimate(iv["map.r2_train"]))
    c[1].metric("R² test", format_estimate(iv["map.r2_test"]), help=f"{res.n_test} held-out rows; 0 = predicting the mean")
    c[2].metric("Mean cosine (test)", format_estimate(iv["map.mean_cosine"]),
                help="mapped vs true rows, centred on the true mean")
    c[3].metric("Retrieval top-1 (test)", format_estimate(iv["map.retrieval_top1"]),
                help="mapped row's nearest true row is its own")
    c[4].metric("Seconds", f"{m['seconds']:.2f}")
    if "round_trip_error_test" in m:
        st.caption(f"Down map target → source: R² test {m['down_r2_test']:.3f}. Round trip down(up(s)) vs s on held-out "
                   f"rows: relative error {m['round_trip_error_test']:.3f} (0: down undoes up; 1: it returns the mean).")
    if m.get("note"):
        st.caption(m["note"])
    if "step_reported" in m:
        st.caption(f"Gradient descent ran {m['steps']} steps; the map reported is step {m['step_reported']}'s, the lowest "
                   "loss on a held-out tenth of the training rows.")
    if fit_["history"]:
        exports.plot(fit_curve(fit_["history"], m.get("step_reported")), "across.fit_curve", f"map_fit_curve_L{ls}_L{lt}")
    exports.plot(per_dim_error(res.per_dim_mse), "across.per_dim", f"map_error_per_dim_L{ls}_L{lt}")
    p, t = res.probe, res.transfer
    c = st.columns(4)
    c[0].metric("Probe on source (test)", format_estimate(iv["probe.source"]),
                help=f"train {p['source']['train']:.3f}; shuffled labels: {format_null(iv['probe.source'])}")
    c[1].metric("Probe on target (test)", format_estimate(iv["probe.target"]),
                help=f"train {p['target']['train']:.3f}; shuffled labels: {format_null(iv['probe.target'])}")
    if t["vector"] is None:
        st.info("A non-linear map has no matrix to carry a probe through; fit an affine map to see transfer.")
        return
    c[2].metric("Transfer: functional (readout)", format_estimate(iv["transfer.functional"]),
                help=f"ridge regression of the source probe's scores on target rows; random directions: "
                     f"{format_null(iv['transfer.functional'])}")
    c[3].metric("Transfer: vector A w", format_estimate(iv["transfer.vector"]),
                help=f"uncentred sign(t·Aw), the paper's score; random directions: {format_null(iv['transfer.vector'])}")
    st.caption(f"Paper, beside this run's A w ({format_estimate(iv['transfer.vector'])}): "
               f"{GAO_BETWEEN_VECTOR_ACCURACY:.4f} for GPT-2 → GPT-2-XL, last layer (Gao et al.); other models and data.")
    st.caption("A probe is a functional, not a point. The headline carries it as a readout: a ridge regression, fitted on "
               "the training rows, of the source probe's scores on the target's activations; it cannot amplify what the "
               "map got wrong. pinv(A)ᵀw (the algebraic inverse) inverts the noise directions of a shrunk map, and A w "
               "moves the probe like a steering vector; both are in the table as comparisons, with random directions "
               "as the null.")
    stem = f"{short(fit_['manifest']['source']['model'])}_L{ls}__{short(fit_['manifest']['target']['model'])}_L{lt}"
    exports.table(transfer_table(res), "across.transfer", f"transfer_{stem}", hide_index=True)
    d = st.columns(2)
    if fit_.get("arrays"):
        tensors, manifest = fit_["arrays"]
        exports.arrays_download("Map A, b and the carried probe", tensors, manifest, f"map_{stem}", "across.dl_map",
                                where=d[0])
    d[1].download_button("Similarity matrix (CSV)", similarity_table(sim).to_csv(), f"{sim.metric}_{stem}.csv",
                         key="across.dl_sim")


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
    req = request_form(expanded=st.session_state["across.result"] is None and linked is None)
    if req is None and linked:  # a link computes only what is cached, until Compute is pressed
        data = load_dataset(linked["data"], limit=cap_rows(linked["limit"] or None)[0])
        cached = all(is_cached(linked[k], data, "all", linked["position"]) for k in ("source", "target"))
        seconds = sum(filter(None, (seconds_for(linked[k], data, "all", linked["position"]) for k in ("source", "target"))))
        if link_gate("across", f"{linked['source']} and {linked['target']} on {data.name} ({len(data):,} rows)", cached,
                     seconds or None):
            req = linked
    if req is None and st.session_state["across.result"] is None:
        req = small_to_large()
    if req is not None:
        limit, note = cap_rows(req["limit"] or None)
        req["limit"] = int(limit or 0)
        if note:
            st.info(note, icon=":material/speed:")
        st.session_state["across.result"] = compute(req)
        remember("across", req)
except RepmapError as e:
    show_error(e)  # the last good result below stays on screen

result = st.session_state["across.result"]
if result is None:
    st.info("Pick a source and a target model (the same one twice compares its layers) and a data set, then Compute.")
    st.stop()

src, tgt, dataset = result["source"], result["target"], result["dataset"]
urlstate.write("across", URL_REQUEST, result["request"])
for side, aset in (("s", src), ("t", tgt)):  # a link's layer pair, when the computed models have it
    if view_url.get(f"l{side}", -1) >= 0:
        layer, note = urlstate.layers_among(f"l{side}", view_url[f"l{side}"], aset.layer_list,
                                            st.session_state[f"across.layer_{side}"])
        st.session_state[f"across.layer_{side}"] = layer
        urlstate.show_notices([note] if note else [])
same = src.manifest["key"] == tgt.manifest["key"]
names = (short(src.manifest["model"]), short(tgt.manifest["model"]))
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
                          cache_id={"activations": a.manifest["key"], "layer": L, "rows": len(rows)})
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
