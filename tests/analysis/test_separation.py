"""Tests for repmap_core.analysis.separation: per-layer separation scores on planted signal, the
Fisher ratio and silhouette on known cases, the cross-validated accuracy against scikit-learn,
and real MiniLM layers against their shuffled-label null."""
from __future__ import annotations

import numpy as np
import pytest

from repmap_core.analysis.probe_null import NULL_PERMUTATIONS
from repmap_core.analysis.separation import (
    LayerSeparation,
    best_layer,
    fisher_ratio,
    layer_separation,
    separation_at,
    silhouette,
)
from repmap_core.errors import RepmapError
from tests.analysis.test_probes import planted, unpaired


def row(layer: int, cv: float, **kw) -> LayerSeparation:
    base = dict(probe_train_acc=cv, probe_test_acc=cv, probe_cv_acc=cv, probe_cv_std=0.01, silhouette=0.1, fisher=1.0)
    base.update(kw)
    return LayerSeparation(layer=layer, **base)


# ---------------------------------------------------------------------------------------------
# separation scores


@pytest.fixture(scope="module")
def planted_layers():
    """Four fake layers with planted signal strength 0, 0.5, 1, 2 along the first axis."""
    rng = np.random.default_rng(5)
    n, d = 800, 8
    y = rng.integers(0, 2, n)
    w = np.eye(d)[0]
    layers = {L: rng.normal(size=(n, d)) + s * y[:, None] * w for L, s in zip((3, 0, 2, 1), (2.0, 0.0, 1.0, 0.5))}
    calls = []
    rows = layer_separation(layers, y, unpaired(n), progress=lambda f, msg: calls.append((f, msg)))
    return rows, calls


def test_layer_separation_increases_with_planted_signal(planted_layers):
    rows, calls = planted_layers
    assert [r.layer for r in rows] == [0, 1, 2, 3]  # in layer order whatever the dict order
    assert [f for f, _ in calls] == [0.25, 0.5, 0.75, 1.0]
    assert calls[-1][1] == "Scored layer 3"

    cv = [r.probe_cv_acc for r in rows]
    # strength 0: chance; Bayes accuracy Phi(s/2): 0.60, 0.69, 0.84 for s = 0.5, 1, 2
    assert abs(cv[0] - 0.5) < 0.06
    assert cv[1] > cv[0] + 0.03 and cv[2] > cv[1] + 0.03 and cv[3] > cv[2] + 0.08
    assert cv[3] == pytest.approx(0.84, abs=0.04)
    for r in rows:
        assert 0 <= r.probe_cv_std < 0.1
        assert 0 <= r.probe_test_acc <= 1 and 0 <= r.probe_train_acc <= 1
    assert abs(rows[0].probe_test_acc - 0.5) < 0.1
    assert rows[3].probe_test_acc > 0.78

    fisher = [r.fisher for r in rows]
    assert fisher[0] < 0.05  # only estimation noise
    assert fisher == sorted(fisher) and fisher[3] > 1.0
    # for strength s the ratio is s^2 / 2 (both class variances 1)
    assert fisher[3] == pytest.approx(2.0, rel=0.25)

    sil = [r.silhouette for r in rows]
    assert abs(sil[0]) < 0.01
    assert sil == sorted(sil) and sil[3] > sil[0] + 0.02

    assert best_layer(rows) == 3
    assert rows[0].as_dict()["layer"] == 0 and set(rows[0].as_dict()) == {
        "layer", "probe_train_acc", "probe_test_acc", "probe_cv_acc", "probe_cv_std", "silhouette", "fisher", "scored_on",
        "probe_cv_low", "probe_cv_high", "probe_test_low", "probe_test_high", "null_acc", "null_high", "null_permutations",
        "null_rows"}
    assert rows[0].scored_on == "all rows"  # a small set is scored exactly, and says so
    # each accuracy with its 95% interval; the shuffled-label null sits at chance, and only real signal clears it
    for r in rows:
        assert r.probe_cv_low <= r.probe_cv_acc <= r.probe_cv_high and r.probe_cv_high - r.probe_cv_low < 0.12
        assert r.probe_test_low <= r.probe_test_acc <= r.probe_test_high
        assert abs(r.null_acc - 0.5) < 0.08 and r.null_permutations == NULL_PERMUTATIONS
    assert rows[3].cv_estimate().low > rows[3].null_high and rows[0].probe_cv_acc < rows[0].null_high + 0.05
    assert rows[3].cv_estimate().null == rows[3].null_acc


