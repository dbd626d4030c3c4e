"""Maps between activation spaces: the closed-form estimators, and the public face of the rest.

Convention (the papers'): a map sends a source row `s` (d_s,) to `t ≈ A s + b`, so `A_` is
`(d_t, d_s)` and `b_` is `(d_t,)`; on row-stacked data `T ≈ S @ A_.T + b_`.

Estimators follow scikit-learn: `__init__` stores parameters, `fit(S, T)` returns self, learned
arrays end in `_`, `transform(S)` maps, `score(S, T)` is R².
- `LeastSquaresMap`: closed form via centred normal equations + Cholesky (10x faster than
  `np.linalg.lstsq` at 10k x 768 -> 1600, same answer to 1e-4), min-norm fallback when n <= d.
- `RidgeMap`: the same with an L2 penalty, alpha chosen by held-out error from one
  eigendecomposition (`affine.choose_ridge_alpha`); the default wherever rows are few for the width.
- `ProcrustesMap`: orthogonal (plus one scale) after centring; a PCA to the smaller width when
  the widths differ.
- `LowRankMap`: reduced-rank regression (rank r).
- `GDMap`, `UpDownMap`, `MLPMap` (in `gd_maps`): gradient descent, the up/down pair, a small MLP.
- `WithinModelFit` (in `within`): `min ‖A λ + b + y δ − λ̃‖²` (Gao, Sun, Jiao §3).
- `transfer_direction`, `ProbeReadout` (in `transfer`): carrying a probe across a map.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator

from repmap_core.analysis.affine import (
    RIDGE_ALPHAS,
    AffineMap,
    check_pair,
    choose_ridge_alpha,
    parse_alpha,
    r2_score,
    rows_note,
    solve_affine,
)
from repmap_core.analysis.gd_maps import GDMap, MLPMap, ParamsMonitor, StepCallback, UpDownMap
from repmap_core.analysis.transfer import TRANSFER_MODES, ProbeReadout, transfer_direction, transfer_intercept
from repmap_core.analysis.within import WithinModelFit, signed_labels
from repmap_core.errors import RepmapError

_AffineMap = AffineMap  # the old private name, for code written against it

__all__ = ["AffineMap", "GDMap", "LeastSquaresMap", "LowRankMap", "MAP_METHODS", "MLPMap", "MapMetrics", "ParamsMonitor",
           "ProbeReadout", "ProcrustesMap", "RIDGE_ALPHAS", "RidgeMap", "StepCallback", "TRANSFER_MODES", "UpDownMap",
           "WithinModelFit", "check_pair", "choose_ridge_alpha", "make_map", "map_metrics", "parse_alpha", "r2_score",
           "rows_note", "signed_labels", "solve_affine", "transfer_direction", "transfer_intercept"]


@dataclass(frozen=True)
class MapMetrics:
    """How well mapped rows match the true ones."""

    r2: float
    mean_cosine: float  # cosine of mapped vs true rows, both centred on the true mean
    retrieval_top1: float  # share of mapped rows whose nearest true row (cosine) is their own
    per_dim_mse: np.ndarray  # (d_t,) squared error per target dimension
    row_cosine: np.ndarray | None = None  # (n,) the per-row cosines behind mean_cosine
    row_retrieved: np.ndarray | None = None  # (m,) bool: whether each sampled row retrieved its own
    retrieval_rows: np.ndarray | None = None  # (m,) which rows were sampled for retrieval


def map_metrics(T: np.ndarray, T_hat: np.ndarray, max_retrieval_rows: int = 2000, seed: int = 0) -> MapMetrics:
    """R², centred mean cosine, retrieval top-1 (on a seeded sample of at most `max_retrieval_rows`),
    with the per-row values behind them (for intervals over rows)."""
    T = np.asarray(T, dtype=np.float64)
    T_hat = np.asarray(T_hat, dtype=np.float64)
    mu = T.mean(0)
    a, b = T - mu, T_hat - mu
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    rows = np.arange(len(T))
    if len(rows) > max_retrieval_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_retrieval_rows, replace=False))
    an = a[rows] / np.maximum(np.linalg.norm(a[rows], axis=1, keepdims=True), 1e-30)
    bn = b[rows] / np.maximum(np.linalg.norm(b[rows], axis=1, keepdims=True), 1e-30)
    hit = np.argmax(bn @ an.T, axis=1) == np.arange(len(rows))
    return MapMetrics(r2=r2_score(T, T_hat), mean_cosine=float(cos.mean()), retrieval_top1=float(hit.mean()),
                      per_dim_mse=((T - T_hat) ** 2).mean(0), row_cosine=cos, row_retrieved=hit, retrieval_rows=rows)


class LeastSquaresMap(AffineMap):
    """Closed-form affine least squares `T ≈ S Aᵀ + b` (interpolates when rows <= width: see `RidgeMap`)."""

    def fit(self, S: np.ndarray, T: np.ndarray) -> LeastSquaresMap:
        S, T = check_pair(S, T)
        t0 = time.perf_counter()
        W, c = solve_affine(S, T)
        self._set(W, c, time.perf_counter() - t0)
        return self


class RidgeMap(AffineMap):
    """Affine ridge regression; with `alpha=None`, alpha is chosen from `alphas` (relative to the
    mean eigenvalue of the centred Gram matrix) by error on a seeded held-out `val_frac` of rows
    (`affine.choose_ridge_alpha`). Learned: `A_`, `b_`, `alpha_` (absolute), `val_errors_`."""

    def __init__(self, alpha: float | None = None, alphas: tuple[float, ...] = RIDGE_ALPHAS,
                 val_frac: float = 0.2, seed: int = 0):
        self.alpha = alpha
        self.alphas = alphas
        self.val_frac = val_frac
        self.seed = seed

    def fit(self, S: np.ndarray, T: np.ndarray) -> RidgeMap:
        S, T = check_pair(S, T)
        t0 = time.perf_counter()
        if self.alpha is None:
            self.alpha_, self.val_errors_ = choose_ridge_alpha(S, T, alphas=self.alphas, val_frac=self.val_frac,
                                                               seed=self.seed)
        else:
            self.alpha_, self.val_errors_ = float(self.alpha), {}
        W, c = solve_affine(S, T, alpha=self.alpha_)
        self._set(W, c, time.perf_counter() - t0)
        return self


def _pca_basis(X: np.ndarray, k: int) -> np.ndarray:
    """Top-k principal axes (d, k) of X (centred inside)."""
    Xc = (X - X.mean(0)).astype(np.float64)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    return Vt[:k].T


class ProcrustesMap(AffineMap):
    """Orthogonal map (times one scale, if `scale`) between the centred spaces.

    With different widths, the wider side is first reduced by PCA to the narrower width, so the
    map is `t ≈ μ_t + s · P_t R P_sᵀ (x − μ_s)` with at most one side's P the identity.
    """

    def __init__(self, scale: bool = True):
        self.scale = scale

    def fit(self, S: np.ndarray, T: np.ndarray) -> ProcrustesMap:
        S, T = check_pair(S, T)
        t0 = time.perf_counter()
        ds, dt = S.shape[1], T.shape[1]
        k = min(ds, dt)
        if k > len(S) - 1:
            raise RepmapError(
                f"Procrustes needs more rows than the narrower width ({k}), and there are {len(S)}; use least squares or ridge."
            )
        ms, mt = S.mean(0, dtype=np.float64), T.mean(0, dtype=np.float64)
        Sc, Tc = S - ms, T - mt
        Ps = _pca_basis(S, k) if ds > k else np.eye(ds)  # (d_s, k)
        Pt = _pca_basis(T, k) if dt > k else np.eye(dt)  # (d_t, k)
        Sr, Tr = Sc @ Ps, Tc @ Pt  # (n, k) each
        U, sig, Vt = np.linalg.svd(Sr.T @ Tr)
        R = U @ Vt  # (k, k) orthogonal, Sr R ≈ Tr
        s = float(sig.sum() / max((Sr ** 2).sum(), 1e-30)) if self.scale else 1.0
        W = s * (Ps @ R @ Pt.T)  # (d_s, d_t)
        c = mt - ms @ W
        self.rotation_, self.scale_ = R, s
        self._set(W.astype(np.float32), c.astype(np.float32), time.perf_counter() - t0)
        return self


class LowRankMap(AffineMap):
    """Reduced-rank regression: the least-squares map restricted to rank `rank`."""

    def __init__(self, rank: int = 32):
        self.rank = rank

    def fit(self, S: np.ndarray, T: np.ndarray) -> LowRankMap:
        S, T = check_pair(S, T)
        if not 1 <= self.rank <= min(S.shape[1], T.shape[1]):
            raise RepmapError(f"The rank must be between 1 and {min(S.shape[1], T.shape[1])} (the smaller width), not {self.rank}.")
        t0 = time.perf_counter()
        W, c = solve_affine(S, T)
        fitted = (S - S.mean(0)) @ W  # (n, d_t)
        _, _, Vt = np.linalg.svd(fitted.astype(np.float64), full_matrices=False)
        Vr = Vt[: self.rank].T  # (d_t, r): the fitted values' main directions
        W = (W @ Vr) @ Vr.T
        c = T.mean(0) - S.mean(0) @ W
        self._set(W.astype(np.float32), c.astype(np.float32), time.perf_counter() - t0)
        return self



MAP_METHODS = {"lstsq": LeastSquaresMap, "ridge": RidgeMap, "gd": GDMap, "procrustes": ProcrustesMap,
               "lowrank": LowRankMap, "updown": UpDownMap, "mlp": MLPMap}


def make_map(method: str, **params) -> BaseEstimator:
    """A map estimator by name (lstsq, ridge, gd, procrustes, lowrank, updown, mlp)."""
    if method not in MAP_METHODS:
        raise RepmapError(f"Map method '{method}' is not one of {', '.join(MAP_METHODS)}.")
    return MAP_METHODS[method](**params)

