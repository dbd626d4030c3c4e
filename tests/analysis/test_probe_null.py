"""Tests for repmap_core.analysis.probe_null: the batched probe is LinearProbe (scikit-learn's fit,
column by column), and the shuffled-label null is the cross-validated accuracy of shuffled labels,
with enough shuffles that its 95th percentile holds still."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from repmap_core.analysis.probe_null import (
    NULL_PERMUTATIONS,
    fit_probes,
    null_summary,
    permutation_accuracies,
    shuffled_labels,
)
from repmap_core.analysis.probes import LinearProbe
from repmap_core.analysis.separation import separation_at
from repmap_core.pairs import groups_of
from tests.analysis.test_probes import planted, unpaired


def raw_like(n: int, d: int, seed: int = 0, noise: float = 0.4):
    """Correlated features with outlier dimensions (a huge one, an offset one), labels from a direction."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 12)) @ rng.normal(size=(12, d)) * 0.5 + rng.normal(size=(n, d))
    X[:, 3] *= 100.0
    X[:, 5] += 50.0
    z = X @ rng.normal(size=d) / np.sqrt(d)
    z = z - np.median(z)  # balanced classes
    y = (z + rng.normal(size=n) * z.std() * noise > 0).astype(np.int64)
    return X, y


def cv_splits(y: np.ndarray, pair_ids: np.ndarray, seed: int = 0) -> list:
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    return list(cv.split(np.zeros(len(y)), y, groups_of(pair_ids)))


def test_the_batched_fit_is_linear_probe_column_by_column():
    """Planted truth for the solver: every column's coefficients and predictions equal scikit-learn's
    L2 logistic regression on standardised features (LinearProbe), the real labels and shuffled ones."""
    X, y = raw_like(400, 60, seed=1)
    rng = np.random.default_rng(2)
    Y = np.stack([y] + [rng.permutation(y) for _ in range(5)], 1)
    coef, intercept, iterations = fit_probes(X[:320], Y[:320], tol=1e-5)
    assert iterations < 500
    for k in range(Y.shape[1]):
        probe = LinearProbe().fit(X[:320], Y[:320, k])
        cos = coef[:, k] @ probe.coef_ / (np.linalg.norm(coef[:, k]) * np.linalg.norm(probe.coef_))
        assert cos > 0.9999
        assert intercept[k] == pytest.approx(probe.intercept_, abs=0.02)
        ours = X[320:] @ coef[:, k] + intercept[k]
        assert np.mean((ours > 0) == (probe.decision_function(X[320:]) > 0)) >= 0.99


def test_the_null_is_the_same_cross_validation_run_on_shuffled_labels():
    """Independent computation: a loop of LinearProbe fits over the same folds and the same shuffles
    gives the same accuracy for every shuffle."""
    X, y = raw_like(300, 20, seed=3, noise=0.2)
    pairs = -np.ones(len(y), dtype=np.int64)
    splits = cv_splits(y, pairs)
    ours = permutation_accuracies(X, y, pairs, splits, n_permutations=40, seed=5)
    rng = np.random.default_rng(5 + 7919)  # the shuffles permutation_accuracies draws
    reference = []
    for _ in range(40):
        s = shuffled_labels(y, pairs, rng)
        hits = sum(int((LinearProbe().fit(X[tr], s[tr]).predict(X[te]) == s[te]).sum()) for tr, te in splits)
        reference.append(hits / len(y))
    assert np.abs(ours - np.asarray(reference)).max() <= 2 / len(y)  # at most two borderline rows differ
    assert abs(ours.mean() - 0.5) < 0.04  # no signal left: chance


def test_separation_reports_the_cross_validated_null_with_enough_shuffles():
    X, y = raw_like(400, 16, seed=4, noise=0.3)
    r = separation_at(X, y, -np.ones(400, dtype=np.int64), 2)
    assert r.null_permutations == NULL_PERMUTATIONS >= 100 and r.null_rows == 400
    assert abs(r.null_acc - 0.5) < 0.03 and r.null_acc < r.null_high < 0.6
    assert r.cv_estimate().low > r.null_high  # real signal clears it


def test_a_95th_percentile_from_five_shuffles_is_low_and_from_the_default_is_not():
    """Why the default is 100: the 95th percentile of 5 draws falls below the true one most of the time."""
    rng = np.random.default_rng(0)
    draws = rng.normal(0.5, 0.02, size=(2000, NULL_PERMUTATIONS))  # stand-in null accuracies
    true = 0.5 + 1.645 * 0.02
    five = np.percentile(draws[:, :5], 95, axis=1)
    many = np.percentile(draws, 95, axis=1)
    assert np.mean(five < true) > 0.6
    assert np.percentile(np.abs(many - true), 95) < 0.01  # half a null sd, 19 times in 20
    assert null_summary(np.array([])) != null_summary(np.array([0.5]))  # (nan, nan) without draws


def test_shuffled_labels_keep_pairs_and_counts():
    from repmap_core.analysis.probe_null import shuffled_labels

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
    from repmap_core.analysis.probe_null import shuffled_label_accuracy

    X, y, _ = planted(n=600, d=10, strength=3.0, seed=22)  # a probe on the real labels gets ~0.93
    mean, high = shuffled_label_accuracy(X, y, unpaired(600), n_permutations=8)
    assert abs(mean - 0.5) < 0.06 and mean <= high < 0.62


@pytest.mark.slow
def test_real_smollm2_null_matches_a_200_shuffle_reference(smollm2):
    """Real weights (SmolLM2, block 14, last token, 400 real reviews): the null's 95th percentile is
    within 0.02 of an independent 200-shuffle reference (LinearProbe per shuffle and fold, other shuffles)."""
    from repmap_core.capture.activations import get_activations
    from repmap_core.data.load import load_dataset

    aset = get_activations(smollm2, load_dataset("builtin:sentiment", limit=400, seed=1), [14], "last")
    X, y, pairs = np.asarray(aset[14], np.float64), aset.labels.astype(np.int64), aset.pair_ids
    r = separation_at(X, y, pairs, 14)
    splits = cv_splits(y, pairs)
    rng = np.random.default_rng(123)
    reference = []
    for _ in range(200):
        s = shuffled_labels(y, pairs, rng)
        reference.append(sum(int((LinearProbe().fit(X[tr], s[tr]).predict(X[te]) == s[te]).sum()) for tr, te in splits)
                         / len(y))
    assert abs(r.null_high - np.percentile(reference, 95)) < 0.02
    assert abs(r.null_acc - np.mean(reference)) < 0.01
