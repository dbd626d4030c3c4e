"""The shuffled-label null of a probe's accuracy, computed the way the accuracy beside it is.

A null's 95th percentile needs on the order of a hundred draws: from 5 shuffles it falls below the
true one 87% of the time (200 shuffles at one SmolLM2 block: true 0.580, 5-shuffle values
0.49-0.58). Fitting `LinearProbe` 500 times per layer (100 shuffles x 5 folds) would cost half a
minute a layer, so the shuffled probes are fitted together: every shuffle shares the fold's rows, hence
its standardisation and one bound on the logistic loss's curvature, and the K label columns are
solved at once as a (d, K) matrix.

The solver minimises `LinearProbe`'s own objective (scikit-learn's L2 logistic regression on
standardised features, `0.5 |w|² + C Σ log-loss`, intercept unpenalised), so it is the same
estimator, not a stand-in: the tests check coefficients and predictions against scikit-learn.
It is Böhning's bound iteration, accelerated: the Hessian of the log-loss never exceeds
`Z'Z / 4`, so after whitening by the Cholesky factor of `B = I + C Z'Z / 4` each step is a plain
gradient step of length 1 that cannot overshoot; Nesterov momentum with adaptive restart brings the
iterations from ~110 to ~30 on SmolLM2-sized layers. Each iteration is two (n, d) x (d, K) products.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from repmap_core.analysis.probes import ONE_THREAD_ELEMENTS, feature_scale
from repmap_core.analysis.splits import train_test_split_groups

__all__ = ["NULL_PERMUTATIONS", "NULL_MAX_ROWS", "shuffled_labels", "fit_probes", "permutation_accuracies", "null_summary",
           "shuffled_label_accuracy"]

# shuffles per layer: a 95th percentile within ~0.005 of the true one (0.2 null sds); bench_fits times it
NULL_PERMUTATIONS = 100
NULL_MAX_ROWS = 2000  # above this many rows the null is fitted on a seeded sample of this many


def shuffled_labels(y: np.ndarray, pair_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels with their link to the rows broken: whole pairs flip at random (so each pair keeps one
    row of each label), unpaired rows are permuted among themselves."""
    y = np.asarray(y).copy()
    pair_ids = np.asarray(pair_ids)
    paired = pair_ids >= 0
    if paired.any():
        uniq, inverse = np.unique(pair_ids[paired], return_inverse=True)
        flip = rng.random(len(uniq)) < 0.5
        rows = np.flatnonzero(paired)
        y[rows] = np.where(flip[inverse], 1 - y[rows], y[rows])
    free = np.flatnonzero(~paired)
    y[free] = y[free][rng.permutation(len(free))]
    return y


def fit_probes(X: np.ndarray, Y: np.ndarray, C: float = 0.1, *, tol: float = 5e-3, max_iter: int = 500
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """`LinearProbe(C).fit(X, Y[:, k])` for every column k at once.

    X (n, d) activations; Y (n, K) labels 0/1. Returns raw-space `coef` (d, K), `intercept` (K,)
    (score `X @ coef + intercept`, as `LinearProbe.decision_function`) and the iterations taken.
    A column stops when none of its training logits moves by more than `tol` in an iteration (a
    looser stop than scikit-learn's would change a prediction only for a row within ~`tol` of the
    boundary: the accuracies agree with fitting `LinearProbe` shuffle by shuffle to a row or two).
    """
    from scipy.linalg import cho_factor, solve_triangular
    from scipy.special import expit

    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float32)
    n, d = X.shape
    mean, scale = X.mean(0), feature_scale(X)
    Z1 = np.empty((n, d + 1), np.float32)
    Z1[:, :d] = (X - mean) / scale  # noise-level features (scale inf) standardise to 0
    Z1[:, d] = 1.0  # the intercept, unpenalised
    B = (C / 4) * (Z1.T @ Z1)
    B[np.arange(d), np.arange(d)] += 1.0  # (d+1, d+1) bounds the objective's Hessian everywhere
    L = np.tril(cho_factor(B, lower=True, overwrite_a=True)[0])
    U = solve_triangular(L, Z1.T, lower=True, overwrite_b=True).T  # (n, d+1) float32: whitened rows, B -> identity
    # in whitened coordinates the gradient is W + C U'(σ(UW) − Y − UW/4) (the identity B = I_w + C U'U/4 folds
    # the penalty in), and a unit step along it never overshoots. A column stops when its training logits
    # move less than `tol` in an iteration; the rest go on without it.
    K = Y.shape[1]
    W = np.zeros((d + 1, K), np.float32)
    V, t, previous = W.copy(), np.ones(K, np.float32), np.zeros((n, K), np.float32)
    active, Ya = np.arange(K), Y
    n_iter = 0
    while active.size and n_iter < max_iter:
        n_iter += 1
        Va, Wa, ta = V[:, active], W[:, active], t[active]
        A = U @ Va  # (n, k) logits at the extrapolated points
        R = expit(A)
        R -= Ya
        R -= A / 4
        G = Va + C * (U.T @ R)
        W_next = Va - G
        restart = (G * (W_next - Wa)).sum(0) > 0  # momentum pointing uphill: drop it (O'Donoghue & Candès)
        t_next = (1 + np.sqrt(1 + 4 * ta * ta)) / 2
        beta = np.where(restart, 0.0, (ta - 1) / t_next).astype(np.float32)
        t[active] = np.where(restart, 1.0, t_next)
        V[:, active] = W_next + beta * (W_next - Wa)
        W[:, active] = W_next
        moved = np.abs(A - previous[:, active]).max(0) if n_iter > 1 else np.full(active.size, np.inf)
        previous[:, active] = A
        keep = moved >= tol
        if not keep.all():
            active, Ya = active[keep], Ya[:, keep]
    W64 = solve_triangular(L.T, W, lower=False).astype(np.float64)  # (d+1, K) standardised-space weights
    coef = W64[:d] / scale[:, None]
    return coef, W64[d] - mean @ coef, n_iter


