"""Figures and tables for steering vectors (no streamlit).

Rimsky et al.'s three comparisons of two models' CAA vectors (base vs chat):
- `cosine_by_layer`: the cosine of the two models' vectors at each layer (plot 1);
- `layer_cosine_heatmaps`: each model's layer x layer cosines, one panel per model (plot 2);
- `vector_pca_plot`: a 2-D PCA of the normalised per-layer vectors, a line per model (plot 3).
`rimsky_figures` decides which of them two models allow and draws them. Then `propensity_plot` (mean
propensity vs multiplier with its 95% band; native and transferred curves for LRT), `vector_norms`,
and what the page exports (`vector_table`, `cosines_table`, `agreement_table`, `preview_table`,
`curves_table`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from repmap_core.share.figures import layer_ticks, layer_tickvals, set_title
from repmap_core.steering import PropensityCurve, SteeringVector, cosine_per_layer, layer_cosines, vector_pca
from repmap_core.steering.apply import SCALE_UNITS

MODEL_COLORS = ("#00798c", "#d1495b", "#edae49", "#30638e", "#66a182", "#8d96a3")
CURVE_COLORS = {"native": "#00798c", "transferred": "#d1495b", "vector": "#00798c", "random direction": "#8d96a3"}
CELL_TEXT_MAX_LAYERS = 24  # above this many layers the values are in the hover only: cells get too small to read


def _color(i: int) -> str:
    return MODEL_COLORS[i % len(MODEL_COLORS)]


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[k:k + 2], 16) for k in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def cosine_by_layer(per_layer: dict[int, float], names: tuple[str, str] = ("base", "chat")) -> go.Figure:
    """Rimsky plot 1: cosine of model `names[0]`'s and `names[1]`'s vectors at each layer
    (`per_layer`: layer -> cosine, from `cosine_per_layer`), on the full range -1..1."""
    layers = sorted(per_layer)
    values = [float(per_layer[L]) for L in layers]
    fig = go.Figure(go.Scatter(x=layers, y=values, mode="lines+markers", name="cosine", line=dict(color=_color(0)),
                               hovertemplate="layer %{x}: cosine %{y:.3f}<extra></extra>"))
    fig.add_hline(y=0, line=dict(color="#8d96a3", width=1, dash="dot"))
    fig.update_xaxes(title_text="layer", **layer_ticks(layers))
    fig.update_yaxes(title_text="cosine", range=[-1.05, 1.05])
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=60, b=10), showlegend=False,
                      title=f"Cosine of {names[0]}'s and {names[1]}'s vectors at each layer")
    return fig


def layer_cosine_heatmaps(groups: dict[str, tuple[list[int], np.ndarray]]) -> go.Figure:
    """Rimsky plot 2: one layer x layer cosine heatmap per model (`groups`: name -> (layers,
    (L, L) matrix) from `layer_cosines`), as panels of one figure on one colour scale -1..1
    (red negative, blue positive), each cell labelled with its value when there are at most
    `CELL_TEXT_MAX_LAYERS` layers."""
    names = list(groups)
    fig = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=names, horizontal_spacing=0.08)
    biggest = 1
    for i, name in enumerate(names):
        layers, C = groups[name]
        C = np.asarray(C, dtype=np.float64)  # (L, L)
        biggest = max(biggest, len(layers))
        show = len(layers) <= CELL_TEXT_MAX_LAYERS
        fig.add_trace(go.Heatmap(
            z=C, x=list(layers), y=list(layers), coloraxis="coloraxis", name=name,
            text=np.vectorize(lambda v: f"{v:.2f}")(C) if show else None, texttemplate="%{text}" if show else None,
            hovertemplate=f"{name}<br>layer %{{y}} · layer %{{x}}<br>cosine %{{z:.3f}}<extra></extra>",
        ), row=1, col=i + 1)
        axis = "" if i == 0 else str(i + 1)
        fig.update_xaxes(title_text="layer", tickmode="array", tickvals=layer_tickvals(layers), constrain="domain",
                         row=1, col=i + 1)
        # square cells, layer 0 at the top (a matrix, read like the table it exports to)
        fig.update_yaxes(title_text="layer" if i == 0 else None, tickmode="array", tickvals=layer_tickvals(layers),
                         autorange="reversed", scaleanchor=f"x{axis}", constrain="domain", row=1, col=i + 1)
    fig.update_layout(coloraxis=dict(colorscale="RdBu", cmin=-1, cmax=1, colorbar=dict(title=dict(text="cosine"))),
                      height=min(760, max(460, 34 * biggest + 220)), margin=dict(l=10, r=10, t=70, b=10),
                      title="Cosine between the vectors of every pair of layers, per model")
    return fig


def vector_pca_plot(coords: dict[str, tuple[list[int], np.ndarray]], shared_axes: bool = True) -> go.Figure:
    """Rimsky plot 3: the 2-D PCA of the normalised per-layer vectors (`coords`: name -> (layers,
    (L, 2)) from `vector_pca`), each model a line through its layers in order with the layer
    number at each point. `shared_axes=False` (models of different widths, each PCA'd alone)
    draws one panel per model, since their axes are not comparable."""
    names = list(coords)
    cols = 1 if shared_axes else max(1, len(names))
    titles = None if shared_axes else [f"{n} (its own PCA)" for n in names]
    fig = make_subplots(rows=1, cols=cols, subplot_titles=titles, horizontal_spacing=0.08)
    for i, name in enumerate(names):
        layers, xy = coords[name]
        xy = np.asarray(xy, dtype=np.float64)  # (L, 2)
        fig.add_trace(go.Scatter(
            x=xy[:, 0], y=xy[:, 1], mode="lines+markers+text", name=name, text=[str(L) for L in layers],
            textposition="top center", line=dict(color=_color(i)), marker=dict(size=7), textfont=dict(color=_color(i)),
            hovertemplate=f"{name}<br>layer %{{text}}<br>PC1 %{{x:.3f}} · PC2 %{{y:.3f}}<extra></extra>",
        ), row=1, col=1 if shared_axes else i + 1)
    fig.update_xaxes(title_text="PC 1", zeroline=False)
    fig.update_yaxes(title_text="PC 2", zeroline=False)
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=60, b=10),
                      legend=dict(orientation="h", y=-0.2, x=0.5, xanchor="center"),
                      title="2-D PCA of the normalised per-layer vectors" + ("" if shared_axes else ", each model alone"))
    return fig


def alpha_title(scale: str) -> str:
    """The α axis's title: what one unit of α adds under `scale`."""
    return f"multiplier α ({SCALE_UNITS[scale]})" if scale in SCALE_UNITS and scale != "raw" else "multiplier α"


def propensity_plot(curves: dict[str, PropensityCurve], title: str = "Propensity against the multiplier",
                    chars: int = 60) -> go.Figure:
    """Mean propensity (logit of the matching letter minus the other's, on held-out questions)
    against the multiplier α, one line per curve (e.g. "native", "transferred") with its 95%
    band (a bootstrap over questions: both letter orders of a question resample together) as a
    filled area, and a zero line (no preference)."""
    fig = go.Figure()
    for i, (name, c) in enumerate(curves.items()):
        color = CURVE_COLORS.get(name, _color(i))
        x = np.asarray(c.alphas, dtype=np.float64)
        fig.add_trace(go.Scatter(
            x=np.r_[x, x[::-1]], y=np.r_[np.asarray(c.high), np.asarray(c.low)[::-1]], fill="toself", mode="lines",
            line=dict(width=0), fillcolor=_rgba(color, 0.18), hoverinfo="skip", name=f"{name} 95% band",
            legendgroup=name, showlegend=False))
        fig.add_trace(go.Scatter(
            x=x, y=c.mean, mode="lines+markers", name=f"{name} (layer {c.layer}, {c.n_groups} questions)",
            legendgroup=name, line=dict(color=color), customdata=np.asarray(c.agreement),
            hovertemplate="α %{x:+g}: propensity %{y:+.3f}<br>matching letter wins %{customdata:.0%}<extra></extra>"))
    fig.add_hline(y=0, line=dict(color="#8d96a3", width=1, dash="dot"))
    fig.update_xaxes(title_text=alpha_title(next(iter(curves.values())).scale if curves else "raw"))
    fig.update_yaxes(title_text="logit(matching) − logit(other)")
    fig.update_layout(height=380, margin=dict(l=10, r=10, b=10), legend=dict(orientation="h", y=-0.22, x=0.5, xanchor="center"))
    return set_title(fig, title, chars)


def vector_norms(vectors: dict[str, dict[int, SteeringVector]]) -> go.Figure:
    """The norm of each layer's vector, one line per model (residual streams grow with depth, so a
    multiplier means more in early layers)."""
    fig = go.Figure()
    for i, (name, vecs) in enumerate(vectors.items()):
        layers = sorted(vecs)
        fig.add_trace(go.Scatter(x=layers, y=[vecs[L].norm for L in layers], mode="lines+markers", name=name,
                                 line=dict(color=_color(i)), hovertemplate=f"{name}<br>layer %{{x}}: norm %{{y:.3g}}<extra></extra>"))
    fig.update_xaxes(title_text="layer", **layer_ticks(set().union(*vectors.values())))
    fig.update_yaxes(title_text="‖v‖", rangemode="tozero")
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=50, b=10), title="Vector norm per layer",
                      legend=dict(orientation="h", y=-0.3, x=0.5, xanchor="center"))
    return fig


