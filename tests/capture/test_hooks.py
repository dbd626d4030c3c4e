"""The one helper that reads and rewrites a block's output: what it takes out of a tuple or a bare
tensor, what it puts back, and that extraction (which reads through it) sees exactly the vector
that steering (which writes through it) added."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from repmap_core.capture.extract import extract_activations
from repmap_core.capture.hooks import block_hidden, with_hidden
from repmap_core.capture.models import load_model
from repmap_core.data.load import TextDataset
from repmap_core.steering import steer


def test_a_tuple_output_gives_its_first_item_and_keeps_the_rest_when_rewritten():
    hidden, attn, cache = torch.zeros(2, 3, 4), torch.ones(2, 1, 3, 3), object()
    output = (hidden, attn, cache)
    assert block_hidden(output) is hidden
    new = torch.full((2, 3, 4), 5.0)
    rewritten = with_hidden(output, new)
    assert isinstance(rewritten, tuple) and rewritten[0] is new and rewritten[1] is attn and rewritten[2] is cache


def test_a_bare_tensor_output_is_the_hidden_states_and_is_replaced_whole():
    hidden = torch.zeros(1, 2, 3)
    assert block_hidden(hidden) is hidden
    new = torch.ones(1, 2, 3)
    assert with_hidden(hidden, new) is new


@pytest.fixture(scope="module")
def lm(tiny_gpt2):
    return load_model(str(tiny_gpt2), device="cpu", dtype="float32")


def test_extraction_reads_exactly_what_steering_added(lm):
    """Planted: steer block 1 by α·v; the activations read at block 1 move by α·v on every row, the
    next block's move too (the change flows on), and once the hook is gone reading is as before."""
    texts = ["the film was good", "a dull plot", "I liked it a lot", "never again"]
    ds = TextDataset("hooks", texts, np.array([1, 0, 1, 0], np.int8), np.full(4, -1), np.full((4, 2), -1))
    v = np.random.default_rng(0).normal(size=lm.info.d_model).astype(np.float32)
    plain = extract_activations(lm, ds, [1, 2], "last").activations
    with steer(lm, 1, v, alpha=0.5):
        steered = extract_activations(lm, ds, [1, 2], "last").activations
    np.testing.assert_allclose(steered[1] - plain[1], np.tile(0.5 * v, (4, 1)), atol=1e-5)
    assert np.abs(steered[2] - plain[2]).max() > 1e-2
    after = extract_activations(lm, ds, [1, 2], "last").activations
    np.testing.assert_array_equal(after[1], plain[1])
