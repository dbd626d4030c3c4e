"""Finetuning: a whole model plus a linear head, trained to classify a data set's 0/1 labels.

This is the setting of Gao, Sun, Jiao (finetune GPT-2 on amazon_polarity, SciQ or HH, then compare
last-layer activations before and after). The base model (`AutoModel`, no LM head) is trained
with a `(d_model -> 2)` head on its final output (`last_hidden_state`, after any final norm),
pooled at the last real token for causal LMs or as the mask-aware mean over tokens for encoders.
AdamW, linear warmup then linear decay, gradient clipping at 1.0, and early stopping on a seeded
validation split that keeps pairs whole (the best weights by validation loss are kept).

A finetuned model is a cache entry `<cache>/models/<key>/`; `key` hashes the base model and its
revision, the data fingerprint and the config, so the same request is trained once. The folder
is a normal Hugging Face model folder (safetensors + tokenizer), so `load_model` and extraction
work on it unchanged. Next to the weights are `classifier.safetensors` (the head) and
`repmap_finetune.json` (what made it and how training went). Everything is written into a
`.tmp-` folder that is renamed into place only when complete, so a crash or a cancel never
leaves a half-written model under a real name. Never pickle.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from repmap_core import store
from repmap_core.data import TextDataset
from repmap_core.compute import heavy_compute
from repmap_core.errors import RepmapError
from repmap_core.models import LoadedModel, ResolvedModel, load_model, model_info, quiet_transformers, resolve_model
from repmap_core.progress import Progress, silent

FORMAT = "repmap.finetune/1"
MANIFEST_NAME = "repmap_finetune.json"
HEAD_NAME = "classifier.safetensors"
MIN_ROWS = 8  # below this a validation split and a training split cannot both hold something useful
# a validation loss must fall by more than this share of the best so far to count as an improvement
# (float noise and negligible gains do not reset the patience counter)
MIN_IMPROVEMENT = 1e-3
# training batches come from length-sorted chunks of this many batches (like transformers'
# group_by_length): on the built-in sentiment data padding then costs ~20% extra compute, not ~90%
LENGTH_GROUP_BATCHES = 8
OnStep = Callable[[int, float], None]


class Cancelled(Exception):
    """Raised by `finetune` when its `cancel` event is set; nothing is left in the cache."""


@dataclass(frozen=True)
class FinetuneConfig:
    """How to finetune. Every field goes into the cache key, so changing one trains anew."""

    epochs: int = 3  # passes over the training split; enough for a pretrained model on a binary task
    lr: float = 5e-5  # AdamW peak learning rate, the usual one for full finetuning of a transformer
    batch_size: int = 16  # rows per optimiser step
    weight_decay: float = 0.01  # AdamW decay on weight matrices only; biases and norm gains are not decayed
    max_length: int = 128  # tokens per text; longer texts keep their end (left truncation, as in extraction)
    seed: int = 0  # head init, dropout, shuffling and the validation split all follow it
    val_frac: float = 0.1  # share of rows (whole pairs) held out for validation; 0 trains on all, no early stop
    patience: int = 2  # stop when validation loss has not improved for this many evaluations in a row
    eval_every: int | None = None  # optimiser steps between evaluations; None: once per epoch
    warmup_frac: float = 0.1  # share of all steps spent warming the learning rate up linearly, then it decays to 0
    train_last: int | None = None  # train only the last k blocks (and the final norm and head); None: every weight
    head_lr: float | None = None  # the new head's learning rate (it starts from random); None: the same as lr

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, not {self.epochs}"),
            (self.lr > 0, f"the learning rate must be positive, not {self.lr}"),
            (self.batch_size >= 1, f"the batch size must be at least 1, not {self.batch_size}"),
            (self.weight_decay >= 0, f"weight decay must not be negative, not {self.weight_decay}"),
            (self.max_length >= 2, f"max length must be at least 2 tokens, not {self.max_length}"),
            (0 <= self.val_frac < 1, f"the validation fraction must be in [0, 1), not {self.val_frac}"),
            (self.patience >= 1, f"patience must be at least 1, not {self.patience}"),
            (self.eval_every is None or self.eval_every >= 1, f"eval_every must be at least 1 step, not {self.eval_every}"),
            (0 <= self.warmup_frac < 1, f"the warmup fraction must be in [0, 1), not {self.warmup_frac}"),
            (self.train_last is None or self.train_last >= 1, f"train_last must be at least 1 block, not {self.train_last}"),
            (self.head_lr is None or self.head_lr > 0, f"the head's learning rate must be positive, not {self.head_lr}"),
        ]
        for ok, message in checks:
            if not ok:
                raise RepmapError(f"Finetuning setting rejected: {message}.")


@dataclass(frozen=True)
class FinetuneResult:
    """A finetuned model folder, its manifest (`repmap_finetune.json`), and whether it was reused
    from the cache rather than trained by this call."""

    path: str
    manifest: dict
    reused: bool


@dataclass(frozen=True)
class FinetunedModel:
    """One complete finetuned model in the cache, for pickers."""

    path: str
    base_model: str
    dataset: str
    val_acc: float | None
    created: str


def validation_split(dataset: TextDataset, val_frac: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices `(train, validation)`, each sorted, from a seeded split that keeps pairs whole.

    Groups are pairs (rows sharing a `pair_id`) or single unpaired rows. Groups are drawn in a
    seeded order stratified by label (each class's groups are spread evenly through the order),
    and validation takes groups until it holds at least `round(val_frac * n)` rows, but never all
    of them. `val_frac = 0` gives an empty validation set.
    """
    n = len(dataset)
    if val_frac <= 0:
        return np.arange(n), np.empty(0, np.int64)
    groups = np.where(dataset.pair_ids >= 0, dataset.pair_ids, -1 - np.arange(n))
    unique, inverse = np.unique(groups, return_inverse=True)
    if len(unique) < 2:
        raise RepmapError(f"{dataset.name} is a single pair, so nothing is left to validate on; add rows or set the validation fraction to 0.")
    rng = np.random.default_rng(seed)
    group_label = np.bincount(inverse, weights=dataset.labels.astype(np.float64)) / np.bincount(inverse)
    strata = np.unique(group_label, return_inverse=True)[1]
    spread = np.empty(len(unique))  # where each group falls within its class, in (0, 1)
    for s in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == s))
        spread[members] = (np.arange(len(members)) + rng.random()) / len(members)
    order = np.lexsort((rng.permutation(len(unique)), spread))
    sizes = np.bincount(inverse)[order]
    target = max(1, round(val_frac * n))
    n_val_groups = min(int(np.searchsorted(np.cumsum(sizes), target)) + 1, len(unique) - 1)
    in_val = np.isin(inverse, order[:n_val_groups])
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


