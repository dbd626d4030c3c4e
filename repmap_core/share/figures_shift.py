"""Plotly figures for finetuning shift (no streamlit): before/after on shared axes, arrows,
small multiples across layers (Gao et al. Fig. 3), separation before vs after, the live fit."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from repmap_core.analysis.separation import LayerSeparation
from repmap_core.share.figures import LABEL_COLORS, METHOD_NAMES, WEBGL_ABOVE, hover_texts, layer_ticks

PHASES = {"before": dict(symbol="circle-open", opacity=0.55), "after": dict(symbol="circle", opacity=0.85)}


def _points(fig, xy, labels, hover, phase, row=None, col=None, show_legend=True):
    scatter = go.Scattergl if len(labels) > WEBGL_ABOVE else go.Scatter
    for cls in (0, 1):
        sel = np.flatnonzero(labels == cls)
        fig.add_trace(scatter(
            x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=f"{phase} · label {cls}", legendgroup=f"{phase}{cls}",
            showlegend=show_legend, marker=dict(size=6, color=LABEL_COLORS[cls], **PHASES[phase]),
            text=[hover[j] for j in sel], customdata=sel,
            hovertemplate="%{text}<br><i>row %{customdata}, " + phase + "</i><extra></extra>"), row=row, col=col)


def shift_scatter(before_xy: np.ndarray, after_xy: np.ndarray, labels: np.ndarray, texts: Sequence[str], *,
                  arrows: int = 300, seed: int = 0, title: str = "", axis_titles: tuple[str, str] | None = None
                  ) -> go.Figure:
    """Each row before (open) and after (filled) finetuning on shared axes, with a line from its
    before to its after position for a seeded sample of at most `arrows` rows. With `axis_titles`
    (custom axes: coordinates in activation units) the axes are named and keep their ticks."""
    labels = np.asarray(labels)
    hover = hover_texts(texts)
    fig = go.Figure()
    rows = np.arange(len(labels))
    if len(rows) > arrows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, arrows, replace=False))
    for cls in (0, 1):
        sel = rows[labels[rows] == cls]
        x = np.stack([before_xy[sel, 0], after_xy[sel, 0], np.full(len(sel), np.nan)], 1).ravel()
        y = np.stack([before_xy[sel, 1], after_xy[sel, 1], np.full(len(sel), np.nan)], 1).ravel()
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(width=0.6, color=LABEL_COLORS[cls]), opacity=0.35,
                                 hoverinfo="skip", name=f"moves · label {cls}", legendgroup=f"moves{cls}"))
    _points(fig, before_xy, labels, hover, "before")
    _points(fig, after_xy, labels, hover, "after")
    shown = f" (lines for {len(rows)} of {len(labels)} rows)" if len(rows) < len(labels) else ""
    fig.update_layout(height=520, title=title + shown, margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.05, yanchor="top"))
    if axis_titles:
        fig.update_xaxes(title_text=axis_titles[0], zeroline=True)
        fig.update_yaxes(title_text=axis_titles[1], zeroline=True)
        fig.update_layout(legend=dict(orientation="h", y=-0.15, yanchor="top"), margin=dict(l=10, r=10, t=50, b=40))
    else:
        fig.update_xaxes(showticklabels=False, zeroline=False)
        fig.update_yaxes(showticklabels=False, zeroline=False)
    return fig


def shift_grid(coords: dict[int, tuple[np.ndarray, np.ndarray]], labels: np.ndarray, texts: Sequence[str], *,
               method: str = "pca", columns: int = 4) -> go.Figure:
    """Gao et al. Fig. 3: for each layer, before (open) and after (filled) on that layer's shared axes."""
    layers = sorted(coords)
    labels = np.asarray(labels)
    hover = hover_texts(texts)
    cols = max(1, min(columns, len(layers)))
    nrows = math.ceil(len(layers) / cols)
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=[f"layer {L}" for L in layers],
                        horizontal_spacing=0.03, vertical_spacing=0.1)
    for i, layer in enumerate(layers):
        before_xy, after_xy = coords[layer]
        r, c = i // cols + 1, i % cols + 1
        _points(fig, before_xy, labels, hover, "before", r, c, show_legend=i == 0)
        _points(fig, after_xy, labels, hover, "after", r, c, show_legend=i == 0)
    fig.update_xaxes(showticklabels=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, zeroline=False)
    fig.update_layout(height=max(340, 300 * nrows + 40), margin=dict(l=10, r=10, t=60, b=40),
                      title=f"{METHOD_NAMES.get(method, method)} before and after finetuning, per layer (shared axes)"
                      if method != "custom" else "Custom axes before and after finetuning, per layer (each layer's own "
                                                 "directions)",
                      legend=dict(orientation="h", y=0, yanchor="top", x=0.5, xanchor="center"))
    return fig