def test_layers_scored_side_by_side_equal_those_scored_one_at_a_time(monkeypatch):
    """Two cores score two layers at once (each with one BLAS thread): the same numbers as one worker, in
    layer order, and the progress comes from the calling thread."""
    import threading

    from repmap_core.analysis import separation

    rng = np.random.default_rng(11)
    n, d = 300, 16
    y = rng.integers(0, 2, n)
    layers = {L: rng.normal(size=(n, d)) + 0.3 * L * y[:, None] * np.eye(d)[L % d] for L in (4, 1, 3, 0, 2)}
    got = {}
    for workers in (1, 2):
        monkeypatch.setattr(separation, "scoring_workers", lambda w=workers: w)
        threads = []
        got[workers] = layer_separation(layers, y, unpaired(n), null_permutations=20,
                                        progress=lambda f, msg, seen=threads: seen.append((threading.get_ident(), msg)))
        assert {t for t, _ in threads} == {threading.get_ident()}
        assert [m for _, m in threads] == [f"Scored layer {L}" for L in range(5)]
    assert got[1] == got[2] and [r.layer for r in got[2]] == [0, 1, 2, 3, 4]
    assert got[2][4].probe_cv_acc > got[2][0].probe_cv_acc + 0.1  # the planted signal, not a copy of one layer


def test_separation_with_pairs():
    """Paired rows (each pair one 0 and one 1) separated by a planted direction."""
    rng = np.random.default_rng(6)
    n_pairs, d = 150, 6
    pair_ids = np.repeat(np.arange(n_pairs), 2)
    y = np.tile([1, 0], n_pairs)
    shared = np.repeat(rng.normal(size=(n_pairs, d)) * 3, 2, axis=0)  # pair-specific content ...
    shared[:, 2] = 0.0  # ... orthogonal to the planted axis
    X = shared + rng.normal(size=(2 * n_pairs, d)) + 3.0 * y[:, None] * np.eye(d)[2]
    r = separation_at(X, y, pair_ids, layer=7)
    assert r.layer == 7
    assert r.probe_cv_acc > 0.8 and r.probe_test_acc > 0.8
    assert r.fisher == pytest.approx(4.5, rel=0.3)  # 3^2 / (1 + 1)


def test_best_layer_picks_highest_cv_and_shallowest_on_ties():
    assert best_layer([row(0, 0.6), row(1, 0.9), row(2, 0.8)]) == 1
    assert best_layer([row(4, 0.7), row(2, 0.9), row(6, 0.9), row(3, 0.9)]) == 2
    # differences below the 6th decimal count as ties
    assert best_layer([row(5, 0.9000000001), row(1, 0.9)]) == 1
    assert best_layer([row(8, 0.55)]) == 8


# ---------------------------------------------------------------------------------------------
# Fisher ratio and silhouette on known cases


def test_fisher_ratio_by_hand_1d():
    X = np.array([[0.0], [2.0], [4.0], [6.0], [8.0]])
    y = np.array([0, 0, 1, 1, 1])
    # means 1 and 6, population variances 1 and 8/3: 25 / (11/3) = 75/11
    assert fisher_ratio(X, y) == pytest.approx(75 / 11)
    # symmetric in the labels, invariant to shift and scale
    assert fisher_ratio(X, 1 - y) == pytest.approx(75 / 11)
    assert fisher_ratio(3 * X - 10, y) == pytest.approx(75 / 11)


def test_fisher_ratio_projects_on_the_mean_difference():
    # the class means differ only along x; the y-scatter is orthogonal to it and must not count
    X = np.array([[0.0, 1.0], [2.0, -1.0], [4.0, 50.0], [6.0, -50.0], [8.0, 0.0]])
    y = np.array([0, 0, 1, 1, 1])
    assert fisher_ratio(X, y) == pytest.approx(75 / 11)
    # equal class means -> 0, not NaN
    assert fisher_ratio(np.array([[1.0], [3.0], [2.0], [2.0]]), np.array([0, 0, 1, 1])) == 0.0


