"""Tests for repmap_core.share.figures: the layer grid of scatters, the separation curve, hover texts."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from repmap_core.analysis.separation import LayerSeparation
from repmap_core.share.figures import LABEL_COLORS, WEBGL_ABOVE, hover_texts, layer_grid, separation_curve

# ---------------------------------------------------------------------------------------------
# helpers


def grid_inputs(n: int = 40, layers=(9, 0, 6, 3), seed: int = 0):
    """Coordinates per layer that encode (layer, row) so every point can be traced back."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]  # both classes present
    coords = {L: np.column_stack([np.arange(n) + 1000.0 * L, -np.arange(n) - 0.5 * L]) for L in layers}
    texts = [f"sentence number {i} " + "word " * (i % 7) for i in range(n)]
    return coords, labels, texts


def sep_row(layer: int, cv: float, test: float, sil: float, fisher: float, sd: float = 0.02) -> LayerSeparation:
    return LayerSeparation(layer=layer, probe_train_acc=min(1.0, cv + 0.05), probe_test_acc=test, probe_cv_acc=cv,
                           probe_cv_std=sd, silhouette=sil, fisher=fisher)


SEP_ROWS = [
    sep_row(0, 0.52, 0.50, 0.00, 0.01),
    sep_row(1, 0.71, 0.69, 0.03, 0.60),
    sep_row(2, 0.93, 0.91, 0.12, 3.10),
    sep_row(3, 0.88, 0.90, 0.10, 2.40),
]


# ---------------------------------------------------------------------------------------------
# hover_texts


def test_hover_texts_wraps_with_br():
    text = " ".join(f"w{i:02d}" for i in range(30))  # 30 words of 3 chars: 119 chars
    (out,) = hover_texts([text], width=20)
    lines = out.split("<br>")
    assert len(lines) > 1
    assert all(len(line) <= 20 for line in lines)
    assert " ".join(lines) == text  # nothing lost, only wrapped


def test_hover_texts_truncates_long_texts_with_ellipsis():
    text = "abcd " * 100  # 500 characters
    (out,) = hover_texts([text], width=60, max_chars=240)
    flat = out.replace("<br>", " ")
    assert flat.endswith("…")
    assert len(flat) == 240
    assert flat == " ".join(text.split())[:239] + "…"
    assert all(len(line) <= 60 for line in out.split("<br>"))


def test_hover_texts_short_blank_and_whitespace():
    assert hover_texts(["short one"]) == ["short one"]
    assert hover_texts(["  a\n\tb   c  "]) == ["a b c"]  # whitespace collapsed
    assert hover_texts(["", "   "]) == ["(empty)", "(empty)"]
    assert hover_texts([123]) == ["123"]
    exactly = "x" * 240
    assert hover_texts([exactly], width=1000) == [exactly]  # at the limit: not truncated
    assert hover_texts(["x" * 241], width=1000) == ["x" * 239 + "…"]


# ---------------------------------------------------------------------------------------------
# layer_grid


def test_layer_grid_traces_per_layer_and_class():
    coords, labels, texts = grid_inputs()
    fig = layer_grid(coords, labels, texts, label_names={0: "negative", 1: "positive"})
    assert len(fig.data) == 8
    assert all(isinstance(t, go.Scatter) for t in fig.data)  # 40 points: SVG
    assert all(t.mode == "markers" for t in fig.data)

    # one legend entry per class
    legend = [t for t in fig.data if t.showlegend]
    assert sorted(t.name for t in legend) == ["negative", "positive"]
    # colour and name follow the class, on every trace
    for t in fig.data:
        cls = int(labels[t.customdata[0]])  # the class of the trace's points
        assert np.all(labels[np.asarray(t.customdata)] == cls)
        assert t.name == ("negative", "positive")[cls]
        assert t.marker.color == LABEL_COLORS[cls]
        assert t.legendgroup == str(cls)
        assert ("positive" if cls else "negative") in t.hovertemplate
    assert [int(labels[t.customdata[0]]) for t in fig.data] == [0, 1] * 4
    assert LABEL_COLORS[0] != LABEL_COLORS[1]

    # subplot titles in layer order, whatever the dict order
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["layer 0", "layer 3", "layer 6", "layer 9"]


