"""The Steering page's result sections (the vectors compared, sentiment steering, the vector carried to
another model) and what they share with the page: drawing only, from what `repmap_core.steering` computes."""
from __future__ import annotations

import numpy as np
import streamlit as st

from repmap_core.analysis.stats import format_estimate
from repmap_core.capture.models import LoadedModel, load_model
from repmap_core.errors import RepmapError
from repmap_core.papers.published import LRT_PUBLISHED_TEXT
from repmap_core.results.manifests import steering_export
from repmap_core.results.view_results import SteeringResult, SteeringSweep, SteeringTransfer, steering_transfer
from repmap_core.share.figures_steering import (
    agreement_table,
    curves_table,
    lrt_numbers,
    preview_table,
    propensity_plot,
    rimsky_figures,
    sentiment_examples,
    sentiment_plot,
    side_effect_plot,
    vector_norms,
    vector_table,
)
from repmap_core.steering.apply import SCALE_UNITS
from repmap_core.steering.measured import steers_at
from repmap_core.steering.run import sentiment_layer
from repmap_core.steering.sentiment import OPENINGS
from repmap_ui import exports
from repmap_ui.bars import timed_bar
from repmap_ui.common import model_loader, show_error
from repmap_ui.text import md

MAPS = {"ridge": "ridge", "lstsq": "least squares", "gd": "gradient descent", "procrustes": "Procrustes",
        "lowrank": "low rank", "none": "no map: A's vector as it is"}


def short(name: str) -> str:
    return name.rstrip("/").split("/")[-1]


@st.cache_resource(show_spinner=False, max_entries=2)
def causal_lm(path: str, _resolved) -> LoadedModel:
    return load_model(_resolved, head=True)  # keyed by the resolved folder: one causal LM per model, across reruns


def lm_for(result: SteeringResult, side: str) -> LoadedModel:
    resolved = result.models[side][0]
    with st.spinner(f"Loading {short(resolved.name)} with its LM head"):
        return causal_lm(resolved.path, resolved)


def encoder_reason(result: SteeringResult, side: str) -> str | None:
    resolved, info = result.models[side]
    return f"Steering needs next-token logits; {short(resolved.name)} is an encoder." if info.is_encoder else None


def alphas_inputs(prefix: str, disabled: bool, columns) -> np.ndarray:
    lo = columns[0].number_input("Multiplier from", value=-1.0, step=0.25, key=f"{prefix}.alpha_min", disabled=disabled)
    hi = columns[1].number_input("to", value=1.0, step=0.25, key=f"{prefix}.alpha_max", disabled=disabled)
    steps = columns[2].number_input("Steps", min_value=2, max_value=41, value=5, key=f"{prefix}.steps", disabled=disabled)
    return np.linspace(float(lo), float(hi), int(steps))


def comparison(result: SteeringResult) -> None:
    sets, labels, models = result.sets, result.labels, result.models
    st.header("The vectors compared")
    if result.relation:
        st.caption(md(result.relation))
    for side, vs in sets.items():
        if vs.balance is not None:
            (st.caption if vs.balance.swapped or vs.balance.balanced else st.warning)(f"{md(labels[side])}: {md(vs.balance.sentence())}")
    vecs = {labels[s]: vs.vectors for s, vs in sets.items()}
    figs = rimsky_figures(vecs, {labels[s]: (models[s][1].d_model, models[s][1].n_layers) for s in sets})
    if figs.cosine_by_layer is not None:
        exports.plot(figs.cosine_by_layer, "steer.cosine_by_layer", "steering_cosine_by_layer")
    else:
        st.info(figs.cosine_note)
    exports.plot(figs.heatmaps, "steer.heatmaps", "steering_layer_cosines")
    if figs.pca is not None:
        exports.plot(figs.pca, "steer.pca", "steering_vectors_pca")
    if figs.pca_note:
        st.caption(figs.pca_note)
    c1, c2 = st.columns([2, 3])
    exports.plot(vector_norms(vecs), "steer.norms", "steering_vector_norms", where=c1)
    exports.table(vector_table({s: vs.vectors for s, vs in sets.items()}).style.format(precision=3), "steer.vector_table",
                  "steering_vectors", where=c2)
    d = st.columns(len(sets) + 1)
    for i, (side, vs) in enumerate(sets.items()):
        req = result.request
        tensors, manifest, header = steering_export(vs.vectors, vs.manifest, {
            "vector_method": req["method"], "test_frac": req["test_frac"], "layers": req["layers"],
            "train_rows": len(vs.train_rows), "test_rows": len(vs.test_rows)})
        exports.arrays_download(f"Vectors {labels[side]}", tensors, manifest, f"steering_{short(req[side])}",
                                f"steer.dl_vectors.{side}", where=d[i], metadata=header)
    d[-1].download_button("Cosines (CSV)", figs.cosines.to_csv(index=False), "steering_cosines.csv", key="steer.dl_cosines")


