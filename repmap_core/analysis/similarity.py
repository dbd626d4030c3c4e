"""Representation similarity between two activation matrices over the same rows (texts).

Measures of how alike `X (n, d1)` and `Y (n, d2)` are; the widths may differ, the rows must be
the same texts in the same order:
- `linear_cka` and `cka_debiased` (`linear_cka_debiased`), from `cka.py`: linear CKA (Kornblith et
  al. 2019), and its form from the unbiased HSIC estimator, ~0 for independent inputs at any width;
  `similarity_null` gives its permutation null (rows of one side shuffled) to read it against.
- `svcca` (Raghu et al. 2017): PCA on each side, then the mean canonical correlation; invariant to
  any invertible linear map of the kept subspace.
- `procrustes_distance`: the orthogonal Procrustes distance in [0, 2], 0 for equal up to rotation.

`layer_similarity` scores every pair of layers from two models (or two runs of one) and returns a
`SimilarityMatrix`. All arithmetic is float64. Each measure depends on the data only through the
centred row-kernel `Xc Xc^T`, so a matrix wider than it is tall is first reduced to an (n, n)
factor with the same kernel; nothing is lost and the cost stops growing with the width.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from repmap_core.analysis.cka import cka_column, cka_prepare, linear_cka, linear_cka_debiased
from repmap_core.analysis.similarity_inputs import centred, centred_pair, check_matrix, check_same_rows, row_factor
from repmap_core.analysis.similarity_null import layer_cka_null
from repmap_core.errors import RepmapError
from repmap_core.progress import Progress, silent

__all__ = ["KERNEL_CACHE_BYTES", "METRICS", "SimilarityMatrix", "check_matrix", "check_metric", "check_same_rows",
           "layer_similarity", "linear_cka", "linear_cka_debiased", "procrustes_distance", "svcca"]

METRICS = ("linear_cka", "cka_debiased", "svcca", "procrustes")
KERNEL_CACHE_BYTES = 1 << 30  # layer_similarity keeps A's (n, n) kernels only below this


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise RepmapError(f"Unknown similarity metric {metric!r}; use one of {', '.join(METRICS)}.")
    return metric


# ---------------------------------------------------------------------------------------------
# SVCCA


def _check_svcca_args(keep: float, max_dims: int | None) -> None:
    if not 0 < keep <= 1:
        raise RepmapError(f"keep is the fraction of variance SVCCA keeps, so it must be in (0, 1], not {keep}.")
    if max_dims is not None and max_dims < 1:
        raise RepmapError(f"max_dims must be at least 1 (or None for no cap), not {max_dims}.")


def _svd_basis(Xc: np.ndarray, keep: float, max_dims: int | None) -> np.ndarray:
    """Orthonormal basis `(n, k)` of the top-k principal directions of centred `Xc (n, d)`.

    k is the fewest directions holding `keep` of the variance, capped by `max_dims`, by n - 1 and by
    the numerical rank. The reduced data `U_k S_k` has `U_k` as an orthonormal basis, so no QR is needed.
    """
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)  # U (n, r), S (r,)
    rank = int((S > S[0] * max(Xc.shape) * np.finfo(np.float64).eps).sum())
    var = S[:rank] ** 2
    frac = np.cumsum(var) / var.sum()
    k = int(np.searchsorted(frac, keep - 1e-12)) + 1  # fewest leading directions reaching `keep`
    k = min(k, rank, len(Xc) - 1, max_dims or rank)
    return U[:, :k]


def _mean_canonical_correlation(Qx: np.ndarray, Qy: np.ndarray) -> float:
    """Mean canonical correlation between the spans of orthonormal `Qx (n, kx)` and `Qy (n, ky)`."""
    rho = np.linalg.svd(Qx.T @ Qy, compute_uv=False)  # (min(kx, ky),) cosines of the principal angles
    return float(np.clip(rho, 0.0, 1.0).mean())


def svcca(X: np.ndarray, Y: np.ndarray, keep: float = 0.99, max_dims: int | None = None) -> float:
    """SVCCA (Raghu et al. 2017) between `X (n, d1)` and `Y (n, d2)` on the same rows, in [0, 1].

    Each centred side is cut by SVD to the fewest directions holding `keep` of its variance (at
    most `max_dims` and n - 1); the canonical correlations between the two reduced sets are the
    singular values of `Qx^T Qy` for orthonormal bases `Qx (n, kx)`, `Qy (n, ky)`, and their mean
    is returned. With `keep=1.0` and full-rank sides it is invariant to any invertible linear map.
    Keep kx + ky well below n: with too few rows, canonical correlations approach 1 by chance.
    """
    _check_svcca_args(keep, max_dims)
    Xc, Yc = centred_pair(X, Y)
    Qx = _svd_basis(row_factor(Xc), keep, max_dims)
    Qy = _svd_basis(row_factor(Yc), keep, max_dims)
    return _mean_canonical_correlation(Qx, Qy)


# ---------------------------------------------------------------------------------------------
# orthogonal Procrustes


def _procrustes_prepare(Xc: np.ndarray) -> np.ndarray:
    """Centred `Xc` scaled to unit Frobenius norm, as an (n, min(n, d)) factor."""
    return row_factor(Xc / np.linalg.norm(Xc))


def _procrustes_from(Xn: np.ndarray, Yn: np.ndarray) -> float:
    # zero-padding the narrower side adds only zero rows or columns to Xn^T Yn, which leaves its
    # singular values, and so the nuclear norm, unchanged: no need to build the padded copy
    nuclear = np.linalg.svd(Xn.T @ Yn, compute_uv=False).sum()
    return float(np.clip(2.0 - 2.0 * nuclear, 0.0, 2.0))


def procrustes_distance(X: np.ndarray, Y: np.ndarray) -> float:
    """Orthogonal Procrustes distance between `X (n, d1)` and `Y (n, d2)` on the same rows, in [0, 2].

    Both are centred and scaled to unit Frobenius norm, the narrower zero-padded to the wider
    width, and the distance is `min_Q ||X - Y Q||_F^2 = 2 - 2 ||X^T Y||_*` over orthogonal `Q`.
    0 means equal up to rotation, reflection and scale; unlike CKA, it is a distance (lower is closer).
    """
    Xc, Yc = centred_pair(X, Y)
    return _procrustes_from(_procrustes_prepare(Xc), _procrustes_prepare(Yc))


# ---------------------------------------------------------------------------------------------
# every pair of layers


@dataclass(frozen=True, eq=False)
class SimilarityMatrix:
    """Similarity of every layer of A (rows) to every layer of B (columns).

    `values (len(layers_a), len(layers_b))` holds `metric` between layer `layers_a[i]` of A and
    `layers_b[j]` of B; higher is more alike, except for "procrustes", a distance.
    """

    metric: str
    layers_a: tuple[int, ...]
    layers_b: tuple[int, ...]
    values: np.ndarray = field(repr=False)
    # the permutation null (debiased CKA): per cell, the 95th percentile of the value with B's rows
    # shuffled, from `null_permutations` shuffles of `null_rows` rows; None when not computed
    null_high: np.ndarray | None = field(default=None, repr=False)
    null_rows: int = 0
    null_permutations: int = 0

    def __post_init__(self) -> None:
        values = np.array(self.values, dtype=np.float64)  # a private copy, made read-only below
        if values.shape != (len(self.layers_a), len(self.layers_b)):
            raise ValueError(f"values has shape {values.shape}, not {(len(self.layers_a), len(self.layers_b))}")
        values.setflags(write=False)
        object.__setattr__(self, "values", values)
        if self.null_high is not None:
            null = np.array(self.null_high, dtype=np.float64).reshape(values.shape)
            null.setflags(write=False)
            object.__setattr__(self, "null_high", null)
        object.__setattr__(self, "layers_a", tuple(int(a) for a in self.layers_a))
        object.__setattr__(self, "layers_b", tuple(int(b) for b in self.layers_b))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SimilarityMatrix):
            return NotImplemented
        same_null = (self.null_high is None) == (other.null_high is None) and (
            self.null_high is None or np.array_equal(self.null_high, other.null_high))
        return (self.metric, self.layers_a, self.layers_b) == (other.metric, other.layers_a, other.layers_b) \
            and np.array_equal(self.values, other.values) and same_null

    __hash__ = None  # type: ignore[assignment]  # holds an array

    @property
    def higher_is_closer(self) -> bool:
        return self.metric != "procrustes"

    def best_match(self) -> dict[int, int]:
        """For each layer of A, the layer of B most like it (max similarity, min distance; first on ties)."""
        pick = np.argmax(self.values, axis=1) if self.higher_is_closer else np.argmin(self.values, axis=1)
        return {a: self.layers_b[j] for a, j in zip(self.layers_a, pick)}

    def as_dict(self) -> dict:
        """Plain JSON-ready dict (string keys in `best_match`, so it survives a JSON round trip)."""
        return {
            "metric": self.metric,
            "layers_a": list(self.layers_a),
            "layers_b": list(self.layers_b),
            "values": self.values.tolist(),
            "best_match": {str(a): b for a, b in self.best_match().items()},
            **({"null_high": self.null_high.tolist(), "null_rows": self.null_rows,
                "null_permutations": self.null_permutations} if self.null_high is not None else {}),
        }


def _check_layers(layers_a: dict[int, np.ndarray], layers_b: dict[int, np.ndarray]) -> int:
    """The shared row count after checking every layer of both sides; raises RepmapError otherwise."""
    for side, layers in (("A", layers_a), ("B", layers_b)):
        if not layers:
            raise RepmapError(f"Model {side} has no layers to compare; pass at least one layer.")
    first = min(layers_a)
    n = len(check_matrix(layers_a[first], f"Layer {first} of A"))
    for side, layers in (("A", layers_a), ("B", layers_b)):
        for layer, X in layers.items():
            name = f"layer {layer} of {side}"
            check_same_rows(n, len(check_matrix(X, name[0].upper() + name[1:])), f"Layer {first} of A", name)
    return n


def _kernels_pay_off(n: int, layers_a: dict[int, np.ndarray], layers_b: dict[int, np.ndarray]) -> bool:
    """Whether caching A's (n, n) kernels beats per-pair feature products, and fits in memory."""
    d_a, d_b = ([np.shape(X)[1] for X in layers.values()] for layers in (layers_a, layers_b))
    kernel_flops = n * n * (sum(d_a) + sum(d_b)) + 2 * n * n * len(d_a) * len(d_b)
    feature_flops = 2 * n * sum(min(n, d) for d in d_a) * sum(min(n, d) for d in d_b)  # on (n, min(n, d)) factors
    return kernel_flops < feature_flops and (len(layers_a) + 1) * n * n * 8 <= KERNEL_CACHE_BYTES


