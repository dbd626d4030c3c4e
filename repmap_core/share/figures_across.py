"""Figures and tables for comparing two models (or two layers of one): no streamlit.

- `similarity_heatmap`: every layer pair, the best match per source layer outlined and starred.
- `side_by_side`: 2-D projections of the two chosen layers, same rows, linked highlighting.
- `fit_curve`: a map's training loss and held-out R² against the step.
- `per_dim_error`: held-out squared error per target dimension, sorted, the worst named.
- `transfer_table`: how a source probe scores target rows when carried each way.
- `similarity_table`: the matrix the page exports as CSV (arrays go through `exports`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from repmap_core.analysis.similarity import SimilarityMatrix
from repmap_core.share.figures import LABEL_COLORS, WEBGL_ABOVE, hover_texts, layer_tickvals

METRIC_NAMES = {"cka_debiased": "debiased linear CKA", "linear_cka": "linear CKA (biased)", "svcca": "SVCCA",
                "procrustes": "Procrustes distance"}
METRIC_RANGES = {"cka_debiased": (0.0, 1.0), "linear_cka": (0.0, 1.0), "svcca": (0.0, 1.0), "procrustes": (0.0, 2.0)}
CELL_TEXT_MAX_COLUMNS = 12  # target layers up to which each cell's value is written in it
CELL_TEXT_MAX_ROWS = 24
TRANSFER_COLUMNS = ["mode", "uncentred", "centred", "with intercept", "with intercept, 95% interval",
                    "cosine with target probe", "what it is"]


def best_matches(sim: SimilarityMatrix, exclude_same_layer: bool = False) -> dict[int, int]:
    """For each source layer, the closest target layer. With `exclude_same_layer` (one model
    against itself, where each layer trivially matches itself) the diagonal is skipped."""
    if not exclude_same_layer:
        return sim.best_match()
    values = np.array(sim.values, dtype=np.float64)
    worst = -np.inf if sim.higher_is_closer else np.inf
    for i, a in enumerate(sim.layers_a):
        values[i, [j for j, b in enumerate(sim.layers_b) if b == a]] = worst
    if len(sim.layers_b) < 2:
        return sim.best_match()
    pick = np.argmax(values, axis=1) if sim.higher_is_closer else np.argmin(values, axis=1)
    return {a: sim.layers_b[j] for a, j in zip(sim.layers_a, pick)}


def _cell_edges(centres: Sequence[int]) -> np.ndarray:
    """Where plotly puts the edges of heatmap cells centred on sorted numeric `centres`: the
    midpoints between neighbours, the outer cells as wide as their neighbour's half-gap."""
    c = np.asarray(centres, dtype=np.float64)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def similarity_heatmap(sim: SimilarityMatrix, source_name: str, target_name: str,
                       exclude_same_layer: bool = False) -> go.Figure:
    """Heatmap of `sim.values` (source layers as rows, target layers as columns) on the metric's
    full range (0-1, or 0-2 for the Procrustes distance, reversed so that dark is always close),
    each cell labelled with its value; each source layer's best match is outlined and starred
    (a rectangle shape named "best match" and "★" before the value). With a permutation null
    (`sim.null_high`), a value not above its cell's null is shown in parentheses, the null is in
    the hover and the subtitle says how it was made."""
    lo, hi = METRIC_RANGES.get(sim.metric, (float(np.min(sim.values)), float(np.max(sim.values))))
    name = METRIC_NAMES.get(sim.metric, sim.metric)
    best = best_matches(sim, exclude_same_layer)
    null = sim.null_high if sim.null_high is not None else np.full(sim.values.shape, np.nan)
    above = ~(sim.values <= null)  # NaN null: nothing to be below
    # a value fits its cell up to 12 target layers (~70 px a cell); past that (MiniLM's 6 against SmolLM2's 30 drew
    # "★ 0.83" in 30 px cells) the values go to the hover and the best matches are drawn as star markers
    written = len(sim.layers_b) <= CELL_TEXT_MAX_COLUMNS and len(sim.layers_a) <= CELL_TEXT_MAX_ROWS
    text = [[("★ " if best[a] == b else "") + (f"{v:.2f}" if ok else f"({v:.2f})")
             for b, v, ok in zip(sim.layers_b, row, oks)] for a, row, oks in zip(sim.layers_a, sim.values, above)]
    hover = f"source layer %{{y}} · target layer %{{x}}<br>{name} %{{z:.3f}}"
    if sim.null_high is not None:
        hover += "<br>shuffled-row null: 95% ≤ %{customdata:.3f}"
    fig = go.Figure(go.Heatmap(
        z=sim.values, x=list(sim.layers_b), y=list(sim.layers_a), zmin=lo, zmax=hi, colorscale="Blues",
        reversescale=not sim.higher_is_closer, text=text if written else None, texttemplate="%{text}" if written else None,
        textfont=dict(size=13), colorbar=dict(title=dict(text=name)),
        customdata=null, hovertemplate=hover + "<extra></extra>", name=name,
    ))
    xe, ye = _cell_edges(sim.layers_b), _cell_edges(sim.layers_a)
    for i, a in enumerate(sim.layers_a):
        j = sim.layers_b.index(best[a])
        fig.add_shape(type="rect", x0=xe[j], x1=xe[j + 1], y0=ye[i], y1=ye[i + 1], name="best match",
                      line=dict(color="#edae49", width=3), layer="above")
    if not written:
        fig.add_trace(go.Scatter(x=[best[a] for a in sim.layers_a], y=list(sim.layers_a), mode="markers", name="best match",
                                 marker=dict(symbol="star", size=13, color="#edae49", line=dict(color="#31333F", width=1)),
                                 hoverinfo="skip", showlegend=False))
    fig.update_xaxes(title_text=f"{target_name} (target) layer", tickmode="array", tickvals=layer_tickvals(sim.layers_b))
    fig.update_yaxes(title_text=f"{source_name} (source) layer", tickmode="array", tickvals=layer_tickvals(sim.layers_a),
                     autorange="reversed")
    title = f"{name} of every layer pair; ★ best match" + ("" if written else " (values in the hover)")
    if sim.null_high is not None:
        title += (f"<br><sup>null: B's rows shuffled, {sim.null_permutations} times on {sim.null_rows} rows; "
                  + ("(value) = not above its cell's 95th percentile" if written else "each cell's 95th percentile in the hover")
                  + f" (largest: {np.nanmax(null):.3f})</sup>")
    fig.update_layout(title=title, margin=dict(l=10, r=10, t=70, b=10),
                      height=min(900, max(360, (48 if written else 28) * len(sim.layers_a) + 160)))
    return fig


