"""Steering: CAA vectors per layer for one or two models (Rimsky's base-vs-chat comparisons), a
propensity sweep with one of them, and a vector carried to the other across a map (LRT)."""
from __future__ import annotations

import numpy as np
import streamlit as st

from repmap_core.access import cap_rows
from repmap_core.capture.speed import calibrated, timed
from repmap_core.data.load import load_dataset
from repmap_core.errors import RepmapError
from repmap_core.progress import duration
from repmap_core.results.view_results import SteeringResult, SteeringSweep, steering_result, steering_sweep
from repmap_core.steering.apply import SCALES
from repmap_core.steering.compare import vectors_cached
from repmap_core.steering.measured import measured_note
from repmap_core.steering.run import estimate_sweep_seconds
from repmap_ui import exports, urlstate
from repmap_ui.bars import timed_bar
from repmap_ui.common import default_causal_model, model_loader, show_error
from repmap_ui.flow import cap_note, check_models, link_gate, run_request, sync_request
from repmap_ui.pickers import (
    chosen_data,
    chosen_model,
    data_picker,
    model_picker,
    seed_data_picker,
    seed_fields,
    seed_model_picker,
)
from repmap_ui.steering_sections import (
    alphas_inputs,
    comparison,
    default_layer,
    encoder_reason,
    lm_for,
    sentiment_section,
    sweep_section,
    transfer_section,
)
from repmap_ui.text import md
from repmap_ui.urlstate import Choice, Float, Int, Layers, Text

NONE = "(none)"
DEFAULT_DATA = "builtin:myopic_reward"  # measured to steer SmolLM2 at block 14 (steering/measured.py), unlike survival_instinct

st.title("Steering")
st.caption("Contrastive activation addition: per layer, the mean difference between a model's activations at the "
           "behaviour-matching and the other answer letter. Compare two models' vectors (Rimsky et al.), steer a model "
           "and measure its propensity on held-out questions, and carry a vector to another model across a map (LRT).")
for k in ("steer.result", "steer.sweep", "steer.transfer", "steer.sentiment"):
    st.session_state.setdefault(k, None)
st.session_state.setdefault("steer.data_choice", DEFAULT_DATA)
if (causal := default_causal_model()) is not None:
    st.session_state.setdefault("steer.a.model_choice", causal)  # a real causal LM by default: it can be steered


# the vectors' request in the URL (URL key -> request key); the sweeps are run by hand, not by a link
URL_REQUEST = [Text("a", ""), Text("b", ""), Text("data", DEFAULT_DATA), Layers("layers", "all"),
               Choice("vector", "mean_diff", ("mean_diff", "pca_diff")), Float("test", 0.3, lo=0.05, hi=0.9),
               Int("limit", 0, lo=0)]
URL_NAMES = {"a": "A", "b": "B", "data": "data", "layers": "layers", "vector": "method", "test": "test_frac", "limit": "limit"}
# the sweep's layer per model and the transfer's layer pair; -1 stands for the page's default, the middle layer
URL_LAYERS = [Int("la", -1, lo=0), Int("lb", -1, lo=0), Int("ls", -1, lo=0), Int("lt", -1, lo=0)]
LAYER_WIDGETS = {"la": ("A", "steer.layer.A"), "lb": ("B", "steer.layer.B"), "ls": ("A", "steer.layer_s"),
                 "lt": ("B", "steer.layer_t")}


def from_link() -> dict | None:
    """The request of a link this page did not write itself, seeded into the form; None without one."""
    if not urlstate.is_link("steer", URL_REQUEST):
        return None
    url, notices = urlstate.read(URL_REQUEST)
    urlstate.show_notices(notices)
    if url["a"]:
        seed_model_picker("steer.a", url["a"])
    seed_model_picker("steer.b", url["b"] or NONE, extra=[NONE])
    seed_data_picker("steer", url["data"])
    urlstate.seed({URL_NAMES[k]: v for k, v in url.items()},
                  {k: f"steer.{k}" for k in ("layers", "method", "test_frac", "limit")})
    return {URL_NAMES[k]: v for k, v in url.items()} | {"B": url["b"] or None} if url["a"] else None


def seed_form(req: dict) -> None:
    """Every widget of the vectors' form shows the request of the vectors on screen."""
    seed_model_picker("steer.a", req["A"])
    seed_model_picker("steer.b", req.get("B") or NONE, extra=[NONE])
    seed_data_picker("steer", req["data"])
    seed_fields("steer", req, {k: k for k in ("layers", "method", "test_frac", "limit")})