def test_silhouette_far_blobs_and_identical_distributions():
    rng = np.random.default_rng(7)
    y = np.repeat([0, 1], 200)
    blobs = rng.normal(scale=0.1, size=(400, 5))
    blobs[y == 1] += 100.0
    assert silhouette(blobs, y) > 0.95
    same = rng.normal(size=(400, 5))
    assert abs(silhouette(same, y)) < 0.02
    # subsampled above max_rows, seeded: reproducible and still close to 1 for blobs
    assert silhouette(blobs, y, max_rows=100, seed=1) == silhouette(blobs, y, max_rows=100, seed=1)
    assert silhouette(blobs, y, max_rows=100, seed=1) > 0.95


def test_too_few_rows_per_class_is_a_clear_error():
    X = np.random.default_rng(9).normal(size=(12, 3))
    y = np.array([0] * 11 + [1])
    with pytest.raises(RepmapError, match="at least two rows"):
        separation_at(X, y, unpaired(12), layer=0)
    # a single pair: each class has one group only
    with pytest.raises(RepmapError, match="at least two rows"):
        separation_at(X[:2], np.array([0, 1]), np.array([0, 0]), layer=0)


def test_two_rows_per_class_is_scored_or_a_repmap_error():
    X = np.random.default_rng(10).normal(size=(4, 3))
    y = np.array([0, 0, 1, 1])
    try:
        r = separation_at(X, y, unpaired(4), layer=0)
    except RepmapError:
        return
    assert 0 <= r.probe_cv_acc <= 1


# ---------------------------------------------------------------------------------------------
# the interval and the shuffled-label null


def test_cv_accuracy_is_the_pooled_out_of_fold_share_as_sklearn_computes_it():
    """Independent computation: scikit-learn's cross_val_predict with the same folds and a
    standardise + logistic pipeline gives the same out-of-fold verdicts."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from repmap_core.analysis.separation import separation_at
    from repmap_core.analysis.stats import wilson
    from repmap_core.pairs import groups_of

    X, y, _ = planted(n=500, d=12, strength=1.2, seed=21)
    r = separation_at(X, y, unpaired(500), 0, null_permutations=0)
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)
    pred = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(C=0.1)), X, y, cv=cv,
                             groups=groups_of(unpaired(500)))
    k = int((pred == y).sum())
    assert r.probe_cv_acc == pytest.approx(k / 500, abs=0.005)
    assert (r.probe_cv_low, r.probe_cv_high) == pytest.approx(wilson(round(r.probe_cv_acc * 500), 500), abs=1e-9)
    assert r.null_permutations == 0 and r.as_dict()["null_acc"] is None  # no null asked for: None, not NaN, in JSON


@pytest.mark.slow
def test_real_minilm_separation_has_intervals_and_clears_its_null(tmp_path):
    """Real weights: MiniLM on 300 real reviews. Every layer's probe clears its shuffled-label
    null (measured cv 0.80-0.89 against nulls ~0.5), and the pooled cv accuracy agrees with
    scikit-learn's cross_val_predict on the same folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from repmap_core.analysis.separation import layer_separation
    from repmap_core.capture.activations import get_activations
    from repmap_core.capture.models import EMBEDDED_MODEL_ID
    from repmap_core.data.load import load_dataset
    from repmap_core.pairs import groups_of

    aset = get_activations(EMBEDDED_MODEL_ID, load_dataset("builtin:sentiment", limit=300, seed=0), [0, 3, 5], "auto")
    rows = layer_separation(aset.layers, aset.labels, aset.pair_ids)
    for r in rows:
        assert r.probe_cv_acc > 0.75 and r.probe_cv_low > r.null_high and abs(r.null_acc - 0.5) < 0.1
    X, y = np.asarray(aset[5], dtype=np.float64), aset.labels.astype(np.int64)
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)
    pred = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000)), X, y, cv=cv,
                             groups=groups_of(aset.pair_ids))
    assert rows[-1].probe_cv_acc == pytest.approx(float((pred == y).mean()), abs=0.01)


def test_the_layers_shown_first_spread_over_the_depth_and_hold_the_best():
    """Issue 25, item 4: SmolLM2 opened on blocks 0-5, where outlier dimensions dominate; a spread that holds the
    best layer shows the whole depth."""
    from repmap_core.analysis.separation import spread_layers

    assert spread_layers(list(range(30)), 19) == [0, 7, 14, 19, 22, 29]
    assert spread_layers(list(range(30)), 22) == [0, 7, 14, 22, 29]
    assert spread_layers(list(range(6)), 3) == [0, 1, 2, 3, 4, 5]  # few layers: all of them
    assert spread_layers([2, 5, 9, 11, 14, 20, 23], 23) == [2, 9, 11, 14, 23]