def best_match_cells(fig: go.Figure) -> dict[int, int]:
    """The outlined best-match cells of a `similarity_heatmap` as {source layer: target layer},
    read back from the rectangles (e.g. to check a figure as drawn)."""
    heat = next(t for t in fig.data if t.type == "heatmap")
    out = {}
    for shape in fig.layout.shapes:
        if shape.name == "best match":
            (a,) = [int(y) for y in heat.y if shape.y0 < y < shape.y1]
            (b,) = [int(x) for x in heat.x if shape.x0 < x < shape.x1]
            out[a] = b
    return out


def side_by_side(coords_a: np.ndarray, coords_b: np.ndarray, labels: np.ndarray, texts: Sequence[str] | None = None,
                 selected: Sequence[int] | None = None, titles: tuple[str, str] = ("source", "target"),
                 row_ids: np.ndarray | None = None, label_names: dict[int, str] | None = None) -> go.Figure:
    """Two scatters of the same rows (`coords_a`, `coords_b`: (n, 2)), coloured by label.

    Each point's customdata is its row id (`row_ids`, default 0..n-1), so a box or lasso in
    either panel names rows. Rows whose id is in `selected` are highlighted in BOTH panels and
    the others faded (plotly's `selectedpoints`); `selected=None` highlights nothing.
    """
    labels = np.asarray(labels)
    row_ids = np.arange(len(labels)) if row_ids is None else np.asarray(row_ids)
    names = label_names or {0: "label 0", 1: "label 1"}
    hover = hover_texts(texts) if texts is not None else [f"row {i}" for i in row_ids]
    chosen = None if selected is None else np.isin(row_ids, np.asarray(list(selected), dtype=np.int64))
    scatter = go.Scattergl if len(labels) > WEBGL_ABOVE else go.Scatter
    fig = make_subplots(rows=1, cols=2, subplot_titles=list(titles), horizontal_spacing=0.05)
    for col, xy in ((1, np.asarray(coords_a)), (2, np.asarray(coords_b))):
        for cls in (0, 1):
            idx = np.flatnonzero(labels == cls)
            extra = {}
            if chosen is not None:
                extra = dict(selectedpoints=np.flatnonzero(chosen[idx]).tolist(),
                             selected=dict(marker=dict(opacity=1.0, size=8)),
                             unselected=dict(marker=dict(opacity=0.12)))
            fig.add_trace(scatter(
                x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=names.get(cls, str(cls)), legendgroup=str(cls),
                showlegend=col == 1, marker=dict(size=5, color=LABEL_COLORS[cls], opacity=0.75),
                text=[hover[i] for i in idx], customdata=row_ids[idx],
                hovertemplate="%{text}<br><i>row %{customdata}</i><extra>" + names.get(cls, str(cls)) + "</extra>",
                **extra,
            ), row=1, col=col)
    fig.update_xaxes(showticklabels=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, zeroline=False)
    n_sel = 0 if chosen is None else int(chosen.sum())
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=60, b=40), dragmode="lasso",
                      title=f"{n_sel} rows selected, highlighted in both" if n_sel else "Box or lasso rows in either panel",
                      legend=dict(orientation="h", y=0, yanchor="top", x=0.5, xanchor="center"))
    return fig


