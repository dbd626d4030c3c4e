"""Linear CKA (Kornblith et al. 2019) and its debiased form (Song et al.'s unbiased HSIC), for one
pair of matrices and for layers prepared once and compared many times.

- `linear_cka`: invariant to rotation and isotropic scaling, not to a general linear map; 1 for
  equal inputs. Biased upwards when rows are few for the width: two independent 384-wide random
  matrices on 200 rows score ~0.65.
- `linear_cka_debiased`: ~0 for independent inputs at any width; `similarity_null` gives its
  permutation null (rows of one side shuffled) to read it against.
- `cka_prepare` / `cka_column`: a layer's centred factor or kernel and Gram norm computed once, so a
  layer x layer grid (`similarity.layer_similarity`) or a permutation null costs one product per pair.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from repmap_core.analysis.similarity_inputs import centred_pair, row_factor
from repmap_core.errors import RepmapError


def _cka_features(Xc: np.ndarray, Yc: np.ndarray) -> float:
    """Feature-space linear CKA of centred `Xc (n, d1)`, `Yc (n, d2)`, O(n d^2): for n >> d."""
    cross = np.linalg.norm(Yc.T @ Xc) ** 2  # ||Yc^T Xc||_F^2, (d2, d1)
    return float(cross / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc)))


def _cka_kernel(Xc: np.ndarray, Yc: np.ndarray) -> float:
    """Kernel-form linear CKA of centred `Xc (n, d1)`, `Yc (n, d2)`, O(n^2 d): for d >> n."""
    K, L = Xc @ Xc.T, Yc @ Yc.T  # (n, n); already centred, since the columns of Xc and Yc are
    return float(np.vdot(K, L) / (np.linalg.norm(K) * np.linalg.norm(L)))


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) between `X (n, d1)` and `Y (n, d2)` on the same rows.

    `||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)` on column-centred data, in [0, 1], 1 for equal
    inputs. Computed in feature space when that is cheaper (n >> d) and with the (n, n) kernels
    otherwise; the two agree to rounding. Example: `linear_cka(X, X @ Q)` is 1 for orthogonal `Q`.
    """
    Xc, Yc = centred_pair(X, Y)
    n, d1, d2 = len(Xc), Xc.shape[1], Yc.shape[1]
    feature_cost = n * (d1 * d2 + d1 * d1 + d2 * d2)
    kernel_cost = n * n * (d1 + d2 + 1)
    return _cka_features(Xc, Yc) if feature_cost <= kernel_cost else _cka_kernel(Xc, Yc)


def hsic_unbiased(cross: float | np.ndarray, sum_x: float | np.ndarray, sum_y: float, dot_xy: float | np.ndarray,
                   n: int) -> float | np.ndarray:
    """Song et al.'s unbiased HSIC of linear kernels K = Xc Xcᵀ, L = Yc Ycᵀ of column-centred data,
    from `cross` = <K, L>_F, the diagonals' sums `sum_x` = tr K, `sum_y` = tr L and `dot_xy` =
    diag(K)·diag(L). With K̃, L̃ the kernels with zeroed diagonals and centred columns (K1 = 0):
    tr(K̃L̃) = cross − dot_xy, 1ᵀK̃1 = −tr K, K̃1 = −diag(K); the estimator
    [tr(K̃L̃) + 1ᵀK̃1 1ᵀL̃1 / ((n−1)(n−2)) − 2 (K̃1)ᵀ(L̃1) / (n−2)] / (n(n−3)) simplifies to this."""
    return (cross + sum_x * sum_y / ((n - 1) * (n - 2)) - n / (n - 2) * dot_xy) / (n * (n - 3))


def _check_debias_rows(n: int) -> None:
    if n < 4:
        raise RepmapError(f"Debiased CKA needs at least 4 rows (texts), and there are {n}.")


