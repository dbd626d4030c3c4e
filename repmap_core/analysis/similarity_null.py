"""Permutation nulls for debiased linear CKA: what it reads when the rows no longer correspond.

Shuffling the rows of one side keeps each side's own geometry and breaks only the pairing of
texts, so the shuffled values are what "no shared structure" looks like at this many rows and this
width (ReSi's sanity test: shuffled rows -> ~0). A value means something only above the null's 95th
percentile.

Cost: one shuffle of one layer pair is an (m, m) gather and dot product on the kernels of m rows.
`layer_cka_null` shrinks m as the grid grows so that the whole null stays near 2e9 multiply-adds.
A 95th percentile needs on the order of a hundred shuffles (from 20 it sits below the true one more
often than not), so there are 100, and the budget buys fewer rows: MiniLM's 7 x 7 layers use ~640
rows, MiniLM x SmolLM2 (7 x 31) ~300, 30 x 30 ~150. Fewer rows make a wider null, so a cell that
clears it clears the one at full size too; the heatmap says how many rows and shuffles it used.
"""
from __future__ import annotations

import math

import numpy as np

from repmap_core.analysis.cka import cka_prepare, hsic_unbiased, linear_cka_debiased, self_hsic
from repmap_core.analysis.similarity_inputs import centred, check_matrix, check_same_rows

NULL_PERMUTATIONS = 100  # shuffled-row CKAs per layer pair: enough for the 95th percentile the heatmap marks against
NULL_MAX_ROWS = 1000  # rows the null is computed on, at most
NULL_BUDGET = 2e9  # multiply-adds the whole grid's null may cost


def cka_null(X: np.ndarray, Y: np.ndarray, n_permutations: int = NULL_PERMUTATIONS, max_rows: int = NULL_MAX_ROWS,
             seed: int = 0) -> tuple[float, float]:
    """Permutation null of `linear_cka_debiased(X, Y)` for `X (n, d1)`, `Y (n, d2)`: the rows of Y
    shuffled against X's, `n_permutations` times, on a seeded sample of at most `max_rows` rows.
    Returns (mean, 95th percentile)."""
    X, Y = check_matrix(X, "X"), check_matrix(Y, "Y")
    check_same_rows(len(X), len(Y))
    rng = np.random.default_rng(seed)
    rows = np.arange(len(X)) if len(X) <= max_rows else np.sort(rng.choice(len(X), max_rows, replace=False))
    Xs, Ys = np.asarray(X)[rows], np.asarray(Y)[rows]
    values = [linear_cka_debiased(Xs, Ys[rng.permutation(len(rows))]) for _ in range(n_permutations)]
    return float(np.mean(values)), float(np.percentile(values, 95))


def null_rows_for(n: int, n_a: int, n_b: int, n_permutations: int, max_rows: int = NULL_MAX_ROWS,
                  budget: float = NULL_BUDGET) -> int:
    """How many rows a grid's null can afford: at most `max_rows` and `n`, at least 50."""
    affordable = int(math.sqrt(budget / max(n_a * n_b * n_permutations, 1)))
    return max(min(n, max_rows, affordable), min(n, 50))


def layer_cka_null(layers_a: dict[int, np.ndarray], layers_b: dict[int, np.ndarray], n_permutations: int = NULL_PERMUTATIONS,
                   *, rows: np.ndarray | None = None, max_rows: int = NULL_MAX_ROWS, seed: int = 0
                   ) -> tuple[np.ndarray, int]:
    """Per layer pair, the 95th percentile of debiased CKA with B's rows shuffled.

    `layers_a`, `layers_b`: layer -> (n, d) on the same rows (`rows`, when given, selects them
    first, as `layer_similarity` does). A seeded sample of `null_rows_for(...)` rows is drawn once;
    each shuffle permutes B's kernel once and scores it against every layer of A in one product.
    Returns (null_high (len(A), len(B)) in sorted layer order, the number of rows used).
    """
    keys_a, keys_b = sorted(layers_a), sorted(layers_b)
    pick = lambda X: np.asarray(X) if rows is None else np.asarray(X)[rows]  # noqa: E731
    n = len(pick(layers_a[keys_a[0]]))
    rng = np.random.default_rng(seed + 1)
    m = null_rows_for(n, len(keys_a), len(keys_b), n_permutations, max_rows)
    sample = np.arange(n) if m >= n else np.sort(rng.choice(n, m, replace=False))
    kernels = np.empty((len(keys_a), m, m))  # (len(A), m, m)
    side_a = [cka_prepare(centred(pick(layers_a[a])[sample], f"Layer {a} of A"), True, kernels[i])
              for i, a in enumerate(keys_a)]
    D = np.stack([a.diag for a in side_a])  # (len(A), m) the kernels' diagonals
    h_aa = np.array([self_hsic(a) for a in side_a])
    flat = kernels.reshape(len(keys_a), -1)
    null = np.empty((len(keys_a), len(keys_b)))
    for j, b in enumerate(keys_b):
        pb = cka_prepare(centred(pick(layers_b[b])[sample], f"Layer {b} of B"), True)
        h_bb = self_hsic(pb)  # a permutation leaves a layer's own HSIC unchanged
        shuffled = np.empty((n_permutations, len(keys_a)))
        for p in range(n_permutations):
            perm = rng.permutation(m)
            Kp = pb.K[np.ix_(perm, perm)]  # (m, m) B's kernel with its rows shuffled
            dp = pb.diag[perm]
            h_ab = hsic_unbiased(flat @ Kp.ravel(), D.sum(1), dp.sum(), D @ dp, m)
            shuffled[p] = h_ab / np.sqrt(np.maximum(h_aa * h_bb, 1e-300))
        null[:, j] = np.percentile(shuffled, 95, axis=0)
    return null, m
