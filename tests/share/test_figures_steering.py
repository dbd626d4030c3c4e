"""Figures and tables of the Steering page, on planted vectors and curves whose answers are known."""
from __future__ import annotations

import numpy as np
import pytest

from repmap_core.share.figures_steering import (
    CELL_TEXT_MAX_LAYERS,
    agreement_table,
    cosine_by_layer,
    cosines_table,
    curves_table,
    layer_cosine_heatmaps,
    preview_table,
    propensity_plot,
    rimsky_figures,
    vector_norms,
    vector_pca_plot,
    vector_table,
)
from repmap_core.steering import (
    PropensityCurve,
    SteeringVector,
    cosine_per_layer,
    layer_cosines,
    load_vectors,
    save_vectors,
    vector_pca,
)


def basis_vectors(n_layers: int, d: int, scale: float = 1.0, sign: float = 1.0, count: int = 7) -> dict[int, SteeringVector]:
    """Layer L's vector is sign * scale * (L + 1) * e_L: orthogonal across layers, norms known."""
    return {L: SteeringVector(sign * scale * (L + 1) * np.eye(d)[L], L, model="m", count=count) for L in range(n_layers)}


def curve(alphas, mean, half_width=0.5, layer=3, n=10) -> PropensityCurve:
    alphas, mean = np.asarray(alphas, float), np.asarray(mean, float)
    return PropensityCurve(alphas, mean, mean - half_width, mean + half_width, (mean > 0).astype(float), layer, n)


def test_cosine_by_layer_draws_one_line_on_the_full_range():
    fig = cosine_by_layer({2: 0.5, 0: 1.0, 1: -0.25}, names=("llama-base", "llama-chat"))
    (line,) = fig.data
    assert list(line.x) == [0, 1, 2] and list(line.y) == [1.0, -0.25, 0.5]  # sorted by layer
    assert tuple(fig.layout.yaxis.range) == (-1.05, 1.05)
    assert "llama-base" in fig.layout.title.text and "llama-chat" in fig.layout.title.text
    assert any(s.y0 == 0 and s.y1 == 0 for s in fig.layout.shapes)  # the zero line


def test_layer_heatmaps_are_panels_of_one_figure_on_one_scale():
    a, b = basis_vectors(3, 8), basis_vectors(5, 8)
    b[4] = SteeringVector(-b[0].vector, 4)  # planted: layer 4 points opposite layer 0
    fig = layer_cosine_heatmaps({"base": layer_cosines(a), "chat": layer_cosines(b)})
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 2 and [np.shape(h.z) for h in heat] == [(3, 3), (5, 5)]
    assert np.allclose(heat[0].z, np.eye(3)) and heat[1].z[4][0] == pytest.approx(-1.0)
    assert all(h.coloraxis == "coloraxis" for h in heat)  # one shared colour scale
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (-1, 1)
    assert heat[1].text[4][0] == "-1.00" and heat[0].text[1][1] == "1.00" and heat[0].texttemplate == "%{text}"
    assert [a.text for a in fig.layout.annotations] == ["base", "chat"]
    assert heat[1].xaxis == "x2" and fig.layout.yaxis.autorange == "reversed"
    many = layer_cosine_heatmaps({"big": layer_cosines(basis_vectors(CELL_TEXT_MAX_LAYERS + 1, 32))})
    assert many.data[0].text is None  # too many cells to label: values on hover only


def test_vector_pca_plot_draws_a_line_per_model_through_its_layers():
    rng = np.random.default_rng(0)
    groups = {name: {L: SteeringVector(rng.normal(size=16), L) for L in range(6)} for name in ("base", "chat")}
    coords = vector_pca(groups)
    fig = vector_pca_plot(coords)
    assert [t.name for t in fig.data] == ["base", "chat"]
    for t, name in zip(fig.data, ("base", "chat")):
        assert "lines" in t.mode and "text" in t.mode and list(t.text) == [str(L) for L in range(6)]
        assert np.allclose(t.x, coords[name][1][:, 0]) and np.allclose(t.y, coords[name][1][:, 1])
    assert "xaxis2" not in fig.layout and fig.layout.xaxis.title.text == "PC 1"
    apart = vector_pca_plot(coords, shared_axes=False)
    assert [t.xaxis for t in apart.data] == ["x", "x2"] and "its own PCA" in apart.layout.annotations[0].text


