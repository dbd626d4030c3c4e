"""Tests for repmap_core.analysis.probes: the linear probe, grouped splits and per-layer separation scores.

Every test plants a known truth (a direction, a signal strength, a hand-computed ratio) and checks
the code recovers it.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score

from repmap_core.analysis.probes import (
    LayerSeparation,
    LinearProbe,
    best_layer,
    fisher_ratio,
    layer_separation,
    separation_at,
    silhouette,
    train_test_split_groups,
)
from repmap_core.errors import RepmapError
from repmap_core.pairs import groups_of

# ---------------------------------------------------------------------------------------------
# helpers


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def planted(n: int, d: int = 64, strength: float = 1.5, seed: int = 0):
    """X = N(0, I) + y * strength * w, for a random unit w; y in {0, 1} balanced at random."""
    rng = np.random.default_rng(seed)
    w = unit(rng.normal(size=d))
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d)) + strength * y[:, None] * w
    return X, y, w


def unpaired(n: int) -> np.ndarray:
    return -np.ones(n, dtype=np.int64)


def row(layer: int, cv: float, **kw) -> LayerSeparation:
    base = dict(probe_train_acc=cv, probe_test_acc=cv, probe_cv_acc=cv, probe_cv_std=0.01, silhouette=0.1, fisher=1.0)
    base.update(kw)
    return LayerSeparation(layer=layer, **base)


# ---------------------------------------------------------------------------------------------
# LinearProbe: planted direction


def test_probe_recovers_planted_direction():
    # n = 20000: at n = 4000, d = 64 even the difference of class means (the optimal estimator
    # here) only reaches cosine ~0.985 with w, so 0.99 is only a fair bar with more rows.
    X, y, w = planted(20000)
    Xtr, ytr, Xte, yte = X[:16000], y[:16000], X[16000:], y[16000:]
    probe = LinearProbe().fit(Xtr, ytr)
    assert probe.coef_.shape == (64,)
    assert np.isclose(np.linalg.norm(probe.direction_), 1.0)
    assert cosine(probe.direction_, probe.coef_) == pytest.approx(1.0)
    assert cosine(probe.direction_, w) > 0.99
    # the classes are 1.5 sd apart along w: Bayes accuracy is Phi(0.75) ~ 0.773
    acc = probe.score(Xte, yte)
    assert 0.75 < acc < 0.80
    assert probe.n_iter_ < probe.max_iter  # converged


def test_probe_at_4000_rows_is_as_good_as_the_mean_difference():
    X, y, w = planted(4000)
    probe = LinearProbe().fit(X, y)
    mean_diff = unit(X[y == 1].mean(0) - X[y == 0].mean(0))
    assert cosine(probe.direction_, w) > 0.96
    assert cosine(probe.direction_, mean_diff) > 0.98
    assert cosine(probe.direction_, w) > cosine(mean_diff, w) - 0.02


def test_probe_direction_in_raw_space_with_outlier_scales():
    """GPT-2-like outlier dimensions: some columns x1000, some x37, some offset by 5000.

    Raw features are X_raw = (Z + y*1.5*w) * s + offset, so the class-mean difference is 1.5*(s*w)
    and the within-class covariance diag(s^2): the optimal raw-space direction is
    Sigma^-1 * delta ∝ w / s (not s * w, the mean difference in raw space).
    """
    X, y, w = planted(20000, seed=1)
    d = X.shape[1]
    s = np.ones(d)
    s[:6] = 1000.0
    s[12:16] = 37.0
    offset = np.zeros(d)
    offset[:4] = 5000.0
    offset[20:24] = -3.0
    Xr = X * s + offset

    probe = LinearProbe().fit(Xr, y)
    expected = unit(w / s)
    assert cosine(probe.direction_, expected) > 0.99
    assert abs(cosine(probe.direction_, unit(w * s))) < 0.5  # the naive raw mean difference is wrong
    # coordinate-wise: each raw weight times its column scale is the planted weight (up to one factor)
    assert cosine(probe.coef_ * s, w) > 0.99
    # the standardised fit sees the same problem as the unscaled one: same decisions
    plain = LinearProbe().fit(X, y)
    assert np.mean(plain.predict(X) == probe.predict(Xr)) > 0.995

    # decision_function is the documented affine map, and predict thresholds it at 0
    scores = probe.decision_function(Xr)
    np.testing.assert_allclose(scores, Xr @ probe.coef_ + probe.intercept_, rtol=1e-10, atol=1e-8)
    np.testing.assert_array_equal(probe.predict(Xr), (scores > 0).astype(np.int64))
    assert set(np.unique(probe.predict(Xr))) == {0, 1}
    # the intercept absorbed the offsets: the scores are centred between the classes
    assert np.mean(scores[y == 1] > 0) > 0.7 and np.mean(scores[y == 0] < 0) > 0.7
    assert 0.75 < probe.score(Xr, y) < 0.80


def test_probe_raw_weights_with_tiny_scale_columns():
    """Columns scaled by 1e-3 get weights x1000 in raw space; coef_ * s still matches w.

    (A raw-space cosine with w / s is dominated by those few columns and so is a noisier yardstick.)
    """
    X, y, w = planted(20000, seed=1)
    s = np.ones(X.shape[1])
    s[:6] = 1000.0
    s[6:12] = 1e-3
    probe = LinearProbe().fit(X * s, y)
    assert cosine(probe.coef_ * s, w) > 0.99
    assert cosine(probe.direction_, unit(w / s)) > 0.98
    np.testing.assert_allclose(probe.decision_function(X * s), (X * s) @ probe.coef_ + probe.intercept_,
                               rtol=1e-9, atol=1e-6)


def test_probe_ignores_constant_features():
    X, y, w = planted(3000, d=8, strength=3.0, seed=2)
    Xc = np.hstack([X, np.full((len(X), 2), 7.0)])
    probe = LinearProbe().fit(Xc, y)
    assert np.all(np.isfinite(probe.coef_))
    np.testing.assert_allclose(probe.coef_[-2:], 0.0, atol=1e-12)
    assert cosine(probe.direction_[:8], w) > 0.98


# ---------------------------------------------------------------------------------------------
# sklearn compatibility


def test_probe_works_with_cross_val_score_and_clone():
    X, y, w = planted(1000, d=16, strength=3.0, seed=3)
    scores = cross_val_score(LinearProbe(), X, y, cv=5)
    assert scores.shape == (5,)
    # classes 3 sd apart: Bayes accuracy Phi(1.5) ~ 0.933
    assert 0.88 < scores.mean() < 0.97

    fitted = LinearProbe(C=0.5, max_iter=200).fit(X, y)
    twin = clone(fitted)
    assert twin is not fitted
    assert twin.get_params() == {"C": 0.5, "max_iter": 200}
    assert not hasattr(twin, "coef_")  # clone is unfitted
    twin.set_params(C=2.0)
    assert twin.C == 2.0 and fitted.C == 0.5
    np.testing.assert_allclose(clone(fitted).fit(X, y).coef_, fitted.coef_)


def test_probe_predict_returns_labels_from_classes():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 5))
    y = np.where(X[:, 0] > 0, 1, -1)  # perfectly separable, labels -1 / 1
    probe = LinearProbe().fit(X, y)
    assert list(probe.classes_) == [-1, 1]
    assert set(np.unique(probe.predict(X))) <= {-1, 1}
    assert probe.score(X, y) > 0.95


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
        "probe_cv_low", "probe_cv_high", "probe_test_low", "probe_test_high", "null_acc", "null_high", "null_permutations"}
    assert rows[0].scored_on == "all rows"  # a small set is scored exactly, and says so
    # each accuracy with its 95% interval; the shuffled-label null sits at chance, and only real signal clears it
    for r in rows:
        assert r.probe_cv_low <= r.probe_cv_acc <= r.probe_cv_high and r.probe_cv_high - r.probe_cv_low < 0.12
        assert r.probe_test_low <= r.probe_test_acc <= r.probe_test_high
        assert abs(r.null_acc - 0.5) < 0.08 and r.null_permutations == 5
    assert rows[3].cv_estimate().low > rows[3].null_high and rows[0].probe_cv_acc < rows[0].null_high + 0.05
    assert rows[3].cv_estimate().null == rows[3].null_acc


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


# ---------------------------------------------------------------------------------------------
# grouped splits


@pytest.mark.parametrize("seed", range(8))
def test_split_never_separates_a_pair(seed):
    n_pairs = 50
    pair_ids = np.concatenate([np.repeat(np.arange(n_pairs), 2), -np.ones(11, dtype=np.int64)])
    y = np.concatenate([np.tile([0, 1], n_pairs), np.arange(11) % 2])
    tr, te = train_test_split_groups(y, pair_ids, test_frac=0.3, seed=seed)
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(y)))  # a partition
    assert len(te) > 0 and len(tr) > 0
    paired_tr = set(pair_ids[tr][pair_ids[tr] >= 0].tolist())
    paired_te = set(pair_ids[te][pair_ids[te] >= 0].tolist())
    assert not paired_tr & paired_te
    for p in range(n_pairs):
        rows = np.flatnonzero(pair_ids == p)
        assert np.isin(rows, te).all() or np.isin(rows, tr).all()
    # about 30% of the groups in test
    assert 0.2 < len(te) / len(y) < 0.4


@pytest.mark.parametrize("seed", range(5))
def test_unpaired_split_is_stratified(seed):
    y = np.array([1] * 61 + [0] * 142)
    np.random.default_rng(seed).shuffle(y)
    tr, te = train_test_split_groups(y, unpaired(len(y)), test_frac=0.25, seed=seed)
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(y)))
    for cls in (0, 1):
        assert abs((y[te] == cls).sum() - (y == cls).sum() * len(te) / len(y)) <= 1
        assert abs((y[tr] == cls).sum() - (y == cls).sum() * len(tr) / len(y)) <= 1
    # seeded: same seed, same split
    tr2, te2 = train_test_split_groups(y, unpaired(len(y)), test_frac=0.25, seed=seed)
    np.testing.assert_array_equal(te, te2)


@pytest.mark.parametrize("frac", [0, 1, -0.1, 1.5])
def test_split_rejects_bad_test_fraction(frac):
    with pytest.raises(RepmapError, match="between 0 and 1"):
        train_test_split_groups(np.array([0, 1] * 10), unpaired(20), test_frac=frac)


# ---------------------------------------------------------------------------------------------
# errors


def test_one_class_only_is_a_clear_error():
    X = np.random.default_rng(8).normal(size=(20, 3))
    y = np.ones(20, dtype=int)
    with pytest.raises(RepmapError, match="All rows have label 1.*both classes"):
        LinearProbe().fit(X, y)
    with pytest.raises(RepmapError, match="both classes"):
        separation_at(X, y, unpaired(20), layer=0)
    with pytest.raises(RepmapError, match="All rows have label 0"):
        layer_separation({0: X, 1: X}, np.zeros(20, dtype=int), unpaired(20))


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


def test_a_noise_level_feature_gets_no_weight():
    """A feature with std ~1e-9 (float32 noise, as in MiniLM's last layer) must not take the probe's weight."""
    rng = np.random.default_rng(42)
    n = 400
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 8)) + np.outer(2 * y - 1, np.eye(8)[0])
    X[:, 5] = 3.0 + 2e-9 * rng.normal(size=n)
    probe = LinearProbe().fit(X, y)
    assert probe.coef_[5] == 0.0
    assert abs(probe.direction_[0]) > 0.9 and probe.score(X, y) > 0.8


def test_a_near_zero_dimension_gets_no_weight():
    """MiniLM's last layer: one dimension with mean -1e-7 and std 2e-9 beside a median std of 0.23.
    It is noise (not a constant plus rounding), and must not take the probe's weight."""
    rng = np.random.default_rng(43)
    n = 400
    y = rng.integers(0, 2, n)
    X = 0.23 * rng.normal(size=(n, 16)) + 0.3 * np.outer(2 * y - 1, np.eye(16)[0])
    X[:, 9] = -1e-7 + 2e-9 * rng.normal(size=n)
    probe = LinearProbe().fit(X, y)
    assert probe.coef_[9] == 0.0 and abs(probe.direction_[0]) > 0.9


# ---------------------------------------------------------------------------------------------
# the interval and the shuffled-label null


def test_cv_accuracy_is_the_pooled_out_of_fold_share_as_sklearn_computes_it():
    """Independent computation: scikit-learn's cross_val_predict with the same folds and a
    standardise + logistic pipeline gives the same out-of-fold verdicts."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from repmap_core.analysis.probes import separation_at
    from repmap_core.analysis.stats import wilson

    X, y, _ = planted(n=500, d=12, strength=1.2, seed=21)
    r = separation_at(X, y, unpaired(500), 0, null_permutations=0)
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)
    pred = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(C=0.1)), X, y, cv=cv,
                             groups=groups_of(unpaired(500)))
    k = int((pred == y).sum())
    assert r.probe_cv_acc == pytest.approx(k / 500, abs=0.005)
    assert (r.probe_cv_low, r.probe_cv_high) == pytest.approx(wilson(round(r.probe_cv_acc * 500), 500), abs=1e-9)
    assert r.null_permutations == 0 and r.as_dict()["null_acc"] is None  # no null asked for: None, not NaN, in JSON


def test_shuffled_labels_keep_pairs_and_counts():
    from repmap_core.analysis.probes import shuffled_labels

    rng = np.random.default_rng(0)
    pairs = np.r_[np.repeat(np.arange(50), 2), -np.ones(40, dtype=np.int64)]
    y = np.r_[np.tile([1, 0], 50), np.r_[np.ones(10), np.zeros(30)]].astype(np.int64)
    flips = []
    for _ in range(20):
        s = shuffled_labels(y, pairs, rng)
        assert (s[:100].reshape(50, 2).sum(1) == 1).all()  # every pair still has one row of each label
        assert s[100:].sum() == 10  # unpaired rows: the same counts, reassigned
        flips.append(float((s[:100] != y[:100]).mean()))
    assert 0.3 < np.mean(flips) < 0.7


def test_shuffled_label_null_is_chance_whatever_the_signal():
    from repmap_core.analysis.probes import shuffled_label_accuracy

    X, y, _ = planted(n=600, d=10, strength=3.0, seed=22)  # a probe on the real labels gets ~0.93
    mean, high = shuffled_label_accuracy(X, y, unpaired(600), n_permutations=8)
    assert abs(mean - 0.5) < 0.06 and mean <= high < 0.62


@pytest.mark.slow
def test_real_minilm_separation_has_intervals_and_clears_its_null(tmp_path):
    """Real weights: MiniLM on 300 real reviews. Every layer's probe clears its shuffled-label
    null (measured cv 0.80-0.89 against nulls ~0.5), and the pooled cv accuracy agrees with
    scikit-learn's cross_val_predict on the same folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from repmap_core.analysis.probes import layer_separation
    from repmap_core.capture.activations import get_activations
    from repmap_core.capture.models import EMBEDDED_MODEL_ID
    from repmap_core.data.load import load_dataset

    aset = get_activations(EMBEDDED_MODEL_ID, load_dataset("builtin:sentiment", limit=300, seed=0), [0, 3, 5], "auto")
    rows = layer_separation(aset.layers, aset.labels, aset.pair_ids)
    for r in rows:
        assert r.probe_cv_acc > 0.75 and r.probe_cv_low > r.null_high and abs(r.null_acc - 0.5) < 0.1
    X, y = np.asarray(aset[5], dtype=np.float64), aset.labels.astype(np.int64)
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)
    pred = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000)), X, y, cv=cv,
                             groups=groups_of(aset.pair_ids))
    assert rows[-1].probe_cv_acc == pytest.approx(float((pred == y).mean()), abs=0.01)


def test_a_small_probe_fits_the_same_on_one_blas_thread(monkeypatch):
    """The one-thread path is only faster: the coefficients equal the thread pool's."""
    from repmap_core.analysis import probes

    rng = np.random.default_rng(21)
    X = rng.normal(size=(300, 64)) * np.r_[np.full(4, 30.0), np.ones(60)]
    y = (X[:, 5] + 0.5 * rng.normal(size=300) > 0).astype(int)
    assert X.size <= probes.ONE_THREAD_ELEMENTS
    one = probes.LinearProbe().fit(X, y)
    monkeypatch.setattr(probes, "ONE_THREAD_ELEMENTS", 0)
    pool = probes.LinearProbe().fit(X, y)
    np.testing.assert_allclose(one.coef_, pool.coef_, rtol=1e-6, atol=1e-9)
    assert one.score(X, y) > 0.8