def vector_table(vectors: dict[str, dict[int, SteeringVector]]) -> pd.DataFrame:
    """One row per layer: each model's vector norm and the number of A/B pairs it was made from."""
    layers = sorted(set().union(*[set(v) for v in vectors.values()])) if vectors else []
    rows = []
    for L in layers:
        row: dict = {"layer": L}
        for name, vecs in vectors.items():
            row[f"{name} norm"] = vecs[L].norm if L in vecs else math.nan
            row[f"{name} pairs"] = vecs[L].count if L in vecs else None
        rows.append(row)
    return pd.DataFrame(rows).set_index("layer") if rows else pd.DataFrame()


def cosines_table(groups: dict[str, tuple[list[int], np.ndarray]], per_layer: dict[int, float] | None = None,
                  names: tuple[str, str] | None = None) -> pd.DataFrame:
    """Every cosine the page draws, long form (`comparison, layer_a, layer_b, cosine`): each
    model's layer x layer matrix, then the two models' vectors at the same layer when given."""
    rows = [{"comparison": name, "layer_a": a, "layer_b": b, "cosine": float(C[i, j])}
            for name, (layers, C) in groups.items() for i, a in enumerate(layers) for j, b in enumerate(layers)]
    if per_layer:
        label = f"{names[0]} vs {names[1]}" if names else "A vs B"
        rows += [{"comparison": label, "layer_a": L, "layer_b": L, "cosine": float(c)} for L, c in sorted(per_layer.items())]
    return pd.DataFrame(rows, columns=["comparison", "layer_a", "layer_b", "cosine"])