def test_layer_grid_points_map_back_to_rows_texts_and_layers():
    coords, labels, texts = grid_inputs()
    hover = hover_texts(texts)
    fig = layer_grid(coords, labels, texts)
    axis_of_layer = {}
    seen = {L: [] for L in coords}
    for t in fig.data:
        cls = 0 if t.name == "label 0" else 1
        rows = np.asarray(t.customdata)
        assert np.all(labels[rows] == cls)  # every point in the trace has the trace's class
        assert list(t.text) == [hover[j] for j in rows]
        # coordinates encode the layer and the row: x = row + 1000 * layer
        layer = int(round((np.asarray(t.x)[0] - rows[0]) / 1000))
        np.testing.assert_array_equal(np.asarray(t.x), coords[layer][rows, 0])
        np.testing.assert_array_equal(np.asarray(t.y), coords[layer][rows, 1])
        seen[layer].extend(rows.tolist())
        axis_of_layer.setdefault(layer, set()).add((t.xaxis, t.yaxis))
    for L in coords:
        assert sorted(seen[L]) == list(range(len(labels)))  # each row once per layer
    # both classes of a layer share one subplot; layers get distinct subplots, in order
    assert all(len(a) == 1 for a in axis_of_layer.values())
    xaxes = [next(iter(axis_of_layer[L]))[0] for L in sorted(coords)]
    assert xaxes == ["x", "x2", "x3", "x4"]


def test_layer_grid_hover_text_is_wrapped_and_truncated():
    coords, labels, _ = grid_inputs(n=6, layers=(1,))
    texts = ["short", "long " * 200, "a\nb", "", "mid " * 20, "x"]
    fig = layer_grid(coords, labels, texts)
    by_row = {}
    for t in fig.data:
        for j, txt in zip(t.customdata, t.text):
            by_row[int(j)] = txt
    assert by_row[0] == "short"
    assert by_row[1].endswith("…") and "<br>" in by_row[1] and len(by_row[1].replace("<br>", " ")) == 240
    assert by_row[2] == "a b"
    assert by_row[3] == "(empty)"
    assert "<br>" in by_row[4]
    assert all("%{customdata}" in t.hovertemplate for t in fig.data)


def test_layer_grid_without_texts_shows_row_numbers():
    coords, labels, _ = grid_inputs(n=10, layers=(2, 5))
    fig = layer_grid(coords, labels)
    for t in fig.data:
        assert list(t.text) == [f"row {j}" for j in t.customdata]
    assert len(fig.data) == 4


@pytest.mark.parametrize("n,kind", [(WEBGL_ABOVE, go.Scatter), (WEBGL_ABOVE + 1, go.Scattergl), (3000, go.Scattergl)])
def test_layer_grid_uses_webgl_above_1000_points(n, kind):
    assert WEBGL_ABOVE == 1000
    coords, labels, _ = grid_inputs(n=n, layers=(0, 1))
    fig = layer_grid(coords, labels)
    assert len(fig.data) == 4
    assert all(type(t) is kind for t in fig.data)
    assert sum(len(t.x) for t in fig.data) == 2 * n


def test_layer_grid_layout_and_title():
    coords, labels, texts = grid_inputs(layers=(0, 1, 2, 3, 4))
    fig = layer_grid(coords, labels, texts, method="umap", columns=2)
    assert fig.layout.title.text == "UMAP of each layer, coloured by label"
    assert len(fig.data) == 10
    # 5 layers in 2 columns: 3 rows; the fifth layer sits in row 3, column 1
    fifth = [t for t in fig.data if np.asarray(t.x)[0] >= 4000]
    assert {t.xaxis for t in fifth} == {"x5"}
    assert fig.layout.xaxis5.domain == fig.layout.xaxis.domain
    assert fig.layout.height == 320 * 3 + 60
    assert layer_grid(coords, labels, title="custom").layout.title.text == "custom"


# ---------------------------------------------------------------------------------------------
# separation_curve


