"""Intervals and nulls (repmap_core.analysis.stats) on planted answers and against independent computations."""
from __future__ import annotations

import json

import numpy as np
import pytest

from repmap_core.analysis.stats import (
    Estimate,
    bootstrap,
    format_estimate,
    format_null,
    r2_estimate,
    random_direction_accuracy,
    row_mean_estimate,
    wilson,
)


def test_bias_corrected_bootstrap_keeps_a_shrunk_statistic_inside_its_interval():
    """The cosine of a fixed direction with a resampled class-mean difference is pulled towards 0 by
    resampling noise: every percentile bound can fall below the full-sample value. Efron's bias
    correction moves the interval back around it."""
    rng = np.random.default_rng(0)
    d, n = 300, 80
    y = np.arange(n) % 2
    X = rng.normal(size=(n, d)) + np.outer(y, np.r_[1.5, np.zeros(d - 1)])
    delta = np.r_[1.0, np.zeros(d - 1)]

    def cos(idx):
        md = X[idx][y[idx] == 1].mean(0) - X[idx][y[idx] == 0].mean(0)
        return float(md @ delta / np.linalg.norm(md))

    value = cos(np.arange(n))
    plain = bootstrap(cos, n, seed=1)
    corrected = bootstrap(cos, n, seed=1, bias_corrected=True)
    assert plain[1] < value  # measured: the whole percentile interval sits below the value
    assert corrected[0] <= value <= corrected[1]


def test_r2_estimate_matches_sklearn_and_covers_the_truth():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(2)
    T = rng.normal(size=(400, 6)) * [1, 2, 3, 1, 1, 5]
    T_hat = T + rng.normal(size=T.shape)  # per-column R² = 1 - 1 / var
    e = r2_estimate(T, T_hat)
    assert e.value == pytest.approx(r2_score(T, T_hat, multioutput="variance_weighted"), abs=1e-12)
    truth = 1 - 6 / sum(np.square([1, 2, 3, 1, 1, 5]))
    assert e.low <= truth <= e.high and e.high - e.low < 0.05 and e.null == 0.0
    pairs = np.repeat(np.arange(200), 2)
    assert r2_estimate(T, T_hat, pairs).method == "bootstrap (pairs)"


def test_random_directions_score_chance_and_a_mean_of_rows_has_its_interval():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(500, 40)), rng.integers(0, 2, 500)
    mean, high = random_direction_accuracy(X, y, center=X.mean(0))
    assert abs(mean - 0.5) < 0.02 and 0.5 < high < 0.6
    v = rng.normal(0.3, 1.0, 400)
    e = row_mean_estimate(v)
    assert e.low < 0.3 < e.high and e.value == pytest.approx(v.mean())


def test_formatting_and_json():
    e = Estimate(np.float64(0.873), 0.8412, 0.8991, np.int64(200), "wilson", null=0.5, null_high=0.57)
    assert type(e.value) is float and type(e.n) is int  # numpy scalars become plain values
    assert format_estimate(e) == "0.873 [0.841, 0.899]" and format_null(e) == "null 0.50 (95% ≤ 0.57)"
    assert format_null(Estimate(0.9, 0.8, 0.95)) == ""
    assert json.dumps(Estimate(0.9, float("nan"), float("nan")).as_dict(), allow_nan=False)
    assert wilson(50, 50)[1] == 1.0 and wilson(0, 50)[0] == 0.0
