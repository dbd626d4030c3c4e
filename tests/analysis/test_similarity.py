"""Tests for repmap_core.analysis.similarity: linear CKA, SVCCA, Procrustes distance and layer-by-layer matrices.

Each test plants a known answer (equal inputs, an isometric embedding, a shared signal of known
size, rotated copies of layers) or a known invariance, and checks it against reference formulas
written out here.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes

from repmap_core.analysis import cka, similarity
from repmap_core.analysis.similarity import (
    SimilarityMatrix,
    layer_similarity,
    linear_cka,
    linear_cka_debiased,
    procrustes_distance,
    svcca,
)
from repmap_core.errors import RepmapError

# ---------------------------------------------------------------------------------------------
# helpers

SIMILARITIES = {"linear_cka": linear_cka, "svcca": svcca}  # 1 = same, higher is closer
ALL_METRICS = {**SIMILARITIES, "procrustes": procrustes_distance}


def orthogonal(d: int, seed: int) -> np.ndarray:
    """A random (d, d) orthogonal matrix."""
    Q, R = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return Q * np.sign(np.diag(R))


def isometry(d_in: int, d_out: int, seed: int) -> np.ndarray:
    """A random (d_in, d_out) matrix with orthonormal rows (d_in <= d_out): it embeds without distortion."""
    return orthogonal(d_out, seed)[:d_in]


def stretch(d: int, seed: int) -> np.ndarray:
    """An invertible, far from orthogonal (d, d) map: rotate, scale axes by 0.1 .. 10, rotate."""
    return orthogonal(d, seed) @ np.diag(np.geomspace(0.1, 10.0, d)) @ orthogonal(d, seed + 1)


def related_pair(n: int = 400, d: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X with an uneven spectrum and offset mean; Z shares part of X's signal plus its own noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.geomspace(3.0, 0.3, d) + rng.normal(size=d) * 5
    Z = X[:, :d // 2] @ rng.normal(size=(d // 2, d)) + rng.normal(size=(n, d))
    return X, Z


def reference_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """CKA as HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = X X^T, L = Y Y^T and centring H."""
    n = len(X)
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = X @ X.T, Y @ Y.T

    def hsic(A: np.ndarray, B: np.ndarray) -> float:
        return np.trace(A @ H @ B @ H) / (n - 1) ** 2

    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def reference_cca(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Canonical correlations from covariances: sqrt(eig(Sxx^-1 Sxy Syy^-1 Syx)), largest first."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Sxx, Syy, Sxy = Xc.T @ Xc, Yc.T @ Yc, Xc.T @ Yc
    M = np.linalg.solve(Sxx, Sxy) @ np.linalg.solve(Syy, Sxy.T)
    k = min(X.shape[1], Y.shape[1])
    return np.sqrt(np.clip(np.sort(np.linalg.eigvals(M).real)[::-1][:k], 0, 1))


def reference_procrustes(X: np.ndarray, Y: np.ndarray) -> float:
    """min over orthogonal R of ||X - Y R||_F^2 after centring, unit norm and zero-padding, via scipy."""
    d = max(X.shape[1], Y.shape[1])
    Xp, Yp = (np.pad(A - A.mean(0), ((0, 0), (0, d - A.shape[1]))) for A in (X, Y))
    Xp, Yp = Xp / np.linalg.norm(Xp), Yp / np.linalg.norm(Yp)
    R, _ = orthogonal_procrustes(Yp, Xp)
    return float(np.linalg.norm(Xp - Yp @ R) ** 2)


def one_sentence(message: str) -> bool:
    return message.endswith(".") and ". " not in message


# ---------------------------------------------------------------------------------------------
# the three measures on planted answers


def test_identical_inputs_are_maximally_similar():
    X, _ = related_pair()
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert svcca(X, X) == pytest.approx(1.0, abs=1e-10)
    assert svcca(X, X, keep=1.0) == pytest.approx(1.0, abs=1e-10)
    assert procrustes_distance(X, X) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("name", ["linear_cka", "svcca", "procrustes"])
def test_invariant_to_rotation_isotropic_scaling_and_offset(name):
    f = ALL_METRICS[name]
    X, Z = related_pair()
    d = X.shape[1]
    X_moved = 3.7 * X @ orthogonal(d, seed=5) + 42.0  # rotate, scale, shift every feature
    Z_moved = 0.02 * Z @ orthogonal(d, seed=6) - 7.0
    base = f(X, Z)
    assert 0.05 < base < (1.95 if name == "procrustes" else 0.95)  # not a trivial value
    assert f(X_moved, Z) == pytest.approx(base, abs=1e-9)
    assert f(X, Z_moved) == pytest.approx(base, abs=1e-9)
    assert f(X_moved, Z_moved) == pytest.approx(base, abs=1e-9)
    assert f(X, X_moved) == pytest.approx(0.0 if name == "procrustes" else 1.0, abs=1e-9)


def test_general_linear_map_changes_cka_and_procrustes_but_not_full_svcca():
    X, Z = related_pair()
    XA = X @ stretch(X.shape[1], seed=7)
    # CKA weighs directions by variance, so an anisotropic stretch moves it
    assert abs(linear_cka(XA, Z) - linear_cka(X, Z)) > 0.05
    assert linear_cka(X, XA) < 0.9
    assert procrustes_distance(X, XA) > 0.1
    assert abs(procrustes_distance(XA, Z) - procrustes_distance(X, Z)) > 0.05
    # SVCCA with every direction kept compares column spaces, which an invertible map preserves
    assert svcca(XA, Z, keep=1.0) == pytest.approx(svcca(X, Z, keep=1.0), abs=1e-9)
    assert svcca(X, XA, keep=1.0) == pytest.approx(1.0, abs=1e-9)


def test_independent_inputs_score_near_zero_and_shared_signal_in_between():
    rng = np.random.default_rng(1)
    n, d = 2000, 20
    S, N1, N2 = (rng.normal(size=(n, d // 2)) for _ in range(3))
    X, Y_indep = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    # half the features shared: ||Xc^T Yc||^2 ~ 10 n^2, ||Xc^T Xc|| ~ sqrt(20) n, so CKA ~ 10 / 20
    Xs, Ys = np.hstack([S, N1]), np.hstack([S, N2])
    assert linear_cka(X, Y_indep) < 0.05
    assert linear_cka(Xs, Ys) == pytest.approx(0.5, abs=0.05)
    assert svcca(X, Y_indep, keep=1.0) < 0.1
    assert svcca(Xs, Ys, keep=1.0) == pytest.approx(0.5, abs=0.06)  # 10 correlations of 1, 10 near 0
    p_same, p_half, p_indep = procrustes_distance(Xs, Xs), procrustes_distance(Xs, Ys), procrustes_distance(X, Y_indep)
    assert p_same < 1e-9 < p_half < p_indep
    assert p_indep > 1.5


def test_more_shared_signal_means_higher_cka():
    rng = np.random.default_rng(2)
    S, N = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    scores = [linear_cka(S, w * S + (1 - w) * N) for w in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert scores == sorted(scores)
    assert scores[0] < 0.05 and scores[-1] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shape", [(500, 20), (40, 300), (60, 60)])
def test_kernel_and_feature_forms_of_cka_agree(shape):
    rng = np.random.default_rng(3)
    X = rng.normal(size=shape) + 2.0
    Y = X[:, :5] @ rng.normal(size=(5, shape[1] + 7)) + rng.normal(size=(shape[0], shape[1] + 7))
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    feature, kernel = cka._cka_features(Xc, Yc), cka._cka_kernel(Xc, Yc)
    assert 0.05 < feature < 0.99
    assert feature == pytest.approx(kernel, abs=1e-8)
    assert linear_cka(X, Y) == pytest.approx(reference_cka(X, Y), abs=1e-8)


def test_linear_cka_picks_the_form_by_shape(monkeypatch):
    calls: list[str] = []
    for form in ("_cka_features", "_cka_kernel"):
        real = getattr(cka, form)
        monkeypatch.setattr(cka, form, lambda Xc, Yc, real=real, form=form: calls.append(form) or real(Xc, Yc))
    rng = np.random.default_rng(4)
    tall, wide = rng.normal(size=(400, 10)), rng.normal(size=(30, 500))
    linear_cka(tall, tall[:, ::-1])
    linear_cka(wide, wide * 2)
    assert calls == ["_cka_features", "_cka_kernel"]


@pytest.mark.parametrize("shape", [(300, 12), (25, 80)])
def test_linear_cka_matches_the_hsic_reference(shape):
    X, Z = related_pair(n=shape[0], d=shape[1], seed=8)
    assert linear_cka(X, Z) == pytest.approx(reference_cka(X, Z), abs=1e-8)
    assert linear_cka(Z, X) == pytest.approx(linear_cka(X, Z), abs=1e-12)


def test_svcca_with_all_directions_is_the_mean_canonical_correlation():
    X, Z = related_pair(n=300, d=8, seed=9)
    Z = Z[:, :6]
    assert svcca(X, Z, keep=1.0) == pytest.approx(reference_cca(X, Z).mean(), abs=1e-8)


def test_svcca_keeps_the_high_variance_directions():
    rng = np.random.default_rng(10)
    n = 500
    signal = rng.normal(size=(n, 3)) * 10  # three strong directions, shared up to a linear map
    X = np.hstack([signal, 0.01 * rng.normal(size=(n, 17))]) @ orthogonal(20, seed=11)
    Y = np.hstack([signal @ stretch(3, seed=12), 0.01 * rng.normal(size=(n, 27))]) @ orthogonal(30, seed=13)
    Xc = X - X.mean(0)
    assert similarity._svd_basis(Xc, 0.99, None).shape == (n, 3)
    assert similarity._svd_basis(Xc, 0.99, 2).shape == (n, 2)
    assert similarity._svd_basis(Xc, 1.0, None).shape == (n, 20)
    assert similarity._svd_basis(Xc[:6], 1.0, None).shape == (6, 5)  # at most n - 1 after centring
    # keeping 99% finds the shared 3-D signal; keeping everything averages in the unrelated noise
    assert svcca(X, Y) == pytest.approx(1.0, abs=1e-4)
    assert svcca(X, Y, keep=1.0) < 0.4
    assert svcca(X, Y, keep=1.0, max_dims=3) == pytest.approx(1.0, abs=1e-4)
    # one direction each: the canonical correlation is |Pearson r| of the two top principal components
    top_x, top_y = (np.linalg.svd(A - A.mean(0), full_matrices=False)[0][:, 0] for A in (X, Y))
    assert svcca(X, Y, max_dims=1) == pytest.approx(abs(np.corrcoef(top_x, top_y)[0, 1]), abs=1e-10)


@pytest.mark.parametrize("shape", [(200, 16, 40), (30, 16, 70), (30, 50, 70)])
def test_procrustes_matches_scipy_with_zero_padding(shape):
    n, d1, d2 = shape
    rng = np.random.default_rng(14)
    X = rng.normal(size=(n, d1)) + 1.0
    Y = X @ rng.normal(size=(d1, d2)) + 2.0 * rng.normal(size=(n, d2))
    expected = reference_procrustes(X, Y)
    assert 0.05 < expected < 1.95
    assert procrustes_distance(X, Y) == pytest.approx(expected, abs=1e-8)


def test_different_widths_work_for_all_metrics():
    rng = np.random.default_rng(15)
    X = rng.normal(size=(2000, 16)) * np.geomspace(2, 0.5, 16)
    Y = X @ isometry(16, 40, seed=16)  # (2000, 40): X embedded without distortion
    unrelated = rng.normal(size=(2000, 40))  # chance-level canonical correlations shrink like sqrt(d / n)
    assert linear_cka(X, Y) == pytest.approx(1.0, abs=1e-10)
    assert svcca(X, Y) == pytest.approx(1.0, abs=1e-8)
    assert procrustes_distance(X, Y) == pytest.approx(0.0, abs=1e-9)
    assert procrustes_distance(Y, X) == pytest.approx(0.0, abs=1e-9)
    assert linear_cka(X, unrelated) < 0.15
    assert svcca(X, unrelated) < 0.2
    assert procrustes_distance(X, unrelated) > 1.0


# ---------------------------------------------------------------------------------------------
# layer_similarity and SimilarityMatrix


def copied_layers(n: int, d_a: int, d_b: int, k: int = 4, seed: int = 20):
    """Layers of A that share a common part; B's layer i is A's layer i rotated into d_b, rescaled and noised."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=(n, d_a))
    layers_a = {i: common + 1.2 * rng.normal(size=(n, d_a)) for i in range(k)}
    layers_b = {i: (2.0 + i) * layers_a[i] @ isometry(d_a, d_b, seed=30 + i) + 0.3 * rng.normal(size=(n, d_b))
                for i in range(k)}
    return layers_a, layers_b


