"""The A/B letters at a prompt's last position: left-padded batches of prompts (cut from the left to the
context, keeping the end where the letter goes), their forward's keyword arguments, and the gap
`logit(matching) − logit(other)` in fp32 whatever precision the model runs in. Steering (`apply.py`)
and the sweep's shared first blocks (`sweep_prefix.py`) read propensity through these.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np

from repmap_core.capture.models import LoadedModel
from repmap_core.errors import RepmapError
from repmap_core.steering.choices import ABPrompt

__all__ = ["context_room", "encode_left", "forward_last_logits", "left_padded_inputs", "letter_logit_gaps",
           "letter_logits_fp32", "prompts_over_context", "require_lm"]


def context_room(lm: LoadedModel, room: int = 0) -> int | None:
    """Tokens a prompt may have so that it plus `room` new tokens fit the model's context."""
    return None if not lm.info.max_positions else int(lm.info.max_positions) - int(room)


def prompts_over_context(lm: LoadedModel, prompts: Sequence[str], room: int = 0) -> int:
    """How many prompts are longer than the context allows (they are cut from the left, keeping the end)."""
    keep = context_room(lm, room)
    return 0 if keep is None else sum(len(lm.tokenizer(p)["input_ids"]) > keep for p in prompts)


def encode_left(lm: LoadedModel, prompts: Sequence[str], room: int = 0):
    """Left-padded ids and mask; prompts longer than the context keep their end (where the letter goes)."""
    import torch

    tok = lm.tokenizer
    keep = context_room(lm, room)
    ids = [tok(p, add_special_tokens=True)["input_ids"] for p in prompts]
    if keep is not None:
        ids = [x[-keep:] for x in ids]
    T = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), T), int(tok.pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(ids), T), dtype=torch.long)
    for k, x in enumerate(ids):
        input_ids[k, T - len(x):] = torch.as_tensor(x)
        mask[k, T - len(x):] = 1
    return input_ids.to(lm.device), mask.to(lm.device)


def require_lm(lm: LoadedModel) -> None:
    if not lm.has_lm_head:
        raise RepmapError("Steering needs the model's next-token logits: load it with its LM head (load_model(..., head=True)).")


def left_padded_inputs(lm: LoadedModel, input_ids, mask, last_only: bool = False) -> dict:
    """The forward's keyword arguments for a left-padded batch: position ids that start at 0 on each
    row's first real token, where the model takes them; with `last_only`, logits at the last
    position only (`logits_to_keep=1`), which matters for big vocabularies (Gemma's 262k)."""
    accepted = inspect.signature(lm.model.forward).parameters
    kwargs = {"input_ids": input_ids, "attention_mask": mask, "use_cache": False}
    if "position_ids" in accepted:
        kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)
    if last_only and "logits_to_keep" in accepted:
        kwargs["logits_to_keep"] = 1
    return kwargs


def forward_last_logits(lm: LoadedModel, input_ids, mask):
    """Logits at the last position only `(B, V)`."""
    import torch

    with torch.inference_mode():
        return lm.model(**left_padded_inputs(lm, input_ids, mask, last_only=True)).logits[:, -1].float()


def letter_logits_fp32(lm: LoadedModel, input_ids, mask, token_ids):
    """Logits of `token_ids` (B, k) at the last position `(B, k)`, the head applied in fp32 to the final hidden
    state, or None where the model's head is not a plain linear layer on its base model's output.

    A bf16 model writes its logits in bf16, whose spacing at a logit of 16 is 0.125: the gap between two letters
    (a few logits, moved by hundredths per unit α) would be read through that rounding. Only the two rows of
    the head are needed, so this is also cheaper than the full vocabulary."""
    import torch

    head, base = lm.model.get_output_embeddings(), getattr(lm.model, "base_model", None)
    if not isinstance(head, torch.nn.Linear) or base is None or base is lm.model:
        return None
    kwargs = left_padded_inputs(lm, input_ids, mask)
    with torch.inference_mode():
        hidden = base(**kwargs).last_hidden_state[:, -1].float()  # (B, d), after the final norm
        rows = head.weight[token_ids].float()  # (B, k, d)
        logits = torch.einsum("bd,bkd->bk", hidden, rows)
        if head.bias is not None:
            logits = logits + head.bias[token_ids].float()
        cap = getattr(lm.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
    return logits


def letter_logit_gaps(lm: LoadedModel, prompts: Sequence[ABPrompt], batch_size: int = 16) -> np.ndarray:
    """`logit(matching) − logit(other)` at each prompt's last position (n,), under whatever
    steering hooks are active; the two logits computed in fp32 from the final hidden state whatever
    precision the model runs in (`letter_logits_fp32`)."""
    import torch

    require_lm(lm)
    out = []
    for s in range(0, len(prompts), batch_size):
        chunk = prompts[s:s + batch_size]
        input_ids, mask = encode_left(lm, [p.prompt for p in chunk])
        pair = torch.as_tensor([[p.matching_id, p.other_id] for p in chunk], device=input_ids.device)
        two = letter_logits_fp32(lm, input_ids, mask, pair)
        if two is None:
            logits = forward_last_logits(lm, input_ids, mask)
            two = logits.gather(1, pair.to(logits.device))
        out.append((two[:, 0] - two[:, 1]).cpu().numpy())
    return np.concatenate(out)