def agreement_table(curve: PropensityCurve, random: PropensityCurve | None = None,
                    side_effect: dict | None = None) -> pd.DataFrame:
    """Per multiplier: mean propensity with its 95% interval, agreement (the share of prompts whose
    matching letter wins) with its interval (both over questions), the random direction's
    propensity, and the side effect (`side_effect`: α -> Estimate of the loss change on neutral text)."""
    frame = pd.DataFrame({"multiplier": np.asarray(curve.alphas, dtype=np.float64), "propensity": curve.mean,
                          "propensity 95%": [f"[{lo:+.2f}, {hi:+.2f}]" for lo, hi in zip(curve.low, curve.high)],
                          "agreement": curve.agreement})
    if len(curve.agreement_low):
        frame["agreement 95%"] = [f"[{lo:.0%}, {hi:.0%}]" for lo, hi in zip(curve.agreement_low, curve.agreement_high)]
    if random is not None:
        frame["random direction"] = random.mean
        frame["random 95%"] = [f"[{lo:+.2f}, {hi:+.2f}]" for lo, hi in zip(random.low, random.high)]
    if side_effect:
        est = [side_effect.get(float(a)) for a in curve.alphas]
        frame["Δ loss (nats)"] = [np.nan if e is None else e.value for e in est]
        frame["Δ loss 95%"] = ["" if e is None else f"[{e.low:+.2f}, {e.high:+.2f}]" for e in est]
    return frame


