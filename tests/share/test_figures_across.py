"""Tests for repmap_core.share.figures_across: the similarity heatmap and its best-match stars, the linked
side-by-side scatters, the fit curve, the per-dimension error, the transfer table and the exports."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from repmap_core.analysis.between import TRANSFER_EXPLAINED, between_models
from repmap_core.analysis.similarity import SimilarityMatrix
from repmap_core.share.figures import LABEL_COLORS
from repmap_core.share.figures_across import (
    TRANSFER_COLUMNS,
    best_match_cells,
    best_matches,
    fit_curve,
    per_dim_error,
    selected_rows,
    side_by_side,
    similarity_heatmap,
    similarity_table,
    transfer_table,
)

# source layers 0, 2, 4 against target layers 1, 3, 5, 7; best (max) per row: 3, 7, 1
CKA = SimilarityMatrix("linear_cka", (0, 2, 4), (1, 3, 5, 7), np.array([
    [0.10, 0.90, 0.30, 0.20],
    [0.40, 0.50, 0.60, 0.95],
    [0.80, 0.20, 0.10, 0.70],
]))


def starred(fig: go.Figure) -> dict[int, int]:
    """{source layer: target layer} of the cells whose label carries the star."""
    heat = fig.data[0]
    return {int(a): int(b) for a, row in zip(heat.y, heat.text) for b, t in zip(heat.x, row) if t.startswith("★")}


def planted_between(n: int = 300, d_s: int = 12, d_t: int = 16, seed: int = 0):
    """Source rows whose label is the sign of a planted direction; target = a planted affine map of them."""
    rng = np.random.default_rng(seed)
    S = rng.normal(size=(n, d_s)).astype(np.float32)
    y = (S @ rng.normal(size=d_s) > 0).astype(np.int64)
    T = (S @ rng.normal(size=(d_s, d_t)) + 0.5 + 0.01 * rng.normal(size=(n, d_t))).astype(np.float32)
    return S, T, y


# ---------------------------------------------------------------------------------------------
# similarity heatmap


def test_heatmap_holds_the_matrix_on_the_metric_range_and_stars_the_best_matches():
    fig = similarity_heatmap(CKA, "small", "large")
    (heat,) = [t for t in fig.data if t.type == "heatmap"]
    assert np.asarray(heat.z).shape == (3, 4) and np.allclose(heat.z, CKA.values)
    assert list(heat.x) == [1, 3, 5, 7] and list(heat.y) == [0, 2, 4]
    assert (heat.zmin, heat.zmax) == (0.0, 1.0) and not heat.reversescale  # fixed range, not the data's
    assert best_match_cells(fig) == starred(fig) == {0: 3, 2: 7, 4: 1} == CKA.best_match()
    # the outline is the whole cell: uneven layer gaps (1, 3, 5, 7 here: cells 2 wide) are respected
    (first,) = [sh for sh in fig.layout.shapes if (sh.y0, sh.y1) == (-1.0, 1.0)]
    assert (first.x0, first.x1) == (2.0, 4.0) and first.name == "best match"
    assert heat.text[1][3] == "★ 0.95" and heat.text[1][2] == "0.60"
    assert "small (source)" in fig.layout.yaxis.title.text and "large (target)" in fig.layout.xaxis.title.text


def test_procrustes_heatmap_is_a_distance_on_0_to_2_with_stars_at_the_minimum():
    dist = SimilarityMatrix("procrustes", CKA.layers_a, CKA.layers_b, 2 * (1 - CKA.values))
    fig = similarity_heatmap(dist, "a", "b")
    heat = fig.data[0]
    assert (heat.zmin, heat.zmax) == (0.0, 2.0) and heat.reversescale  # dark is close for every metric
    assert best_match_cells(fig) == starred(fig) == {0: 3, 2: 7, 4: 1}


def test_one_model_against_itself_skips_the_diagonal():
    values = np.array([[1.0, 0.7, 0.2], [0.7, 1.0, 0.8], [0.2, 0.8, 1.0]])
    same = SimilarityMatrix("linear_cka", (0, 1, 2), (0, 1, 2), values)
    assert same.best_match() == {0: 0, 1: 1, 2: 2}
    assert best_matches(same, exclude_same_layer=True) == {0: 1, 1: 2, 2: 1}
    fig = similarity_heatmap(same, "m", "m", exclude_same_layer=True)
    assert best_match_cells(fig) == starred(fig) == {0: 1, 1: 2, 2: 1}
    assert len(fig.layout.shapes) == 3


def test_best_match_outlines_follow_uneven_layer_spacing():
    sim = SimilarityMatrix("linear_cka", (0, 1, 5), (0, 1, 5), np.array([[0.2, 0.1, 0.9], [0.1, 0.8, 0.3], [0.9, 0.2, 0.1]]))
    fig = similarity_heatmap(sim, "a", "b")
    assert best_match_cells(fig) == {0: 5, 1: 1, 5: 0}
    # plotly's cell edges for centres 0, 1, 5 are -0.5, 0.5, 3, 7
    assert sorted({(sh.x0, sh.x1) for sh in fig.layout.shapes}) == [(-0.5, 0.5), (0.5, 3.0), (3.0, 7.0)]


# ---------------------------------------------------------------------------------------------
# side by side


def side_inputs(n: int = 30):
    rng = np.random.default_rng(1)
    labels = np.arange(n) % 2
    row_ids = np.arange(n) * 10 + 5  # ids that are not positions, to catch a mix-up
    return rng.normal(size=(n, 2)), rng.normal(size=(n, 2)), labels, [f"text {i}" for i in range(n)], row_ids


def test_side_by_side_is_one_figure_with_two_panels_coloured_by_label():
    a, b, labels, texts, row_ids = side_inputs()
    fig = side_by_side(a, b, labels, texts, titles=("gpt2 layer 11", "gpt2-xl layer 47"), row_ids=row_ids)
    assert [x.text for x in fig.layout.annotations] == ["gpt2 layer 11", "gpt2-xl layer 47"]
    assert {t.xaxis for t in fig.data} == {"x", "x2"} and len(fig.data) == 4
    for panel in ("x", "x2"):
        traces = [t for t in fig.data if t.xaxis == panel]
        assert sorted(np.concatenate([t.customdata for t in traces])) == sorted(row_ids)
        assert [t.marker.color for t in traces] == [LABEL_COLORS[0], LABEL_COLORS[1]]
        assert all(t.selectedpoints is None for t in traces)  # nothing highlighted without a selection
    # the panels show the two coordinate sets, row for row
    first = fig.data[0]
    rows = np.flatnonzero(labels == 0)
    assert np.allclose(first.x, a[rows, 0]) and np.allclose(fig.data[2].x, b[rows, 0])
    assert fig.layout.dragmode == "lasso"


def test_a_selection_highlights_the_same_rows_in_both_panels():
    a, b, labels, texts, row_ids = side_inputs()
    chosen = [5, 45, 95, 125, 285]  # row ids of both labels
    fig = side_by_side(a, b, labels, texts, selected=chosen, row_ids=row_ids)
    for panel in ("x", "x2"):
        lit = []
        for t in (t for t in fig.data if t.xaxis == panel):
            lit += [int(t.customdata[i]) for i in t.selectedpoints]
            assert t.unselected.marker.opacity < 0.3 and t.selected.marker.opacity == 1.0
        assert sorted(lit) == chosen
    assert fig.layout.title.text.startswith("5 rows selected")
    # rows not shown are ignored; an empty selection highlights nothing yet fades everything
    fig = side_by_side(a, b, labels, texts, selected=[5, 999_999], row_ids=row_ids)
    assert sum(len(t.selectedpoints) for t in fig.data) == 2


def test_selected_rows_reads_customdata_from_plotly_points():
    points = [{"customdata": 7, "point_index": 0}, {"customdata": [3], "point_index": 1},
              {"customdata": 7, "curve_number": 2}, {"point_index": 4}]
    assert selected_rows(points) == [3, 7]
    assert selected_rows([]) == [] and selected_rows(None) == []


# ---------------------------------------------------------------------------------------------
# fit curve, per-dimension error


def test_fit_curve_has_loss_and_held_out_r2_on_two_axes():
    history = [(10, 1.0, 0.2), (20, 0.5, 0.5), (30, 0.25, 0.7)]
    fig = fit_curve(history)
    loss, r2 = fig.data
    assert list(loss.x) == [10, 20, 30] and list(loss.y) == [1.0, 0.5, 0.25] and loss.yaxis == "y"
    assert list(r2.y) == [0.2, 0.5, 0.7] and r2.yaxis == "y2"
    assert fig.layout.yaxis.type == "log" and "R² 0.700" in fig.layout.title.text
    # (step, loss) pairs, as GDMap.history_ holds them: the loss alone
    (only,) = fit_curve([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]).data
    assert list(only.y) == [2.0, 1.0]


def test_per_dim_error_is_sorted_and_names_the_worst_dims():
    mse = np.array([0.1, 5.0, 0.3, 2.0, 0.0, 9.0])
    fig = per_dim_error(mse, top=3)
    bar = fig.data[0]
    assert list(bar.y) == sorted(mse, reverse=True)
    assert list(bar.customdata) == [5, 1, 3, 2, 0, 4]
    assert list(bar.text) == ["dim 5", "dim 1", "dim 3", "", "", ""]
    assert "worst 3 of 6 hold 98%" in fig.layout.title.text  # (9 + 5 + 2) / 16.4 = 97.6%
    assert "worst dims: 5 (9), 1 (5), 3 (2)" in fig.layout.title.text


# ---------------------------------------------------------------------------------------------
# transfer table and exports


def test_transfer_table_has_one_row_per_mode_with_its_explanation():
    S, T, y = planted_between()
    result, fitted = between_models(S, T, y, method="lstsq")
    table = transfer_table(result)
    assert list(table.columns) == TRANSFER_COLUMNS
    assert list(table["mode"]) == list(result.transfer["details"]) == list(TRANSFER_EXPLAINED)
    assert list(table["what it is"]) == [TRANSFER_EXPLAINED[m] for m in table["mode"]]
    row = table.set_index("mode").loc["functional"]
    assert row["with intercept"] == result.transfer["functional"] > 0.9  # a planted exact map carries the probe
    assert row["uncentred"] == result.transfer["details"]["functional"]["uncentered"]
    # a non-linear map carries nothing: an empty table with the same columns
    mlp, _ = between_models(S, T, y, method="mlp", map_params={"hidden": 8, "max_epochs": 3})
    assert transfer_table(mlp).empty and list(transfer_table(mlp).columns) == TRANSFER_COLUMNS


def test_similarity_table_labels_rows_and_columns():
    table = similarity_table(CKA)
    assert list(table.index) == ["source 0", "source 2", "source 4"]
    assert list(table.columns) == ["target 1", "target 3", "target 5", "target 7"]
    assert table.loc["source 2", "target 7"] == 0.95 and table.index.name == "linear_cka"
    assert table.to_csv().splitlines()[0] == "linear_cka,target 1,target 3,target 5,target 7"


@pytest.mark.parametrize("metric", ["linear_cka", "cka_debiased", "svcca"])
def test_heatmap_title_names_the_metric(metric):
    sim = SimilarityMatrix(metric, CKA.layers_a, CKA.layers_b, CKA.values)
    names = {"linear_cka": "linear CKA (biased)", "cka_debiased": "debiased linear CKA", "svcca": "SVCCA"}
    assert names[metric] in similarity_heatmap(sim, "a", "b").layout.title.text


def test_heatmap_shows_the_permutation_null():
    null = np.full((3, 4), 0.15)
    sim = SimilarityMatrix("cka_debiased", CKA.layers_a, CKA.layers_b, CKA.values, null, 500, 20)
    fig = similarity_heatmap(sim, "small", "large")
    heat = fig.data[0]
    assert heat.text[0][0] == "(0.10)" and heat.text[0][1] == "★ 0.90"  # 0.10 is not above its null of 0.15
    assert np.allclose(heat.customdata, null) and "null" in heat.hovertemplate
    title = fig.layout.title.text
    assert "debiased linear CKA" in title and "20 times on 500 rows" in title and "largest: 0.150" in title


def test_fit_curve_marks_the_reported_step():
    history = [(10, 1.0, 0.2, 10), (20, 0.5, 0.5, 20), (30, 0.25, 0.3, 20)]
    fig = fit_curve(history)
    assert "reported: step 20, R² 0.500" in fig.layout.title.text
    assert [s.x0 for s in fig.layout.shapes] == [20]
    assert "reported: step 10" in fit_curve(history, reported_step=10).layout.title.text


def test_transfer_table_rows_carry_intervals_and_the_random_direction_null():
    S, T, y = planted_between()
    result, _ = between_models(S, T, y)
    table = transfer_table(result).set_index("mode")
    assert table.index[-1] == "random_direction" and "pinv" in table.index
    assert table.loc["functional", "with intercept, 95% interval"].startswith("[")
    assert table.loc["random_direction", "with intercept"] < table.loc["functional", "with intercept"] - 0.2


def test_a_heatmap_too_wide_for_its_values_puts_them_in_the_hover_and_draws_stars():
    """MiniLM's 6 layers against SmolLM2's 30: '★ 0.83' in 30-px cells was unreadable."""
    rng = np.random.default_rng(0)
    wide = SimilarityMatrix("cka_debiased", tuple(range(6)), tuple(range(30)), rng.uniform(0, 1, (6, 30)))
    fig = similarity_heatmap(wide, "MiniLM", "SmolLM2")
    heat = next(t for t in fig.data if t.type == "heatmap")
    assert heat.texttemplate is None and heat.text is None and "values in the hover" in fig.layout.title.text
    stars = next(t for t in fig.data if t.type == "scatter")
    assert stars.marker.symbol == "star" and dict(zip(stars.y, stars.x)) == wide.best_match() == best_match_cells(fig)
    assert list(fig.layout.xaxis.tickvals) == list(range(0, 30, 2))
    small = similarity_heatmap(CKA, "small", "large")  # 3 x 4: the values fit, written in the cells
    assert next(t for t in small.data if t.type == "heatmap").texttemplate == "%{text}" and len(small.data) == 1
