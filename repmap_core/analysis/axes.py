"""Custom axes (TensorBoard Projector's "custom projection"): every row placed by its coordinate along
chosen directions instead of PCA's, so a plot reads "how far along the task direction" at a glance.

Directions, each a unit vector computed from the rows and labels (or given):
- `mean_diff`: the difference of the two class means (μ₁ − μ₀);
- `probe`: a linear probe's weights (logistic regression on standardised features, mapped back);
- `pc1`, `pc2`: the rows' first principal axes;
- `pc1_rest`: the first principal axis of what is left after removing the x axis's direction (so
  the y axis shows the largest variation that the x direction does not explain);
- any `(d,)` array, e.g. δ of a within-model fit or a steering vector, given by the caller.
Coordinates are projections of the centred rows, in activation units.
"""
from __future__ import annotations

import numpy as np

from repmap_core.errors import RepmapError

__all__ = ["AXES", "AXIS_NAMES", "SHIFT_AXES", "SHIFT_AXIS_NAMES", "custom_axes", "direction", "shift_axes", "shift_direction"]

AXES = ("mean_diff", "probe", "pc1", "pc2", "pc1_rest")
AXIS_NAMES = {"mean_diff": "class-mean difference", "probe": "probe direction", "pc1": "PC 1", "pc2": "PC 2",
              "pc1_rest": "PC 1 of the rest"}


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if n == 0 or not np.isfinite(n):
        raise RepmapError("That direction is zero (the two classes have the same mean); pick another axis.")
    return v / n


def direction(X: np.ndarray, labels: np.ndarray | None, axis: str | np.ndarray, *, other: np.ndarray | None = None,
              seed: int = 0) -> np.ndarray:
    """The unit direction (d,) named by `axis` for rows `X (n, d)`; `other` is the x axis (for `pc1_rest`)."""
    X = np.asarray(X, np.float64)
    if not isinstance(axis, str):
        v = np.asarray(axis, np.float64).reshape(-1)
        if v.shape[0] != X.shape[1]:
            raise RepmapError(f"That direction has width {v.shape[0]} and the activations {X.shape[1]}; use one of this layer.")
        return _unit(v)
    Xc = X - X.mean(0)
    if axis in ("mean_diff", "probe"):
        y = np.asarray(labels).astype(bool) if labels is not None else None
        if y is None or y.all() or (~y).all():
            raise RepmapError("The class-mean and probe axes need rows of both labels.")
        if axis == "mean_diff":
            return _unit(X[y].mean(0) - X[~y].mean(0))
        from repmap_core.analysis.probes import LinearProbe

        return _unit(LinearProbe().fit(X, y.astype(np.int64)).coef_)
    if axis in ("pc1", "pc2", "pc1_rest"):
        if axis == "pc1_rest":
            if other is None:
                raise RepmapError("'PC 1 of the rest' needs an x axis to remove first.")
            u = _unit(np.asarray(other, np.float64))
            Xc = Xc - np.outer(Xc @ u, u)
        _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
        return Vt[1 if axis == "pc2" else 0]
    raise RepmapError(f"Axis '{axis}' is not one of {', '.join(AXES)}.")


def custom_axes(X: np.ndarray, labels: np.ndarray | None, x: str | np.ndarray = "mean_diff",
                y: str | np.ndarray = "pc1_rest", seed: int = 0) -> np.ndarray:
    """Coordinates `(n, 2)` of the centred rows along the x and y directions."""
    X = np.asarray(X, np.float64)
    dx = direction(X, labels, x, seed=seed)
    dy = direction(X, labels, y, other=dx, seed=seed)
    Xc = X - X.mean(0)
    return np.stack([Xc @ dx, Xc @ dy], axis=1).astype(np.float32)


# the Finetuning shift page: both sets of rows (before and after finetuning) on the same two directions
SHIFT_AXES = ("after_mean_diff", "before_mean_diff", "mean_move", "after_probe", "pc1_rest")
SHIFT_AXIS_NAMES = {"after_mean_diff": "class-mean difference after finetuning (the task direction)",
                    "before_mean_diff": "class-mean difference before", "mean_move": "mean move (after − before)",
                    "after_probe": "probe direction after finetuning", "pc1_rest": "PC 1 of the rest (both sets)"}


def shift_direction(before: np.ndarray, after: np.ndarray, labels: np.ndarray, axis: str | np.ndarray, *,
                    other: np.ndarray | None = None) -> np.ndarray:
    """The unit direction named by `axis` for the shift page (see SHIFT_AXES), or a given `(d,)` one
    such as δ of a within-model fit."""
    B, A = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if B.shape != A.shape:
        raise RepmapError(f"Before and after have shapes {B.shape} and {A.shape}; they must be the same rows and width.")
    if not isinstance(axis, str):
        return direction(B, labels, axis)
    if axis == "after_mean_diff":
        return direction(A, labels, "mean_diff")
    if axis == "before_mean_diff":
        return direction(B, labels, "mean_diff")
    if axis == "after_probe":
        return direction(A, labels, "probe")
    if axis == "mean_move":
        move = (A - B).mean(0)
        if not np.linalg.norm(move) > 0:
            raise RepmapError("The rows did not move on average (before and after are the same); pick another axis.")
        return _unit(move)
    if axis == "pc1_rest":
        return direction(np.vstack([B, A]), None, "pc1_rest", other=other)
    raise RepmapError(f"Axis '{axis}' is not one of {', '.join(SHIFT_AXES)}.")


def shift_axes(before: np.ndarray, after: np.ndarray, labels: np.ndarray, x: str | np.ndarray = "after_mean_diff",
               y: str | np.ndarray = "pc1_rest") -> tuple[np.ndarray, np.ndarray, float]:
    """(before_xy, after_xy, cos): both sets' coordinates `(n, 2)` along the x and y directions, centred
    on the before rows' mean (so a move shows as a move), and the cosine between the two directions
    (near ±1, the y axis repeats the x axis)."""
    dx = shift_direction(before, after, labels, x)
    dy = shift_direction(before, after, labels, y, other=dx)
    B, A = np.asarray(before, np.float64), np.asarray(after, np.float64)
    centre = B.mean(0)
    basis = np.stack([dx, dy], axis=1)
    return ((B - centre) @ basis).astype(np.float32), ((A - centre) @ basis).astype(np.float32), float(dx @ dy)
