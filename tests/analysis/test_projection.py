"""Tests for repmap_core.analysis.projection: PCA / t-SNE / UMAP on planted structure, the on-disk cache of
project(), and the class-proportional row sampler."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import sklearn.decomposition

from repmap_core.analysis import projection
from repmap_core.analysis.projection import pca, project, sample_rows
from repmap_core.capture.memo import disk_memo
from repmap_core.errors import RepmapError

# ---------------------------------------------------------------------------------------------
# helpers


def planted_plane(n: int, d: int, seed: int = 0):
    """Rows with variance 100 along u, 50 along v (orthonormal), isotropic noise sd 0.1, offset mean."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d, 2)))
    u, v = Q[:, 0], Q[:, 1]
    a = rng.normal(scale=10.0, size=n)
    b = rng.normal(scale=np.sqrt(50.0), size=n)
    X = np.outer(a, u) + np.outer(b, v) + rng.normal(scale=0.1, size=(n, d)) + rng.normal(size=d) * 5
    return X, u, v


def r2(target: np.ndarray, design: np.ndarray) -> float:
    """R^2 of least-squares regression of target on design (with intercept)."""
    A = np.column_stack([design, np.ones(len(design))])
    coef, *_ = np.linalg.lstsq(A, target, rcond=None)
    resid = target - A @ coef
    return 1 - float(resid.var() / target.var())