def scale_sentence(res) -> str:
    """What one unit of α added in a sweep (`SweepResult`), in activation units, beside the layer's spread and norm."""
    curve, v = res.curve, res.vector_norm
    if not v:
        return ""
    parts = [f"One unit of α adds a vector of norm {curve.factor * v:.3g} ({SCALE_UNITS.get(curve.scale, curve.scale)})"]
    if res.residual_spread:
        parts.append(f"the layer's residual spread is {res.residual_spread:.3g}")
    if res.residual_norm:
        parts.append(f"its mean residual norm {res.residual_norm:.3g}")
    return ", ".join(parts + [f"the vector's own norm {v:.3g}"]) + "."


def sweep_section(got: SteeringSweep) -> None:
    """A sweep's verdict, curves, side effect at every α, and generations."""
    out, label = got.out, got.label
    res = out.sweep
    curve = res.curve
    (st.success if res.steers else st.info)(res.verdict, icon=":material/insights:")
    c1, c2 = st.columns([3, 2])
    curves = {"vector": curve} | ({"random direction": res.random} if res.random is not None else {})
    exports.plot(propensity_plot(curves, f"{label}, layer {curve.layer}: propensity on {curve.n_groups} held-out "
                                 "questions (both letter orders)"), "steer.curve", f"steering_propensity_layer{curve.layer}",
                 where=c1)
    exports.plot(side_effect_plot(res.side_effect, scale=curve.scale, delta=res.side_effect_delta), "steer.side_effect",
                 f"steering_side_effect_layer{curve.layer}", where=c2)
    table = agreement_table(curve, res.random, res.side_effect_delta)
    exports.table(table.style.format({"multiplier": "{:+g}", "propensity": "{:+.3f}", "agreement": "{:.0%}",
                                      "random direction": "{:+.3f}", "Δ loss (nats)": "{:+.2f}"}),
                  "steer.agreement", f"steering_agreement_layer{curve.layer}", hide_index=True)
    st.caption(f"Slope of propensity per unit α: vector {format_estimate(res.slope, 2)}, random direction "
               f"{format_estimate(res.random_slope, 2)}, their difference paired by question "
               f"{format_estimate(res.difference, 2)}. All intervals are 95% bootstraps over the {curve.n_groups} held-out "
               "questions (a question's two letter orders resample together); agreement is the share of prompts whose "
               "behaviour-matching letter wins; Δ loss is the change in next-token loss on neutral text, over texts. "
               + scale_sentence(res)
               + (f" {out.cut} prompts longer than the model's context were cut to their end." if out.cut else ""))
    st.download_button("Curves (CSV)", curves_table(curves).to_csv(index=False), "steering_curve.csv", key="steer.dl_curve")
    exports.table(preview_table(out.preview_prompts, out.plain, out.steered, out.preview_alpha), "steer.preview",
                  "steering_preview", static=True)


def sentiment_section(result: SteeringResult) -> None:
    st.header("Steer a behaviour a small model shows: sentiment")
    st.caption("A 135M model answers A/B behaviour questions near chance, so letter propensity may have nothing to move. "
               "Its continuations are plainly positive or negative, though: the vector is the difference of the mean "
               "last-token activations of positive and negative real reviews (builtin:sentiment), the model continues "
               f"{len(OPENINGS)} neutral openings under α · v, and a probe on the embedded MiniLM (trained on the same "
               "reviews) judges each continuation. A random direction of the same norm is steered beside it.")
    side = "A"
    if off := bool(reason := encoder_reason(result, side)):
        st.warning(reason, icon=":material/block:")
    n_layers = result.models[side][1].n_layers
    with st.form("steer.sentiment_form"):
        c = st.columns([1, 1, 1, 1], vertical_alignment="bottom")
        layer = c[0].selectbox("Layer", list(range(n_layers)), index=min(8, n_layers - 1), key="steer.sent_layer",
                               disabled=off)
        alphas = alphas_inputs("steer.sent", off, c[1:4])
        submitted = st.form_submit_button("Steer sentiment", type="primary", disabled=off)
    if submitted:
        try:
            with timed_bar("Steering the continuations") as progress:
                st.session_state["steer.sentiment"] = sentiment_layer(
                    result.request["A"], lm_for(result, side), layer, alphas, loader=model_loader(False), progress=progress)
        except RepmapError as e:
            show_error(e)
    if (sw := st.session_state["steer.sentiment"]) is None:
        return
    (st.success if sw.steers else st.info)(sw.verdict, icon=":material/insights:")
    exports.plot(sentiment_plot(sw), "steer.sentiment_plot", f"steering_sentiment_layer{sw.layer}")
    st.caption(f"The judge's held-out accuracy on real reviews: {sw.judge_accuracy:.2f}. Intervals: bootstrap over openings.")
    exports.table(sentiment_examples(sw, OPENINGS), "steer.sentiment_examples", "steering_sentiment_examples", static=True)


def transfer(result: SteeringResult, req: dict) -> SteeringTransfer:
    with st.spinner(f"Carrying A's layer {req['source']} vector to B's layer {req['target']} and sweeping both"):
        return steering_transfer(result, req, lm_for(result, "B"), loader=model_loader(False))