def finetune(
    model: str | ResolvedModel,
    dataset: TextDataset,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    trust_remote_code: bool = False,
    force: bool = False,
    device: str | None = None,
    progress: Progress | None = None,
    on_step: OnStep | None = None,
    cancel: threading.Event | None = None,
) -> FinetuneResult:
    """Finetune `model` (hub id or folder) with a 2-way linear head on `dataset`'s labels, or reuse
    the cached result of the same request.

    The folder lands at `<cache>/models/<key>/`, keyed by base model, revision, data fingerprint and
    `config`; an existing one is returned with `reused=True` unless `force`. `progress(fraction,
    message)` and `on_step(step, loss)` are called after every optimiser step. When `cancel` is
    set, training stops before the next step and `Cancelled` is raised; nothing is left under a
    model's name. On CUDA the forward runs under bf16 autocast (weights stay fp32); on CPU in fp32.

    >>> result = finetune("gpt2", load_dataset("builtin:sentiment"))  # doctest: +SKIP
    >>> result.manifest["metrics"]["val_acc"]  # doctest: +SKIP
    """
    check_finetune_data(dataset)
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
    model_info(resolved)  # a config without layers or width fails here, before any weights load
    identity = {"format": FORMAT, "base_model": resolved.name, "base_revision": resolved.revision,
                "dataset_fingerprint": dataset.fingerprint, "config": asdict(config)}
    key = store.entry_key(identity)
    final = store.entry_dir(key, "models")
    report = progress or silent
    if not force and (manifest := _read_manifest(final)) is not None:
        report(1.0, f"Reused the finetuned model in {final.name}")
        return FinetuneResult(str(final), manifest, True)
    with store.entry_lock(key, "models"):
        # another process may have finished the same request while we waited for the lock
        if not force and (manifest := _read_manifest(final)) is not None:
            report(1.0, f"Reused the finetuned model in {final.name}")
            return FinetuneResult(str(final), manifest, True)
        for stale in final.parent.glob(f".tmp-{key}-*"):  # left by a killed writer of this key
            shutil.rmtree(stale, ignore_errors=True)
        train_rows, val_rows = validation_split(dataset, config.val_frac, config.seed)
        report(0.0, f"Loading {resolved.name}")
        # fp32 weights everywhere: they are the master copy AdamW updates (CUDA adds bf16 autocast)
        with quiet_transformers():
            lm = load_model(resolved, device=device, dtype="float32", trust_remote_code=trust_remote_code)
        started = time.perf_counter()
        with heavy_compute(report):
            run = _train(lm, dataset, train_rows, val_rows, config, report, on_step, cancel)
        manifest = {
            "format": FORMAT, "key": key,
            "base_model": resolved.name, "base_revision": resolved.revision, "base_source": resolved.source,
            "base_path": resolved.path, "model_type": lm.info.model_type, "n_layers": lm.info.n_layers,
            "d_model": lm.info.d_model, "pooling": _pooling(lm), "pooled_site": "last_hidden_state",
            "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint, "rows": len(dataset),
                        "train_rows": len(train_rows), "val_rows": len(val_rows), "paired": dataset.is_paired},
            "config": asdict(config),
            "metrics": dict(run["metrics"], seconds=round(time.perf_counter() - started, 3)),
            "history": run["history"], "evaluations": run["evaluations"],
            "device": lm.device, "precision": "bf16-autocast" if lm.device.startswith("cuda") else "float32",
            "created": store.now_iso(), "versions": _versions(),
        }
        report(1.0, "Saving the finetuned model")
        _save(lm, run["head"], manifest, final, cancel)
    report(1.0, f"Finetuned: validation accuracy {_fmt(manifest['metrics']['val_acc'])}")
    return FinetuneResult(str(final), manifest, False)