def two_clusters(n: int = 120, d: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    X = rng.normal(size=(n, d))
    X[y == 1, :3] += 15.0  # far apart (distance ~26 vs within-cluster ~11)
    return X, y


def loo_1nn_accuracy(Z: np.ndarray, y: np.ndarray) -> float:
    D = ((Z[:, None, :] - Z[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(D, np.inf)
    return float(np.mean(y[D.argmin(1)] == y))


class Spy:
    """Stands in for a projection function: counts calls and delegates (or raises)."""

    def __init__(self, fn=None):
        self.fn = fn
        self.calls = []

    def __call__(self, X, seed=0, **kw):
        self.calls.append((len(X), seed))
        if self.fn is None:
            raise AssertionError("projection was recomputed, but the cache should have answered")
        return self.fn(X, seed=seed, **kw)


def fake_projection(X, seed=0):
    """Cheap deterministic stand-in for t-SNE / UMAP in the cache tests."""
    X = np.asarray(X, dtype=np.float32)
    return np.column_stack([X[:, 0] + seed, X[:, 1] - seed]).astype(np.float32)


def cached_files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "projections").rglob("coords.safetensors"))


# ---------------------------------------------------------------------------------------------
# PCA


@pytest.mark.parametrize("n,d,k,solver", [(300, 20, 2, "full"), (600, 700, 2, "arpack"), (600, 700, 50, "randomized")])
def test_pca_recovers_planted_plane(monkeypatch, n, d, k, solver):
    used = []
    real_pca = sklearn.decomposition.PCA

    def spy_pca(*args, **kw):
        used.append(kw.get("svd_solver"))
        return real_pca(*args, **kw)

    monkeypatch.setattr(sklearn.decomposition, "PCA", spy_pca)
    X, u, v = planted_plane(n, d)
    scores = pca(X, k, seed=0)
    assert used == [solver]
    assert scores.shape == (n, k) and scores.dtype == np.float32
    scores = scores[:, :2]  # the planted plane is the top two components
    assert np.all(np.isfinite(scores))

    Xc = X - X.mean(0)
    P = Xc @ np.column_stack([u, v])  # coordinates in the planted plane
    for k in range(2):
        assert r2(scores[:, k], P) > 0.99
    for k in range(2):
        assert r2(P[:, k], scores) > 0.99
    # a rotation (here: axis-aligned up to sign, since the variances differ): scores = P @ R, R orthogonal
    R, *_ = np.linalg.lstsq(P, scores.astype(np.float64), rcond=None)
    np.testing.assert_allclose(R.T @ R, np.eye(2), atol=0.01)
    assert abs(np.corrcoef(scores[:, 0], P[:, 0])[0, 1]) > 0.99  # first component: u (variance 100)
    assert abs(np.corrcoef(scores[:, 1], P[:, 1])[0, 1]) > 0.99  # second: v (variance 50); sampling tilts the axes a little
    assert scores[:, 0].var() == pytest.approx(100, rel=0.2)
    assert scores[:, 1].var() == pytest.approx(50, rel=0.2)


def test_pca_more_components_than_dims_is_capped():
    X, _, _ = planted_plane(40, 3)
    assert pca(X, n_components=50).shape == (40, 3)


# ---------------------------------------------------------------------------------------------
# t-SNE and UMAP (n = 120 keeps t-SNE at a few seconds; module-scoped so UMAP compiles once)


@pytest.fixture(scope="module")
def clusters():
    return two_clusters()


@pytest.fixture(scope="module")
def tsne_runs(clusters):
    X, _ = clusters
    return projection.tsne(X, seed=3), projection.tsne(X, seed=3)


@pytest.fixture(scope="module")
def umap_runs(clusters):
    X, _ = clusters  # d = 60 > 50: goes through the PCA-50 reduction first
    return projection.umap(X, seed=3), projection.umap(X, seed=3), projection.umap(X, seed=4)


def check_embedding(Z: np.ndarray, y: np.ndarray) -> None:
    from sklearn.metrics import silhouette_score

    assert Z.shape == (len(y), 2) and Z.dtype == np.float32
    assert np.all(np.isfinite(Z))
    assert loo_1nn_accuracy(Z, y) == 1.0
    assert silhouette_score(Z, y) > 0.6


def test_tsne_separates_clusters_and_is_deterministic(clusters, tsne_runs):
    _, y = clusters
    a, b = tsne_runs
    check_embedding(a, y)
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_umap_separates_clusters_and_is_deterministic(clusters, umap_runs):
    _, y = clusters
    a, b, other_seed = umap_runs
    check_embedding(a, y)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, other_seed)  # the seed is passed through
    check_embedding(other_seed, y)


# ---------------------------------------------------------------------------------------------
# project(): the on-disk cache


def test_project_without_a_memo_writes_nothing(cache_dir):
    X, _, _ = planted_plane(30, 5)
    np.testing.assert_array_equal(project(X, "pca"), pca(X))
    assert cached_files(cache_dir) == []


def test_project_caches_and_reuses(cache_dir, monkeypatch):
    X, _, _ = planted_plane(50, 8)
    cid = {"activations": "abc123", "layer": 4, "rows": 50}
    first = project(X, "pca", seed=0, memo=disk_memo(cid))
    np.testing.assert_array_equal(first, pca(X, seed=0))
    files = cached_files(cache_dir)
    assert len(files) == 1
    assert files[0].parent.parent == cache_dir / "projections"

    # project() looks the method up in a dict built from the module globals at call time,
    # so patching the module attribute is what it would call
    boom = Spy()
    monkeypatch.setattr(projection, "pca", boom)
    with pytest.raises(AssertionError, match="recomputed"):  # the patch is live: a new id computes
        project(X, "pca", seed=0, memo=disk_memo({"activations": "other"}))
    boom.calls.clear()

    again = project(X, "pca", seed=0, memo=disk_memo(dict(cid)))
    assert boom.calls == []
    np.testing.assert_array_equal(again, first)
    assert again.shape == (50, 2) and again.dtype == np.float32
    # key order in the id does not matter
    again2 = project(X, "pca", seed=0, memo=disk_memo({"rows": 50, "layer": 4, "activations": "abc123"}))
    np.testing.assert_array_equal(again2, first)
    assert boom.calls == []


def test_project_recomputes_when_seed_method_n_or_id_change(cache_dir, monkeypatch):
    X, _, _ = planted_plane(40, 6)
    cid = {"activations": "k", "layer": 1}
    spies = {m: Spy(fake_projection) for m in ("pca", "tsne", "umap")}
    for m, spy in spies.items():
        monkeypatch.setattr(projection, m, spy)

    base = project(X, "pca", seed=0, memo=disk_memo(cid))
    assert spies["pca"].calls == [(40, 0)]
    project(X, "pca", seed=0, memo=disk_memo(cid))
    assert spies["pca"].calls == [(40, 0)]  # cached

    other_seed = project(X, "pca", seed=1, memo=disk_memo(cid))
    assert spies["pca"].calls == [(40, 0), (40, 1)]
    assert not np.array_equal(other_seed, base)

    project(X, "tsne", seed=0, memo=disk_memo(cid))
    project(X, "umap", seed=0, memo=disk_memo(cid))
    assert spies["tsne"].calls == [(40, 0)] and spies["umap"].calls == [(40, 0)]

    fewer = project(X[:39], "pca", seed=0, memo=disk_memo(cid))
    assert spies["pca"].calls[-1] == (39, 0) and fewer.shape == (39, 2)

    project(X, "pca", seed=0, memo=disk_memo({"activations": "k", "layer": 2}))
    assert spies["pca"].calls[-1] == (40, 0) and len(spies["pca"].calls) == 4

    assert len(cached_files(cache_dir)) == 6
    # every variant is now cached: nothing recomputes
    for spy in spies.values():
        spy.calls.clear()
    np.testing.assert_array_equal(project(X, "pca", seed=1, memo=disk_memo(cid)), other_seed)
    project(X, "tsne", seed=0, memo=disk_memo(cid))
    project(X[:39], "pca", seed=0, memo=disk_memo(cid))
    assert all(spy.calls == [] for spy in spies.values())


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-5])


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a safetensors file at all")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _flip_data_byte(path: Path) -> None:
    """Same size, one coordinate byte changed: only the checksum can tell."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x55
    path.write_bytes(bytes(data))
    # a later modification time, as any real later write would have (the store memoises verified
    # files by (path, size, mtime); a rewrite within the same clock tick is a separate issue)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def _bad_header_json(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8] = ord("#")  # first byte of the JSON header
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("corrupt", [_truncate, _garbage, _empty, _flip_data_byte, _bad_header_json])
def test_project_recomputes_a_corrupted_cache_file(cache_dir, monkeypatch, corrupt):
    X, _, _ = planted_plane(30, 5)
    cid = {"activations": "c", "layer": 0}
    expected = project(X, "pca", seed=0, memo=disk_memo(cid))
    (path,) = cached_files(cache_dir)
    corrupt(path)

    spy = Spy(projection.pca)
    monkeypatch.setattr(projection, "pca", spy)
    got = project(X, "pca", seed=0, memo=disk_memo(cid))  # no exception
    assert spy.calls == [(30, 0)]
    np.testing.assert_array_equal(got, expected)
    # rewritten: the next call is served from the cache again
    spy.calls.clear()
    np.testing.assert_array_equal(project(X, "pca", seed=0, memo=disk_memo(cid)), expected)
    assert spy.calls == []


def test_project_cache_hits_with_a_tuple_in_the_memos_id(monkeypatch):
    X, _, _ = planted_plane(30, 5)
    cid = {"activations": "t", "layers": (1, 2)}
    project(X, "pca", seed=0, memo=disk_memo(cid))
    spy = Spy()
    monkeypatch.setattr(projection, "pca", spy)
    project(X, "pca", seed=0, memo=disk_memo(cid))
    assert spy.calls == []


def test_project_errors(cache_dir):
    X, _, _ = planted_plane(10, 4)
    with pytest.raises(RepmapError, match="'mds' is not one of pca, tsne, umap"):
        project(X, "mds")
    with pytest.raises(RepmapError, match="at least 3 rows.*has 2"):
        project(X[:2], "pca", memo=disk_memo({"a": 1}))
    with pytest.raises(RepmapError, match="at least 3 rows"):
        project(X[:0], "tsne")
    assert cached_files(cache_dir) == []
    assert project(X[:3], "pca").shape == (3, 2)


# ---------------------------------------------------------------------------------------------
# sample_rows


def test_sample_rows_keeps_class_proportions_and_is_seeded():
    labels = np.array([0] * 700 + [1] * 300)
    np.random.default_rng(0).shuffle(labels)
    for max_rows in (100, 333, 999):
        idx = sample_rows(labels, max_rows, seed=7)
        assert len(idx) <= max_rows
        assert len(idx) >= max_rows - 1
        assert np.all(np.diff(idx) > 0)  # sorted and unique
        assert idx.min() >= 0 and idx.max() < len(labels)
        for cls, share in ((0, 0.7), (1, 0.3)):
            assert abs((labels[idx] == cls).sum() - share * max_rows) <= 1
        np.testing.assert_array_equal(sample_rows(labels, max_rows, seed=7), idx)
    assert not np.array_equal(sample_rows(labels, 100, seed=1), sample_rows(labels, 100, seed=2))


def test_sample_rows_returns_everything_when_small():
    labels = np.array([0, 1, 1, 0, 1])
    np.testing.assert_array_equal(sample_rows(labels, 5), np.arange(5))
    np.testing.assert_array_equal(sample_rows(labels, 1000, seed=3), np.arange(5))
    assert len(sample_rows(labels, 4)) == 4


@pytest.mark.parametrize("sizes,max_rows", [((3, 7), 5), ((1003, 999), 1001), ((1, 999), 10)])
def test_sample_rows_never_exceeds_max_rows(sizes, max_rows):
    labels = np.array([0] * sizes[0] + [1] * sizes[1])
    idx = sample_rows(labels, max_rows, seed=0)
    assert len(idx) <= max_rows


def test_standardised_pca_is_not_decided_by_a_massive_feature():
    """Issue 25, item 4: a feature hundreds of times the others' size (massive activations) decides plain PCA's first
    axis; standardised PCA scales every feature to unit variance first and finds the planted class direction."""
    from repmap_core.analysis.projection import MASSIVE_RATIO, massive_activations, project

    rng = np.random.default_rng(0)
    y = np.arange(400) % 2
    X = rng.normal(size=(400, 20))
    X[:, :6] += 1.5 * (2 * y - 1)[:, None]  # the classes differ along features 0-5 together
    X[:, 7] = 500.0 + 200.0 * rng.normal(size=400)  # a massive, uninformative feature
    feature, ratio = massive_activations(X)
    assert feature == 7 and ratio > MASSIVE_RATIO
    assert massive_activations(rng.normal(size=(400, 20)))[1] < MASSIVE_RATIO

    def separation(xy):  # class means apart along the first axis, in units of its spread
        return abs(xy[y == 1, 0].mean() - xy[y == 0, 0].mean()) / xy[:, 0].std()

    assert separation(project(X, "pca")) < 0.3  # the first PC is the massive feature
    assert separation(project(X, "pca_std")) > 1.5


def test_tsne_reports_its_iterations_as_it_goes_and_gives_the_same_embedding():
    """t-SNE took 51 s of the explorer behind a spinner: it now says which iteration it is on."""
    pytest.importorskip("openTSNE")
    X = np.random.default_rng(0).normal(size=(120, 8)).astype(np.float32)
    seen = []
    with_progress = project(X, "tsne", seed=0, progress=lambda f, m: seen.append((f, m)))
    np.testing.assert_allclose(with_progress, project(X, "tsne", seed=0), rtol=1e-5, atol=1e-5)
    assert [f for f, _ in seen] == sorted(f for f, _ in seen) and seen[-1] == (1.0, "t-SNE iteration 600 of 600")
    assert len(seen) == 12