def side_effect_plot(side: dict, title: str = "Side effect: next-token loss on neutral text", scale: str = "raw",
                     delta: dict | None = None, chars: int = 40) -> go.Figure:
    """The change in mean next-token loss (nats per token) on neutral sentences at each multiplier,
    against the unsteered loss (`side["base"]`), with its 95% interval over texts when `delta`
    (α -> Estimate) is given: how much steering costs the model's ordinary language."""
    alphas = sorted(k for k in side if k != "base")
    y = [side[a] - side["base"] for a in alphas]
    error = None
    if delta and all(a in delta for a in alphas):
        y = [delta[a].value for a in alphas]
        error = dict(type="data", symmetric=False, array=[delta[a].high - delta[a].value for a in alphas],
                     arrayminus=[delta[a].value - delta[a].low for a in alphas], color=_color(1), thickness=1)
    fig = go.Figure(go.Scatter(x=alphas, y=y, mode="lines+markers", line=dict(color=_color(1)), name="Δ loss",
                               error_y=error, hovertemplate="α %{x:+g}: %{y:+.3f} nats per token<extra></extra>"))
    fig.add_hline(y=0, line=dict(color="#8d96a3", width=1, dash="dot"))
    fig.update_xaxes(title_text=alpha_title(scale))
    fig.update_yaxes(title_text="Δ loss (nats/token)", tickformat=".2f")
    fig.update_layout(height=320, margin=dict(l=10, r=10, b=10), showlegend=False)
    # in a narrow column (two fifths of the page): wrapped, the unsteered loss on a line of its own
    return set_title(fig, f"{title}<br><sup>unsteered: {side['base']:.2f} nats per token; 95% over texts</sup>", chars)


def preview_table(prompts: list[str], plain: list[str], steered: list[str], alpha: float, tail: int = 160) -> pd.DataFrame:
    """Generations side by side: each prompt's end (its last `tail` characters), the continuation
    without steering and with steering at multiplier `alpha`."""
    return pd.DataFrame({"question (its end)": ["…" + q[-tail:] if len(q) > tail else q for q in prompts],
                         "without steering": list(plain), f"with α = {alpha:+g}": list(steered)})


def lrt_numbers(cmp: dict) -> dict[str, str]:
    """LRT's numbers as the page, the report and the presets show them (`cmp`: `steering.lrt_comparison`): r with
    its interval and null only where the target's own vector steers, else the sentence saying why not; the
    carried vector's slope as a share of the native one's; each slope beyond a random direction."""
    def est(e: dict | None, digits: int = 2) -> str:
        if not e or e.get("value") is None:
            return "–"
        lo, hi = e.get("low"), e.get("high")
        bounds = "" if lo is None or hi is None else f" [{lo:+.{digits}f}, {hi:+.{digits}f}]"
        return f"{e['value']:+.{digits}f}{bounds}"

    out = {}
    if cmp.get("pearson_r") is None:
        out["Pearson r, native vs carried"] = "undefined"
        out["why r is undefined"] = cmp.get("r_undefined", "r is undefined here: one of the curves is flat.")
    else:
        lo, hi = cmp.get("pearson_r_interval") or (float("nan"), float("nan"))
        null = cmp.get("null_pearson_r")
        out["Pearson r, native vs carried"] = f"{cmp['pearson_r']:.2f} [{lo:.2f}, {hi:.2f}]"
        out["  null: native vs a random direction"] = "–" if null is None or not math.isfinite(null) else f"{null:.2f}"
        out["Slope ratio, carried / native"] = est(cmp.get("slope_ratio"))
    out["Native slope (per unit α)"] = est(cmp.get("native_slope"))
    out["Carried slope (per unit α)"] = est(cmp.get("transferred_slope"))
    out["Carried minus random direction"] = est(cmp.get("transferred_minus_random"))
    out["MSE, native vs carried"] = f"{cmp['mse']:.3g}"
    return out


def curves_table(curves: dict[str, PropensityCurve]) -> pd.DataFrame:
    """Propensity curves, one row per (curve, multiplier), for CSV export."""
    rows = [{"curve": name, "layer": c.layer, "multiplier": float(a), "scale": c.scale, "mean": float(m), "low_95": float(lo),
             "high_95": float(hi), "agreement": float(ag), "n_questions": c.n_questions}
            for name, c in curves.items() for a, m, lo, hi, ag in zip(c.alphas, c.mean, c.low, c.high, c.agreement)]
    return pd.DataFrame(rows, columns=["curve", "layer", "multiplier", "scale", "mean", "low_95", "high_95", "agreement",
                                       "n_questions"])