def check_finetune_data(dataset: TextDataset) -> None:
    """Raise `RepmapError` unless `dataset` has at least `MIN_ROWS` rows and both labels."""
    if len(dataset) < MIN_ROWS:
        raise RepmapError(f"{dataset.name} has {len(dataset)} row(s); finetuning needs at least {MIN_ROWS}.")
    counts = np.bincount(np.asarray(dataset.labels, np.int64), minlength=2)
    if counts.min() == 0:
        raise RepmapError(
            f"{dataset.name} has only rows labelled {int(np.argmax(counts))}; finetuning a classifier needs rows of both labels (0 and 1)."
        )


def _train(lm: LoadedModel, dataset: TextDataset, train_rows: np.ndarray, val_rows: np.ndarray,
           config: FinetuneConfig, report: Progress, on_step: OnStep | None,
           cancel: threading.Event | None) -> dict[str, Any]:
    """The optimisation loop. Returns the head, metrics, per-step history and evaluations; the
    base model in `lm.model` is updated in place (left holding the best weights, in eval mode)."""
    import torch
    import torch.nn.functional as F

    cuda = lm.device.startswith("cuda")
    ids = _encode(lm, dataset, config.max_length)
    labels = torch.as_tensor(np.asarray(dataset.labels, np.int64))
    steps_per_epoch = math.ceil(len(train_rows) / config.batch_size)
    total = config.epochs * steps_per_epoch
    eval_every = config.eval_every or steps_per_epoch
    warmup = round(config.warmup_frac * total)

    def lr_factor(s: int) -> float:  # s = optimiser steps taken so far
        if s < warmup:
            return (s + 1) / (warmup + 1)
        return max(0.0, (total - s) / max(total - warmup, 1))

    def check_cancel() -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("Finetuning was cancelled; nothing was saved.")

    devices = [torch.device(lm.device).index or 0] if cuda else []
    with torch.random.fork_rng(devices=devices):  # seed without disturbing the caller's RNG state
        torch.manual_seed(config.seed)
        model, head, params, optimiser = _training_setup(lm, config)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_factor)
        shuffle = np.random.default_rng(config.seed)
        lengths = np.array([len(x) for x in ids])
        forward = _forward_kwargs(model)
        history: list[dict] = []
        evaluations: list[dict] = []
        best = {"val_loss": math.inf, "val_acc": None, "step": 0, "state": None}
        step, bad_evals, stopped_early = 0, 0, False
        for _epoch in range(config.epochs):
            for rows in _length_grouped_batches(train_rows, lengths, config.batch_size, shuffle):
                check_cancel()
                input_ids, mask = _collate(ids, rows, lm.tokenizer.pad_token_id, lm.device)
                with torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
                    logits = head(_pool(model, input_ids, mask, lm.info.is_encoder, forward))  # (B, 2)
                loss = F.cross_entropy(logits.float(), labels[rows].to(lm.device))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimiser.step()
                schedule.step()
                step += 1
                value = float(loss.detach())
                history.append({"step": step, "loss": round(value, 6)})
                if on_step is not None:
                    on_step(step, value)
                report(step / total, f"Step {step}/{total} · loss {value:.4f}")
                if len(val_rows) and (step % eval_every == 0 or step == total):
                    check_cancel()
                    val_loss, val_acc = _evaluate(lm, head, ids, labels, val_rows, 2 * config.batch_size, forward)
                    model.train()
                    evaluations.append({"step": step, "val_loss": round(val_loss, 6), "val_acc": round(val_acc, 6)})
                    if val_loss < best["val_loss"] * (1 - MIN_IMPROVEMENT):
                        # keep a CPU copy of the best weights: early stopping returns them, not the last ones
                        best = {"val_loss": val_loss, "val_acc": val_acc, "step": step, "state": _snapshot(model, head)}
                        bad_evals = 0
                    else:
                        bad_evals += 1
                    if bad_evals >= config.patience:
                        stopped_early = step < total
                        break
            if bad_evals >= config.patience:
                break
        check_cancel()
        if best["state"] is not None and best["step"] != step:
            model.load_state_dict(best["state"][0])
            head.load_state_dict(best["state"][1])
        train_loss, train_acc = _evaluate(lm, head, ids, labels, train_rows, 2 * config.batch_size, forward)
    model.requires_grad_(False).eval()
    metrics = {
        "train_loss": round(train_loss, 6), "train_acc": round(train_acc, 6),
        "val_loss": None if best["val_acc"] is None else round(best["val_loss"], 6),
        "val_acc": None if best["val_acc"] is None else round(best["val_acc"], 6),
        "best_step": best["step"] if best["val_acc"] is not None else step,
        "epochs_run": round(step / steps_per_epoch, 3), "steps": step, "stopped_early": stopped_early,
    }
    return {"head": head, "metrics": metrics, "history": history, "evaluations": evaluations}