def layer_similarity(layers_a: dict[int, np.ndarray], layers_b: dict[int, np.ndarray], metric: str = "linear_cka",
                     max_rows: int | None = 5000, seed: int = 0, null_permutations: int = 0,
                     progress: Progress | None = None) -> SimilarityMatrix:
    """`metric` between every layer of A and every layer of B (layer -> (n, d), all on the same n rows).

    Above `max_rows` rows, one seeded draw of rows is used for every pair. Each layer is centred
    (and reduced, or turned into its SVCCA basis, with svcca's defaults) once, not once per pair,
    and B's layers are streamed. For linear CKA each layer's Gram norm is computed once too, and
    the cross terms come from A's (n, n) kernels held in one block when that is cheaper and fits in
    1 GiB, else from `||Xb^T Xa||_F` per pair. `progress(fraction, message)` is called after each
    layer of B. With `metric="cka_debiased"` and `null_permutations > 0`, each cell also gets its
    permutation null (`similarity_null.layer_cka_null`). Example: `layer_similarity(a, a).best_match()`
    maps each layer to itself.
    """
    check_metric(metric)
    n = _check_layers(layers_a, layers_b)
    if max_rows is not None and max_rows < 3:
        raise RepmapError(f"max_rows must be at least 3 (or None for all rows), not {max_rows}.")
    rows = None
    if max_rows is not None and n > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
        n = max_rows
    keys_a, keys_b = sorted(layers_a), sorted(layers_b)
    report = progress or silent

    kernels_a = None  # A's (n, n) kernels in one block, when linear CKA is cheaper that way
    cka = metric in ("linear_cka", "cka_debiased")
    if cka and _kernels_pay_off(n, layers_a, layers_b):
        kernels_a = np.empty((len(keys_a), n, n))

    def prepare(X: np.ndarray, name: str, slot: int | None = None):
        Xc = centred(X if rows is None else np.asarray(X)[rows], name)
        if cka:
            out = None if kernels_a is None or slot is None else kernels_a[slot]
            return cka_prepare(Xc, kernels_a is not None, out)
        if metric == "svcca":
            return _svd_basis(row_factor(Xc), 0.99, None)
        return _procrustes_prepare(Xc)

    side_a = [prepare(layers_a[a], f"Layer {a} of A", i) for i, a in enumerate(keys_a)]
    slot_of = {id(layers_a[a]): i for i, a in enumerate(keys_a)}  # an array on both sides is prepared once
    values = np.empty((len(keys_a), len(keys_b)))
    for j, b in enumerate(keys_b):
        X = layers_b[b]
        pb = side_a[slot_of[id(X)]] if id(X) in slot_of else prepare(X, f"Layer {b} of B")
        if cka:
            values[:, j] = cka_column(side_a, pb, kernels_a, debiased=metric == "cka_debiased")
        elif metric == "svcca":
            values[:, j] = [_mean_canonical_correlation(pa, pb) for pa in side_a]
        else:
            values[:, j] = [_procrustes_from(pa, pb) for pa in side_a]
        report((j + 1) / len(keys_b), f"Compared layer {b} of B with {len(keys_a)} layer(s) of A")
    if metric == "cka_debiased" and null_permutations > 0:
        kernels_a = side_a = None  # free the value pass's kernels before the null makes its own
        null, m = layer_cka_null({a: layers_a[a] for a in keys_a}, {b: layers_b[b] for b in keys_b}, null_permutations,
                                 rows=rows, seed=seed)
        return SimilarityMatrix(metric, tuple(keys_a), tuple(keys_b), values, null, m, null_permutations)
    return SimilarityMatrix(metric, tuple(keys_a), tuple(keys_b), values)