def test_separation_curve_traces():
    fig = separation_curve(SEP_ROWS, title="sentiment")
    by_name = {t.name: t for t in fig.data}
    assert {"probe (cross-validated)", "probe (held-out 20%)", "silhouette", "Fisher ratio", "cv ± 1 sd"} <= set(by_name)
    np.testing.assert_allclose(by_name["probe (cross-validated)"].y, [r.probe_cv_acc for r in SEP_ROWS])
    np.testing.assert_allclose(by_name["probe (held-out 20%)"].y, [r.probe_test_acc for r in SEP_ROWS])
    np.testing.assert_allclose(by_name["silhouette"].y, [r.silhouette for r in SEP_ROWS])
    np.testing.assert_allclose(by_name["Fisher ratio"].y, [r.fisher for r in SEP_ROWS])
    for name in ("probe (cross-validated)", "probe (held-out 20%)", "silhouette", "Fisher ratio"):
        assert list(by_name[name].x) == [0, 1, 2, 3]
    # accuracy on the first panel, silhouette on the second, Fisher on the third
    assert by_name["probe (cross-validated)"].xaxis == "x" and by_name["probe (held-out 20%)"].xaxis == "x"
    assert by_name["silhouette"].xaxis == "x2" and by_name["Fisher ratio"].xaxis == "x3"
    assert fig.layout.title.text == "sentiment"


def test_separation_curve_cv_band():
    fig = separation_curve(SEP_ROWS)
    band = next(t for t in fig.data if t.name == "cv ± 1 sd")
    assert band.mode == "lines"  # a band, no markers
    assert band.fill == "toself"
    assert band.showlegend is False
    cv = np.array([r.probe_cv_acc for r in SEP_ROWS])
    sd = np.array([r.probe_cv_std for r in SEP_ROWS])
    # a closed polygon: upper edge left to right, lower edge right to left
    assert list(band.x) == [0, 1, 2, 3, 3, 2, 1, 0]
    np.testing.assert_allclose(band.y, list(cv + sd) + list((cv - sd)[::-1]))
    # the accuracy axis shows the band and chance
    lo, hi = fig.layout.yaxis.range
    assert lo <= min(0.45, (cv - sd).min()) and hi >= 1.0


def test_separation_curve_marks_best_layer():
    fig = separation_curve(SEP_ROWS)
    notes = [a for a in fig.layout.annotations if a.text.startswith("best:")]
    assert [a.text for a in notes] == ["best: layer 2"]
    assert notes[0].x == 2
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == 1 and lines[0].x0 == lines[0].x1 == 2
    titles = {a.text for a in fig.layout.annotations}
    assert {"linear probe accuracy", "silhouette", "Fisher ratio"} <= titles


def test_separation_curve_best_layer_tie_is_shallowest():
    rows = [sep_row(4, 0.8, 0.8, 0.1, 1.0), sep_row(8, 0.9, 0.9, 0.1, 1.0), sep_row(12, 0.9, 0.8, 0.2, 2.0)]
    fig = separation_curve(rows)
    assert [a.text for a in fig.layout.annotations if a.text.startswith("best:")] == ["best: layer 8"]


def test_separation_curve_low_accuracy_widens_axis():
    rows = [sep_row(0, 0.30, 0.3, -0.1, 0.0, sd=0.05), sep_row(1, 0.6, 0.6, 0.0, 0.2)]
    fig = separation_curve(rows)
    lo, _ = fig.layout.yaxis.range
    assert lo == pytest.approx(0.25 - 0.02)


def sep_row_with_null(layer: int, cv: float, low: float, high: float, null: float, null_high: float) -> LayerSeparation:
    return LayerSeparation(layer=layer, probe_train_acc=cv, probe_test_acc=cv, probe_cv_acc=cv, probe_cv_std=0.02,
                           silhouette=0.1, fisher=1.0, probe_cv_low=low, probe_cv_high=high, null_acc=null,
                           null_high=null_high, null_permutations=5)


