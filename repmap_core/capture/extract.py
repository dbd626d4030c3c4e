"""Extraction: run a model over texts and keep one pooled row per text for each requested layer.

One forward pass serves every requested layer: forward hooks on the blocks pool the hidden
states on the spot (so only `(n, d)` rows per layer are ever held, never all hidden states) and
the hook on the deepest requested block stops the forward (the rest of the model never runs).
Rows are sorted by length into token-budget batches, so little compute goes to padding.

Positions: `last` (last real token, under either padding side), `mean` (mean over real tokens),
`answer` (the token holding the answer's last letter or digit in a paired A/B row).
"""
from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from repmap_core.capture.compute import heavy_compute
from repmap_core.capture.hooks import block_hidden
from repmap_core.capture.models import LoadedModel
from repmap_core.data.load import TextDataset
from repmap_core.errors import RepmapError
from repmap_core.progress import Progress

POSITIONS = ("last", "mean", "answer")


def check_position(dataset: TextDataset, position: str) -> None:
    """Raise if `position` cannot be taken on `dataset` (answer needs rows with an answer)."""
    if position not in POSITIONS:
        raise RepmapError(f"Position '{position}' is not one of {', '.join(POSITIONS)}.")
    if position == "answer" and not dataset.has_answers:
        raise RepmapError(
            f"Position 'answer' needs rows with an answer (paired A/B, SciQ or chosen/rejected data), and {dataset.name} has none; use last or mean."
        )


def resolve_position(position: str, is_encoder: bool) -> str:
    """`auto` is `mean` for encoders (how sentence encoders pool) and `last` for causal LMs."""
    if position == "auto":
        return "mean" if is_encoder else "last"
    if position not in POSITIONS:
        raise RepmapError(f"Position '{position}' is not one of auto, {', '.join(POSITIONS)}.")
    return position
# models that derive position ids from the padding in input_ids themselves
_PAD_AWARE_POSITIONS = {"roberta", "xlm-roberta", "camembert"}


@dataclass(frozen=True, eq=False)
class Extraction:
    """Pooled activations for each layer and what it took to get them."""

    activations: dict[int, np.ndarray]  # layer -> (n, d) float32
    n_tokens: int  # real (unpadded) tokens processed
    seconds: float
    fp32_recomputed_rows: int  # rows recomputed in fp32 after a half-precision overflow


class _StopForward(Exception):
    """Raised by the hook on the deepest requested block: nothing after it needs computing."""


@contextmanager
def capture_blocks(blocks, layers: Sequence[int], sink: Callable[[int, object], None]) -> Iterator[None]:
    """Hook `blocks[L]` for each L in `layers`; call `sink(L, hidden)` with each block's output
    `(B, T, d)` and stop the forward after the deepest one. Hooks are removed in `finally`."""
    deepest = max(layers)
    handles = []

    def make_hook(layer: int):
        def hook(module, inputs, output):
            sink(layer, block_hidden(output))  # (B, T, d)
            if layer == deepest:
                raise _StopForward

        return hook

    try:
        for layer in layers:
            handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
        yield
    finally:
        for h in handles:
            h.remove()


def target_indices(dataset: TextDataset, encodings: list[list[int]], offsets: list | None, position: str) -> np.ndarray:
    """Index of the pooled token in each unpadded sequence (-1 for `mean`)."""
    lengths = np.array([len(e) for e in encodings], dtype=np.int64)
    if position == "last":
        return lengths - 1
    if position == "mean":
        return np.full(len(encodings), -1, np.int64)
    out = np.empty(len(encodings), np.int64)
    for i, (text, (start, end)) in enumerate(zip(dataset.texts, dataset.answer_spans)):
        answer = text[start:end]
        keep = [j for j, ch in enumerate(answer) if ch.isalnum()]
        char = start + (keep[-1] if keep else len(answer.rstrip()) - 1)
        # scan from the end: the answer sits at the end of the text
        for j in range(len(offsets[i]) - 1, -1, -1):
            a, b = offsets[i][j]
            if a <= char < b:
                out[i] = j
                break
        else:
            raise RepmapError(
                f"Row {i + 1}'s answer was cut off by the max length of {len(encodings[i])} tokens; raise max length."
            )
    return out


