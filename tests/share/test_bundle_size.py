"""A bundle that fits the importer's cap: activations stored as float16 (half the bytes, read back as float32 within
float16's precision, a layer float16 cannot hold kept whole), and the largest round row cap whose bundle fits."""
from __future__ import annotations

import dataclasses

import numpy as np

from repmap_core.capture.activations import ActivationSet
from repmap_core.share.bundle import bundle_bytes, estimate_bytes, fit_rows, load_bundle
from repmap_core.share.bundle_size import half, nice, rows_that_fit
from tests.share.test_bundle import synthetic_states


def test_float16_halves_the_activations_and_reads_back_as_float32_within_its_precision():
    states = synthetic_states()
    shift = states["shift.result"]
    exact = bundle_bytes({"shift.result": shift})
    small = bundle_bytes({"shift.result": shift}, float16=True)
    acts = sum(a.nbytes for s in (shift.base, shift.finetuned) for a in s.layers.values())
    assert len(exact) - len(small) > 0.4 * acts  # half of the activations' bytes, less what zip saved on them
    saved = estimate_bytes({"shift.result": shift}) - estimate_bytes({"shift.result": shift}, float16=True)
    assert abs(saved - acts // 2) < 200  # half the activations' bytes (the manifests say float16, a few bytes more)
    back = load_bundle(small)
    assert back.meta["float16"] is True and load_bundle(exact).meta["float16"] is False
    got = back.states["shift.result"]
    for side in ("base", "finetuned"):
        was, now = getattr(shift, side), getattr(got, side)
        assert now.manifest["bundle_dtype"] == "float16" and now.manifest["key"] == was.manifest["key"]
        for L in was.layer_list:
            assert now[L].dtype == np.float32  # the pages compute on float32, as before
            assert np.allclose(now[L], was[L], rtol=1e-3, atol=1e-3) and not np.array_equal(now[L], was[L])
    assert got.rows == shift.rows  # the scores are the ones computed, untouched
    assert np.array_equal(got.dataset.labels, shift.dataset.labels)


def test_a_layer_float16_cannot_hold_stays_float32():
    massive = np.ones((4, 3), np.float32)
    massive[0, 0] = 70_000.0  # a massive activation over float16's 65,504
    assert half(massive) is massive
    assert half(np.array([[np.inf, 1.0]], np.float32)).dtype == np.float32
    assert half(np.ones((2, 2), np.float32)).dtype == np.float16
    states = synthetic_states()
    res = states["explorer.result"]
    layers = dict(res.aset.layers)
    layers[0] = layers[0].copy()
    layers[0][0, 0] = 1e5
    res = dataclasses.replace(res, aset=ActivationSet(layers, res.aset.labels, res.aset.pair_ids, res.aset.manifest))
    back = load_bundle(bundle_bytes({"explorer.result": res}, float16=True)).states["explorer.result"].aset
    assert np.array_equal(back[0], layers[0])  # kept exactly
    assert np.allclose(back[1], layers[1], rtol=1e-3, atol=1e-3)


def test_a_model_against_itself_stores_its_activations_once_in_float16_too():
    states = synthetic_states()
    across = states["across.result"]
    same = dataclasses.replace(across, target=across.source)
    one = estimate_bytes({"across.result": same}, float16=True)
    two = estimate_bytes({"across.result": across}, float16=True)
    source = sum(a.nbytes for a in across.source.layers.values()) // 2
    target = sum(a.nbytes for a in across.target.layers.values()) // 2
    assert abs((two - one) - target) < 2_000  # the shared layers are stored once, not twice
    assert one >= source


def test_the_default_row_cap_is_the_largest_round_one_that_fits():
    states = synthetic_states()
    chosen = {k: states[k] for k in ("explorer.result", "shift.result", "across.result")}
    full = estimate_bytes(chosen, float16=True)
    assert fit_rows(chosen, full, float16=True) is None  # everything fits: no cap
    cap = full // 2
    rows = fit_rows(chosen, cap, float16=True)
    assert rows is not None and 2 <= rows < 120
    assert estimate_bytes(chosen, max_rows=rows, float16=True) <= cap
    # and a round number near the most that fits, not a tiny one
    assert estimate_bytes(chosen, max_rows=rows + 20, float16=True) > cap or rows >= 100
    back = load_bundle(bundle_bytes(chosen, max_rows=rows, float16=True))
    assert len(back.states["shift.result"].dataset) == rows
    assert len(bundle_bytes(chosen, max_rows=rows, float16=True)) <= cap  # the zip fits too


def test_rows_that_fit_scales_and_rounds():
    per_row, fixed = 1_000, 5_000

    def size(rows):
        return fixed + per_row * (800 if rows is None else min(rows, 800))

    assert rows_that_fit(size, 800, 10**9) is None
    rows = rows_that_fit(size, 800, 400_000)
    assert size(rows) <= 400_000 and rows == nice(rows) and rows >= 350
    assert nice(1234) == 1200 and nice(87) == 80 and nice(250) == 250 and nice(3) == 3 and nice(1) == 2
