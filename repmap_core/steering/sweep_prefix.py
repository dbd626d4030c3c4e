"""A sweep's forwards share their first blocks: run them once per batch of prompts.

Steering at block L adds `α·v` to that block's output; blocks 0..L compute the same thing for every α and for
the random direction. So `letter_gaps` runs each batch of held-out prompts as far as block L + 1 once
(`hooks.block_input`), and for each added vector only the blocks after it (`hooks.started_at`), adding in
fp32 and rounding once to the model's dtype as `apply.steer` does. At SmolLM2's block 15 of 30 that halves a
sweep's forwards.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from repmap_core.capture.hooks import block_input, started_at
from repmap_core.capture.models import LoadedModel
from repmap_core.progress import Progress
from repmap_core.steering.choices import ABPrompt
from repmap_core.steering.letters import encode_left, left_padded_inputs, letter_logits_fp32, require_lm

__all__ = ["letter_gaps", "reusable"]


def reusable(lm: LoadedModel, layer: int) -> bool:
    """Whether `letter_gaps` can start after block `layer`: a block follows it, the head is a plain linear layer
    on the base model's output (`letters.letter_logits_fp32`), and the model sits on one device."""
    import torch

    base = getattr(lm.model, "base_model", None)
    return (layer + 1 < lm.info.n_layers and base is not None and base is not lm.model and not lm.placement
            and isinstance(lm.model.get_output_embeddings(), torch.nn.Linear))


def letter_gaps(lm: LoadedModel, prompts: Sequence[ABPrompt], layer: int, adds: Sequence[np.ndarray], *,
                batch_size: int = 16, progress: Progress | None = None) -> list[np.ndarray] | None:
    """`letters.letter_logit_gaps` of `prompts` with each of `adds` ((d,), α·factor·v) added to block `layer`'s
    output: one (n,) array per add, in order. None where the blocks cannot be skipped (`reusable`, or a block
    returns a tuple): then each add needs its whole forward (`apply.steer`)."""
    import torch

    require_lm(lm)
    if not reusable(lm, layer):
        return None
    blocks, base = lm.blocks, lm.model.base_model
    device = next(lm.model.parameters()).device
    added = [torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device) for a in adds]  # (d,) each
    out: list[list[np.ndarray]] = [[] for _ in adds]
    starts = range(0, len(prompts), batch_size)
    for c, s in enumerate(starts):
        chunk = prompts[s:s + batch_size]
        input_ids, mask = encode_left(lm, [p.prompt for p in chunk])
        pair = torch.as_tensor([[p.matching_id, p.other_id] for p in chunk], device=input_ids.device)
        kwargs = left_padded_inputs(lm, input_ids, mask)
        with torch.inference_mode():
            kept, plain = block_input(blocks, layer + 1, lambda k=kwargs: base(**k))  # (B, T, d): block `layer`'s output
        if not plain:
            return None
        for i, add in enumerate(added):
            with started_at(blocks, layer + 1, lambda _given, k=kept, a=add: (k.float() + a).to(k.dtype)):
                two = letter_logits_fp32(lm, input_ids, mask, pair)  # (B, 2)
            out[i].append((two[:, 0] - two[:, 1]).cpu().numpy())
        if progress:
            progress((c + 1) / len(starts), f"prompts {min(s + batch_size, len(prompts))} of {len(prompts)}, "
                                            f"{len(adds)} steered forwards each")
    return [np.concatenate(g) for g in out]
