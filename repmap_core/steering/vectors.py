"""Steering vectors: the vector type, its file format, and CAA vectors from paired activations.

A vector per layer is the mean over A/B pairs of (activation with the behaviour-matching answer −
activation with the other answer) at the answer token (Rimsky et al.), or the first principal
component of those differences, signed so the behaviour side is positive (repeng's `pca_diff`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from repmap_core.errors import RepmapError

__all__ = ["SteeringVector", "vectors_metadata", "save_vectors", "load_vectors", "pair_differences", "caa_vector",
           "vectors_from_activations", "layer_cosines", "cosine_per_layer", "vector_pca"]


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """A direction `vector` (d,) in the residual stream after block `layer` of `model`, with how it
    was made. Arithmetic works as math reads: `2 * v`, `-v`, `v + w`, `v.normalized()`."""

    vector: np.ndarray
    layer: int
    model: str = ""
    revision: str = ""
    method: str = "mean_diff"  # mean_diff | pca_diff | transferred | random
    position: str = "answer"
    dataset_fingerprint: str = ""
    count: int = 0  # pairs it was computed from
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vector", np.asarray(self.vector, dtype=np.float32).reshape(-1))

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.vector))

    def normalized(self) -> SteeringVector:
        return replace(self, vector=self.vector / max(self.norm, 1e-30))

    def _other(self, other: SteeringVector | np.ndarray) -> np.ndarray:
        w = other.vector if isinstance(other, SteeringVector) else np.asarray(other, np.float32)
        if w.shape != self.vector.shape:
            raise RepmapError(f"Vectors of widths {self.vector.shape[0]} and {w.shape[0]} cannot be combined; use vectors of one model.")
        return w

    def __add__(self, other) -> SteeringVector:
        return replace(self, vector=self.vector + self._other(other))

    def __sub__(self, other) -> SteeringVector:
        return replace(self, vector=self.vector - self._other(other))

    def __neg__(self) -> SteeringVector:
        return replace(self, vector=-self.vector)

    def __mul__(self, k: float) -> SteeringVector:
        return replace(self, vector=self.vector * float(k))

    __rmul__ = __mul__

    def cosine(self, other: SteeringVector) -> float:
        w = self._other(other)
        return float(self.vector @ w / max(self.norm * float(np.linalg.norm(w)), 1e-30))

    def random_like(self, seed: int = 0) -> SteeringVector:
        """A random direction with this vector's norm: the baseline every sweep is read against."""
        r = np.random.default_rng(seed).standard_normal(self.vector.shape[0])
        return replace(self, vector=r / np.linalg.norm(r) * self.norm, method="random", meta={"seed": seed})

    def manifest(self) -> dict:
        return {"layer": self.layer, "model": self.model, "revision": self.revision, "method": self.method,
                "position": self.position, "dataset_fingerprint": self.dataset_fingerprint, "count": self.count,
                "d_model": int(self.vector.shape[0]), "site": f"blocks.{self.layer}.hook_resid_post", **self.meta}


def vectors_metadata(vectors: dict[int, SteeringVector]) -> dict[str, str]:
    """The safetensors header entry `load_vectors` reads: each layer's vector manifest."""
    return {"repmap": json.dumps({str(L): v.manifest() for L, v in vectors.items()})}


def save_vectors(vectors: dict[int, SteeringVector], path: str | Path) -> Path:
    """Write vectors (layer -> vector) to one safetensors file, manifests in its header."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"layer_{L}": v.vector for L, v in vectors.items()}, str(path), metadata=vectors_metadata(vectors))
    return path


def load_vectors(path: str | Path) -> dict[int, SteeringVector]:
    """Read vectors written by `save_vectors` (safetensors only: never pickle)."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise RepmapError(f"'{path.name}' is not a .safetensors file; steering vectors are read only from safetensors.")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads((f.metadata() or {}).get("repmap", "{}"))
            out = {}
            for name in f.keys():
                layer = int(name.split("_", 1)[1])
                m = meta.get(str(layer), {})
                out[layer] = SteeringVector(f.get_tensor(name), layer, m.get("model", ""), m.get("revision", ""),
                                            m.get("method", "mean_diff"), m.get("position", "answer"),
                                            m.get("dataset_fingerprint", ""), int(m.get("count", 0)))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise RepmapError(f"'{path.name}' could not be read as steering vectors: {str(e).splitlines()[0][:160]}.") from None
    return out


