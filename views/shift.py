"""Finetuning shift: the same rows before and after finetuning, on shared axes."""
from __future__ import annotations

import numpy as np
import streamlit as st

from repmap_core.analysis.axes import SHIFT_AXES, SHIFT_AXIS_NAMES, shift_axes
from repmap_core.analysis.projection import joint_project, sample_rows
from repmap_core.capture import memo, speed
from repmap_core.errors import RepmapError
from repmap_core.share.figures import METHOD_NAMES
from repmap_core.share.figures_shift import separation_compare, shift_grid, shift_scatter
from repmap_ui import exports, urlstate
from repmap_ui.bars import timed_bar
from repmap_ui.flow import keep, view_gate, view_may_compute
from repmap_ui.shift import shift_selection, shift_source
from repmap_ui.urlstate import Choice, Int, IntList

st.title("Finetuning shift")
st.caption("How finetuning moved the representation space (Gao, Sun, Jiao): the same rows before and after on "
           "shared axes, where each point went, and at which layers the classes pulled apart.")

AXES = ("pca", "pca_base", "tsne", "umap", "custom")
# the view's choices in the URL; -1 and () stand for the page's own default (the last layer, four spread layers)
URL_VIEW = [Int("layer", -1, lo=0), Choice("axes", "pca", AXES), Int("points", 2000, lo=100), Int("lines", 300, lo=0),
            IntList("grid", ()), Choice("x", "after_mean_diff", SHIFT_AXES), Choice("y", "pc1_rest", SHIFT_AXES)]
URL_WIDGETS = {"layer": "shift.layer", "axes": "shift.method", "points": "shift.max_points", "lines": "shift.arrows",
               "grid": "shift.grid_layers", "x": "shift.x_axis", "y": "shift.y_axis"}


def grid_default(layers: list[int]) -> list[int]:
    return sorted({layers[round(i * (len(layers) - 1) / 3)] for i in range(4)})


def from_link(layers: list[int]) -> bool:
    """Seed the view's widgets from a link this page did not write itself (True when there is one); a bad value
    falls back with one sentence."""
    if not urlstate.is_link("shift", URL_VIEW):
        return False
    url, notices = urlstate.read(URL_VIEW)
    for key, fallback in (("layer", layers[-1]), ("grid", tuple(grid_default(layers)))):
        if url[key] in (-1, ()):
            url[key] = fallback
        else:
            url[key], note = urlstate.layers_among(key, url[key], layers, fallback)
            notices += [note] if note else []
    urlstate.show_notices(notices)
    urlstate.seed(url, URL_WIDGETS)
    return True


keep(tuple(URL_WIDGETS.values()))  # the view's choices, through a visit to another page
result = shift_selection("shift")
if result is None:
    st.info("Pick a base model and its finetuned version above (finetune one on the Finetune page).")
    st.page_link("views/finetune.py", label="Finetune a model", icon=":material/model_training:")
    st.stop()

base, ft, ds = result.base, result.finetuned, result.dataset
exports.source(shift_source(result))
layers = base.layer_list
if note := result.in_sample_note():
    st.warning(note, icon=":material/warning:")
exports.plot(separation_compare(result.rows["base"], result.rows["finetuned"]), "shift.separation",
             "shift_separation_before_after")
gain = {r.layer: f.probe_cv_acc - r.probe_cv_acc for r, f in zip(result.rows["base"], result.rows["finetuned"])}
top = max(gain, key=gain.get)
st.caption(f"Finetuning raised the probe's cross-validated accuracy most at layer {top} "
           f"({gain[top]:+.3f}); at the last layer by {gain[layers[-1]]:+.3f}.")

linked = from_link(layers)
c1, c2, c3, c4 = st.columns([1, 2, 1, 1])
layer = c1.selectbox("Layer", layers, index=len(layers) - 1, key="shift.layer")
method = c2.segmented_control("Axes", list(AXES), default="pca", key="shift.method",
                              format_func=lambda m: {"pca": "PCA of both", "pca_base": "PCA of base",
                                                     "custom": "Custom axes"}.get(m, METHOD_NAMES.get(m, m)),
                              help="Custom axes: each row before and after on two directions you pick, such as the "
                                   "task direction the finetuning made (the class-mean difference after it)")