def permutation_accuracies(X: np.ndarray, y: np.ndarray, pair_ids: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]],
                           *, n_permutations: int = NULL_PERMUTATIONS, C: float = 0.1, seed: int = 0) -> np.ndarray:
    """The accuracy of the probe on shuffled labels, once per shuffle (n_permutations,).

    X (n, d), y (n,) 0/1, `pair_ids` (n,) (-1: unpaired). `splits` are the (train, test) row index
    pairs the real accuracy was computed on: the cross-validation folds (the test rows' verdicts
    pooled over folds, as the cross-validated accuracy is) or one held-out split. Each shuffle
    (`shuffled_labels`: whole pairs flip) is scored on the same splits as the real labels."""
    y = np.asarray(y).astype(np.int64)
    rng = np.random.default_rng(seed + 7919)
    Y = np.stack([shuffled_labels(y, pair_ids, rng) for _ in range(n_permutations)], 1)  # (n, K)
    hits = np.zeros(n_permutations)
    seen = 0
    X = np.asarray(X)
    # one BLAS thread, as for LinearProbe: at these sizes a thread pool's contention costs ~4x (measured)
    with threadpool_limits(1 if X.size * n_permutations <= ONE_THREAD_ELEMENTS * 64 else None):
        for tr, te in splits:
            coef, intercept, _ = fit_probes(X[tr], Y[tr], C)
            predicted = (np.asarray(X[te], np.float64) @ coef + intercept) > 0  # (len(te), K)
            hits += (predicted == (Y[te] == 1)).sum(0)
            seen += len(te)
    return hits / max(seen, 1)


def null_summary(accuracies: np.ndarray) -> tuple[float, float]:
    """(mean, 95th percentile) of the shuffled-label accuracies; (nan, nan) without any."""
    accuracies = np.asarray(accuracies, np.float64)
    if accuracies.size == 0:
        return float("nan"), float("nan")
    return float(accuracies.mean()), float(np.percentile(accuracies, 95))


def shuffled_label_accuracy(X: np.ndarray, y: np.ndarray, pair_ids: np.ndarray, *, n_permutations: int = NULL_PERMUTATIONS,
                            test_frac: float = 0.2, seed: int = 0, C: float = 0.1,
                            max_rows: int = NULL_MAX_ROWS) -> tuple[float, float]:
    """The null of a held-out probe accuracy: the probe trained and scored on shuffled labels on the
    same split as the real one (`train_test_split_groups(y, pair_ids, test_frac, seed)`),
    `n_permutations` times. Above `max_rows` rows, a seeded sample of that many (and its own split).
    Returns (mean, 95th percentile); (nan, nan) with `n_permutations=0`."""
    if n_permutations <= 0:
        return float("nan"), float("nan")
    y, pair_ids = np.asarray(y).astype(np.int64), np.asarray(pair_ids)
    rows = np.arange(len(y))
    if len(rows) > max_rows:
        rows = np.sort(np.random.default_rng(seed + 7919).choice(rows, max_rows, replace=False))
    Xs, ys, ps = np.asarray(X[rows]), y[rows], pair_ids[rows]
    split = train_test_split_groups(ys, ps, test_frac, seed)
    return null_summary(permutation_accuracies(Xs, ys, ps, [split], n_permutations=n_permutations, C=C, seed=seed))