def separation_compare(base: list[LayerSeparation], finetuned: list[LayerSeparation]) -> go.Figure:
    """Cross-validated probe accuracy and Fisher ratio per layer, base vs finetuned, one plot each."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], subplot_titles=("linear probe accuracy (cv)", "Fisher ratio"))
    for rows, name, dash in ((base, "base", "dot"), (finetuned, "finetuned", "solid")):
        layers = [r.layer for r in rows]
        fig.add_trace(go.Scatter(x=layers, y=[r.probe_cv_acc for r in rows], mode="lines+markers", name=name,
                                 legendgroup=name, line=dict(color="#30638e", dash=dash),
                                 error_y=dict(type="data", array=[r.probe_cv_std for r in rows], thickness=1)), row=1, col=1)
        fig.add_trace(go.Scatter(x=layers, y=[r.fisher for r in rows], mode="lines+markers", name=name, legendgroup=name,
                                 showlegend=False, line=dict(color="#66a182", dash=dash)), row=1, col=2)
    fig.update_xaxes(title_text="layer", **layer_ticks([r.layer for r in base]))
    fig.update_yaxes(title_text="accuracy", row=1, col=1)
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=-0.25))
    return fig


def live_fit(points: list[dict]) -> go.Figure:
    """Loss, held-out R² and δ accuracy (uncentred and centred) against GD step, with the step whose
    parameters the fit reports (`best_step`: the lowest loss on held-out training rows) marked and
    named in the title."""
    steps = [p["step"] for p in points]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "held-out R² and δ accuracy"))
    fig.add_trace(go.Scatter(x=steps, y=[p["loss"] for p in points], mode="lines", name="loss",
                             line=dict(color="#d1495b")), row=1, col=1)
    for key, name, color in (("r2_test", "R² (held-out)", "#30638e"), ("delta_accuracy", "sign(λ̃·δ) acc", "#edae49"),
                             ("delta_accuracy_centered", "sign((λ̃−μ)·δ) acc", "#66a182")):
        fig.add_trace(go.Scatter(x=steps, y=[p[key] for p in points], mode="lines", name=name, line=dict(color=color)),
                      row=1, col=2)
    title = None
    best = points[-1].get("best_step") if points else None
    if best:
        at = min(points, key=lambda p: abs(p["step"] - best))
        title = (f"Step {steps[-1]}; reported: step {best} (lowest held-out loss), held-out R² {at['r2_test']:.3f} "
                 f"there, {points[-1]['r2_test']:.3f} now")
        for col in (1, 2):
            fig.add_vline(x=best, line=dict(color="#30638e", dash="dash", width=1), row=1, col=col)
    fig.update_yaxes(type="log", dtick=1, row=1, col=1)  # decades only: minor log ticks clutter
    fig.update_yaxes(range=[min(0.0, min((p["r2_test"] for p in points), default=0.0)), 1.02], row=1, col=2)
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=60 if title else 50, b=10), title=title,
                      legend=dict(orientation="h", y=-0.3))
    return fig