def test_propensity_plot_draws_each_curve_with_its_band_and_a_zero_line():
    alphas = [-2, -1, 0, 1, 2]
    native, moved = curve(alphas, [-1, -0.5, 0, 0.5, 1]), curve(alphas, [-0.8, -0.4, 0.1, 0.3, 0.9], half_width=0.2)
    fig = propensity_plot({"native": native, "transferred": moved}, title="t")
    assert len(fig.data) == 4
    band, line = fig.data[0], fig.data[1]
    assert band.fill == "toself" and list(band.x) == alphas + alphas[::-1]
    assert np.allclose(band.y, list(native.high) + list(native.low[::-1]))
    assert np.allclose(line.y, native.mean) and np.allclose(line.customdata, native.agreement)
    assert line.name.startswith("native (layer 3, 10 questions)") and fig.data[3].name.startswith("transferred")
    assert line.line.color != fig.data[3].line.color
    assert any(s.y0 == 0 and s.y1 == 0 for s in fig.layout.shapes) and fig.layout.title.text == "t"


def test_vector_norms_and_table():
    vecs = {"A": basis_vectors(3, 4, scale=2.0, count=5), "B": basis_vectors(2, 4)}
    fig = vector_norms(vecs)
    assert [t.name for t in fig.data] == ["A", "B"] and np.allclose(fig.data[0].y, [2, 4, 6])
    table = vector_table(vecs)
    assert list(table.index) == [0, 1, 2] and np.allclose(table["A norm"], [2, 4, 6])
    assert list(table["A pairs"]) == [5, 5, 5] and np.isnan(table.loc[2, "B norm"])


def test_exported_tables():
    a, b = basis_vectors(2, 4), basis_vectors(2, 4, sign=-1.0)
    groups = {"A": layer_cosines(a)}
    table = cosines_table(groups, cosine_per_layer(a, b), ("A", "B"))
    assert len(table) == 4 + 2 and list(table.columns) == ["comparison", "layer_a", "layer_b", "cosine"]
    assert table[table.comparison == "A vs B"].cosine.tolist() == pytest.approx([-1.0, -1.0])
    c = curve([-1, 0, 1], [-0.5, 0.0, 0.5])
    rows = curves_table({"native": c, "transferred": c})
    assert len(rows) == 6 and rows.multiplier.tolist()[:3] == [-1, 0, 1] and rows.agreement.tolist()[:3] == [0, 0, 1]
    assert agreement_table(c).agreement.tolist() == [0, 0, 1]
    prev = preview_table(["x" * 200, "short"], ["p1", "p2"], ["s1", "s2"], 4.0)
    assert list(prev.columns) == ["question (its end)", "without steering", "with α = +4"]
    assert prev.iloc[0, 0] == "…" + "x" * 160 and prev.iloc[1, 0] == "short"


def test_vectors_safetensors_round_trips(tmp_path):
    vecs = basis_vectors(3, 4, count=9)
    path = tmp_path / "v.safetensors"
    save_vectors(vecs, path)
    back = load_vectors(path)
    assert sorted(back) == [0, 1, 2] and np.allclose(back[2].vector, vecs[2].vector) and back[0].count == 9


def test_rimsky_figures_draw_what_two_models_allow():
    a, b = basis_vectors(3, 8), basis_vectors(3, 8, sign=-1.0)  # planted: opposite at every layer
    same = rimsky_figures({"base": a, "chat": b}, {"base": (8, 3), "chat": (8, 3)})
    assert same.cosine_note is None and np.allclose(same.cosine_by_layer.data[0].y, [-1, -1, -1])
    assert len([t for t in same.heatmaps.data if t.type == "heatmap"]) == 2
    assert len(same.pca.data) == 2 and same.pca_note is None and "xaxis2" not in same.pca.layout
    assert set(same.cosines.comparison) == {"base", "chat", "base vs chat"}

    wide = basis_vectors(4, 12)
    apart = rimsky_figures({"small": a, "big": wide}, {"small": (8, 3), "big": (12, 4)})
    assert apart.cosine_by_layer is None and "8 wide with 3 layers" in apart.cosine_note and "12 wide with 4" in apart.cosine_note
    assert "xaxis2" in apart.pca.layout and "different widths" in apart.pca_note

    alone = rimsky_figures({"only": a}, {"only": (8, 3)})
    assert alone.cosine_by_layer is None and "choose a model B" in alone.cosine_note and len(alone.pca.data) == 1
    one_layer = rimsky_figures({"only": {0: a[0]}}, {"only": (8, 3)})
    assert one_layer.pca is None and "at least two layers" in one_layer.pca_note
