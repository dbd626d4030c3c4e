"""Tests for repmap_core.analysis.probes: the linear probe, grouped splits and bad inputs (per-layer
separation scores: test_separation.py; the shuffled-label null: test_probe_null.py).

Every test plants a known truth (a direction, a signal strength, a hand-computed ratio) and checks
the code recovers it.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score

from repmap_core.analysis.probes import LinearProbe
from repmap_core.analysis.separation import (
    layer_separation,
    separation_at,
)
from repmap_core.analysis.splits import train_test_split_groups
from repmap_core.errors import RepmapError

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
