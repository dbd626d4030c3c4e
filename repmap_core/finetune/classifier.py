"""The finetuned classifier's forward pass: a base model (`AutoModel`, no LM head) and a 2-way linear
head on its final output (`last_hidden_state`, after any final norm), pooled at the last real token
for causal LMs or as the mask-aware mean over tokens for encoders.

Texts -> token ids (`encode`) -> right-padded batches (`collate`) -> pooled rows `(B, d)` (`pool`)
-> head logits `(B, 2)` (`head_logits`). Training (`finetune.py`) and prediction from a saved
checkpoint (`checkpoints.py`) both go through these, so they cannot pool differently.
"""
from __future__ import annotations

import contextlib
import inspect

import numpy as np

from repmap_core.capture.models import LoadedModel
from repmap_core.data.load import TextDataset
from repmap_core.errors import RepmapError


def encode(lm: LoadedModel, dataset: TextDataset, max_length: int) -> list[list[int]]:
    """Token ids per text, without padding; long texts keep their end (the tokenizer truncates left)."""
    limit = min(max_length, int(lm.info.max_positions or max_length))
    ids = lm.tokenizer(list(dataset.texts), add_special_tokens=True, truncation=True, max_length=limit,
                       return_attention_mask=False)["input_ids"]
    empty = [i for i, x in enumerate(ids) if not x]
    if empty:
        raise RepmapError(f"Row {empty[0] + 1} of {dataset.name} has no tokens; remove rows without text.")
    return ids


def collate(ids: list[list[int]], rows: np.ndarray, pad_id: int, device: str):
    """Right-padded `input_ids (B, T)` and `attention_mask (B, T)` for `rows`."""
    import torch

    T = max(len(ids[r]) for r in rows)
    input_ids = torch.full((len(rows), T), int(pad_id), dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), T), dtype=torch.long)  # (B, T)
    for k, r in enumerate(rows):
        input_ids[k, :len(ids[r])] = torch.as_tensor(ids[r])
        mask[k, :len(ids[r])] = 1
    return input_ids.to(device), mask.to(device)


def cpu_bf16(resolved) -> bool:
    """Whether `resolved` trains and predicts under bf16 autocast on this CPU: where its precision here is
    bf16 (`capture/precision.py`: bf16 units, and a bf16 matmul at its shapes measured >= 1.5x fp32)."""
    from repmap_core.capture.models import model_precision

    return model_precision("cpu", resolved).dtype == "bfloat16"


def bf16_autocast(lm: LoadedModel) -> bool:
    """Whether the forward runs under bf16 autocast (fp32 master weights stay what AdamW updates): on a GPU,
    and on a CPU where `cpu_bf16` says so. Else fp32."""
    return lm.device.startswith("cuda") or (lm.device == "cpu" and cpu_bf16(lm.resolved))


def autocast(lm: LoadedModel):
    """The autocast context of `bf16_autocast(lm)` (a no-op context when it says no)."""
    import torch

    return torch.autocast("cuda" if lm.device.startswith("cuda") else "cpu", dtype=torch.bfloat16,
                          enabled=bf16_autocast(lm))


def forward_kwargs(model) -> dict:
    """`use_cache=False` where the model takes it: nothing here generates, so no key/value cache is kept."""
    return {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}


def pool(model, input_ids, mask, is_encoder: bool, forward: dict):
    """Pooled final output `(B, d)` float32: mask-aware mean (encoders) or last real token (causal)."""
    import torch

    hidden = model(input_ids=input_ids, attention_mask=mask, **forward)[0].float()  # (B, T, d) last_hidden_state
    if is_encoder:
        m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * m).sum(1) / m.sum(1)  # (B, d)
    last = mask.sum(1) - 1  # (B,) right padding: the last real token
    return hidden[torch.arange(len(last), device=hidden.device), last]  # (B, d)


def pooling(lm: LoadedModel) -> str:
    return "mean" if lm.info.is_encoder else "last"


def head_logits(lm: LoadedModel, head, ids: list[list[int]], rows: np.ndarray, batch_size: int, forward: dict,
                prefix=None):
    """Head logits `(len(rows), 2)` float32 on CPU, in the order of `rows`; length-sorted batches (starting from
    the kept output of the frozen blocks where `prefix`, a `frozen_prefix.FrozenPrefix`, holds these rows)."""
    import torch

    lm.model.eval()
    rows = np.asarray(rows, np.int64)
    order = np.argsort(-np.array([len(ids[r]) for r in rows]), kind="stable")
    out = torch.empty((len(rows), 2), dtype=torch.float32)
    with torch.inference_mode(), autocast(lm):
        for start in range(0, len(rows), batch_size):
            pick = order[start:start + batch_size]
            input_ids, mask = collate(ids, rows[pick], lm.tokenizer.pad_token_id, lm.device)
            with prefix.skip(lm, rows[pick]) if prefix is not None else contextlib.nullcontext():
                pooled = pool(lm.model, input_ids, mask, lm.info.is_encoder, forward)  # (B, d)
            out[torch.as_tensor(pick)] = head(pooled).float().cpu()
    return out


def evaluate(lm: LoadedModel, head, ids: list[list[int]], labels, rows: np.ndarray, batch_size: int,
              forward: dict, prefix=None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on `rows`, in eval mode (dropout off)."""
    import torch.nn.functional as F

    logits = head_logits(lm, head, ids, rows, batch_size, forward, prefix)  # (n, 2) on CPU
    target = labels[rows]
    return float(F.cross_entropy(logits, target)), float((logits.argmax(1) == target).float().mean())


def train_step(lm: LoadedModel, training: tuple, ids: list[list[int]], labels, rows: np.ndarray, forward: dict,
               prefix=None) -> float:
    """One optimiser step on `rows` (`training`: model, head, trained parameters, optimiser), gradients clipped
    at norm 1, starting from the frozen blocks' kept output where `prefix` holds it; returns the loss."""
    import torch
    import torch.nn.functional as F

    model, head, params, optimiser = training
    input_ids, mask = collate(ids, rows, lm.tokenizer.pad_token_id, lm.device)
    skip = prefix.skip(lm, rows) if prefix is not None else contextlib.nullcontext()
    with autocast(lm), skip:
        logits = head(pool(model, input_ids, mask, lm.info.is_encoder, forward))  # (B, 2)
    loss = F.cross_entropy(logits.float(), labels[rows].to(lm.device))
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimiser.step()
    return float(loss.detach())


def adamw(groups: list[dict], lr: float):
    """AdamW, fused where this torch has a fused kernel for the device (several times faster on CPU)."""
    import torch

    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr)


def snapshot(model, head) -> tuple[dict, dict]:
    """CPU copies of the model's and the head's weights (the best so far, kept for early stopping)."""
    return tuple({k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()} for m in (model, head))


# training batches come from length-sorted chunks of this many batches (like transformers'
# group_by_length): on the built-in sentiment data padding then costs ~20% extra compute, not ~90%
LENGTH_GROUP_BATCHES = 8


def length_grouped_batches(rows: np.ndarray, lengths: np.ndarray, batch_size: int,
                           rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of batches, `ceil(len(rows) / batch_size)` of them: shuffle, sort each chunk of
    `LENGTH_GROUP_BATCHES` batches by length so a batch pads little, then shuffle the batches."""
    order = rows[rng.permutation(len(rows))]
    chunk = batch_size * LENGTH_GROUP_BATCHES
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(-lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
