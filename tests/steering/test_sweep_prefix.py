"""A sweep's shared first blocks run once per batch (steering/sweep_prefix.py): the propensities equal those of
one whole forward per multiplier through the steering hook, and where blocks cannot be skipped the sweep
falls back to those forwards."""
from __future__ import annotations

import numpy as np
import pytest

from repmap_core.capture.models import load_model
from repmap_core.steering import ab_prompts, apply, letter_logit_gaps, propensity_sweep, steer
from repmap_core.steering.sweep_prefix import letter_gaps, reusable
from tests.steering.test_steering import ab_frame


@pytest.fixture(scope="module")
def llama(tiny_models):
    return load_model(str(tiny_models["llama"]), head=True, dtype="float32")


def test_gaps_from_the_shared_blocks_equal_whole_forwards_through_the_hook(llama):
    prompts = ab_prompts(ab_frame(), llama.tokenizer)
    rng = np.random.default_rng(0)
    v = rng.normal(size=llama.info.d_model).astype(np.float32)
    for layer in (0, llama.info.n_layers - 2):
        assert reusable(llama, layer)
        adds = [a * v for a in (-3.0, 0.0, 2.0)]
        shared = letter_gaps(llama, prompts, layer, adds, batch_size=5)  # batches of 5: padding differs by batch
        for add, got in zip(adds, shared):
            with steer(llama, layer, add, 1.0):
                whole = letter_logit_gaps(llama, prompts, 5)
            assert np.allclose(got, whole, atol=1e-5), float(np.abs(got - whole).max())
        assert not np.allclose(shared[0], shared[2], atol=1e-2)  # the adds moved something: not three unsteered runs
    blocks = list(llama.blocks)
    assert letter_gaps(llama, prompts, 0, [v], batch_size=16) is not None and list(llama.blocks) == blocks
    assert not reusable(llama, llama.info.n_layers - 1)  # no block after the last one to start at
    assert letter_gaps(llama, prompts, llama.info.n_layers - 1, [v]) is None


def test_a_sweep_gives_the_same_curves_with_and_without_the_shared_blocks(llama, monkeypatch):
    prompts = ab_prompts(ab_frame(), llama.tokenizer)
    v = np.random.default_rng(1).normal(size=llama.info.d_model).astype(np.float32)
    kw = dict(scale="raw", baseline=True, seed=0)
    shared = propensity_sweep(llama, prompts, 1, v, [-2.0, 0.0, 2.0], **kw)
    monkeypatch.setattr(apply, "letter_gaps", lambda *a, **k: None)  # every forward whole, through the hook
    whole = propensity_sweep(llama, prompts, 1, v, [-2.0, 0.0, 2.0], **kw)
    assert np.allclose(shared.curve.gaps, whole.curve.gaps, atol=1e-5)
    assert np.allclose(shared.random.gaps, whole.random.gaps, atol=1e-5)
    assert shared.slope.value == pytest.approx(whole.slope.value, abs=1e-6) and shared.verdict == whole.verdict


def test_the_sweep_estimate_counts_the_blocks_run_once(llama):
    """With the layer given, each multiplier and direction costs the forward after it; the prompts' forward up to
    it is counted once (a sweep at the first block of two costs about half as much per multiplier)."""
    from types import SimpleNamespace

    from repmap_core.steering.run import estimate_sweep_seconds

    vs = SimpleNamespace(held_out=ab_frame())
    whole = estimate_sweep_seconds(llama, vs, 5, 1000.0)
    last = llama.info.n_layers - 1
    assert estimate_sweep_seconds(llama, vs, 5, 1000.0, last) == pytest.approx(whole)  # nothing after it to start at
    shared = estimate_sweep_seconds(llama, vs, 5, 1000.0, 0)
    tokens = sum(len(llama.tokenizer(p.prompt)["input_ids"]) for p in ab_prompts(vs.held_out, llama.tokenizer))
    after = (llama.info.n_layers - 1) / llama.info.n_layers  # the share of the forward after block 0
    assert whole - shared == pytest.approx(tokens * (2 * 5 - (1 + 2 * 5 * after)) / 1000.0)
    assert shared < whole
