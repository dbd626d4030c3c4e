"""Plotly figures (no streamlit): the app draws them, exports and reports reuse them.

Small multiples are subplots of one figure (browsers allow only ~8 WebGL contexts per page);
WebGL traces are used above 1,000 points, SVG below.
"""
from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from repmap_core.analysis.separation import LayerSeparation, best_layer

LABEL_COLORS = {0: "#d1495b", 1: "#00798c"}
METHOD_NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP", "pca_std": "PCA (standardised)"}
WEBGL_ABOVE = 1000


def hover_texts(texts: Sequence[str], width: int = 60, max_chars: int = 240) -> list[str]:
    """Texts shortened and wrapped for hover boxes (HTML line breaks)."""
    out = []
    for t in texts:
        t = " ".join(str(t).split())
        t = t if len(t) <= max_chars else t[: max_chars - 1] + "…"
        # data text is shown as text: "<b>" in a review must not become bold
        out.append("<br>".join(html.escape(line) for line in textwrap.wrap(t, width)) or "(empty)")
    return out


def layer_ticks(layers: Sequence[int], max_ticks: int = 16) -> dict:
    """A layer axis's settings: a tick every 1, 2, 5 or 10 layers (at most `max_ticks` ticks: fewer on a narrow
    subplot, whose labels otherwise run into each other) from the first layer to the last, and no padding past
    them (SmolLM2's 0-29 ticked every integer from -1 to 31)."""
    ls = sorted({int(L) for L in layers})
    if not ls:
        return {}
    step = next((s for s in (1, 2, 5, 10, 20, 50, 100) if (ls[-1] - ls[0]) / s <= max_ticks), 200)
    return dict(tickmode="linear", tick0=0, dtick=step, range=[ls[0] - 0.5, ls[-1] + 0.5])


def layer_tickvals(layers: Sequence[int]) -> list[int]:
    """The layers a categorical layer axis (a heatmap's) labels: every one, or every 2nd, 5th... as `layer_ticks`."""
    ls = sorted({int(L) for L in layers})
    step = layer_ticks(ls).get("dtick", 1)
    return [L for L in ls if L % step == 0] or ls


def wrap_title(text: str, chars: int = 70) -> tuple[str, int]:
    """`text` broken into lines of at most `chars` characters (plotly never wraps a title: one too long for its
    figure was cut, "… (unsteered:"), and how many lines it has. Existing `<br>` breaks are kept."""
    lines = []
    for part in text.split("<br>"):
        if part.startswith("<sup>") or len(part) <= chars:
            lines.append(part)
        else:
            lines += textwrap.wrap(part, chars, break_on_hyphens=False)
    return "<br>".join(lines), len(lines)


def set_title(fig: go.Figure, text: str, chars: int = 70) -> go.Figure:
    """Give `fig` the title `text` wrapped to `chars` a line, with the top margin its lines need."""
    wrapped, lines = wrap_title(text, chars)
    fig.update_layout(title=dict(text=wrapped), margin_t=30 + 24 * lines)
    return fig


TABLE_LINE_PX, TABLE_PAD_PX = 19, 12  # a table cell's line of 12-px text, and its padding


