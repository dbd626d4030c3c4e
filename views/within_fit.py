"""Within-model fit: does an affine map plus one task direction δ explain finetuning?"""
from __future__ import annotations

import contextlib
import time

import pandas as pd
import streamlit as st

from repmap_core.analysis.affine import parse_alpha
from repmap_core.analysis.stats import format_null
from repmap_core.analysis.within import within_table
from repmap_core.errors import RepmapError
from repmap_core.finetune.checkpoints import list_finetuned
from repmap_core.papers.published import GAO_DELTA_ACCURACY, GAO_TABLE1
from repmap_core.progress import silent
from repmap_core.results.view_fits import GROUND_TRUTH, within_fit
from repmap_core.share.figures_shift import live_fit
from repmap_ui import exports, urlstate
from repmap_ui.bars import timed_bar
from repmap_ui.flow import keep
from repmap_ui.rebuild import remember_within
from repmap_ui.shift import shift_selection, shift_source
from repmap_ui.text import md
from repmap_ui.tiles import estimate_tile
from repmap_ui.urlstate import Choice, Float, Int, Text

st.title("Within-model fit")
st.caption("Fit λ̃ ≈ Aλ + b + y·δ (Gao, Sun, Jiao §3) on training rows; score δ and linear probes on held-out rows. "
           "Ridge α 'auto' chooses the penalty on held-out training rows (least squares interpolates when rows ≤ width); "
           "each number carries its 95% interval over held-out rows and, in its help, a null.")

LIVE_REDRAW_S = 2.0  # the live chart's redraws: at 0.4 s they competed with the fit for this CPU's two cores
# the fit form's options in the URL; layer -1 stands for the last layer
URL_FIT = [Int("layer", -1, lo=0), Choice("method", "lstsq", ("lstsq", "gd")), Text("alpha", "auto"),
           Int("steps", 2000, lo=10), Float("test", 0.2, lo=0.1, hi=0.5), Text("labels", GROUND_TRUTH)]
URL_WIDGETS = {"layer": "within.layer", "method": "within.method", "alpha": "within.alpha", "steps": "within.steps",
               "test": "within.test_frac", "labels": "within.labels"}


def from_link(layers: list[int], labels: list[str]) -> dict | None:
    """The fit options of a link this page did not write itself, seeded into the form; None without one.
    A bad value falls back to its default with one sentence."""
    if not urlstate.is_link("within", URL_FIT):
        return None
    url, notices = urlstate.read(URL_FIT)
    try:
        parse_alpha(url["alpha"])
    except RepmapError:
        notices.append(urlstate.notice("alpha", url["alpha"], "is not 'auto' or a number of 0 or more", "auto"))
        url["alpha"] = "auto"
    if url["layer"] == -1:
        url["layer"] = layers[-1]
    else:
        url["layer"], note = urlstate.layers_among("layer", url["layer"], layers, layers[-1])
        notices += [note] if note else []
    if url["labels"] not in labels:
        notices.append(urlstate.notice("labels", url["labels"], "is not a finetuned model listed on this server",
                                       GROUND_TRUTH))
        url["labels"] = GROUND_TRUTH
    urlstate.show_notices(notices)
    urlstate.seed(url, URL_WIDGETS)
    return url


keep(tuple(URL_WIDGETS.values()))  # the fit form's choices, through a visit to another page
result = shift_selection("within")
if result is None:
    st.info("Pick a base model and its finetuned version above (finetune one on the Finetune page).")
    st.stop()
base = result.base
exports.source(shift_source(result))

weak_options = [GROUND_TRUTH] + [m.path for m in list_finetuned() if m.path != result.request["finetuned"]]
linked = from_link(base.layer_list, weak_options)
if linked is not None and getattr(st.session_state.get("within.result"), "options", None) == linked:
    linked = None  # this fit is already shown
with st.form("within.fit"):
    c1, c2, c3, c4, c5 = st.columns(5)
    layer = c1.selectbox("Layer", base.layer_list, index=len(base.layer_list) - 1, key="within.layer")
    method = c2.selectbox("Method", ["lstsq", "gd"], key="within.method",
                          format_func={"lstsq": "closed form", "gd": "gradient descent (live)"}.get)
    alpha = c3.text_input("Ridge α (closed form)", value="auto", key="within.alpha",
                          help="auto: chosen on held-out training rows; a number fixes it (0: plain least squares)")
    steps = c4.number_input("GD steps (at most)", min_value=10, value=2000, step=500, key="within.steps")
    test_frac = c5.slider("Held-out fraction", 0.1, 0.5, 0.2, 0.05, key="within.test_frac")
    weak_names = {m.path: f"weak labels from finetuned {m.base_model.split('/')[-1]} on {m.dataset}" for m in list_finetuned()}
    labels_from = st.selectbox("Labels used to fit δ (Table 1: ground truth; Table 2: a weak model's)", weak_options,
                               key="within.labels", format_func=lambda k: weak_names.get(k, k))
    go = st.form_submit_button("Fit", type="primary")
options = {"layer": layer, "method": method, "alpha": alpha.strip() or "auto", "steps": int(steps),
           "test": float(test_frac), "labels": labels_from}
