"""The fits two views make: the within-model fit on a shift result and the Across page's map on an
across result. On planted activations each builder gives the numbers the core fit gives directly,
its exports, and a bundle keeps it."""
from __future__ import annotations

import numpy as np
import pytest

from repmap_core.analysis.between import between_models
from repmap_core.analysis.within import within_model
from repmap_core.errors import RepmapError
from repmap_core.results.view_fits import (
    GROUND_TRUTH,
    AcrossFitResult,
    WithinFitResult,
    across_fit,
    map_params,
    within_fit,
)
from repmap_core.share.bundle import bundle_bytes, load_bundle
from tests.share.test_bundle import assert_same, synthetic_states


@pytest.fixture(scope="module")
def states() -> dict:
    return synthetic_states()


def within_options(**kw) -> dict:
    return dict({"layer": 2, "method": "lstsq", "alpha": "auto", "steps": 200, "test": 0.2, "labels": GROUND_TRUTH}, **kw)


def test_within_fit_is_the_core_fit_with_its_export(states):
    shift = states["shift.result"]
    done = within_fit(shift, within_options())
    assert isinstance(done, WithinFitResult) and done.layer == 2 and done.points == [] and done.options == within_options()
    want, fitted = within_model(shift.base[2], shift.finetuned[2], shift.base.labels, pair_ids=shift.base.pair_ids,
                                test_frac=0.2)
    assert done.result.probe == want.probe and done.result.fit["r2_test"] == pytest.approx(want.fit["r2_test"])
    tensors, manifest = done.arrays
    assert np.allclose(tensors["delta"], fitted.delta_) and tensors["A"].shape == (16, 16)
    assert manifest["settings"]["labels_from"] == GROUND_TRUTH
    back = load_bundle(bundle_bytes({"within.result": done})).states["within.result"]
    assert isinstance(back, WithinFitResult) and back.options == done.options
    assert_same(done.arrays, back.arrays, "arrays")


def test_within_fit_by_gradient_descent_reports_each_step(states):
    seen = []
    done = within_fit(states["shift.result"], within_options(method="gd", steps=30), live=seen.append)
    assert done.points and done.points == seen and all("r2_test" in p or "step" in p for p in done.points)
    assert "step_reported" in done.result.fit


def test_across_fit_is_the_core_map_with_its_probe_export(states):
    across = states["across.result"]
    req = {"method": "lstsq", "alpha": "auto", "rank": 8, "steps": 100, "test_frac": 0.2, "seed": 0}
    done = across_fit(across, (2, 1), req)
    assert isinstance(done, AcrossFitResult) and done.layers == (2, 1) and done.history == []
    want, fitted = between_models(np.asarray(across.source[2]), np.asarray(across.target[1]), across.source.labels,
                                  pair_ids=across.source.pair_ids, method="lstsq", test_frac=0.2, seed=0, map_params={})
    assert done.result.map["r2_test"] == pytest.approx(want.map["r2_test"])
    assert np.allclose(done.A, fitted.A_) and done.A.shape == (24, 16) and done.b.shape == (24,)
    assert done.manifest["source"]["layer"] == 2 and done.manifest["target"]["layer"] == 1
    tensors, _ = done.arrays
    assert np.allclose(tensors["probe_vector_w"], done.A @ tensors["probe_source_w"], atol=1e-4)
    back = load_bundle(bundle_bytes({"across.fit": done})).states["across.fit"]
    assert isinstance(back, AcrossFitResult) and back.layers == (2, 1) and np.array_equal(back.A, done.A)


def test_across_fit_by_gradient_descent_tracks_held_out_r2(states):
    steps = []
    done = across_fit(states["across.result"], (2, 2), {"method": "gd", "alpha": "auto", "rank": 8, "steps": 40,
                                                        "test_frac": 0.2, "seed": 0}, on_step=lambda h: steps.append(len(h)))
    assert done.history and steps == list(range(1, len(done.history) + 1))
    assert all(len(row) == 4 for row in done.history)  # step, loss, held-out R², best step so far


def test_map_params_from_the_form():
    assert map_params("ridge", "auto", 8, 100, 3) == {"alpha": None, "seed": 3}
    assert map_params("ridge", "2.5", 8, 100, 3) == {"alpha": 2.5}
    assert map_params("lowrank", "auto", 4, 100, 0) == {"rank": 4}
    with pytest.raises(RepmapError, match="'auto' or a positive number"):
        map_params("ridge", "-1", 8, 100, 0)