def test_separation_curve_draws_the_interval_and_the_shuffled_label_null():
    rows = [sep_row_with_null(0, 0.60, 0.55, 0.65, 0.50, 0.56), sep_row_with_null(1, 0.85, 0.81, 0.88, 0.49, 0.55)]
    fig = separation_curve(rows)
    by_name = {t.name: t for t in fig.data}
    band = by_name["cv 95% interval"]
    np.testing.assert_allclose(band.y, [0.65, 0.88, 0.81, 0.55])  # upper edge, then lower edge back
    null = by_name["shuffled-label null"]
    np.testing.assert_allclose(null.y, [0.50, 0.49])
    np.testing.assert_allclose(by_name["shuffled-label null, 95th percentile"].y, [0.56, 0.55, 0.49, 0.50])
    assert null.xaxis == "x" and "cv ± 1 sd" not in by_name  # rows with intervals draw the interval, not ±1 sd
    assert fig.layout.yaxis.range[0] <= 0.49


def test_live_fit_marks_the_step_it_reports():
    from repmap_core.share.figures_shift import live_fit

    points = [{"step": s, "loss": 1.0 / s, "r2_test": r, "delta_accuracy": 0.8, "delta_accuracy_centered": 0.9,
               "best_step": b} for s, r, b in ((10, 0.2, 10), (20, 0.45, 20), (30, 0.3, 20), (40, 0.1, 20))]
    fig = live_fit(points)
    assert "reported: step 20" in fig.layout.title.text and "held-out R² 0.450 there, 0.100 now" in fig.layout.title.text
    assert sorted({s.x0 for s in fig.layout.shapes if s.type == "line"}) == [20]


# ---------------------------------------------------------------------------------------------
# what fits on screen (issue 25): layer ticks, subplot spacing, titles


def test_a_layer_axis_ticks_a_readable_step_and_stops_at_its_layers():
    """SmolLM2's 30 layers ticked every integer from -1 to 31."""
    from repmap_core.share.figures import layer_ticks, layer_tickvals

    assert layer_ticks(range(30)) == dict(tickmode="linear", tick0=0, dtick=2, range=[-0.5, 29.5])
    assert layer_ticks([0, 1, 2, 3, 4, 5])["dtick"] == 1 and layer_ticks(range(80))["dtick"] == 5
    assert layer_tickvals(range(30)) == list(range(0, 30, 2)) and layer_tickvals([3, 5, 7]) == [3, 5, 7]
    rows = [sep_row(L, 0.6 + L / 100, 0.6, 0.1, 1.0) for L in range(30)]
    fig = separation_curve(rows)
    assert (fig.layout.xaxis.dtick, tuple(fig.layout.xaxis.range)) == (2, (-0.5, 29.5))
    # the silhouette and Fisher panels are a quarter of the width each: every 2nd of 30 labels ran together there
    assert fig.layout.xaxis2.dtick == fig.layout.xaxis3.dtick == 5 and layer_ticks(range(30), max_ticks=7)["dtick"] == 5


def test_a_grid_leaves_room_between_rows_for_axis_titles_and_the_next_rows_titles():
    """'PC 1' under one row collided with the 'layer k' titles of the next (0.08 of the height: 24 px at 300 a row)."""
    coords, labels, texts = grid_inputs(layers=(0, 1, 2, 3, 4, 5))
    fig = layer_grid(coords, labels, texts, method="pca", columns=3)
    gap = (fig.layout.yaxis.domain[0] - fig.layout.yaxis4.domain[1]) * fig.layout.height
    assert gap >= 69 and fig.layout.xaxis.title.text == "PC 1"


def test_a_long_title_wraps_instead_of_being_cut():
    from repmap_core.share.figures import set_title, wrap_title

    text, lines = wrap_title("A: SmolLM2-135M-Instruct, layer 15: propensity on 40 held-out questions (both letter orders)", 60)
    assert lines == 2 and all(len(line) <= 60 for line in text.split("<br>"))
    assert wrap_title("short<br><sup>a subtitle that is long but kept on its own line as it is</sup>", 20)[1] == 2
    fig = set_title(go.Figure(), "word " * 30, 40)
    assert fig.layout.title.text.count("<br>") == 3 and fig.layout.margin.t == 30 + 24 * 4