def default_layer(result: SteeringResult, side: str) -> int:
    """A side's default layer: where its model and data set's vector was measured to steer (steering/measured.py),
    else the middle layer."""
    layers = sorted(result.sets[side].vectors)
    measured = steers_at(result.request[side], result.request["data"])
    return measured if measured in layers else layers[len(layers) // 2]


def transfer_section(result: SteeringResult) -> None:
    sets, labels = result.sets, result.labels
    st.header(f"Carry {md(labels['A'])}'s vector to {md(labels['B'])} (LRT)")
    if off := bool(reason := encoder_reason(result, "B")):
        st.warning(reason, icon=":material/block:")
    with st.form("steer.transfer_form"):
        c = st.columns(3)
        ls = c[0].selectbox("Source layer (A)", sorted(sets["A"].vectors), index=sorted(sets["A"].vectors).index(default_layer(result, "A")),
                            key="steer.layer_s", disabled=off)
        lt = c[1].selectbox("Target layer (B)", sorted(sets["B"].vectors), index=sorted(sets["B"].vectors).index(default_layer(result, "B")),
                            key="steer.layer_t", disabled=off)
        method = c[2].selectbox("Map", list(MAPS), format_func=MAPS.get, key="steer.map", disabled=off,
                                help="fitted on both models' answer-token activations of the training questions")
        c = st.columns([1, 1, 1, 2], vertical_alignment="bottom")
        alphas = alphas_inputs("steer.t", off, c[:3])
        bias = c[3].toggle("Add the map's bias (A v + b)", value=False, key="steer.bias", disabled=off,
                           help="A steering vector is a difference of activations, so the map carries it as A v (the "
                                "bias cancels in a difference); A v + b treats it as an activation, and on real models "
                                "the bias swamps it")
        submitted = st.form_submit_button("Transfer and sweep", type="primary", disabled=off)
    if submitted:
        try:
            st.session_state["steer.transfer"] = transfer(result, {"source": ls, "target": lt, "method": method,
                                                                   "bias": bool(bias), "alphas": alphas})
        except RepmapError as e:
            show_error(e)  # the previous transfer stays below
    if (out := st.session_state["steer.transfer"]) is None:
        return
    req, cmp = out.request, out.comparison
    how = MAPS[req["method"]] + ("" if req["method"] == "none" else (", A v + b" if req["bias"] else ", A v"))
    exports.plot(propensity_plot(out.curves, f"{labels['B']} layer {req['target']}: its own vector (native) vs "
                                 f"{labels['A']} layer {req['source']}'s, carried ({how})"), "steer.transfer_curve",
                 f"steering_transfer_L{req['source']}_L{req['target']}")
    numbers = lrt_numbers(cmp)
    if cmp.get("pearson_r") is None:
        st.info(numbers.pop("why r is undefined"), icon=":material/block:")
    else:
        st.success(f"{labels['B']}'s own vector steers here ({cmp.get('native_verdict', '')}), so r compares two curves "
                   "that move.", icon=":material/insights:")
    c = st.columns(4)
    c[0].metric("Pearson r, native vs carried", numbers["Pearson r, native vs carried"].split(" [")[0], help=LRT_PUBLISHED_TEXT)
    c[0].caption(" · ".join(f"{k.strip()}: {v}" for k, v in numbers.items() if k.startswith(("Pearson", "  null"))))
    c[1].metric("Slope ratio, carried / native", numbers.get("Slope ratio, carried / native", "–").split(" [")[0],
                help="the carried vector's slope as a share of the native one's, per question; 95% over questions")
    c[1].caption(f"carried {numbers['Carried slope (per unit α)']}, native {numbers['Native slope (per unit α)']}; "
                 f"carried minus random {numbers['Carried minus random direction']}")
    c[2].metric("Cosine native vs carried", f"{out.cosine:.2f}")
    c[3].metric("Map R² (held-out rows)", "–" if out.r2 is None else f"{out.r2:.2f}")
    st.caption(f"Paper, beside this run (not comparable in value: other models, layers and behaviours): {LRT_PUBLISHED_TEXT}.")
    d = st.columns(2)
    d[0].download_button("Curves (CSV)", curves_table(out.curves).to_csv(index=False), "steering_transfer_curves.csv",
                         key="steer.dl_transfer")
    if out.carried is not None:
        carried = out.carried
        tensors, manifest, header = steering_export({carried.layer: carried}, sets["B"].manifest, {
            "carried_from": {"model": result.request["A"], "layer": req["source"]}, "map": req["method"],
            "with_bias": req["bias"], "map_r2_test": out.r2, "cosine_with_native": out.cosine})
        exports.arrays_download("Carried vector", tensors, manifest,
                                f"steering_carried_L{req['source']}_to_{short(result.request['B'])}_L{req['target']}",
                                "steer.dl_carried", where=d[1], metadata=header)