@dataclass(frozen=True, eq=False)
class RimskyFigures:
    """Rimsky's three plots for one or two models, with a sentence wherever a plot is not drawn
    (or drawn differently) and every cosine as a table (for CSV export)."""

    cosine_by_layer: go.Figure | None  # None: one model, or two of different width or depth
    cosine_note: str | None  # why plot 1 is not drawn
    heatmaps: go.Figure
    pca: go.Figure | None  # None: fewer than two layers per model
    pca_note: str | None  # each model PCA'd alone (different widths), or why no PCA
    cosines: pd.DataFrame


def rimsky_figures(vectors: dict[str, dict[int, SteeringVector]], shapes: dict[str, tuple[int, int]]) -> RimskyFigures:
    """Rimsky's comparisons of one or two models' vectors (`vectors`: name -> layer -> vector;
    `shapes`: name -> (width, layer count)). Plot 1 needs two models of one width and depth;
    plot 3 shares PCA axes when the widths match and gives each model its own panel otherwise."""
    names = list(vectors)
    groups = {n: layer_cosines(vectors[n]) for n in names}
    per_layer, pair, note = None, None, None
    if len(names) == 2 and shapes[names[0]] == shapes[names[1]]:
        pair = (names[0], names[1])
        per_layer = cosine_per_layer(vectors[names[0]], vectors[names[1]])
    elif len(names) == 2:
        (a, (da, na)), (b, (db, nb)) = ((n, shapes[n]) for n in names)
        note = (f"Cosine per layer is not drawn: {a} is {da} wide with {na} layers and {b} {db} wide with {nb}; "
                "it needs one width and one layer count.")
    else:
        note = "Cosine per layer is not drawn: it compares two models' vectors; choose a model B (e.g. the chat version)."
    pca, pca_note = None, None
    if min(len(v) for v in vectors.values()) < 2:
        pca_note = "The PCA of the per-layer vectors needs at least two layers per model."
    elif len({shapes[n][0] for n in names}) == 1:
        pca = vector_pca_plot(vector_pca(vectors))
    else:
        pca = vector_pca_plot({n: vector_pca({n: vectors[n]})[n] for n in names}, shared_axes=False)
        pca_note = "The models have different widths, so their vectors cannot share PCA axes: each is projected alone."
    return RimskyFigures(cosine_by_layer(per_layer, pair) if per_layer else None, note, layer_cosine_heatmaps(groups),
                         pca, pca_note, cosines_table(groups, per_layer, pair))


def sentiment_plot(sweep) -> go.Figure:
    """Judged P(positive) of the continuations against α, the vector and a random direction, each
    with its 95% interval over openings (a `SentimentSweep`)."""
    fig = go.Figure()
    for which, name in (("vector", "vector"), ("random", "random direction")):
        mean, low, high = sweep.mean_interval(which)
        color = CURVE_COLORS[name]
        x = np.asarray(sweep.alphas, np.float64)
        fig.add_trace(go.Scatter(x=np.r_[x, x[::-1]], y=np.r_[high, low[::-1]], fill="toself", mode="lines",
                                 line=dict(width=0), fillcolor=_rgba(color, 0.18), hoverinfo="skip", showlegend=False,
                                 legendgroup=name))
        fig.add_trace(go.Scatter(x=x, y=mean, mode="lines+markers", name=name, legendgroup=name, line=dict(color=color),
                                 hovertemplate="α %{x:+g}: judged positive %{y:.0%}<extra></extra>"))
    fig.add_hline(y=0.5, line=dict(color="#8d96a3", width=1, dash="dot"))
    fig.update_xaxes(title_text=alpha_title(sweep.scale))
    fig.update_yaxes(title_text="judged P(positive)", range=[0, 1], tickformat=".0%")
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=60, b=10), legend=dict(orientation="h", y=-0.25, x=0.5,
                      xanchor="center"), title=f"Layer {sweep.layer}: sentiment of {sweep.positive.shape[1]} continuations")
    return fig


def sentiment_examples(sweep, openings, n: int = 4) -> pd.DataFrame:
    """A few openings with their continuations at the lowest, zero and highest multiplier."""
    alphas = list(np.asarray(sweep.alphas, np.float64))
    cols = [alphas.index(min(alphas)), int(np.argmin(np.abs(alphas))), alphas.index(max(alphas))]
    return pd.DataFrame({"opening": list(openings[:n]),
                         **{f"α = {alphas[k]:+g}": [sweep.texts[k][i] for i in range(n)] for k in cols}})
