"""The frozen blocks of a finetune that trains only the last ones, run once instead of every epoch.

With `train_last=k` the embeddings and the first `n - k` blocks do not change, so their output for a row is
the same at every step that sees it (where they hold no dropout). `build` runs them once over every row
that training and validation will see (length-sorted batches, under the training's precision) and keeps
each row's residual stream as it enters the first trained block, `(T_row, d)` float32, unpadded. Then
`skipping(prefix, rows)`, around a forward of those rows, puts pass-through modules in the frozen blocks'
places and hands the first trained block the kept rows, right-padded as `classifier.collate` pads their
tokens (right padding and causal attention: a real token's state does not depend on its batch).

SmolLM2's last 4 of 30 blocks on 400 reviews for 3 epochs: each step's forward then runs 4 blocks, not 30.
"""
from __future__ import annotations

import contextlib

import numpy as np

from repmap_core.capture.hooks import block_input, started_at
from repmap_core.capture.models import LoadedModel
from repmap_core.finetune.classifier import autocast, collate

__all__ = ["FrozenPrefix", "MAX_BYTES", "build", "skipping"]

MAX_BYTES = 1 << 30  # rows' kept states at most this size (and a quarter of the free memory), else no prefix


class FrozenPrefix:
    """Each row's residual stream entering block `first` (`states[row]`: (T_row, d) float32)."""

    def __init__(self, first: int, states: dict[int, object]):
        self.first = first
        self.states = states

    def skip(self, lm: LoadedModel, rows: np.ndarray):
        """`skipping(lm, self, rows)`."""
        return skipping(lm, self, rows)


def frozen_is_deterministic(lm: LoadedModel, first: int) -> bool:
    """Whether the embeddings and blocks before `first` apply no dropout in training mode (a nn.Dropout
    with p > 0, or a dropout rate in the config: Llama's attention dropout is functional)."""
    import torch

    trained = {id(m) for block in list(lm.blocks)[first:] for m in block.modules()}
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 and id(m) not in trained for m in lm.model.modules()):
        return False
    config = lm.model.config.to_dict()
    return not any(("dropout" in k or "pdrop" in k) and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                   for k, v in config.items())


def build(lm: LoadedModel, ids: list[list[int]], rows: np.ndarray, train_last: int | None, batch_size: int,
          forward: dict) -> FrozenPrefix | None:
    """The frozen prefix's output for `rows`, or None where it cannot stand in for running the blocks: all of
    them train, the frozen part has dropout, a block returns more than its hidden states, the kept rows would
    take more than `MAX_BYTES` (or a quarter of the free memory), or the model is spread over devices."""
    import torch

    from repmap_core.capture.model_memory import available_memory_bytes

    n_layers = lm.info.n_layers
    if train_last is None or not 0 < train_last < n_layers or lm.placement:
        return None
    first = n_layers - train_last
    rows = np.asarray(rows, np.int64)
    size = sum(len(ids[r]) for r in rows) * lm.info.d_model * 4
    if size > min(MAX_BYTES, available_memory_bytes() / 4) or not frozen_is_deterministic(lm, first):
        return None
    states: dict[int, object] = {}
    plain = True
    order = rows[np.argsort(-np.array([len(ids[r]) for r in rows]), kind="stable")]
    was_training = lm.model.training
    try:
        lm.model.eval()
        with torch.no_grad(), autocast(lm):
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                input_ids, mask = collate(ids, batch, lm.tokenizer.pad_token_id, lm.device)
                hidden, returns_tensor = block_input(lm.blocks, first, lambda i=input_ids, m=mask: lm.model(
                    input_ids=i, attention_mask=m, **forward))  # (B, T, d)
                plain = plain and returns_tensor
                for j, r in enumerate(batch):
                    states[int(r)] = hidden[j, :len(ids[r])].float().clone()  # (T_row, d)
    finally:
        lm.model.train(was_training)
    if not plain:
        return None
    return FrozenPrefix(first, states)


@contextlib.contextmanager
def skipping(lm: LoadedModel, prefix: FrozenPrefix | None, rows: np.ndarray):
    """Within this block a forward of `rows` (in `collate`'s order) skips `lm`'s frozen blocks and starts from
    their kept output; a no-op without a prefix. The blocks are back in place when it ends."""
    if prefix is None:
        yield
        return
    import torch

    def kept(given):  # given: (B, T, d), the embeddings' output
        out = torch.zeros(given.shape, dtype=torch.float32, device=given.device)
        for j, r in enumerate(rows):
            row = prefix.states[int(r)]
            out[j, :len(row)] = row
        return out.to(given.dtype)

    with started_at(lm.blocks, prefix.first, kept):
        yield
