"""Tests for repmap_core.analysis.between on planted truth: a map source -> target and the source probe
carried across (vector, readout, pinv, random direction), with intervals, nulls and other map methods."""
from __future__ import annotations

import numpy as np
import pytest

from repmap_core.analysis.between import between_models
from repmap_core.analysis.within import within_model
from repmap_core.errors import RepmapError


def planted_between(n=4000, ds=24, dt=40, seed=0, orthogonal=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    w = rng.normal(size=ds)
    S = (rng.normal(size=(n, ds)) + np.outer(2 * y - 1, w / np.linalg.norm(w)) * 1.5).astype(np.float32)
    if orthogonal:
        Q, _ = np.linalg.qr(rng.normal(size=(dt, ds)))
        M = Q
    else:
        M = rng.normal(size=(dt, ds)) @ np.diag(np.geomspace(0.1, 10, ds))
    T = (S @ M.T + 2 + 0.01 * rng.normal(size=(n, dt))).astype(np.float32)
    return S, T, y


def test_between_models_functional_transfer_keeps_the_probe():
    S, T, y = planted_between()
    result, fitted = between_models(S, T, y)
    assert fitted.A_.shape == (40, 24)
    assert result.map["r2_test"] > 0.99 and result.map["retrieval_top1"] > 0.9
    src = result.probe["source"]["test"]
    assert src > 0.85
    assert abs(result.transfer["functional"] - src) < 0.02
    d = result.transfer["details"]
    assert abs(d["functional_reverse"]["with_intercept"] - src) < 0.02
    assert d["functional"]["cosine_with_target_probe"] > d["vector"]["cosine_with_target_probe"]
    assert result.transfer["vector"] == d["vector"]["uncentered"]  # reported as it is
    assert len(result.per_dim_mse) == 40 and result.similarity["linear_cka"] > 0.3


def test_between_models_orthogonal_map_vector_and_functional_agree():
    S, T, y = planted_between(orthogonal=True)
    result, _ = between_models(S, T, y)
    d = result.transfer["details"]
    assert abs(d["vector"]["centered"] - d["functional"]["centered"]) < 0.01


@pytest.mark.parametrize("method", ["ridge", "procrustes", "lowrank", "mlp"])
def test_between_models_other_methods(method):
    S, T, y = planted_between(n=1500, ds=12, dt=12, orthogonal=True)
    params = {"rank": 12} if method == "lowrank" else {"max_epochs": 20} if method == "mlp" else {}
    result, fitted = between_models(S, T, y, method=method, map_params=params)
    assert result.map["method"] == method and result.map["r2_test"] > 0.9
    if method == "mlp":
        assert result.transfer["vector"] is None and result.transfer["details"] == {}
    else:
        assert result.transfer["functional"] > 0.85


def test_between_models_bad_input():
    S, T, y = planted_between(n=100, ds=4, dt=4)
    with pytest.raises(RepmapError, match="have 100 and 99 rows"):
        between_models(S, T[:99], y)
    bad = T.copy()
    bad[:3, 0] = np.inf
    with pytest.raises(RepmapError, match="3 row\\(s\\) with NaN or inf"):
        between_models(S, bad, y)
    with pytest.raises(RepmapError, match="There are 50 labels for 100 rows"):
        between_models(S, T, y[:50])


def test_between_models_intervals_nulls_and_the_readout():
    import json

    S, T, y = planted_between(n=1500)
    result, _ = between_models(S, T, y)
    iv, d = result.intervals, result.transfer["details"]
    for key in ("map.r2_test", "map.mean_cosine", "map.retrieval_top1", "probe.source", "probe.target",
                "transfer.functional", "transfer.vector"):
        assert iv[key].low <= iv[key].value <= iv[key].high, key
    f = iv["transfer.functional"]
    assert f.value == result.transfer["functional"] and f.value > f.null_high and abs(f.null - 0.5) < 0.05
    assert set(d) == {"functional", "functional_reverse", "pinv", "vector", "pca_subspace_vector", "pca_subspace_pinv",
                      "random_direction"}
    assert d["random_direction"]["with_intercept"] < f.value - 0.2
    cka = iv["similarity.cka_debiased"]
    assert cka.value > 0.3 and cka.null_high < 0.05 and result.similarity["cka_debiased"] == cka.value
    assert result.map["alpha"] > 0 and not result.map["n_le_d"]  # the default map is ridge with a chosen alpha
    json.dumps(result.as_dict(), allow_nan=False)


@pytest.mark.slow
def test_real_reviews_few_rows_for_the_width_fit_and_transfer_hold_up(cache_dir):
    """MiniLM on 300 real reviews (240 training rows, width 384; layers 2 -> 5 as before/after).
    Before this work: within R² test -0.72 (alpha 0), functional transfer 0.08-0.47 below the
    probes (pinv of a ridge map). Measured now: within 0.32; readout within 0.05 of, or above,
    min(source, target probe) on every pair below."""
    from repmap_core.capture.activations import get_activations
    from repmap_core.capture.models import EMBEDDED_MODEL_ID
    from repmap_core.data.load import load_dataset

    aset = get_activations(EMBEDDED_MODEL_ID, load_dataset("builtin:sentiment", limit=300, seed=0), "all", "auto")
    assert aset.n == 300 and aset.d == 384
    within, _ = within_model(aset[2], aset[5], aset.labels)
    assert within.fit["n_le_d"] and within.fit["r2_test"] >= 0.3
    assert within.intervals["r2_test"].low > 0
    for s, t in ((1, 3), (2, 5), (3, 5), (4, 5)):
        result, _ = between_models(aset[s], aset[t], aset.labels)
        floor = min(result.probe["source"]["test"], result.probe["target"]["test"])
        assert result.transfer["functional"] >= floor - 0.08, (s, t, result.transfer, result.probe)
        assert result.transfer["details"]["pinv"]["with_intercept"] < result.transfer["functional"]  # the old form