method = method or "pca"
x_axis, y_axis = "after_mean_diff", "pc1_rest"
if method == "custom":
    a1, a2 = st.columns(2)
    x_axis = a1.selectbox("x axis", SHIFT_AXES, key="shift.x_axis", format_func=SHIFT_AXIS_NAMES.get)
    y_axis = a2.selectbox("y axis", SHIFT_AXES, index=SHIFT_AXES.index("pc1_rest"), key="shift.y_axis",
                          format_func=SHIFT_AXIS_NAMES.get)
    urlstate.write("shift", URL_VIEW, {"x": x_axis, "y": y_axis})
max_points = c3.number_input("Max points", min_value=100, value=2000, step=500, key="shift.max_points")
arrows = c4.number_input("Lines", min_value=0, value=300, step=100, key="shift.arrows")
urlstate.write("shift", URL_VIEW, {"layer": -1 if layer == layers[-1] else layer, "axes": method,
                                   "points": int(max_points), "lines": int(arrows)})
rows = sample_rows(base.labels, int(max_points), 0)
texts = [ds.texts[i] for i in rows]
may_compute = view_may_compute("shift", {"method": method, "layer": layer, "points": int(max_points)}, linked)
try:
    with timed_bar("Projecting before and after onto shared axes",
                   speed.predicted(method, 2 * len(rows)) if method in ("tsne", "umap") else None) as progress:
        proj = "pca" if method.startswith("pca") else method
        fit_on = "first" if method == "pca_base" else "union"

        custom: dict[int, tuple] = {}  # layer -> (before_xy, after_xy, cosine): once per layer in this run

        def coords_for(L: int, progress=progress):
            if method == "custom":
                if L not in custom:
                    custom[L] = shift_axes(base[L][rows], ft[L][rows], base.labels[rows], x_axis, y_axis)
                return custom[L][:2]
            cache = {"before": base.manifest["key"], "after": ft.manifest["key"], "layer": L, "rows": len(rows)}
            return joint_project([base[L][rows], ft[L][rows]], proj, 0, fit_on=fit_on, progress=progress,
                                 memo=memo.disk_memo(cache, may_compute=may_compute))

        try:
            before_xy, after_xy = coords_for(layer)
        except memo.NotCached:  # a link's uncached t-SNE or UMAP waits for Compute
            if not view_gate("shift", f"a {METHOD_NAMES[method]} of layer {layer} before and after ({len(rows):,} points)"):
                st.stop()
            may_compute = True
            before_xy, after_xy = coords_for(layer)
    titles = (SHIFT_AXIS_NAMES[x_axis], SHIFT_AXIS_NAMES[y_axis]) if method == "custom" else None
    exports.plot(shift_scatter(before_xy, after_xy, base.labels[rows], texts, arrows=int(arrows), axis_titles=titles,
                               title=f"Layer {layer}: open = before, filled = after"), "shift.scatter",
                 f"shift_layer{layer}_{method}")
    if method == "custom":
        cos = custom[layer][2]
        st.caption(f"Coordinates in activation units from the base rows' mean; the two directions' cosine is {cos:+.2f}"
                   + (" (nearly the same direction: the y axis repeats the x axis)" if abs(cos) > 0.9 else "") + ".")
    moved = np.linalg.norm(ft[layer][rows] - base[layer][rows], axis=1)
    st.caption(f"Mean move at layer {layer}: {moved.mean():.3g} (activation norm {np.linalg.norm(base[layer][rows], axis=1).mean():.3g}).")

    st.subheader("Several layers side by side")
    default = grid_default(layers)
    grid_layers = st.multiselect("Layers", layers, default=default, key="shift.grid_layers")
    urlstate.write("shift", URL_VIEW, {"grid": () if grid_layers == default else tuple(grid_layers)})
    if grid_layers:
        with timed_bar(f"{len(grid_layers)} layers") as progress:
            grid = {L: coords_for(L, lambda f, msg, i=i, L=L: progress((i + f) / len(grid_layers), f"layer {L}: {msg}"))
                    for i, L in enumerate(grid_layers)}
        grid_method = "custom" if method == "custom" else proj
        exports.plot(shift_grid(grid, base.labels[rows], texts, method=grid_method), "shift.grid",
                     f"shift_layers_{grid_method}")
except RepmapError as e:
    st.error(str(e), icon=":material/error:")

st.page_link("views/within_fit.py", label="Fit λ̃ ≈ Aλ + b + yδ on these activations", icon=":material/functions:")