def _training_setup(lm: LoadedModel, config: FinetuneConfig):
    """The model in train mode with what `config` trains set to require gradients, a fresh 2-way head,
    the trained parameters and their AdamW (decay on weight matrices only)."""
    import torch

    model = lm.model.requires_grad_(True).train()  # dropout as the model's config has it
    if config.train_last is not None and config.train_last < lm.info.n_layers:
        # earlier blocks frozen: backward stops at the first trained block, and AdamW updates only these
        model.requires_grad_(False)
        for block in list(lm.blocks)[-config.train_last:]:
            block.requires_grad_(True)
        if (norm := lm.final_norm()) is not None:
            norm.requires_grad_(True)
    head = torch.nn.Linear(lm.info.d_model, 2).to(lm.device)
    body = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in body if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in body if p.ndim < 2], "weight_decay": 0.0},
              {"params": [head.weight], "weight_decay": config.weight_decay, "lr": config.head_lr or config.lr},
              {"params": [head.bias], "weight_decay": 0.0, "lr": config.head_lr or config.lr}]
    optimiser = _adamw([g for g in groups if g["params"]], config.lr)
    return model, head, body + list(head.parameters()), optimiser


def estimate_seconds(model: str | ResolvedModel, dataset: TextDataset, config: FinetuneConfig = FinetuneConfig(), *,
                     device: str | None = None, trust_remote_code: bool = False) -> dict:
    """How long `finetune(model, dataset, config)` will take here, from two optimiser steps measured
    now on a batch of this data's median length (the first warms up, the second is timed) and one
    evaluation batch. Returns {"seconds", "step_seconds", "steps", "eval_batches"}. Nothing is saved."""
    import torch
    import torch.nn.functional as F

    check_finetune_data(dataset)
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
    with quiet_transformers():
        lm = load_model(resolved, device=device, dtype="float32", trust_remote_code=trust_remote_code)
    train_rows, val_rows = validation_split(dataset, config.val_frac, config.seed)
    ids = _encode(lm, dataset, config.max_length)
    lengths = np.array([len(x) for x in ids])
    typical = np.argsort(np.abs(lengths - np.median(lengths)))[: config.batch_size]  # a batch of median-length rows
    forward = _forward_kwargs(lm.model)
    labels = torch.as_tensor(np.asarray(dataset.labels, np.int64))
    with heavy_compute(), torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model, head, params, optimiser = _training_setup(lm, config)
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            input_ids, mask = _collate(ids, typical, lm.tokenizer.pad_token_id, lm.device)
            loss = F.cross_entropy(head(_pool(model, input_ids, mask, lm.info.is_encoder, forward)).float(),
                                   labels[typical].to(lm.device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _logits(lm, head, ids, np.concatenate([typical, typical]), 2 * config.batch_size, forward)
        eval_batch = time.perf_counter() - t0
    steps = config.epochs * math.ceil(len(train_rows) / config.batch_size)
    evals_per_run = config.epochs if config.eval_every is None else max(1, steps // config.eval_every)
    eval_batches = evals_per_run * math.ceil(len(val_rows) / (2 * config.batch_size)) + math.ceil(len(train_rows) / (2 * config.batch_size))
    seconds = steps * times[-1] + eval_batches * eval_batch
    return {"seconds": float(seconds), "step_seconds": float(times[-1]), "steps": int(steps), "eval_batches": int(eval_batches)}


def _length_grouped_batches(rows: np.ndarray, lengths: np.ndarray, batch_size: int,
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


def _adamw(groups: list[dict], lr: float):
    """AdamW, fused where this torch has a fused kernel for the device (several times faster on CPU)."""
    import torch

    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr)


def _evaluate(lm: LoadedModel, head, ids: list[list[int]], labels, rows: np.ndarray, batch_size: int,
              forward: dict) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on `rows`, in eval mode (dropout off)."""
    import torch.nn.functional as F

    logits = _logits(lm, head, ids, rows, batch_size, forward)  # (n, 2) on CPU
    target = labels[rows]
    return float(F.cross_entropy(logits, target)), float((logits.argmax(1) == target).float().mean())


def _logits(lm: LoadedModel, head, ids: list[list[int]], rows: np.ndarray, batch_size: int, forward: dict):
    """Head logits `(len(rows), 2)` float32 on CPU, in the order of `rows`; length-sorted batches."""
    import torch

    lm.model.eval()
    cuda = lm.device.startswith("cuda")
    rows = np.asarray(rows, np.int64)
    order = np.argsort(-np.array([len(ids[r]) for r in rows]), kind="stable")
    out = torch.empty((len(rows), 2), dtype=torch.float32)
    with torch.inference_mode(), torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
        for start in range(0, len(rows), batch_size):
            pick = order[start:start + batch_size]
            input_ids, mask = _collate(ids, rows[pick], lm.tokenizer.pad_token_id, lm.device)
            pooled = _pool(lm.model, input_ids, mask, lm.info.is_encoder, forward)  # (B, d)
            out[torch.as_tensor(pick)] = head(pooled).float().cpu()
    return out


def _encode(lm: LoadedModel, dataset: TextDataset, max_length: int) -> list[list[int]]:
    """Token ids per text, without padding; long texts keep their end (the tokenizer truncates left)."""
    limit = min(max_length, int(lm.info.max_positions or max_length))
    ids = lm.tokenizer(list(dataset.texts), add_special_tokens=True, truncation=True, max_length=limit,
                       return_attention_mask=False)["input_ids"]
    empty = [i for i, x in enumerate(ids) if not x]
    if empty:
        raise RepmapError(f"Row {empty[0] + 1} of {dataset.name} has no tokens; remove rows without text.")
    return ids


def _collate(ids: list[list[int]], rows: np.ndarray, pad_id: int, device: str):
    """Right-padded `input_ids (B, T)` and `attention_mask (B, T)` for `rows`."""
    import torch

    T = max(len(ids[r]) for r in rows)
    input_ids = torch.full((len(rows), T), int(pad_id), dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), T), dtype=torch.long)  # (B, T)
    for k, r in enumerate(rows):
        input_ids[k, :len(ids[r])] = torch.as_tensor(ids[r])
        mask[k, :len(ids[r])] = 1
    return input_ids.to(device), mask.to(device)


def _forward_kwargs(model) -> dict:
    return {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}


def _pool(model, input_ids, mask, is_encoder: bool, forward: dict):
    """Pooled final output `(B, d)` float32: mask-aware mean (encoders) or last real token (causal)."""
    import torch

    hidden = model(input_ids=input_ids, attention_mask=mask, **forward)[0].float()  # (B, T, d) last_hidden_state
    if is_encoder:
        m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * m).sum(1) / m.sum(1)  # (B, d)
    last = mask.sum(1) - 1  # (B,) right padding: the last real token
    return hidden[torch.arange(len(last), device=hidden.device), last]  # (B, d)


def _pooling(lm: LoadedModel) -> str:
    return "mean" if lm.info.is_encoder else "last"


def _snapshot(model, head) -> tuple[dict, dict]:
    return tuple({k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()} for m in (model, head))


def _save(lm: LoadedModel, head, manifest: dict, final: Path, cancel: threading.Event | None) -> None:
    """Write the folder under a `.tmp-<key>-` name, then rename it onto `final` (replacing an old one)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    key = final.name
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=final.parent))
    old = None
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only; the folder is an ordinary model folder
        with quiet_transformers():
            lm.model.save_pretrained(tmp, safe_serialization=True)
        lm.tokenizer.save_pretrained(tmp)
        tensors = {"weight": head.weight.detach().float().cpu().numpy(),  # (2, d)
                   "bias": head.bias.detach().float().cpu().numpy()}  # (2,)
        store.write_file(tmp / HEAD_NAME, tensors, {"format": FORMAT, "key": key, "pooling": manifest["pooling"],
                                                   "base_model": manifest["base_model"]})
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        if cancel is not None and cancel.is_set():
            raise Cancelled("Finetuning was cancelled; nothing was saved.")
        if final.exists():  # force, or a broken folder: move it aside, then delete it once the new one is in place
            old = final.parent / f".tmp-{key}-old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not final.exists():
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _read_manifest(folder: Path) -> dict | None:
    """The manifest of a complete finetuned folder, or None if it is absent, partial or not ours."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    needed = ("base_model", "dataset", "config", "metrics", "pooling", "created")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or any(k not in manifest for k in needed):
        return None
    if not ((folder / "config.json").exists() and (folder / HEAD_NAME).exists()):
        return None
    return manifest


def read_finetune_manifest(path: str | Path) -> dict:
    """The `repmap_finetune.json` of a finetuned model folder; `RepmapError` if it is not one."""
    manifest = _read_manifest(Path(path).expanduser())
    if manifest is None:
        raise RepmapError(f"'{path}' is not a finetuned model folder (it has no valid {MANIFEST_NAME}); finetune a model first.")
    return manifest


def check_base(path: str | Path, base_model: str) -> dict:
    """Raise `RepmapError` unless the finetuned folder at `path` was finetuned from `base_model`
    (a hub id, or a folder compared by its resolved location). Returns the manifest."""
    manifest = read_finetune_manifest(path)
    named = manifest["base_model"]
    same = str(base_model).strip() == named
    if not same and manifest.get("base_source") == "folder":
        same = Path(str(base_model)).expanduser().resolve() == Path(manifest.get("base_path", named)).resolve()
    if not same:
        raise RepmapError(f"The model in '{path}' was finetuned from {named}, not {base_model}; compare it with its own base model.")
    return manifest


def list_finetuned() -> list[FinetunedModel]:
    """Every complete finetuned model in the cache, newest first (temp folders and folders
    without a valid manifest are skipped)."""
    folder = store.cache_root() / "models"
    out = []
    for d in sorted(folder.iterdir()) if folder.exists() else []:
        if d.name.startswith(".") or not d.is_dir() or (manifest := _read_manifest(d)) is None:
            continue
        out.append(FinetunedModel(path=str(d), base_model=str(manifest["base_model"]),
                                  dataset=str(manifest["dataset"].get("name", "?")),
                                  val_acc=manifest["metrics"].get("val_acc"), created=str(manifest["created"])))
    return sorted(out, key=lambda m: m.created, reverse=True)


def predict(path: str | Path, dataset: TextDataset, batch_size: int = 32, *, device: str | None = None) -> np.ndarray:
    """P(label = 1) for each row, `(n,)` float32, from a finetuned folder (its base model and head,
    pooled as in training). Runs in eval mode under `torch.inference_mode`; on CUDA under the same
    bf16 autocast as training, so accuracy on the validation rows matches the manifest's."""
    import torch

    manifest = read_finetune_manifest(path)
    if len(dataset) == 0:
        raise RepmapError(f"{dataset.name} has no rows to predict.")
    with quiet_transformers():
        lm = load_model(str(Path(path).expanduser()), device=device, dtype="float32")
    if _pooling(lm) != manifest["pooling"]:
        raise RepmapError(f"'{path}' was trained with {manifest['pooling']} pooling, but its model now reads as {_pooling(lm)}.")
    try:
        tensors, _ = store.read_file(Path(path).expanduser() / HEAD_NAME)  # checks the checksum
        state = {k: torch.tensor(np.array(tensors[k], np.float32)) for k in ("weight", "bias")}
    except (store.CorruptEntry, OSError, KeyError) as e:
        raise RepmapError(f"The classifier head in '{path}' is unreadable ({e}); finetune the model again with force.") from None
    head = torch.nn.Linear(lm.info.d_model, 2).to(lm.device)
    head.load_state_dict(state)
    head.eval()
    ids = _encode(lm, dataset, int(manifest["config"]["max_length"]))
    logits = _logits(lm, head, ids, np.arange(len(dataset)), batch_size, _forward_kwargs(lm.model))  # (n, 2)
    return torch.softmax(logits, dim=1)[:, 1].numpy().astype(np.float32)


def weak_labels(weak_model_path: str | Path, dataset: TextDataset, *, batch_size: int = 32,
                device: str | None = None) -> TextDataset:
    """`dataset` relabelled by a finetuned (weak) model: label 1 where P(label = 1) >= 0.5.

    Texts, pair ids and answer spans are unchanged; the fingerprint is recomputed from the new
    labels. This is the weak supervision of Gao et al.'s Table 2.
    """
    probs = predict(weak_model_path, dataset, batch_size, device=device)  # (n,)
    base = read_finetune_manifest(weak_model_path)["base_model"]
    return TextDataset(name=f"{dataset.name} (weak labels from {base})", texts=list(dataset.texts),
                       labels=(probs >= 0.5).astype(np.int8), pair_ids=dataset.pair_ids.copy(),
                       answer_spans=dataset.answer_spans.copy())


def save_dataset(dataset: TextDataset, name_hint: str) -> str:
    """Write `dataset` to `<cache>/datasets/<fingerprint>.jsonl` and return its `file:` spec.

    One JSON object per row, `{"text", "label", "pair_id"}`, written to a temp file and renamed
    into place. `name_hint` (what the data is, e.g. "sentiment, weak labels from gpt2") goes into
    a sidecar `<fingerprint>.json` with the row count and source name. `load_dataset(spec)` reads
    the rows back through the generic `text,label` adapter, which keeps texts and labels but not
    pair ids: the loaded rows are unpaired (and so carry a different fingerprint when the
    original was paired).
    """
    folder = store.cache_root() / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dataset.fingerprint}.jsonl"
    lines = (json.dumps({"text": t, "label": int(y), "pair_id": int(p)}, ensure_ascii=False)
             for t, y, p in zip(dataset.texts, dataset.labels, dataset.pair_ids))
    _write_text_atomic(path, "".join(line + "\n" for line in lines))
    about = {"name": re.sub(r"\s+", " ", str(name_hint)).strip()[:200], "source": dataset.name,
             "rows": len(dataset), "fingerprint": dataset.fingerprint, "paired": dataset.is_paired,
             "created": store.now_iso()}
    _write_text_atomic(path.with_suffix(".json"), json.dumps(about, indent=2, sort_keys=True))
    return f"file:{path}"


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _versions() -> dict:
    from repmap_core.activations import _versions as versions  # one definition of what a manifest records

    return versions()


def _fmt(x: float | None) -> str:
    return "n/a (no validation split)" if x is None else f"{x:.3f}"