@pytest.mark.parametrize("metric", ["linear_cka", "cka_debiased", "svcca", "procrustes"])
@pytest.mark.parametrize("shape", [(300, 24, 32), (40, 100, 120)])  # n >> d (features) and d >> n (kernels)
def test_layer_similarity_finds_the_copied_layer(metric, shape):
    n, d_a, d_b = shape
    layers_a, layers_b = copied_layers(n, d_a, d_b)
    sim = layer_similarity(layers_a, layers_b, metric=metric, max_rows=None)
    assert sim.metric == metric and sim.layers_a == sim.layers_b == (0, 1, 2, 3)
    assert sim.best_match() == {0: 0, 1: 1, 2: 2, 3: 3}
    diag, off = np.diag(sim.values), sim.values[~np.eye(4, dtype=bool)]
    if metric == "procrustes":
        assert diag.max() < off.min()  # a distance: the copy is the minimum, not the maximum
        assert (np.argmax(sim.values, axis=1) != np.arange(4)).all()
    else:
        assert diag.min() > off.max()
    pairwise = {**ALL_METRICS, "cka_debiased": linear_cka_debiased}[metric]
    expected = [[pairwise(layers_a[a], layers_b[b]) for b in range(4)] for a in range(4)]
    np.testing.assert_allclose(sim.values, expected, atol=1e-9)


