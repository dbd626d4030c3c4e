"""2-D projections (PCA, t-SNE, UMAP), seeded; a caller may hand in a memo that keeps them (the
pages pass `memo.disk_memo`, so a projection is computed once per array; this module never touches
the cache).

t-SNE and UMAP run on the top 50 principal components (standard practice; it also makes them
several times faster at GPT-2 widths), with exact nearest neighbours computed here by BLAS
(up to 30k rows): faster than the libraries' approximate searches at these sizes, and it spares
UMAP the ~30 s of numba compilation that pynndescent's search costs in every new process.
t-SNE uses openTSNE when installed (faster here than scikit-learn), UMAP uses umap-learn.
`python -m bench.bench_projection` times all three at 10k points.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from repmap_core.errors import RepmapError
from repmap_core.progress import Progress

METHODS = ("pca", "tsne", "umap")
STANDARDISED = "pca_std"  # PCA after scaling every feature to unit variance (`pca_standardised`)
# (what is computed: the method and its settings, how to compute it) -> the array, kept or computed
Memo = Callable[[dict, Callable[[], np.ndarray]], np.ndarray]


def pca(X: np.ndarray, n_components: int = 2, seed: int = 0) -> np.ndarray:
    """Top principal-component scores `(n, n_components)` of `X (n, d)`."""
    from sklearn.decomposition import PCA

    X = np.asarray(X, dtype=np.float32)
    k = min(n_components, *X.shape)
    # a few components of a big matrix: Lanczos (ARPACK) is exact and, on 10k x 1600, 2-3x faster
    # than the randomized SVD's 7 power iterations; many components: randomized; small: full SVD
    if min(X.shape) > 500 and k <= 10:
        solver = "arpack"
    elif min(X.shape) > 500 and k < 0.2 * min(X.shape):
        solver = "randomized"
    else:
        solver = "full"
    return PCA(k, svd_solver=solver, random_state=seed).fit_transform(X).astype(np.float32)


def pca_standardised(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D PCA of `X (n, d)` after centring each feature and scaling it to unit variance (a constant feature
    stays 0): each feature counts once, so a few dimensions of massive activations no longer decide the axes."""
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(0)
    Z = (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)
    return pca(Z.astype(np.float32), 2, seed)


MASSIVE_RATIO = 20.0  # a feature this many times the median feature's magnitude (RMS) is a massive activation


def massive_activations(X: np.ndarray) -> tuple[int, float]:
    """The feature of `X (n, d)` with the largest magnitude (root mean square over rows) and how many times the
    median feature's it is. Models with massive activations (Sun et al. 2024) have a few features tens to
    thousands of times the rest (SmolLM2-135M: 30-72x at every block on the built-in reviews; MiniLM at most
    14x), which then decide a plain PCA's axes; `MASSIVE_RATIO` and above: offer `pca_standardised`."""
    X = np.asarray(X, dtype=np.float64)
    rms = np.sqrt((X ** 2).mean(0))
    median = float(np.median(rms))
    top = int(np.argmax(rms))
    return top, (float(rms[top] / median) if median > 0 else float("inf") if rms[top] > 0 else 1.0)


def _reduce(X: np.ndarray, seed: int) -> np.ndarray:
    return pca(X, 50, seed) if X.shape[1] > 50 and X.shape[0] > 50 else np.asarray(X, dtype=np.float32)


EXACT_KNN_MAX_ROWS = 30_000  # above this, the O(n^2) exact search loses to the libraries' approximate ones
TSNE_ITERATIONS = 350  # after 250 early-exaggeration ones; openTSNE's default is 500 (bench: 10k points in
# 22 s instead of 39 s, 10-NN recall 0.411 vs 0.415, KL 1.72 vs 1.68)


