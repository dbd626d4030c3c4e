"""The frozen blocks of a last-blocks finetune, run once (finetune/frozen_prefix.py): a forward that starts
from their kept output gives what the whole forward gives, a finetune with them kept trains as one without,
and where they cannot stand in (dropout, every block trained) nothing is kept."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from repmap_core.capture.models import load_model
from repmap_core.data.load import load_dataset
from repmap_core.finetune import frozen_prefix
from repmap_core.finetune.classifier import encode, forward_kwargs, head_logits
from repmap_core.finetune.train import FinetuneConfig, finetune


@pytest.fixture(scope="module")
def reviews():
    return load_dataset("builtin:sentiment", limit=48, seed=0)


def test_a_forward_from_the_kept_output_equals_the_whole_forward(tiny_models, reviews):
    """Rows of different lengths (right-padded, kept in batches of 7, scored in batches of 3): the logits match
    the plain forward's whatever batch a row falls in, and the frozen blocks are back in place afterwards."""
    lm = load_model(str(tiny_models["llama"]), dtype="float32")
    ids = encode(lm, reviews, 64)
    rows = np.arange(len(reviews))
    forward = forward_kwargs(lm.model)
    torch.manual_seed(0)
    head = torch.nn.Linear(lm.info.d_model, 2)
    blocks = list(lm.blocks)
    prefix = frozen_prefix.build(lm, ids, rows, 1, 7, forward)
    assert prefix is not None and prefix.first == lm.info.n_layers - 1
    assert all(prefix.states[r].shape == (len(ids[r]), lm.info.d_model) for r in rows)
    plain = head_logits(lm, head, ids, rows, 5, forward)
    kept = head_logits(lm, head, ids, rows, 3, forward, prefix)  # other batches than the prefix's, other padding
    assert torch.allclose(plain, kept, atol=1e-5), float((plain - kept).abs().max())
    assert list(lm.blocks) == blocks  # the same modules, in place
    # a prefix that skipped nothing would not be caught above unless its states are what is used
    prefix.states = {r: torch.zeros_like(s) for r, s in prefix.states.items()}
    assert not torch.allclose(plain, head_logits(lm, head, ids, rows, 5, forward, prefix), atol=1e-3)


def test_the_blocks_come_back_when_the_forward_fails(tiny_models, reviews):
    lm = load_model(str(tiny_models["llama"]), dtype="float32")
    ids = encode(lm, reviews, 64)
    prefix = frozen_prefix.build(lm, ids, np.arange(8), 1, 8, forward_kwargs(lm.model))
    blocks = list(lm.blocks)
    with pytest.raises(RuntimeError, match="interrupted"), frozen_prefix.skipping(lm, prefix, np.arange(8)):
        assert list(lm.blocks) != blocks
        raise RuntimeError("interrupted")
    assert list(lm.blocks) == blocks and not lm.blocks[prefix.first]._forward_pre_hooks


def test_nothing_is_kept_where_the_frozen_part_is_not_the_same_at_every_step(tiny_models, tiny_gpt2, reviews):
    llama = load_model(str(tiny_models["llama"]), dtype="float32")
    ids = encode(llama, reviews, 64)
    rows, forward = np.arange(8), forward_kwargs(llama.model)
    assert frozen_prefix.build(llama, ids, rows, None, 8, forward) is None  # every weight trains
    assert frozen_prefix.build(llama, ids, rows, llama.info.n_layers, 8, forward) is None  # every block trains
    gpt2 = load_model(str(tiny_gpt2), dtype="float32")  # dropout 0.1 in its embeddings and blocks
    assert not frozen_prefix.frozen_is_deterministic(gpt2, 1)
    assert frozen_prefix.build(gpt2, encode(gpt2, reviews, 64), rows, 1, 8, forward_kwargs(gpt2.model)) is None
    assert frozen_prefix.frozen_is_deterministic(llama, 1)


def test_a_finetune_with_the_frozen_blocks_kept_trains_as_one_without(tiny_models, reviews, monkeypatch, tmp_path):
    """Same steps, losses and weights within float noise (fp32 here), whether the first block's output is kept
    or recomputed at every step."""
    config = FinetuneConfig(epochs=2, batch_size=8, lr=3e-3, train_last=1, val_frac=0.25)
    built = []
    original = frozen_prefix.build
    monkeypatch.setattr(frozen_prefix, "build", lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    kept = finetune(str(tiny_models["llama"]), reviews, config, force=True)
    assert built and built[-1] is not None
    monkeypatch.setattr(frozen_prefix, "build", lambda *a, **k: None)
    plain = finetune(str(tiny_models["llama"]), reviews, config, force=True)
    a, b = kept.manifest, plain.manifest
    assert a["metrics"]["steps"] == b["metrics"]["steps"] > 4
    assert [h["loss"] for h in a["history"]] == pytest.approx([h["loss"] for h in b["history"]], abs=1e-4)
    assert a["metrics"]["val_loss"] == pytest.approx(b["metrics"]["val_loss"], abs=1e-4)