def layers_from_link(result: SteeringResult) -> None:
    """Seed the sweep and transfer layers from a link this page did not write itself (once the vectors exist);
    a layer without a vector falls back to the middle layer with one sentence."""
    if not urlstate.is_link("steer", URL_LAYERS):
        return
    url, notices = urlstate.read(URL_LAYERS)
    for key, (side, widget) in LAYER_WIDGETS.items():
        if url[key] >= 0 and side in result.sets:
            vs = result.sets[side]
            st.session_state[widget], note = urlstate.layers_among(key, url[key], sorted(vs.vectors), default_layer(result, side))
            notices += [note] if note else []
    urlstate.show_notices(notices)


def write_layers(result: SteeringResult) -> None:
    """The sweep and transfer layers in the URL: those that are not the middle layer."""
    values = {}
    for key, (side, widget) in LAYER_WIDGETS.items():
        layer = st.session_state.get(widget)
        shown = side in result.sets and layer is not None
        values[key] = layer if shown and layer != default_layer(result, side) else -1
    urlstate.write("steer", URL_LAYERS, values)


def request_form(expanded: bool) -> dict | None:
    with st.expander("Models and data", expanded=expanded), st.form("steer.form"):
        c1, c2, c3 = st.columns(3)
        with c1:
            a = model_picker("steer.a", "Model A")
        with c2:
            b = model_picker("steer.b", "Model B, optional", extra=[NONE])
        with c3:
            data = data_picker("steer")
        c = st.columns(4)
        layers = c[0].text_input("Layers", value="all", key="steer.layers", help="all, or e.g. 0,3,-1")
        method = c[1].selectbox("Vector", ["mean_diff", "pca_diff"], key="steer.method",
                                help="mean of the pair differences (CAA), or their first principal component")
        test_frac = c[2].number_input("Held-out fraction", min_value=0.05, max_value=0.9, value=0.3, step=0.05,
                                      key="steer.test_frac", help="questions kept aside to score the steering")
        limit = c[3].number_input("Max rows (0 = all)", min_value=0, value=0, step=40, key="steer.limit",
                                  help="two rows per question; each two-choice question is also asked with its options "
                                       "swapped, so the model sees twice as many")
        if not st.form_submit_button("Compute vectors", type="primary"):
            return None
    model_b = chosen_model(*b)
    return {"A": chosen_model(*a), "B": None if model_b == NONE else model_b, "data": chosen_data(*data),
            "layers": layers, "method": method, "test_frac": float(test_frac), "limit": int(limit)}


def compute(req: dict) -> SteeringResult:
    with st.status(f"Steering vectors on {md(req['data'])}", expanded=True) as status:
        with timed_bar("Checking the cache") as progress:
            result = steering_result(req, loader=model_loader(False), progress=progress)
        vs = result.sets["A"]
        asked = len(np.unique(vs.question_ids)) if vs.question_ids is not None else len(vs.dataset) // 2
        status.update(label=f"{md(vs.dataset.name)}: {asked} questions, {len(np.unique(vs.held_out_groups()))} held out",
                      state="complete", expanded=False)
    for side in result.sets:  # fresh defaults: where it was measured to steer, else a middle layer
        st.session_state[f"steer.layer.{side}"] = default_layer(result, side)
    for key in ("steer.layer_s", "steer.layer_t"):
        st.session_state.pop(key, None)
    st.session_state.update({"steer.sweep": None, "steer.transfer": None, "steer.sentiment": None})
    return result


SCALE_HELP = ("spread: α × the layer's residual spread (the RMS distance of its residuals from their mean) along the "
              "vector's direction, so α = 1 moves a residual as far as residuals typically lie apart, at any layer and "
              "model; relative: α × the layer's mean residual norm (mostly the mean vector: about 2.6 spreads on "
              "SmolLM2's block 14); raw: α × the vector as computed; unit: α × a unit vector")


def sweep_estimate(result: SteeringResult, side: str, n_alphas: int, layer: int | None = None
                   ) -> tuple[float, float, str] | None:
    """(raw seconds, calibrated seconds, basis) of a sweep: its tokens at the rate the vectors' extraction measured,
    scaled by what the last sweep here took against its estimate; None without a measured rate."""
    vs = result.sets[side]
    rate = vs.manifest.get("tokens", 0) / max(vs.manifest.get("seconds", 0) or 1e9, 1e-9)
    if not rate:
        return None
    try:
        raw = estimate_sweep_seconds(lm_for(result, side), vs, n_alphas, rate, layer)
    except RepmapError:
        return None  # prompts the sweep cannot use (answers of several tokens): Sweep says why, in one sentence
    return (raw, *calibrated("sweep", raw))