def linear_cka_debiased(X: np.ndarray, Y: np.ndarray) -> float:
    """Debiased linear CKA between `X (n, d1)` and `Y (n, d2)` on the same rows (n >= 4).

    `HSIC₁(K, L) / sqrt(HSIC₁(K, K) HSIC₁(L, L))` with Song et al.'s unbiased HSIC₁ of the linear
    kernels of the column-centred data: 1 for equal inputs, ~0 (either sign) for independent ones
    whatever the width, where the biased `linear_cka` drifts up as d/n grows. O(n d1 d2) via the
    feature form. Example: `linear_cka_debiased(X, X[rng.permutation(len(X))])` is near 0.
    """
    Xc, Yc = centred_pair(X, Y)
    n = len(Xc)
    _check_debias_rows(n)
    kx, ky = (Xc ** 2).sum(1), (Yc ** 2).sum(1)  # (n,) the kernels' diagonals
    Fx, Fy = row_factor(Xc), row_factor(Yc)
    h = lambda cross, a, b: hsic_unbiased(cross, a.sum(), b.sum(), a @ b, n)  # noqa: E731
    hxy = h(np.linalg.norm(Fy.T @ Fx) ** 2, kx, ky)
    hxx, hyy = h(np.linalg.norm(Fx.T @ Fx) ** 2, kx, kx), h(np.linalg.norm(Fy.T @ Fy) ** 2, ky, ky)
    return float(hxy / np.sqrt(max(hxx * hyy, 1e-300)))


@dataclass(frozen=True)
class CkaLayer:
    """One layer prepared for linear CKA: its centred factor or its kernel, and its Gram norm."""

    F: np.ndarray | None  # (n, min(n, d)) centred factor, when cross terms come from features
    K: np.ndarray | None  # (n, n) centred kernel, when they come from kernels
    gram_norm: float  # ||Xc^T Xc||_F = ||Xc Xc^T||_F, computed once per layer
    diag: np.ndarray | None = None  # (n,) the kernel's diagonal (squared row norms), for the debiased form


def cka_prepare(Xc: np.ndarray, use_kernel: bool, out: np.ndarray | None = None) -> CkaLayer:
    """Centred `Xc (n, d)` ready for many CKA pairs; `out (n, n)` receives the kernel if given."""
    diag = (Xc ** 2).sum(1)
    if use_kernel:
        K = np.matmul(Xc, Xc.T, out=out)  # (n, n)
        return CkaLayer(None, K, float(np.linalg.norm(K)), diag)
    F = row_factor(Xc)
    return CkaLayer(F, None, float(np.linalg.norm(F.T @ F)), diag)


def cka_column(side_a: list[CkaLayer], b: CkaLayer, kernels_a: np.ndarray | None, debiased: bool = False) -> np.ndarray:
    """(Debiased) CKA of one prepared layer of B against every prepared layer of A, `(len(side_a),)`."""
    if kernels_a is not None:  # one matrix-vector product: ~10x faster than a loop of np.vdot
        cross = kernels_a.reshape(len(side_a), -1) @ b.K.ravel()  # (len(A),) <K_a, K_b>_F
    else:
        cross = np.array([np.linalg.norm(b.F.T @ a.F) ** 2 for a in side_a])  # ||Fb^T Fa||_F^2
    if not debiased:
        return cross / (np.array([a.gram_norm for a in side_a]) * b.gram_norm)
    n = len(b.diag)
    D = np.stack([a.diag for a in side_a])  # (len(A), n)
    hab = hsic_unbiased(cross, D.sum(1), b.diag.sum(), D @ b.diag, n)
    haa = np.array([self_hsic(a) for a in side_a])
    return hab / np.sqrt(np.maximum(haa * self_hsic(b), 1e-300))


def self_hsic(layer: CkaLayer) -> float:
    return float(hsic_unbiased(layer.gram_norm ** 2, layer.diag.sum(), layer.diag.sum(), layer.diag @ layer.diag,
                                len(layer.diag)))