def table_figure(frame, title: str, width_chars: int = 120) -> go.Figure:
    """A table as a figure that shows every row: each cell's text wrapped to its column (widths by content,
    `width_chars` characters across in all: a 900-px figure, narrower than the app's and the report's) and the
    figure as tall as its wrapped rows, with room to spare. A fixed height showed 2 of the tour's 7 transfer rows,
    the rest scrolled out of sight inside the figure."""
    def cell(v) -> str:
        return f"{v:.3f}" if isinstance(v, (float, np.floating)) else "" if v is None else str(v)

    columns = [str(c) for c in frame.columns]
    texts = [[cell(v) for v in frame[c]] for c in frame.columns]
    weights = [min(max([len(h)] + [len(t) for t in col]), 48) + 3 for h, col in zip(columns, texts)]  # + the padding
    widths = [max(8, int(width_chars * w / sum(weights)) - 3) for w in weights]

    def wrap(text: str, width: int) -> str:
        return "<br>".join(html.escape(line) for part in text.split("\n") for line in textwrap.wrap(part, width) or [""])

    header = [wrap(h, w) for h, w in zip(columns, widths)]
    cells = [[wrap(t, w) for t in col] for col, w in zip(texts, widths)]
    lines = [max(col[i].count("<br>") + 1 for col in cells) for i in range(len(frame))]
    head_lines = max(h.count("<br>") + 1 for h in header)
    fig = go.Figure(go.Table(columnwidth=widths, header=dict(values=header, align="left", fill_color="#f3f6f7",
                                                             height=head_lines * TABLE_LINE_PX + TABLE_PAD_PX),
                             cells=dict(values=cells, align="left", height=TABLE_LINE_PX + TABLE_PAD_PX)))
    body = head_lines * TABLE_LINE_PX + TABLE_PAD_PX + sum(n * TABLE_LINE_PX + TABLE_PAD_PX for n in lines)
    fig.update_layout(height=int(body * 1.1) + 90, margin=dict(l=10, r=10, t=50, b=20), title=title)
    return fig


def layer_grid(coords: dict[int, np.ndarray], labels: np.ndarray, texts: Sequence[str] | None = None, *,
               method: str = "pca", label_names: dict[int, str] | None = None, columns: int = 3,
               title: str | None = None) -> go.Figure:
    """One scatter per layer (`coords[layer]` is `(n, 2)`), coloured by label, text on hover."""
    layers = sorted(coords)
    names = label_names or {0: "label 0", 1: "label 1"}
    cols = max(1, min(columns, len(layers)))
    rows = math.ceil(len(layers) / cols)
    height = max(340, 320 * rows + 60)
    # 70 px between rows: the axis titles under one row and the subplot titles over the next collided at 0.08
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"layer {L}" for L in layers],
                        horizontal_spacing=0.04, vertical_spacing=min(0.3, 70 / height) if rows > 1 else 0.1)
    labels = np.asarray(labels)
    hover = hover_texts(texts) if texts is not None else [f"row {i}" for i in range(len(labels))]
    scatter = go.Scattergl if len(labels) > WEBGL_ABOVE else go.Scatter
    for i, layer in enumerate(layers):
        xy = np.asarray(coords[layer])
        for cls in (0, 1):
            sel = np.flatnonzero(labels == cls)
            fig.add_trace(scatter(
                x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=names.get(cls, str(cls)),
                legendgroup=str(cls), showlegend=i == 0,
                marker=dict(size=5, color=LABEL_COLORS[cls], opacity=0.75),
                text=[hover[j] for j in sel], customdata=sel,
                hovertemplate="%{text}<br><i>row %{customdata}</i><extra>" + names.get(cls, str(cls)) + "</extra>",
            ), row=i // cols + 1, col=i % cols + 1)
    # standardised: every feature scaled to unit variance before the PCA (massive activations no longer decide it)
    axis = {"pca": "PC", "pca_std": "standardised PC", "tsne": "t-SNE", "umap": "UMAP", "axes": ""}.get(method, "")
    fig.update_xaxes(showticklabels=False, zeroline=False, title=dict(text=f"{axis} 1" if axis else "", font=dict(size=10),
                                                                      standoff=2))
    fig.update_yaxes(showticklabels=False, zeroline=False, title=dict(text=f"{axis} 2" if axis else "", font=dict(size=10),
                                                                      standoff=2))
    if method in ("pca", "pca_std", "axes"):  # distances mean something on these axes: one unit is as long across as up
        for i in range(len(layers)):
            fig.layout[f"yaxis{i + 1 if i else ''}"].update(scaleanchor=f"x{i + 1 if i else ''}", scaleratio=1)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=60, b=70),  # the legend under the bottom row's "PC 1"
                      title=title or f"{METHOD_NAMES.get(method, method)} of each layer, coloured by label",
                      legend=dict(orientation="h", y=-30 / height, yanchor="top", x=0.5, xanchor="center"))
    return fig