def sweep(result: SteeringResult, side: str, layer: int, alphas: np.ndarray, scale: str, preview_alpha: float
          ) -> SteeringSweep:
    lm, eta = lm_for(result, side), sweep_estimate(result, side, len(alphas), layer)
    with timed_bar(f"Sweeping {len(alphas)} multipliers with the vector and a random direction",
                   eta and eta[1]) as progress:
        return timed("sweep", eta and eta[0], lambda: steering_sweep(
            result, side, layer, alphas, lm, scale=scale, preview_alpha=preview_alpha, progress=progress))


def steering(result: SteeringResult) -> None:
    st.header("Steering")
    sets, labels = result.sets, result.labels
    side = st.radio("Steer", list(sets), format_func=labels.get, horizontal=True, key="steer.side") if len(sets) > 1 else "A"
    off = bool(reason := encoder_reason(result, side))
    if off:
        st.warning(reason + " The vectors and the comparisons above still work.", icon=":material/block:")
    with st.form("steer.sweep_form"):
        c = st.columns(6, vertical_alignment="bottom")
        layer = c[0].selectbox("Layer", sorted(sets[side].vectors), key=f"steer.layer.{side}", disabled=off)
        alphas = alphas_inputs("steer", off, c[1:4])
        scale = c[4].selectbox("Scale", SCALES, key="steer.scale", disabled=off, help=SCALE_HELP)
        preview_alpha = c[5].number_input("Preview multiplier", value=1.0, step=0.25, key="steer.preview_alpha", disabled=off)
        submitted = st.form_submit_button("Sweep", type="primary", disabled=off)
    if not off and (eta := sweep_estimate(result, side, len(alphas), layer)):
        st.caption(f":material/timer: A sweep of {len(alphas)} multipliers (the vector and a random direction on "
                   f"{md(result.labels[side])}'s held-out questions, both letter orders): about {duration(eta[1])} here, from "
                   "the rate its vectors were extracted at" + (f", {eta[2]}" if eta[2] else "") + ".")
    if not off and (note := measured_note(result.request[side], result.request["data"], layer)):
        st.caption(f":material/lab_research: {md(note)}")
    if submitted:
        try:
            st.session_state["steer.sweep"] = sweep(result, side, layer, alphas, scale, float(preview_alpha))
        except RepmapError as e:
            show_error(e)  # the previous sweep stays below
    if (got := st.session_state["steer.sweep"]) is not None:
        sweep_section(got)


linked = urlstate.not_shown(from_link(), st.session_state["steer.result"])
try:
    shown = st.session_state["steer.result"]
    sync_request("steer", shown.request if shown else None, seed_form, "steer.a.model_choice")
    req = request_form(expanded=shown is None and linked is None)
    if req is None and linked:  # a link computes only what is cached, until Compute is pressed
        check_models(linked.get("A"), linked.get("B"))
        data = load_dataset(linked["data"], limit=cap_rows(linked["limit"] or None)[0])
        cached = all(vectors_cached(linked[k], data, linked["layers"]) for k in ("A", "B") if linked.get(k))
        models = " and ".join(linked[k] for k in ("A", "B") if linked.get(k))
        if link_gate("steer", f"steering vectors of {models} on {data.name} ({len(data) // 2:,} questions)", cached, None):
            req = linked
    if req is not None:
        run_request("steering", req, compute, state="steer.result")
except RepmapError as e:
    show_error(e)  # the last good result below stays on screen

result = st.session_state["steer.result"]
exports.source(None if result is None else f"{', '.join(result.labels.values())} · {result.request['data']}")
if result is None:
    st.info("Pick model A (e.g. a base model), optionally model B (its chat version, or a larger model) and a data set "
            "of A/B questions, then Compute vectors.")
    st.stop()
cap_note("steering")
urlstate.write("steer", URL_REQUEST, {k: result.request[name] or "" for k, name in URL_NAMES.items()})
layers_from_link(result)
comparison(result)
steering(result)
sentiment_section(result)
if "B" in result.sets:
    transfer_section(result)
write_layers(result)