urlstate.write("within", URL_FIT, dict(options, layer=-1 if layer == base.layer_list[-1] else layer))
if linked is not None and not go:
    if method == "lstsq" and labels_from == GROUND_TRUTH:
        go = True  # a closed-form fit takes a moment: the link's fit is run
    else:
        st.caption("The link's fit options are set in the form above; press Fit to run them "
                   "(gradient descent and weak labels take a while, so a link does not start them).")

if go:
    try:
        bar, chart, table = st.empty(), st.empty(), st.empty()
        points, latest, last_draw = [], {}, [0.0]

        def live(m: dict) -> None:
            points.append(m)
            rows = len(latest)
            latest.update({k: m[k] for k in ("base", "finetuned", "modeled") if k in m})  # Table 1 filling in
            progress(m["step"] / int(steps), f"step {m['step']} of at most {int(steps)}, held-out R² {m['r2_test']:.3f}")
            # redrawing takes the cores the fit runs on: every LIVE_REDRAW_S, and at once when Table 1 gains a row
            if len(latest) > rows or time.monotonic() - last_draw[0] > LIVE_REDRAW_S:
                last_draw[0] = time.monotonic()
                chart.plotly_chart(live_fit(points), key=f"within.live.{len(points)}")
                table.dataframe(pd.DataFrame(latest).T.style.format(precision=3), key=f"within.live_table.{len(points)}")

        weak = "; labelling the rows with the weak model first" if labels_from != GROUND_TRUTH else ""
        gd_bar = timed_bar("Gradient descent", where=bar) if method == "gd" else contextlib.nullcontext(silent)
        with st.spinner(f"Fitting{weak}"), gd_bar as progress:
            st.session_state["within.result"] = within_fit(result, options, live=live)
        remember_within(result, options)  # Share, in a later session, refits it from the cache
        chart.empty()
        table.empty()
    except RepmapError as e:
        st.error(str(e), icon=":material/error:")

done = st.session_state.get("within.result")
if done:
    res = done.result
    if done.points:
        exports.plot(live_fit(done.points), "within.curve", f"within_fit_curve_layer{done.layer}")
    iv = res.intervals
    c1, c2, c3, c4 = st.columns(4)
    estimate_tile("sign(λ̃·δ) accuracy", iv["delta_projection_accuracy"], where=c1,
                  help=f"the paper's, on held-out rows; random directions: {format_null(iv['delta_projection_accuracy'])}")
    estimate_tile("sign((λ̃−μ)·δ) accuracy", iv["delta_projection_accuracy_centered"], where=c2,
                  help=f"centred on the training mean; random directions: "
                       f"{format_null(iv['delta_projection_accuracy_centered'])}")
    estimate_tile("Held-out R²", iv["r2_test"], where=c3,
                  help=f"train {res.fit['r2_train']:.3f}; 0 = predicting the mean; ridge α {res.fit['alpha']:.3g}"
                       + (" (chosen on held-out training rows)" if res.fit["alpha_chosen"] else ""))
    estimate_tile("cos(δ, class-mean difference)", iv["delta_cosine"], where=c4,
                  help=f"δ against the held-out rows' class-mean difference of λ̃ (both displacements); random directions: "
                       f"{format_null(iv['delta_cosine'])}. Against the finetuned probe's weights (a functional) it is "
                       f"{res.delta_cosine['finetuned_probe']:.3f}")
    if res.fit.get("note"):
        st.caption(res.fit["note"])
    if res.n_train + res.n_test == len(result.dataset):  # the rows: which ones a reader compares with another run's
        st.caption(f"Rows: A, b and δ are fitted on {res.n_train:,} of the {len(result.dataset):,} rows of "
                   f"{md(result.dataset.name)}, and every number above is scored on the other {res.n_test:,} (a seeded "
                   "split that keeps pairs whole). " + md(result.in_sample_note() or ""))
    st.subheader(f"Table {'2' if res.fit_labels == 'weak' else '1'}: linear probe accuracy, layer {done.layer}")
    frame = pd.DataFrame(within_table(res)).set_index("representation")
    exports.table(frame.style.format(precision=3), "within.table", f"within_table_layer{done.layer}")
    st.caption("λ̂ = Aλ+b+yδ is built with the true label, so a probe can read the label back through δ: high by "
               "construction (the paper's setup). The rows without the label, or with a base probe's predicted label, "
               "show what the fitted map explains without being told the answer. Intervals: Wilson (or a bootstrap over "
               "pairs) on the held-out rows; null: the probe trained and scored on shuffled labels.")
    if done.arrays:
        tensors, manifest = done.arrays
        exports.arrays_download("δ and A (safetensors)", tensors, manifest, f"within_fit_layer{done.layer}",
                                "within.dl_arrays")
    with st.expander("Published numbers (Gao, Sun, Jiao; GPT-2, last layer, 10k rows)"):
        pub = pd.DataFrame([{"data": k, "base": f"{v[0][0]:.2f} / {v[0][1]:.2f}", "finetuned": f"{v[1][0]:.2f} / {v[1][1]:.2f}",
                             "modelled": f"{v[2][0]:.2f} / {v[2][1]:.2f}"} for k, v in GAO_TABLE1.items()]).set_index("data")
        exports.table(pub, "within.published", "gao_table1_published")
        st.caption(f"sign(λ̃·δ) accuracy: GPT-2 {GAO_DELTA_ACCURACY['gpt2']}, GPT-2-XL {GAO_DELTA_ACCURACY['gpt2-xl']}.")