def pair_differences(X: np.ndarray, labels: np.ndarray, pair_ids: np.ndarray) -> np.ndarray:
    """(matching − not matching) per pair: `X (n, d)` rows paired by `pair_ids`, label 1 = matching.
    Returns (n_pairs, d) in pair-id order."""
    labels, pair_ids = np.asarray(labels), np.asarray(pair_ids)
    if len(pair_ids) == 0 or (pair_ids < 0).any():
        raise RepmapError("Steering vectors need paired rows (A/B questions with both answers); this data set is not paired.")
    order = np.lexsort((-labels, pair_ids))  # per pair: matching (1) first, then not matching (0)
    ids, counts = np.unique(pair_ids, return_counts=True)
    if (counts != 2).any():
        bad = ids[counts != 2][0]
        raise RepmapError(f"Pair {bad} has {counts[ids == bad][0]} rows; every question needs exactly its two answers.")
    pos, neg = order[0::2], order[1::2]
    if not ((labels[pos] == 1) & (labels[neg] == 0)).all():
        raise RepmapError("Each pair needs one matching (1) and one not-matching (0) answer.")
    X = np.asarray(X, dtype=np.float64)
    return X[pos] - X[neg]


def caa_vector(X: np.ndarray, labels: np.ndarray, pair_ids: np.ndarray, method: str = "mean_diff") -> np.ndarray:
    """The steering direction (d,) from paired rows: mean of the differences, or their first
    principal component signed so the matching side is positive (repeng's pca_diff)."""
    diffs = pair_differences(X, labels, pair_ids)
    if method == "mean_diff":
        return diffs.mean(0).astype(np.float32)
    if method == "pca_diff":
        _, _, Vt = np.linalg.svd(diffs, full_matrices=False)  # uncentred: the differences' own axis
        v = Vt[0] * np.linalg.norm(diffs.mean(0))
        return (v if v @ diffs.mean(0) >= 0 else -v).astype(np.float32)
    raise RepmapError(f"Vector method '{method}' is not one of mean_diff, pca_diff.")


def vectors_from_activations(aset, rows: np.ndarray | None = None, method: str = "mean_diff") -> dict[int, SteeringVector]:
    """One vector per extracted layer of an `ActivationSet` taken at the `answer` position."""
    m = aset.manifest
    if m.get("position") != "answer":
        raise RepmapError(f"Steering vectors are taken at the answer token; these activations are at '{m.get('position')}'.")
    rows = np.arange(aset.n) if rows is None else np.asarray(rows)
    out = {}
    for L in aset.layer_list:
        v = caa_vector(aset[L][rows], aset.labels[rows], aset.pair_ids[rows], method)
        out[L] = SteeringVector(v, L, m["model"], m["revision"], method, "answer", m["dataset_fingerprint"],
                                int(len(np.unique(aset.pair_ids[rows]))))
    return out


def layer_cosines(vectors: dict[int, SteeringVector]) -> tuple[list[int], np.ndarray]:
    """Cosine between every pair of layers' vectors of one model: (layers, (L, L))."""
    layers = sorted(vectors)
    V = np.stack([vectors[L].vector for L in layers]).astype(np.float64)
    V /= np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-30)
    return layers, V @ V.T


def cosine_per_layer(a: dict[int, SteeringVector], b: dict[int, SteeringVector]) -> dict[int, float]:
    """Cosine of two models' vectors at each layer they share (same width needed)."""
    return {L: a[L].cosine(b[L]) for L in sorted(set(a) & set(b))}


def vector_pca(groups: dict[str, dict[int, SteeringVector]]) -> dict[str, tuple[list[int], np.ndarray]]:
    """2-D PCA of every layer's normalised vector, all groups (models) on the same axes."""
    stacked, index = [], []
    for name, vecs in groups.items():
        for L in sorted(vecs):
            stacked.append(vecs[L].normalized().vector)
            index.append((name, L))
    widths = {v.shape[0] for v in stacked}
    if len(widths) > 1:
        raise RepmapError("The models' vectors have different widths, so they cannot share PCA axes; compare models of one width.")
    X = np.stack(stacked).astype(np.float64)
    X -= X.mean(0)
    _, _, Vt = np.linalg.svd(X, full_matrices=False)
    coords = X @ Vt[:2].T
    out: dict[str, tuple[list[int], list]] = {}
    for (name, L), xy in zip(index, coords):
        out.setdefault(name, ([], []))
        out[name][0].append(L)
        out[name][1].append(xy)
    return {k: (ls, np.array(xy)) for k, (ls, xy) in out.items()}
