"""Linear probes: logistic regression on standardised activations, its held-out score, and a
streamed version for sets larger than memory.

`LinearProbe` is logistic regression on standardised features (raw GPT-2 activations have outlier
dimensions that make lbfgs take hundreds of iterations; standardised, it takes about ten), with
its weights mapped back to activation space so the direction can be reused or transferred.
Per-layer separation scores built on it are in `separation.py`, the shuffled-label null in
`probe_null.py`.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from threadpoolctl import threadpool_limits

from repmap_core.analysis.stats import Estimate, accuracy_estimate
from repmap_core.errors import RepmapError

ONE_THREAD_ELEMENTS = 4_000_000  # rows x width up to which a probe fits on one BLAS thread


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Logistic-regression probe on standardised activations.

    After `fit(X (n, d), y (n,))`: `coef_` (d,) and `intercept_` score raw activations
    (`X @ coef_ + intercept_`), `direction_` is `coef_` normalised, `mean_`/`scale_` the standardiser.
    """

    def __init__(self, C: float = 0.1, max_iter: int = 1000):
        self.C = C  # inverse L2 strength on standardised features; 0.1 holds up when d ~ n
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearProbe:
        from sklearn.linear_model import LogisticRegression

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        check_two_classes(y)
        self.mean_ = X.mean(0)
        self.scale_ = feature_scale(X)
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter)
        # one BLAS thread for the small matrices probes see (threads cost more than they give at this
        # size: an 800 x 576 SmolLM2 layer fits several times faster; bench_fits measures it)
        with threadpool_limits(1 if X.size <= ONE_THREAD_ELEMENTS else None):
            clf.fit((X - self.mean_) / self.scale_, y)
        self.classes_ = clf.classes_
        self.coef_ = clf.coef_[0] / self.scale_  # (d,) raw-space weights
        self.intercept_ = float(clf.intercept_[0] - self.mean_ @ self.coef_)
        norm = float(np.linalg.norm(self.coef_))
        # constant features give an all-zero probe: its direction is undefined, kept as zeros
        self.direction_ = self.coef_ / norm if norm > 0 else np.zeros_like(self.coef_)
        self.n_iter_ = int(clf.n_iter_[0])
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[(self.decision_function(X) > 0).astype(np.int64)]


def feature_scale(X: np.ndarray) -> np.ndarray:
    """Per-feature std for standardising, with noise-level features set to inf so they standardise
    to 0 and get no weight.

    A feature is noise when its std is below 1e-6 of the median feature's (float32 rounding in the
    residual sums is ~1e-7 of the vector's scale) or below 1e-5 of its own mean (a constant plus
    rounding). MiniLM's last layer has one at std 2e-9 beside a median of 0.23: scaled to unit
    variance it took all of a probe's weight. Genuinely small features (1e-3 beside 1) stay.
    """
    X = np.asarray(X, dtype=np.float64)
    scale = X.std(0)
    floor = np.maximum(1e-5 * np.abs(X.mean(0)), 1e-6 * float(np.median(scale)) if scale.size else 0.0)
    return np.where(scale <= np.maximum(floor, 1e-30), np.inf, scale)


def check_two_classes(y: np.ndarray) -> None:
    values = np.unique(y)
    if len(values) < 2:
        raise RepmapError(
            f"All rows have label {values[0] if len(values) else '?'}; separation needs both classes, so pick data with 0 and 1 labels."
        )
    if len(values) > 2:
        raise RepmapError(f"A probe here separates two classes, and the labels have {len(values)}; map them to two first.")


def held_out_probe(X: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray, groups: np.ndarray | None = None,
                   C: float = 0.1) -> tuple[dict, LinearProbe, Estimate]:
    """A probe fitted on rows `tr` of `X` (n, d), scored on `tr` and `te`: ({"train", "test"},
    the probe, the test accuracy with its 95% interval (Wilson, or a bootstrap over `groups[te]`))."""
    probe = LinearProbe(C=C).fit(X[tr], y[tr])
    est = accuracy_estimate(probe.predict(X[te]) == y[te], None if groups is None else groups[te])
    return {"train": float(probe.score(X[tr], y[tr])), "test": est.value}, probe, est


def streamed_probe_scores(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, *, chunk: int = 10_000,
                          epochs: int = 3, seed: int = 0) -> tuple[float, float]:
    """(train, test) accuracy of a logistic probe fitted by SGD over chunks of standardised rows:
    memory stays flat however many rows there are."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    for s in range(0, len(train), chunk):
        scaler.partial_fit(np.asarray(X[np.sort(train[s:s + chunk])], dtype=np.float64))
    # averaging takes SGD from 0.80 to 0.84 (the Bayes limit) on a planted case; plain SGD stays noisy
    clf = SGDClassifier(loss="log_loss", alpha=1e-4, average=True, random_state=seed)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(train)
        for s in range(0, len(order), chunk):
            rows = np.sort(order[s:s + chunk])
            clf.partial_fit(scaler.transform(np.asarray(X[rows], dtype=np.float64)), y[rows], classes=np.array([0, 1]))

    def acc(rows: np.ndarray) -> float:
        hits = sum(int((clf.predict(scaler.transform(np.asarray(X[np.sort(rows[s:s + chunk])], dtype=np.float64)))
                        == y[np.sort(rows[s:s + chunk])]).sum()) for s in range(0, len(rows), chunk))
        return hits / max(len(rows), 1)

    return acc(train), acc(test)


