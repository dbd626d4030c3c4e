"""The shared base of every affine fit: input checks, R², the closed-form solver and ridge's
held-out choice of penalty.

Convention (the papers'): a map sends a source row `s` (d_s,) to `t ≈ A s + b`, so `A_` is
`(d_t, d_s)` and `b_` is `(d_t,)`; on row-stacked data `T ≈ S @ A_.T + b_`. The solver works in
the row-stacked form `T ≈ X W + c` with `W (d_x, d_t)`.

Why ridge with a held-out penalty is the default wherever rows are few for the width: least
squares on n <= d rows interpolates (R² train 1.000); on real MiniLM activations, 240-392 rows of
width 384-576 gave held-out R² from -0.6 to -8.5, and ridge with alpha chosen on held-out rows
0.3-0.7 on the same rows (DESIGN.md, "What real weights taught").
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from repmap_core.errors import RepmapError

# candidate penalties, relative to the mean eigenvalue of the centred Gram matrix
RIDGE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in 10.0 ** np.arange(-4, 2.5, 0.5))


def check_pair(S: np.ndarray, T: np.ndarray, names: tuple[str, str] = ("source", "target")) -> tuple[np.ndarray, np.ndarray]:
    """Both 2-D, the same rows, finite; returns float32 views/copies."""
    S, T = np.asarray(S), np.asarray(T)
    for arr, name in ((S, names[0]), (T, names[1])):
        if arr.ndim != 2:
            raise RepmapError(f"The {name} activations must be a 2-D array (rows x width), not shape {arr.shape}.")
        bad = ~np.isfinite(arr).all(1)
        if bad.any():
            raise RepmapError(
                f"The {name} activations have {int(bad.sum())} row(s) with NaN or inf (first at row {int(np.flatnonzero(bad)[0])}); "
                "recompute them in float32 or drop those rows."
            )
    if len(S) != len(T):
        raise RepmapError(
            f"The {names[0]} and {names[1]} activations have {len(S)} and {len(T)} rows; a map needs the same rows (texts) in both."
        )
    if len(S) < 3:
        raise RepmapError(f"A map needs at least 3 rows, and there are {len(S)}.")
    return S.astype(np.float32, copy=False), T.astype(np.float32, copy=False)


def r2_score(T: np.ndarray, T_hat: np.ndarray) -> float:
    """Variance-weighted R²: 1 - SSE / SST with SST around each column's mean."""
    T = np.asarray(T, dtype=np.float64)
    sse = float(((T - T_hat) ** 2).sum())
    sst = float(((T - T.mean(0)) ** 2).sum())
    return 1.0 - sse / sst if sst > 0 else float("nan")


def rows_note(n: int, d: int, what: str = "fit") -> str:
    """One sentence when a fit has no more rows than features (it interpolates without a penalty)."""
    return (f"Only {n} training rows for {d} features: without a penalty this {what} interpolates the training rows "
            "(R² train 1.000) and generalises badly, so read the held-out numbers, and keep ridge with alpha 'auto'.")


def parse_alpha(text: str | float | None) -> float | None:
    """A ridge penalty from a widget or the CLI: 'auto' (or None) -> None (chosen on held-out rows),
    else a number >= 0 (0: plain least squares)."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("auto", "")):
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = -1.0
    if not (value >= 0 and np.isfinite(value)):
        raise RepmapError(f"Ridge alpha must be 'auto' or a number of 0 or more, not '{text}'.")
    return value


def solve_affine(X: np.ndarray, T: np.ndarray, alpha: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Least squares `T ≈ X W + c` (optionally ridge on W): returns W (d_x, d_t), c (d_t,).

    Centred normal equations (X_cᵀX_c + αI) W = X_cᵀT_c solved by Cholesky, Gram products in
    float32 BLAS and the solve in float64. When X_cᵀX_c is singular (n <= d, or collinear
    columns) and α = 0, falls back to the minimum-norm solution.
    """
    from scipy.linalg import LinAlgError, cho_factor, cho_solve, lstsq

    X = np.asarray(X, dtype=np.float32)
    T = np.asarray(T, dtype=np.float32)
    mx, mt = X.mean(0, dtype=np.float64), T.mean(0, dtype=np.float64)
    Xc = X - mx.astype(np.float32)  # (n, d_x)
    Tc = T - mt.astype(np.float32)  # (n, d_t)
    G = (Xc.T @ Xc).astype(np.float64)  # (d_x, d_x)
    C = (Xc.T @ Tc).astype(np.float64)  # (d_x, d_t)
    if alpha > 0:
        G[np.diag_indices_from(G)] += alpha
    W = None
    if len(X) > X.shape[1] or alpha > 0:
        try:
            factor = cho_factor(G, lower=False, check_finite=False)
            # a numerically singular factorisation (tiny pivots) gives a garbage solution
            piv = np.abs(np.diag(factor[0]))
            if piv.min() > 1e-7 * piv.max():
                W = cho_solve(factor, C, check_finite=False)
        except LinAlgError:
            W = None
    if W is None:
        # singular values below 1e-6 of the largest are float32 noise (e.g. the direction centring
        # removed), not signal: cut them, or they blow the minimum-norm solution up
        W = lstsq(Xc.astype(np.float64), Tc.astype(np.float64), cond=1e-6, lapack_driver="gelsd", check_finite=False)[0]
    c = mt - mx @ W
    return W.astype(np.float32), c.astype(np.float32)