def selected_rows(points: Sequence[dict]) -> list[int]:
    """Sorted unique row ids (customdata) of a plotly selection event's points."""
    out = set()
    for p in points or []:
        value = p.get("customdata")
        if value is not None:
            out.add(int(np.ravel(value)[0]))
    return sorted(out)


def fit_curve(history: Sequence, reported_step: int | None = None) -> go.Figure:
    """Training loss (left axis, log) and held-out R² (right axis) against the step, with the step
    whose parameters the fit reports (`reported_step`: GD keeps its best held-out step) marked.

    `history` holds `(step, loss)`, `(step, loss, r2_test)` or `(step, loss, r2_test, best_step)`
    tuples, or dicts with those keys; without `reported_step`, the last `best_step` is marked.
    """
    rows = [h if isinstance(h, dict) else dict(zip(("step", "loss", "r2_test", "best_step"), h)) for h in history]
    steps = [r["step"] for r in rows]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=steps, y=[r["loss"] for r in rows], mode="lines", name="training loss (MSE)",
                             line=dict(color="#d1495b")), secondary_y=False)
    r2 = [r.get("r2_test") for r in rows]
    if any(v is not None for v in r2):
        fig.add_trace(go.Scatter(x=steps, y=r2, mode="lines", name="held-out R²", line=dict(color="#00798c")),
                      secondary_y=True)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="training loss", type="log", secondary_y=False)
    fig.update_yaxes(title_text="held-out R²", secondary_y=True)
    if reported_step is None and rows and rows[-1].get("best_step") is not None:
        reported_step = rows[-1]["best_step"]
    last = f": step {steps[-1]}, R² {r2[-1]:.3f}" if rows and r2[-1] is not None else ""
    if reported_step is not None and rows:
        at = min(rows, key=lambda r: abs(r["step"] - reported_step))
        shown = f", R² {at['r2_test']:.3f}" if at.get("r2_test") is not None else ""
        last += f"; reported: step {reported_step}{shown} (lowest held-out loss)"
        fig.add_vline(x=reported_step, line=dict(color="#30638e", dash="dash", width=1))
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=50, b=10), title=f"Gradient descent{last}",
                      legend=dict(orientation="h", y=-0.25))
    return fig


def per_dim_error(per_dim_mse: Sequence[float], top: int = 8) -> go.Figure:
    """Held-out squared error per target dimension, sorted from worst; the `top` worst named (on
    their bars when there is room, and always in the subtitle)."""
    mse = np.asarray(per_dim_mse, dtype=np.float64)
    order = np.argsort(-mse, kind="stable")
    named = min(top, len(mse))
    fig = go.Figure(go.Bar(
        x=np.arange(len(mse)), y=mse[order], customdata=order, marker_color="#30638e",
        text=[f"dim {d}" if i < named else "" for i, d in enumerate(order)], textposition="outside",
        hovertemplate="dim %{customdata}: %{y:.4g}<extra></extra>", name="held-out MSE",
    ))
    fig.update_xaxes(title_text="target dimensions, sorted by error", showticklabels=False)
    fig.update_yaxes(title_text="held-out squared error")
    share = mse[order[:named]].sum() / max(mse.sum(), 1e-30)
    worst = ", ".join(f"{d} ({mse[d]:.3g})" for d in order[:named])
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=70, b=10), bargap=0.05,
                      title=f"Error per target dimension: the worst {named} of {len(mse)} hold {share:.0%} of it"
                            f"<br><sup>worst dims: {worst}</sup>")
    return fig


def transfer_table(result, explained: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per way of carrying the source probe (`result.transfer["details"]` of a
    `BetweenResult`): held-out accuracy scored uncentred (the paper's), centred and with the
    carried intercept (with its 95% interval), the cosine with the target's own probe, and one line
    on what it is; the last row is the null (random directions, their 95th percentile)."""
    from repmap_core.analysis.between import TRANSFER_EXPLAINED

    explained = explained or TRANSFER_EXPLAINED
    rows = [{"mode": mode, "uncentred": d["uncentered"], "centred": d["centered"], "with intercept": d["with_intercept"],
             "with intercept, 95% interval": f"[{d['with_intercept_low']:.3f}, {d['with_intercept_high']:.3f}]"
             if "with_intercept_low" in d else "–",
             "cosine with target probe": d["cosine_with_target_probe"], "what it is": explained.get(mode, "")}
            for mode, d in result.transfer.get("details", {}).items()]
    return pd.DataFrame(rows, columns=TRANSFER_COLUMNS)


def similarity_table(sim: SimilarityMatrix) -> pd.DataFrame:
    """The matrix as a table: rows `source L`, columns `target L` (for CSV export)."""
    return pd.DataFrame(sim.values, index=[f"source {a}" for a in sim.layers_a],
                        columns=[f"target {b}" for b in sim.layers_b]).rename_axis(sim.metric)
