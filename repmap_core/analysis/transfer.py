"""Carrying a source probe (a direction `w` (d_s,) with intercept `c`) to a target space.

A probe direction is a linear *functional*: it scores rows. If `t ≈ A s + b`, the target direction
that scores target rows as `w` scores their source rows solves `w_tᵀ t ≈ wᵀ s`. Ways to get it:
- `functional` (the default, `ProbeReadout`): a ridge regression of the source probe's scores
  `wᵀ s + c` on the paired target rows `t`, alpha chosen on held-out rows. It is a readout fitted
  to what the functional should do, so it cannot amplify what a map got wrong.
- `pinv`: `pinv(A)ᵀ w`, the algebraic inverse. Ill-conditioned: a shrunk (ridge) or noisy A has tiny
  singular values in noise directions and inverting them swamps the direction. On real MiniLM layer
  pairs (240 rows, width 384) it scored 0.45-0.67 where the probes scored 0.83-0.92 and `A w` kept
  0.72-0.85; the readout 0.87-0.92. Kept as a labelled comparison.
- `functional_reverse`: `Bᵀ w` with B a (ridge) map fitted target -> source: the readout of every
  source direction at once (one alpha for all of them).
- `vector`: `A w`, the direction's image (Gao et al.). Right for a displacement such as a steering
  vector; for a probe only when A is orthogonal.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from repmap_core.analysis.affine import RIDGE_ALPHAS, check_pair, choose_ridge_alpha, solve_affine
from repmap_core.errors import RepmapError

TRANSFER_MODES = ("vector", "functional", "functional_reverse", "pinv")


class ProbeReadout(BaseEstimator):
    """The source probe carried as a readout: ridge regression of its scores on target rows.

    `fit(T (n, d_t), scores (n,))` with `scores = w·s + c` of the same rows' source activations;
    with `alpha=None` the penalty is chosen on a seeded held-out `val_frac` of the rows (whole
    `groups` when given), as `RidgeMap` chooses it. Learned: `coef_` (d_t,), `intercept_`, `alpha_`.
    Labels are not used: the readout learns what the source probe does, not the task.
    """

    def __init__(self, alpha: float | None = None, alphas: tuple[float, ...] = RIDGE_ALPHAS, val_frac: float = 0.2,
                 seed: int = 0):
        self.alpha = alpha
        self.alphas = alphas
        self.val_frac = val_frac
        self.seed = seed

    def fit(self, T: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None) -> ProbeReadout:
        scores = np.asarray(scores, dtype=np.float32).reshape(-1, 1)  # (n, 1)
        T, scores = check_pair(T, scores, ("target", "source-probe score"))
        if self.alpha is None:
            self.alpha_, self.val_errors_ = choose_ridge_alpha(T, scores, alphas=self.alphas, val_frac=self.val_frac,
                                                               seed=self.seed, groups=groups)
        else:
            self.alpha_, self.val_errors_ = float(self.alpha), {}
        W, c = solve_affine(T, scores, alpha=self.alpha_)  # (d_t, 1), (1,)
        self.coef_ = W[:, 0].astype(np.float64)
        self.intercept_ = float(c[0])
        return self

    def decision_function(self, T: np.ndarray) -> np.ndarray:
        """Predicted source-probe scores of target rows (n,)."""
        return np.asarray(T, dtype=np.float64) @ self.coef_ + self.intercept_


def transfer_direction(w: np.ndarray, fitted, mode: str = "functional", reverse=None,
                       readout: ProbeReadout | None = None) -> np.ndarray:
    """Carry a source direction `w` (d_s,) to the target space (d_t,) (see the module docstring).

    `fitted`: a map with `A_` (d_t, d_s); `reverse`: a map target -> source (for
    `functional_reverse`); `readout`: a fitted `ProbeReadout` (for `functional`).
    """
    w = np.asarray(w, dtype=np.float64)
    if mode == "vector":
        return fitted.A_.astype(np.float64) @ w
    if mode == "pinv":
        # singular values below 1e-6 of the largest are dropped; the rest are still inverted (see above)
        return np.linalg.pinv(fitted.A_.astype(np.float64), rcond=1e-6).T @ w
    if mode == "functional":
        if readout is None:
            raise RepmapError("Transfer 'functional' is a readout fitted on target rows: pass readout=ProbeReadout().fit(T, scores).")
        return np.asarray(readout.coef_, dtype=np.float64)
    if mode == "functional_reverse":
        if reverse is None:
            raise RepmapError("Transfer 'functional_reverse' needs a map fitted from target to source.")
        return reverse.A_.T.astype(np.float64) @ w
    raise RepmapError(f"Transfer mode '{mode}' is not one of {', '.join(TRANSFER_MODES)}.")


def transfer_intercept(w: np.ndarray, intercept: float, w_target: np.ndarray, fitted=None, mode: str = "functional",
                       reverse=None, readout: ProbeReadout | None = None) -> float:
    """The intercept that goes with a carried functional: the readout's own; `c − w_tᵀ b` for
    `pinv` (t ≈ A s + b); `c + wᵀ b_r` for the reverse map s ≈ B t + b_r. Vectors carry none (0)."""
    if mode == "functional":
        return float(readout.intercept_) if readout is not None else 0.0
    if mode == "pinv":
        return float(intercept - w_target @ fitted.b_)
    if mode == "functional_reverse":
        return float(intercept + np.asarray(w) @ reverse.b_)
    return 0.0