def test_layer_similarity_cka_uses_kernels_only_where_they_pay_off():
    tall = copied_layers(300, 24, 32)
    wide = copied_layers(40, 100, 120)
    assert not similarity._kernels_pay_off(300, *tall)
    assert similarity._kernels_pay_off(40, *wide)


def test_layer_similarity_prepares_each_layer_once(monkeypatch):
    calls = []
    real = similarity.cka_prepare
    monkeypatch.setattr(similarity, "cka_prepare", lambda Xc, *args: calls.append(Xc.shape) or real(Xc, *args))
    layers_a, layers_b = copied_layers(60, 10, 12, k=3)
    layer_similarity(layers_a, layers_b)
    assert len(calls) == 6  # 3 + 3 layers, not 9 pairs
    calls.clear()
    sim = layer_similarity(layers_a, layers_a)  # the same arrays on both sides: prepared once each
    assert len(calls) == 3
    np.testing.assert_allclose(np.diag(sim.values), 1.0, atol=1e-12)


def test_layer_similarity_subsamples_the_same_rows_for_every_pair_by_seed():
    rng = np.random.default_rng(21)
    layers_a = {i: rng.normal(size=(400, 8)) for i in range(3)}
    layers_b = {i: X.copy() for i, X in layers_a.items()}  # equal values, different arrays
    first = layer_similarity(layers_a, layers_b, max_rows=50, seed=3)
    again = layer_similarity(layers_a, layers_b, max_rows=50, seed=3)
    other = layer_similarity(layers_a, layers_b, max_rows=50, seed=4)
    assert first == again
    assert not np.allclose(first.values, other.values)
    # a diagonal of exactly 1 means A and B were cut to the same rows
    np.testing.assert_allclose(np.diag(first.values), 1.0, atol=1e-12)
    # 50 of 400 rows: off-diagonal scores are noisier than on all rows, so the subsample really is one
    full = layer_similarity(layers_a, layers_b, max_rows=None)
    assert np.abs(first.values - full.values).max() > 0.01
    assert layer_similarity(layers_a, layers_b, max_rows=400) == full