def separation_curve(rows: list[LayerSeparation], title: str | None = None) -> go.Figure:
    """Probe accuracy against depth (cross-validated with its 95% interval as a band, held-out, and
    the shuffled-label null: its mean as a grey line and a grey band up to its 95th percentile),
    silhouette and Fisher ratio, one panel each, best layer marked."""
    layers = [r.layer for r in rows]
    cv = np.array([r.probe_cv_acc for r in rows])
    low = np.array([r.probe_cv_low for r in rows], dtype=np.float64)
    high = np.array([r.probe_cv_high for r in rows], dtype=np.float64)
    if not np.isfinite(low).all():  # rows made before intervals existed: ±1 sd over folds
        sd = np.array([r.probe_cv_std for r in rows])
        low, high, band = cv - sd, cv + sd, "cv ± 1 sd"
    else:
        band = "cv 95% interval"
    fig = make_subplots(rows=1, cols=3, column_widths=[0.5, 0.25, 0.25], horizontal_spacing=0.07,
                        subplot_titles=("linear probe accuracy", "silhouette", "Fisher ratio"))
    null = np.array([r.null_acc for r in rows], dtype=np.float64)
    null_high = np.array([r.null_high for r in rows], dtype=np.float64)
    if np.isfinite(null).all():
        fig.add_trace(go.Scatter(x=layers + layers[::-1], y=list(null_high) + list(null[::-1]), fill="toself",
                                 mode="lines", fillcolor="rgba(120,120,120,0.18)", line=dict(width=0), hoverinfo="skip",
                                 name="shuffled-label null, 95th percentile", showlegend=False), row=1, col=1)
        fig.add_trace(go.Scatter(x=layers, y=null, mode="lines", name="shuffled-label null",
                                 line=dict(color="#7a7a7a", dash="dash"), customdata=null_high,
                                 hovertemplate="layer %{x}: null %{y:.3f} (95% ≤ %{customdata:.3f})<extra></extra>"),
                      row=1, col=1)
    fig.add_trace(go.Scatter(x=layers + layers[::-1], y=list(high) + list(low[::-1]), fill="toself", mode="lines",
                             fillcolor="rgba(0,121,140,0.15)", line=dict(width=0), hoverinfo="skip",
                             name=band, showlegend=False), row=1, col=1)
    fig.add_trace(go.Scatter(x=layers, y=cv, mode="lines+markers", name="probe (cross-validated)",
                             line=dict(color="#00798c"), customdata=np.stack([low, high], 1),
                             hovertemplate="layer %{x}: %{y:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}]"
                                           "<extra>cross-validated</extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=layers, y=[r.probe_test_acc for r in rows], mode="lines+markers",
                             name="probe (held-out 20%)", line=dict(color="#00798c", dash="dot")), row=1, col=1)
    fig.add_trace(go.Scatter(x=layers, y=[r.silhouette for r in rows], mode="lines+markers", name="silhouette",
                             line=dict(color="#edae49"), showlegend=False), row=1, col=2)
    fig.add_trace(go.Scatter(x=layers, y=[r.fisher for r in rows], mode="lines+markers", name="Fisher ratio",
                             line=dict(color="#66a182"), showlegend=False), row=1, col=3)
    best = best_layer(rows)
    fig.add_vline(x=best, line=dict(color="#30638e", dash="dash", width=1), row=1, col=1)
    # inside the plot's top edge, beside the line, clear of the subplot title
    fig.add_annotation(x=best, y=0.99, xref="x", yref="y domain", yanchor="top", xanchor="left", xshift=4,
                       showarrow=False, text=f"best: layer {best}", font=dict(color="#30638e"),
                       bgcolor="rgba(255,255,255,0.8)")
    fig.update_xaxes(title_text="layer", **layer_ticks(layers), row=1, col=1)
    for col in (2, 3):  # a quarter of the width each: SmolLM2's 30 layers every 2 ran together there
        fig.update_xaxes(title_text="layer", **layer_ticks(layers, max_ticks=7), row=1, col=col)
    floor = np.nanmin(np.concatenate([low, null[np.isfinite(null)]])) if len(low) else 0.45
    fig.update_yaxes(title_text="accuracy", range=[min(0.4, float(floor) - 0.02), 1.01], row=1, col=1)
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=60, b=10), title=title,
                      legend=dict(orientation="h", y=-0.25))
    return fig
