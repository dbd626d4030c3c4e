"""The Across models page's fit: the form, the map fitted on the chosen layer pair (GD drawn live), and
what it shows (R², probe transfer with intervals and nulls, exports)."""
from __future__ import annotations

import time

import streamlit as st

from repmap_core.analysis.maps import MAP_METHODS
from repmap_core.analysis.stats import format_estimate, format_null
from repmap_core.papers.published import GAO_BETWEEN_VECTOR_ACCURACY
from repmap_core.results.view_fits import AcrossFitResult, across_fit
from repmap_core.results.view_results import AcrossResult
from repmap_core.share.figures_across import fit_curve, per_dim_error, similarity_table, transfer_table
from repmap_ui import exports
from repmap_ui.text import md
from repmap_ui.tiles import estimate_tile

METHOD_HELP = {"lstsq": "least squares", "ridge": "ridge", "gd": "gradient descent (Gao et al.)",
               "procrustes": "Procrustes (orthogonal)", "lowrank": "low-rank",
               "updown": "up/down pair, round-trip loss (LRT, stitching)", "mlp": "MLP (non-linear)"}


def short(name: str) -> str:
    return name.rstrip("/").split("/")[-1]


def fit(result: AcrossResult, layers: tuple[int, int], req: dict) -> AcrossFitResult:
    """The map fitted on the chosen layer pair; gradient descent's held-out R² curve is drawn ~3×/s as it goes."""
    chart, shown = st.empty(), [0.0]

    def draw(history: list) -> None:
        if time.monotonic() - shown[0] > 0.3:
            shown[0] = time.monotonic()
            chart.plotly_chart(fit_curve(history))

    with st.spinner(f"Fitting {METHOD_HELP[req['method']]}: layer {layers[0]} → layer {layers[1]}"):
        out = across_fit(result, layers, req, on_step=draw)
    chart.empty()
    return out


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


def show_fit(fit_: AcrossFitResult, sim) -> None:
    res, (ls, lt), m = fit_.result, fit_.layers, fit_.result.map
    iv = res.intervals
    st.subheader(f"{METHOD_HELP.get(m['method'], md(m['method']))}: source layer {ls} → target layer {lt}")
    c = st.columns(5)
    estimate_tile("R² train", iv["map.r2_train"], where=c[0])
    estimate_tile("R² test", iv["map.r2_test"], where=c[1], help=f"{res.n_test} held-out rows; 0 = predicting the mean")
    estimate_tile("Mean cosine (test)", iv["map.mean_cosine"], where=c[2], help="mapped vs true rows, centred on the true mean")
    estimate_tile("Retrieval top-1 (test)", iv["map.retrieval_top1"], where=c[3], help="mapped row's nearest true row is its own")
    c[4].metric("Seconds", f"{m['seconds']:.2f}")
    if "round_trip_error_test" in m:
        st.caption(f"Down map target → source: R² test {m['down_r2_test']:.3f}. Round trip down(up(s)) vs s on held-out "
                   f"rows: relative error {m['round_trip_error_test']:.3f} (0: down undoes up; 1: it returns the mean).")
    if m.get("note"):
        st.caption(m["note"])
    if "step_reported" in m:
        st.caption(f"Gradient descent ran {m['steps']} steps; the map reported is step {m['step_reported']}'s, the lowest "
                   "loss on a held-out tenth of the training rows."
                   + (" It had not converged: it was still improving when it reached its step limit, so the numbers above "
                      "understate the map; raise the steps, or fit the closed form." if m.get("converged") is False else ""))
    if fit_.history:
        exports.plot(fit_curve(fit_.history, m.get("step_reported")), "across.fit_curve", f"map_fit_curve_L{ls}_L{lt}")
    exports.plot(per_dim_error(res.per_dim_mse), "across.per_dim", f"map_error_per_dim_L{ls}_L{lt}")
    p, t = res.probe, res.transfer
    c = st.columns(4)
    estimate_tile("Probe on source (test)", iv["probe.source"], where=c[0],
                  help=f"train {p['source']['train']:.3f}; shuffled labels: {format_null(iv['probe.source'])}")
    estimate_tile("Probe on target (test)", iv["probe.target"], where=c[1],
                  help=f"train {p['target']['train']:.3f}; shuffled labels: {format_null(iv['probe.target'])}")
    if t["vector"] is None:
        st.info("A non-linear map has no matrix to carry a probe through; fit an affine map to see transfer.")
        return
    estimate_tile("Transfer: functional (readout)", iv["transfer.functional"], where=c[2],
                  help=f"ridge regression of the source probe's scores on target rows; random directions: "
                       f"{format_null(iv['transfer.functional'])}")
    estimate_tile("Transfer: vector A w", iv["transfer.vector"], where=c[3],
                  help=f"uncentred sign(t·Aw), the paper's score; random directions: {format_null(iv['transfer.vector'])}")
    centred = iv.get("transfer.vector_centered")
    st.caption(f"Paper, beside this run's A w ({format_estimate(iv['transfer.vector'])}): "
               f"{GAO_BETWEEN_VECTOR_ACCURACY:.4f} for GPT-2 → GPT-2-XL, last layer (Gao et al.); other models and data."
               + ("" if centred is None else
                  f" Centred, sign((t − mean)·Aw): {format_estimate(centred)} ({format_null(centred)}): the paper's "
                  "uncentred score also counts where the target's mean falls along Aw, so it moves with the map's "
                  "penalty; the centred one holds still."))
    st.caption("A probe is a functional, not a point. The headline carries it as a readout: a ridge regression, fitted on "
               "the training rows, of the source probe's scores on the target's activations; it cannot amplify what the "
               "map got wrong. pinv(A)ᵀw (the algebraic inverse) inverts the noise directions of a shrunk map, and A w "
               "moves the probe like a steering vector; both are in the table as comparisons, with random directions "
               "as the null.")
    stem = f"{short(fit_.manifest['source']['model'])}_L{ls}__{short(fit_.manifest['target']['model'])}_L{lt}"
    exports.table(transfer_table(res), "across.transfer", f"transfer_{stem}", hide_index=True)
    d = st.columns(2)
    if fit_.arrays:
        tensors, manifest = fit_.arrays
        exports.arrays_download("Map A, b and the carried probe", tensors, manifest, f"map_{stem}", "across.dl_map",
                                where=d[0])
    d[1].download_button("Similarity matrix (CSV)", similarity_table(sim).to_csv(), f"{sim.metric}_{stem}.csv",
                         key="across.dl_sim")