def test_layer_similarity_reports_progress():
    layers_a, layers_b = copied_layers(50, 6, 6, k=3)
    seen: list[tuple[float, str]] = []
    layer_similarity(layers_a, layers_b, progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert all(isinstance(m, str) and m for _, m in seen)


def test_similarity_matrix_best_match_json_and_immutability():
    values = np.array([[0.2, 0.9, 0.9], [0.7, 0.1, 0.3]])
    sim = SimilarityMatrix("linear_cka", (0, 6), (1, 5, 11), values)
    assert sim.best_match() == {0: 5, 6: 1}  # ties go to the first (shallowest) layer of B
    dist = SimilarityMatrix("procrustes", (0, 6), (1, 5, 11), values)
    assert dist.best_match() == {0: 1, 6: 5}
    d = sim.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["values"] == values.tolist() and d["best_match"] == {"0": 5, "6": 1}
    values[0, 0] = 99.0  # the matrix keeps its own copy
    assert sim.values[0, 0] == 0.2
    with pytest.raises(ValueError):
        sim.values[0, 0] = 1.0
    assert sim == SimilarityMatrix("linear_cka", (0, 6), (1, 5, 11), sim.values.copy())
    assert sim != dist
    with pytest.raises(ValueError):
        SimilarityMatrix("linear_cka", (0,), (1, 5), np.zeros((2, 2)))


# ---------------------------------------------------------------------------------------------
# bad inputs


def _nan_rows(X: np.ndarray) -> np.ndarray:
    X = X.copy()
    X[3, 1], X[7, 0] = np.nan, np.inf
    return X


OK = np.random.default_rng(40).normal(size=(100, 5))


@pytest.mark.parametrize("X, Y, phrase", [
    (OK, OK[:90], "have 100 and 90 rows; similarity needs the same rows (texts) in both"),
    (OK[:2], OK[:2], "at least 3 rows"),
    (_nan_rows(OK), OK, "NaN or infinite values in 2 of 100 rows"),
    (OK, _nan_rows(OK), "Y has NaN or infinite values in 2 of 100 rows"),
    (OK[:, 0], OK, "2-D array"),
    (np.ones((100, 5)), OK, "same values in every row"),
])
@pytest.mark.parametrize("name", ["linear_cka", "svcca", "procrustes"])
def test_bad_pairs_raise_one_sentence(name, X, Y, phrase):
    with pytest.raises(RepmapError) as err:
        ALL_METRICS[name](X, Y)
    assert phrase in str(err.value) and one_sentence(str(err.value))


def test_bad_svcca_arguments_raise():
    with pytest.raises(RepmapError, match="keep"):
        svcca(OK, OK, keep=0.0)
    with pytest.raises(RepmapError, match="max_dims"):
        svcca(OK, OK, max_dims=0)


def test_bad_layer_sets_raise_naming_the_layer():
    good = {0: OK, 3: OK * 2}
    cases = [
        (good, {0: OK, 2: OK[:90]}, {}, "Layer 0 of A and layer 2 of B have 100 and 90 rows"),
        (good, {5: _nan_rows(OK)}, {}, "Layer 5 of B has NaN or infinite values in 2 of 100 rows"),
        (good, {}, {}, "Model B has no layers"),
        (good, good, {"metric": "cosine"}, "Unknown similarity metric 'cosine'; use one of linear_cka, cka_debiased, svcca, procrustes"),
        (good, good, {"max_rows": 2}, "max_rows must be at least 3"),
    ]
    for layers_a, layers_b, kwargs, phrase in cases:
        with pytest.raises(RepmapError) as err:
            layer_similarity(layers_a, layers_b, **kwargs)
        assert phrase in str(err.value) and one_sentence(str(err.value))


# ---------------------------------------------------------------------------------------------
# debiased CKA and its permutation null (ReSi-style sanity tests)


def reference_cka_debiased(X: np.ndarray, Y: np.ndarray) -> float:
    """Plain numpy, as Kornblith et al.'s notebook computes it: linear Gram matrices, each centred
    with the unbiased estimator's centring (Song et al. 2012), then their normalised product."""
    def centred_gram(A: np.ndarray) -> np.ndarray:
        G = A @ A.T
        n = len(G)
        np.fill_diagonal(G, 0)
        means = G.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        G = G - means[:, None] - means[None, :]
        np.fill_diagonal(G, 0)
        return G

    Kx, Ky = centred_gram(X - X.mean(0)), centred_gram(Y - Y.mean(0))
    return float((Kx * Ky).sum() / np.sqrt((Kx * Kx).sum() * (Ky * Ky).sum()))


@pytest.mark.parametrize("shape", [(300, 24, 32), (40, 100, 120)])
def test_debiased_cka_matches_the_reference(shape):
    n, d1, d2 = shape
    rng = np.random.default_rng(40)
    X = rng.normal(size=(n, d1)) * np.geomspace(3, 0.3, d1) + 5
    Y = X @ rng.normal(size=(d1, d2)) + 2 * rng.normal(size=(n, d2))
    assert linear_cka_debiased(X, Y) == pytest.approx(reference_cka_debiased(X, Y), abs=1e-10)


def test_debiased_cka_sanity_identical_shuffled_invariant():
    rng = np.random.default_rng(41)
    X = rng.normal(size=(200, 30)) * np.geomspace(4, 0.2, 30)
    assert linear_cka_debiased(X, X) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka_debiased(X, 3.0 * X @ orthogonal(30, 1) + 7) == pytest.approx(1.0, abs=1e-9)
    shuffled = [linear_cka_debiased(X, X[rng.permutation(200)]) for _ in range(10)]
    assert abs(np.mean(shuffled)) < 0.02 and max(np.abs(shuffled)) < 0.06


def test_debiased_cka_stays_near_zero_where_the_biased_form_drifts_up():
    """Independent matrices wider than they are tall: biased CKA reads ~0.6, the debiased ~0."""
    rng = np.random.default_rng(42)
    X, Y = rng.normal(size=(100, 384)), rng.normal(size=(100, 384))
    assert linear_cka(X, Y) > 0.5
    assert abs(linear_cka_debiased(X, Y)) < 0.05  # measured -0.02: sampling noise around 0 at 100 rows


def test_permutation_null_for_a_pair_and_for_every_layer_pair():
    from repmap_core.analysis.similarity_null import cka_null, layer_cka_null

    layers_a, layers_b = copied_layers(120, 20, 28)
    mean, high = cka_null(layers_a[0], layers_b[0], n_permutations=30)
    assert abs(mean) < 0.02 and 0 < high < 0.06 and linear_cka_debiased(layers_a[0], layers_b[0]) > 10 * high
    sim = layer_similarity(layers_a, layers_b, "cka_debiased", max_rows=None, null_permutations=20)
    assert sim.null_high.shape == (4, 4) and sim.null_rows == 120 and sim.null_permutations == 20
    assert (np.abs(sim.null_high) < 0.08).all() and (np.diag(sim.values) > np.diag(sim.null_high)).all()
    null, m = layer_cka_null({0: layers_a[0]}, {0: layers_b[0]}, 30, max_rows=60)
    assert m == 60 and 0 < null[0, 0] < 0.1  # fewer rows: a wider null
    back = json.loads(json.dumps(sim.as_dict()))
    assert back["null_rows"] == 120 and np.allclose(back["null_high"], sim.null_high)
    assert sim == SimilarityMatrix(sim.metric, sim.layers_a, sim.layers_b, sim.values, sim.null_high, 120, 20)
    assert sim != SimilarityMatrix(sim.metric, sim.layers_a, sim.layers_b, sim.values)


@pytest.mark.slow
def test_real_minilm_layers_debiased_cka_reference_and_null():
    """Real weights: MiniLM on 200 real reviews (width 384 > rows). The debiased CKA of every layer
    pair equals the plain-numpy reference and clears its shuffled-row null; the biased form reads
    unrelated-looking layer 0 vs 5 higher than the debiased one."""
    from repmap_core.capture.activations import get_activations
    from repmap_core.capture.models import EMBEDDED_MODEL_ID
    from repmap_core.data.load import load_dataset

    aset = get_activations(EMBEDDED_MODEL_ID, load_dataset("builtin:sentiment", limit=200, seed=0), [0, 3, 5], "auto")
    layers = {L: np.asarray(aset[L], dtype=np.float64) for L in aset.layer_list}
    sim = layer_similarity(layers, layers, "cka_debiased", null_permutations=20)
    expected = [[reference_cka_debiased(layers[a], layers[b]) for b in sim.layers_b] for a in sim.layers_a]
    np.testing.assert_allclose(sim.values, expected, atol=1e-8)
    assert (sim.values > sim.null_high).all() and (sim.null_high < 0.05).all()
    assert linear_cka(layers[0], layers[5]) > sim.values[0, 2]