def nearest_neighbors(Z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean `k` nearest neighbours of each row of `Z (n, d)`, the row itself first:
    indices `(n, k)` int64 and distances `(n, k)` float32, nearest first.

    Squared distances come from one matrix product per block of rows (`|a|^2 + |b|^2 - 2 a.b`),
    so at n = 10k and d = 50 the search takes about a second.
    """
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    n = len(Z)
    k = int(min(k, n))
    sq = np.einsum("ij,ij->i", Z, Z)  # (n,)
    indices = np.empty((n, k), np.int64)
    dists = np.empty((n, k), np.float32)
    block = max(1, min(n, (1 << 25) // max(n, 1)))  # a (block, n) float32 matrix of at most 128 MB
    for start in range(0, n, block):
        stop = min(n, start + block)
        rows = np.arange(stop - start)
        D = Z[start:stop] @ Z.T  # (b, n)
        D *= -2.0
        D += sq[start:stop, None]
        D += sq[None, :]
        D[rows, rows + start] = -np.inf  # each row's own index first, even beside exact duplicates
        part = np.argpartition(D, k - 1, axis=1)[:, :k] if k < n else np.broadcast_to(np.arange(n), D.shape)
        d_part = np.take_along_axis(D, part, axis=1)
        order = np.argsort(d_part, axis=1, kind="stable")
        indices[start:stop] = np.take_along_axis(part, order, axis=1)
        dists[start:stop] = np.take_along_axis(d_part, order, axis=1)
    dists[:, 0] = 0.0
    np.maximum(dists, 0.0, out=dists)  # rounding can leave tiny negatives
    return indices, np.sqrt(dists, out=dists)


TSNE_EARLY_ITERATIONS = 250  # openTSNE's early-exaggeration phase, before the TSNE_ITERATIONS
TSNE_REPORT_EVERY = 50  # iterations between progress reports (each computes the KL divergence: keep them few)


def tsne(X: np.ndarray, seed: int = 0, perplexity: float = 30.0, progress: Progress | None = None) -> np.ndarray:
    """2-D t-SNE of `X`'s top 50 principal components; `progress(fraction, message)` every 50 iterations."""
    Z = _reduce(X, seed)
    perplexity = float(min(perplexity, max(2.0, (len(Z) - 1) / 3)))
    try:
        from openTSNE import TSNE, affinity
        from openTSNE.nearest_neighbors import PrecomputedNeighbors
    except ImportError:
        from sklearn.manifold import TSNE as SkTSNE

        return SkTSNE(perplexity=perplexity, random_state=seed, init="pca").fit_transform(Z.astype(np.float64)).astype(np.float32)
    # Barnes-Hut beats the FFT gradient below a few thousand points (0.7 s vs 1.4 s at 490 here)
    small = len(Z) < 2000
    # threads only pay off on large inputs; on small ones they mostly contend (0.4 s vs 4 s at 120 points)
    n_jobs = 1 if small else -1
    Z64 = Z.astype(np.float64)
    if len(Z) <= EXACT_KNN_MAX_ROWS:
        k = min(len(Z) - 1, int(3 * perplexity))  # openTSNE's own choice of k
        idx, dist = nearest_neighbors(Z, k + 1)
        # the same affinities openTSNE's default builds (a one-scale mixture), on exact neighbours
        aff = affinity.MultiscaleMixture(perplexities=[perplexity], n_jobs=n_jobs, random_state=seed,
                                         knn_index=PrecomputedNeighbors(idx[:, 1:], dist[:, 1:].astype(np.float64)))
    else:
        aff = affinity.MultiscaleMixture(Z64, perplexities=[perplexity], n_jobs=n_jobs, random_state=seed)
    watch = {}
    if progress is not None:
        total, done = TSNE_EARLY_ITERATIONS + TSNE_ITERATIONS, [0]

        def report(iteration: int, error: float, embedding) -> bool:  # openTSNE's callback: False keeps going
            done[0] += TSNE_REPORT_EVERY
            progress(min(done[0] / total, 1.0), f"t-SNE iteration {min(done[0], total)} of {total}")
            return False

        watch = {"callbacks": report, "callbacks_every_iters": TSNE_REPORT_EVERY}
    tsne_ = TSNE(perplexity=perplexity, random_state=seed, n_jobs=n_jobs, n_iter=TSNE_ITERATIONS,
                 early_exaggeration_iter=TSNE_EARLY_ITERATIONS, negative_gradient_method="bh" if small else "fft", **watch)
    return np.asarray(tsne_.fit(Z64, affinities=aff), dtype=np.float32)  # PCA initialisation from Z64


def umap(X: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    import umap as umap_lib

    Z = _reduce(X, seed)
    n_neighbors = int(min(n_neighbors, len(Z) - 1))
    knn = {}
    if len(Z) <= EXACT_KNN_MAX_ROWS:
        idx, dist = nearest_neighbors(Z, n_neighbors)
        # force_approximation_algorithm: use these neighbours at every size (umap-learn would
        # otherwise build a dense n x n matrix below 4,096 rows), so warm_umap() compiles the same code
        knn = {"precomputed_knn": (idx, dist, None), "force_approximation_algorithm": True}
    with warnings.catch_warnings():
        # "no search index, so no transform": never used here; n_jobs=1 is implied by the seed
        warnings.filterwarnings("ignore", message=".*knn_search_index.*|.*n_jobs value.*", category=UserWarning)
        model = umap_lib.UMAP(n_components=2, n_neighbors=n_neighbors, random_state=seed, **knn)
        return model.fit_transform(Z).astype(np.float32)


def project(X: np.ndarray, method: str = "pca", seed: int = 0, memo: Memo | None = None,
            progress: Progress | None = None) -> np.ndarray:
    """2-D coordinates `(n, 2)` of `X (n, d)` by `method` (pca, tsne or umap).

    With `memo` (e.g. `memo.disk_memo({"activations": key, "layer": L})`), the result is kept under
    the array's name plus the method, seed and row count, and later calls return it without recomputing.
    `progress` hears t-SNE's iterations as they go (PCA and UMAP report nothing until they end).
    """
    if method not in (*METHODS, STANDARDISED):
        raise RepmapError(f"Projection '{method}' is not one of {', '.join((*METHODS, STANDARDISED))}.")
    if len(X) < 3:
        raise RepmapError(f"A projection needs at least 3 rows, and this set has {len(X)}.")

    def compute() -> np.ndarray:  # looked up at call time, so a patched module attribute is what runs
        watch = {"progress": progress} if progress is not None and method == "tsne" else {}
        return {"pca": pca, "tsne": tsne, "umap": umap, STANDARDISED: pca_standardised}[method](X, seed=seed, **watch)

    if memo is None:
        return compute()
    return memo({"method": method, "seed": int(seed), "n": int(len(X)), "format": "repmap.projection/1"}, compute)


def warm_umap() -> None:
    """Compile umap-learn's numba code now (tens of seconds, once per process) on a toy array."""
    umap(np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32))


def sample_rows(labels: np.ndarray, max_rows: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a seeded sample of exactly `min(max_rows, n)` rows, each class kept in
    proportion (largest remainder) and, room allowing, at least one row of every class."""
    labels = np.asarray(labels)
    n = len(labels)
    if n <= max_rows:
        return np.arange(n)
    classes, counts = np.unique(labels, return_counts=True)
    share = max_rows * counts / n
    take = np.floor(share).astype(np.int64)
    for i in np.argsort(-(share - take), kind="stable")[: max_rows - take.sum()]:
        take[i] += 1
    for i in np.flatnonzero(take == 0):  # a rare class still shows, at the largest class's expense
        if max_rows >= len(classes):
            take[i] += 1
            take[np.argmax(take)] -= 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, take) if k]
    return np.sort(np.concatenate(picked))


def joint_project(blocks: list[np.ndarray], method: str = "pca", seed: int = 0, fit_on: str = "union",
                  memo: Memo | None = None, progress: Progress | None = None) -> list[np.ndarray]:
    """2-D coordinates for several sets of the same width on shared axes, e.g. the same rows
    before and after finetuning: returns one `(n_i, 2)` array per block.

    PCA is fitted on the union of the blocks (`fit_on="union"`) or on the first one
    (`fit_on="first"`, the base model's axes) and applied to all; t-SNE and UMAP embed the
    blocks together (they have no transform for new points).
    """
    from sklearn.decomposition import PCA

    if len({b.shape[1] for b in blocks}) != 1:
        raise RepmapError("Shared axes need activations of the same width; pick the same layer of the same model family.")
    sizes = [len(b) for b in blocks]
    stacked = np.concatenate([np.asarray(b, dtype=np.float32) for b in blocks])
    if method == "pca":
        base = stacked if fit_on == "union" else np.asarray(blocks[0], dtype=np.float32)
        if fit_on not in ("union", "first"):
            raise RepmapError(f"PCA is fitted on 'union' or 'first', not '{fit_on}'.")
        coords = PCA(2, random_state=seed).fit(base).transform(stacked).astype(np.float32)
    else:
        joint = None if memo is None else (lambda what, compute: memo(dict(what, sizes=sizes), compute))
        coords = project(stacked, method, seed, memo=joint, progress=progress)
    return np.split(coords, np.cumsum(sizes)[:-1])