def held_out_rows(n: int, val_frac: float, seed: int, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A seeded (validation, training) split of `n` row indices; with `groups` (n,), whole groups
    (pairs) go to one side. At least one row on each side."""
    rng = np.random.default_rng(seed)
    n_val = min(max(1, int(round(val_frac * n))), n - 2)
    if groups is None:
        order = rng.permutation(n)
        return np.sort(order[:n_val]), np.sort(order[n_val:])
    groups = np.asarray(groups)
    uniq, inverse = np.unique(groups, return_inverse=True)
    picked = np.zeros(len(uniq), bool)
    count = 0
    for g in rng.permutation(len(uniq)):
        if count >= n_val:
            break
        picked[g] = True
        count += int((inverse == g).sum())
    val = np.flatnonzero(picked[inverse])
    return val, np.flatnonzero(~picked[inverse])


def choose_ridge_alpha(X: np.ndarray, T: np.ndarray, *, alphas: tuple[float, ...] = RIDGE_ALPHAS, val_frac: float = 0.2,
                       seed: int = 0, groups: np.ndarray | None = None) -> tuple[float, dict[float, float]]:
    """The ridge penalty for `T ≈ X W + c` with the lowest squared error on held-out rows.

    X (n, d_x), T (n, d_t). A seeded `val_frac` of the rows (whole `groups` when given) is held out;
    `alphas` are relative to the mean eigenvalue of the training rows' centred Gram matrix, so one
    grid serves any scale; one eigendecomposition serves every alpha. Returns the best alpha in
    absolute units (as `solve_affine` takes it) and {alpha: held-out mean squared error}.
    """
    X = np.asarray(X, dtype=np.float32)
    T = np.asarray(T, dtype=np.float32)
    val, tr = held_out_rows(len(X), val_frac, seed, groups)
    mx, mt = X[tr].mean(0), T[tr].mean(0)
    Xc, Tc = (X[tr] - mx).astype(np.float64), (T[tr] - mt).astype(np.float64)
    evals, V = np.linalg.eigh(Xc.T @ Xc)  # (d_x,), (d_x, d_x): one decomposition serves every alpha
    evals = np.clip(evals, 0, None)
    VtC = V.T @ (Xc.T @ Tc)  # (d_x, d_t)
    Xv = (X[val] - mx).astype(np.float64) @ V  # (n_val, d_x)
    Tv = T[val] - mt
    scale = max(float(evals.mean()), 1e-12)
    errors = {}
    for a in alphas:
        pred = Xv @ (VtC / (evals + a * scale)[:, None])
        errors[float(a * scale)] = float(((pred - Tv) ** 2).mean())
    return min(errors, key=errors.get), errors


class AffineMap(BaseEstimator):
    """Shared behaviour of maps with `A_` (d_t, d_s) and `b_` (d_t,)."""

    def transform(self, S: np.ndarray) -> np.ndarray:
        return np.asarray(S, dtype=np.float32) @ self.A_.T + self.b_

    predict = transform

    def score(self, S: np.ndarray, T: np.ndarray) -> float:
        return r2_score(T, self.transform(S))

    def _set(self, W: np.ndarray, c: np.ndarray, seconds: float) -> None:
        self.A_ = np.ascontiguousarray(W.T)  # (d_t, d_s)
        self.b_ = c
        self.seconds_ = seconds
