"""What every similarity measure does first: check two activation matrices over the same rows,
centre their columns in float64, and reduce a matrix wider than it is tall to an (n, n) factor with
the same row-kernel `Xc Xc^T` (each measure depends on the data only through it)."""
from __future__ import annotations

import numpy as np

from repmap_core.errors import RepmapError


def check_matrix(X: np.ndarray, name: str = "X") -> np.ndarray:
    """`X` as an array after checking it is (n, d) with n >= 3, d >= 1 and only finite values."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] == 0:
        raise RepmapError(f"{name} must be a 2-D array of shape (rows, features), not one of shape {X.shape}.")
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise RepmapError(f"{name} must hold real numbers, not {X.dtype}.")
    if len(X) < 3:
        raise RepmapError(f"{name} has {len(X)} rows; similarity needs at least 3 rows (texts).")
    bad = int((~np.isfinite(X).all(axis=1)).sum())
    if bad:
        raise RepmapError(f"{name} has NaN or infinite values in {bad} of {len(X)} rows; drop those rows (texts) from both sides first.")
    return X


def check_same_rows(n_x: int, n_y: int, name_x: str = "X", name_y: str = "Y") -> None:
    if n_x != n_y:
        raise RepmapError(f"{name_x} and {name_y} have {n_x} and {n_y} rows; similarity needs the same rows (texts) in both.")


def centred(X: np.ndarray, name: str) -> np.ndarray:
    """`X (n, d)` in float64 with each column's mean removed; refuses a matrix with no variance."""
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(axis=0)
    # relative test: centring identical float rows can leave rounding noise, not signal
    if np.linalg.norm(Xc) <= 1e-10 * np.linalg.norm(X):
        raise RepmapError(f"{name} has the same values in every row, so its similarity to anything is undefined; check the layer and rows.")
    return Xc


def centred_pair(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X, Y = check_matrix(X, "X"), check_matrix(Y, "Y")
    check_same_rows(len(X), len(Y))
    return centred(X, "X"), centred(Y, "Y")


def row_factor(Xc: np.ndarray) -> np.ndarray:
    """An (n, min(n, d)) matrix with the same row-kernel `Xc Xc^T` as `Xc (n, d)`.

    For d > n, `Xc^T = Q R` gives `Xc = R^T Q^T` with `Q` orthonormal, so `R^T (n, n)` keeps every
    quantity here (Gram norms, cross-products' singular values, column space) and is d/n times smaller.
    """
    n, d = Xc.shape
    return np.linalg.qr(Xc.T, mode="r").T if d > n else Xc