def _batches(lengths: np.ndarray, order: np.ndarray, max_tokens: int, max_rows: int) -> list[np.ndarray]:
    """Split `order` (longest first) into batches of at most `max_tokens` padded tokens."""
    out, i = [], 0
    while i < len(order):
        longest = int(lengths[order[i]])
        size = max(1, min(max_rows, max_tokens // max(longest, 1)))
        out.append(order[i:i + size])
        i += size
    return out


def extract_activations(
    lm: LoadedModel,
    dataset: TextDataset,
    layers: Sequence[int],
    position: str = "last",
    *,
    max_length: int = 512,
    max_batch_tokens: int | None = None,
    max_batch_rows: int = 512,
    padding_side: str = "right",
    progress: Progress | None = None,
) -> Extraction:
    """Pooled activations `(n, d)` at `blocks.{L}.hook_resid_post` for each L in `layers`.

    Rows keep the data set's order. `padding_side` only changes how batches are laid out (the
    result is the same either way; right is the default as it needs no position-id fix-up).
    On a CUDA out-of-memory error the batch halves and the run finishes. `progress(fraction,
    message)` is called after each batch; it may raise to cancel (nothing is written here).
    """
    import torch

    check_position(dataset, position)
    if not layers:
        raise RepmapError("No layers were asked for; pick at least one layer.")
    if len(dataset) == 0:
        raise RepmapError(f"{dataset.name} has no rows to extract.")
    layers = sorted(set(int(x) for x in layers))
    if layers[0] < 0 or layers[-1] >= lm.info.n_layers:
        raise RepmapError(f"Layers must be resolved to 0..{lm.info.n_layers - 1} before extraction.")
    if max_length < 2:
        raise RepmapError(f"Max length must be at least 2 tokens, not {max_length}.")
    if max_batch_tokens is None:
        # on CPU, batches whose MLP activations fit in cache beat big ones (bench: 1,524 vs 829 tokens/s
        # for gpt2-small at 1,024 vs 4,096 tokens per batch)
        max_batch_tokens = 32768 if lm.device.startswith("cuda") else 1024
    model_max = lm.info.max_positions or max_length
    max_length = min(max_length, int(model_max))

    tok = lm.tokenizer
    enc = tok(list(dataset.texts), add_special_tokens=True, truncation=True, max_length=max_length,
              return_attention_mask=False, return_offsets_mapping=position == "answer")
    ids: list[list[int]] = enc["input_ids"]
    targets = target_indices(dataset, ids, enc.get("offset_mapping"), position)
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    pad_id = int(tok.pad_token_id)
    left = padding_side == "left"
    accepted = inspect.signature(lm.model.forward).parameters
    fix_positions = left and "position_ids" in accepted and lm.info.model_type not in _PAD_AWARE_POSITIONS
    extra = {"use_cache": False} if "use_cache" in accepted else {}

    n, d = len(dataset), lm.info.d_model
    out = {layer: np.empty((n, d), dtype=np.float32) for layer in layers}
    blocks = lm.blocks
    device = lm.device
    start, done, recomputed = time.perf_counter(), 0, 0
    queue = _batches(lengths, order, max_batch_tokens, max_batch_rows)

    def run(rows: np.ndarray) -> dict[int, torch.Tensor]:
        T = int(lengths[rows].max())
        B = len(rows)
        input_ids = torch.full((B, T), pad_id, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.long)
        for k, r in enumerate(rows):
            L = int(lengths[r])
            sl = slice(T - L, T) if left else slice(0, L)
            input_ids[k, sl] = torch.as_tensor(ids[r])
            mask[k, sl] = 1
        pad_offset = torch.as_tensor(T - lengths[rows] if left else np.zeros(B, np.int64))  # (B,)
        idx = torch.as_tensor(targets[rows]) + pad_offset  # (B,) index into the padded sequence
        kwargs = dict(input_ids=input_ids.to(device), attention_mask=mask.to(device), **extra)
        if fix_positions:
            kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0).to(device)  # (B, T)
        maskf = mask.to(device).unsqueeze(-1)  # (B, T, 1)
        pooled: dict[int, torch.Tensor] = {}

        def sink(layer: int, hidden) -> None:
            if position == "mean":
                m = maskf.to(hidden.device)  # with a device_map, blocks live on different GPUs
                h = (hidden.float() * m).sum(1) / m.sum(1)  # (B, d)
            else:
                h = hidden[torch.arange(B, device=hidden.device), idx.to(hidden.device)].float()  # (B, d)
            pooled[layer] = h.cpu()

        with torch.inference_mode(), capture_blocks(blocks, layers, sink):
            try:
                lm.model(**kwargs)
            except _StopForward:
                pass
        return pooled

    with heavy_compute(progress):
        start = time.perf_counter()  # not counting a wait for another computation
        while queue:
            rows = queue.pop(0)
            try:
                pooled = run(rows)
            except torch.cuda.OutOfMemoryError:
                if len(rows) == 1:
                    raise RepmapError(
                        "The GPU ran out of memory on a single text; lower max length or use a smaller model."
                    ) from None
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
                half = len(rows) // 2
                queue[:0] = [rows[:half], rows[half:]]
                max_batch_tokens = max(1, max_batch_tokens // 2)
                continue
            if lm.dtype != "float32" and not all(bool(torch.isfinite(v).all()) for v in pooled.values()):
                pooled = _rerun_in_fp32(lm, run, rows)
                recomputed += len(rows)
            _require_finite(lm, pooled, rows)
            for layer, h in pooled.items():
                out[layer][rows] = h.numpy()
            done += len(rows)
            if progress is not None:
                rate = int(lengths[order[:done]].sum() / max(time.perf_counter() - start, 1e-9))
                progress(done / n, f"{done}/{n} texts · {rate} tokens/s")
    return Extraction(out, int(lengths.sum()), time.perf_counter() - start, recomputed)


def _require_finite(lm: LoadedModel, pooled: dict, rows: np.ndarray) -> None:
    """Refuse NaN/inf activations that float32 did not cure (broken or exploding weights): they would
    be cached and silently poison every analysis downstream. Nothing has been written yet."""
    import torch

    for layer, h in sorted(pooled.items()):
        bad = ~torch.isfinite(h).all(dim=1)  # (B,)
        if bool(bad.any()):
            first = int(rows[int(bad.nonzero()[0, 0])])
            raise RepmapError(
                f"Model '{lm.resolved.name}' produced NaN or inf activations at layer {layer} for {int(bad.sum())} of "
                f"{len(rows)} texts in a batch (first: row {first + 1}), even in float32; its weights are broken or "
                "overflow, so nothing was cached: check the model."
            )


def _rerun_in_fp32(lm: LoadedModel, run: Callable, rows: np.ndarray) -> dict:
    """Half precision overflowed on this batch: redo it with the model in fp32 (exactly reversible
    for bf16/fp16 weights), then put the model back."""
    import torch

    original = lm.model.dtype
    try:
        lm.model.to(torch.float32)
        return run(rows)
    finally:
        lm.model.to(original)
