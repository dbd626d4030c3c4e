"""Finetuning: a whole model plus a linear head, trained to classify a data set's 0/1 labels.

This is the setting of Gao, Sun, Jiao (finetune GPT-2 on amazon_polarity, SciQ or HH, then compare
last-layer activations before and after). The base model (`AutoModel`, no LM head) is trained
with a `(d_model -> 2)` head on its final output (`last_hidden_state`, after any final norm),
pooled at the last real token for causal LMs or as the mask-aware mean over tokens for encoders.
AdamW, linear warmup then linear decay, gradient clipping at 1.0, and early stopping on a seeded
validation split that keeps pairs whole (the best weights by validation loss are kept).

A finetuned model is a cache entry `<cache>/models/<key>/`; `key` hashes the base model and its
revision, the data fingerprint and the config, so the same request is trained once. How the folder
is written, read, listed and used (predictions, weak labels) is `checkpoints.py`; the pooled forward
pass and the training step shared by training, its estimate and prediction are `classifier.py`; with
`train_last` the frozen blocks run once over the rows rather than at every step (`frozen_prefix.py`).
"""
from __future__ import annotations

import math
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from repmap_core.analysis.splits import validation_split
from repmap_core.capture import store
from repmap_core.capture.compute import heavy_compute
from repmap_core.capture.models import (
    LoadedModel,
    ResolvedModel,
    default_device,
    load_model,
    model_info,
    quiet_transformers,
    resolve_model,
    weights_bytes,
)
from repmap_core.data.load import TextDataset
from repmap_core.errors import RepmapError
from repmap_core.finetune import frozen_prefix
from repmap_core.finetune.checkpoints import FORMAT, read_manifest, save_checkpoint
from repmap_core.finetune.classifier import (
    adamw,
    bf16_autocast,
    cpu_bf16,
    encode,
    evaluate,
    forward_kwargs,
    head_logits,
    length_grouped_batches,
    pooling,
    snapshot,
    train_step,
)
from repmap_core.progress import Progress, silent

__all__ = ["Cancelled", "FinetuneConfig", "FinetuneResult", "auto_train_last", "check_finetune_data", "estimate_seconds",
           "is_finetuned", "finetune", "validation_split"]

MIN_ROWS = 8  # below this a validation split and a training split cannot both hold something useful
# a validation loss must fall by more than this share of the best so far to count as an improvement
# (float noise and negligible gains do not reset the patience counter)
MIN_IMPROVEMENT = 1e-3
OnStep = Callable[[int, float], None]


class Cancelled(Exception):
    """Raised by `finetune` when its `cancel` event is set; nothing is left in the cache."""


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("Finetuning was cancelled; nothing was saved.")


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


AUTO_FULL_PARAMS = 60_000_000  # "auto" trains every weight up to this many parameters (on a CPU) ...
AUTO_LAST_BLOCKS = 4  # ... and only this many last blocks (with the final norm and head) above it


def auto_train_last(resolved: ResolvedModel, device: str | None = None) -> int | None:
    """What "auto" trains: every weight (None) of a small model or on a GPU; on a CPU the last 4 blocks of
    one over 60M parameters (here, all of SmolLM2 took 183 s for 250 rows x 2 epochs; MiniLM's 22M ~30 s)."""
    if (device or default_device()) != "cpu":
        return None
    params = weights_bytes(resolved, "float32") // 4
    return AUTO_LAST_BLOCKS if params > AUTO_FULL_PARAMS else None


@dataclass(frozen=True)
class FinetuneResult:
    """A finetuned model folder, its manifest (`repmap_finetune.json`), and whether it was reused
    from the cache rather than trained by this call."""

    path: str
    manifest: dict
    reused: bool


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
    model's name. The forward runs under bf16 autocast (weights stay fp32) on CUDA and on a CPU where bf16
    measured fast (`classifier.bf16_autocast`); otherwise in fp32.

    >>> result = finetune("gpt2", load_dataset("builtin:sentiment"))  # doctest: +SKIP
    >>> result.manifest["metrics"]["val_acc"]  # doctest: +SKIP
    """
    check_finetune_data(dataset)
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
    model_info(resolved)  # a config without layers or width fails here, before any weights load
    key = _key(resolved, dataset, config, device)
    final = store.entry_dir(key, "models")
    report = progress or silent
    if not force and (manifest := read_manifest(final)) is not None:
        report(1.0, f"Reused the finetuned model in {final.name}")
        return FinetuneResult(str(final), manifest, True)
    with store.entry_lock(key, "models"):
        # another process may have finished the same request while we waited for the lock
        if not force and (manifest := read_manifest(final)) is not None:
            report(1.0, f"Reused the finetuned model in {final.name}")
            return FinetuneResult(str(final), manifest, True)
        for stale in final.parent.glob(f".tmp-{key}-*"):  # left by a killed writer of this key
            shutil.rmtree(stale, ignore_errors=True)
        train_rows, val_rows = validation_split(dataset, config.val_frac, config.seed)
        report(0.0, f"Loading {resolved.name}")
        # fp32 weights everywhere: they are the master copy AdamW updates (bf16 autocast where it is fast)
        with quiet_transformers():
            lm = load_model(resolved, device=device, dtype="float32", trust_remote_code=trust_remote_code)
        started = time.perf_counter()
        with heavy_compute(report):
            run = _train(lm, dataset, train_rows, val_rows, config, report, on_step, cancel)
        manifest = {
            "format": FORMAT, "key": key,
            "base_model": resolved.name, "base_revision": resolved.revision, "base_source": resolved.source,
            "base_path": resolved.path, "model_type": lm.info.model_type, "n_layers": lm.info.n_layers,
            "d_model": lm.info.d_model, "pooling": pooling(lm), "pooled_site": "last_hidden_state",
            "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint, "rows": len(dataset), "train_rows": len(train_rows),
                        "val_rows": len(val_rows), "paired": dataset.is_paired, "trained_row_keys": dataset.row_keys(train_rows)},
            "config": asdict(config),
            "metrics": dict(run["metrics"], seconds=round(time.perf_counter() - started, 3)),
            "history": run["history"], "evaluations": run["evaluations"],
            "device": lm.device, "precision": "bf16-autocast" if bf16_autocast(lm) else "float32",
            "created": store.now_iso(), "versions": store.library_versions(),
        }
        report(1.0, "Saving the finetuned model")
        save_checkpoint(lm, run["head"], manifest, final, before_commit=lambda: _check_cancel(cancel))
    report(1.0, f"Finetuned: validation accuracy {_fmt(manifest['metrics']['val_acc'])}")
    return FinetuneResult(str(final), manifest, False)


def _key(resolved: ResolvedModel, dataset: TextDataset, config: FinetuneConfig, device: str | None = None) -> str:
    """The cache key of a finetune: its base model and revision, the data's fingerprint and the config (and
    bf16 autocast on a CPU, so a cached fp32 finetune is not taken for one)."""
    amp = {"precision": "bf16-autocast"} if (device or default_device()) == "cpu" and cpu_bf16(resolved) else {}
    return store.entry_key({"format": FORMAT, "base_model": resolved.name, "base_revision": resolved.revision,
                            "dataset_fingerprint": dataset.fingerprint, "config": asdict(config), **amp})


def is_finetuned(model: str | ResolvedModel, dataset: TextDataset, config: FinetuneConfig = FinetuneConfig()) -> bool:
    """Whether `finetune(model, dataset, config)` would reuse a cached result (and take a moment)."""
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
    return read_manifest(store.entry_dir(_key(resolved, dataset, config), "models")) is not None


def check_finetune_data(dataset: TextDataset, config: FinetuneConfig | None = None) -> None:
    """Raise `RepmapError` unless `dataset` has at least `MIN_ROWS` rows and both labels, and (given
    `config`) can be split into training and validation rows as it asks (a single pair cannot)."""
    if len(dataset) < MIN_ROWS:
        raise RepmapError(f"{dataset.name} has {len(dataset)} row(s); finetuning needs at least {MIN_ROWS}.")
    counts = np.bincount(np.asarray(dataset.labels, np.int64), minlength=2)
    if counts.min() == 0:
        raise RepmapError(
            f"{dataset.name} has only rows labelled {int(np.argmax(counts))}; finetuning a classifier needs rows of both labels (0 and 1)."
        )
    if config is not None:
        validation_split(dataset, config.val_frac, config.seed)


def _train(lm: LoadedModel, dataset: TextDataset, train_rows: np.ndarray, val_rows: np.ndarray,
           config: FinetuneConfig, report: Progress, on_step: OnStep | None,
           cancel: threading.Event | None) -> dict[str, Any]:
    """The optimisation loop. Returns the head, metrics, per-step history and evaluations; the
    base model in `lm.model` is updated in place (left holding the best weights, in eval mode)."""
    import torch

    cuda = lm.device.startswith("cuda")
    ids = encode(lm, dataset, config.max_length)
    labels = torch.as_tensor(np.asarray(dataset.labels, np.int64))
    steps_per_epoch = math.ceil(len(train_rows) / config.batch_size)
    total = config.epochs * steps_per_epoch
    eval_every = config.eval_every or steps_per_epoch
    warmup = round(config.warmup_frac * total)

    def lr_factor(s: int) -> float:  # s = optimiser steps taken so far
        if s < warmup:
            return (s + 1) / (warmup + 1)
        return max(0.0, (total - s) / max(total - warmup, 1))

    devices = [torch.device(lm.device).index or 0] if cuda else []
    with torch.random.fork_rng(devices=devices):  # seed without disturbing the caller's RNG state
        torch.manual_seed(config.seed)
        model, head, params, optimiser = _training_setup(lm, config)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_factor)
        shuffle = np.random.default_rng(config.seed)
        lengths = np.array([len(x) for x in ids])
        forward = forward_kwargs(model)
        # the frozen blocks' output, computed once (None where every block trains or they hold dropout)
        prefix = frozen_prefix.build(lm, ids, np.concatenate([train_rows, val_rows]), config.train_last,
                                     2 * config.batch_size, forward)
        history: list[dict] = []
        evaluations: list[dict] = []
        best = {"val_loss": math.inf, "val_acc": None, "step": 0, "state": None}
        step, bad_evals, stopped_early = 0, 0, False
        for _epoch in range(config.epochs):
            for rows in length_grouped_batches(train_rows, lengths, config.batch_size, shuffle):
                _check_cancel(cancel)
                value = train_step(lm, (model, head, params, optimiser), ids, labels, rows, forward, prefix)
                schedule.step()
                step += 1
                history.append({"step": step, "loss": round(value, 6)})
                if on_step is not None:
                    on_step(step, value)
                report(step / total, f"Step {step}/{total} · loss {value:.4f}")
                if len(val_rows) and (step % eval_every == 0 or step == total):
                    _check_cancel(cancel)
                    val_loss, val_acc = evaluate(lm, head, ids, labels, val_rows, 2 * config.batch_size, forward, prefix)
                    model.train()
                    evaluations.append({"step": step, "val_loss": round(val_loss, 6), "val_acc": round(val_acc, 6)})
                    if val_loss < best["val_loss"] * (1 - MIN_IMPROVEMENT):
                        # keep a CPU copy of the best weights: early stopping returns them, not the last ones
                        best = {"val_loss": val_loss, "val_acc": val_acc, "step": step, "state": snapshot(model, head)}
                        bad_evals = 0
                    else:
                        bad_evals += 1
                    if bad_evals >= config.patience:
                        stopped_early = step < total
                        break
            if bad_evals >= config.patience:
                break
        _check_cancel(cancel)
        if best["state"] is not None and best["step"] != step:
            model.load_state_dict(best["state"][0])
            head.load_state_dict(best["state"][1])
        train_loss, train_acc = evaluate(lm, head, ids, labels, train_rows, 2 * config.batch_size, forward, prefix)
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
    optimiser = adamw([g for g in groups if g["params"]], config.lr)
    return model, head, body + list(head.parameters()), optimiser


def estimate_seconds(model: str | ResolvedModel, dataset: TextDataset, config: FinetuneConfig = FinetuneConfig(), *,
                     device: str | None = None, trust_remote_code: bool = False, reuse: bool = True) -> dict:
    """How long `finetune(model, dataset, config)` will take here, from two optimiser steps measured
    now on a batch of this data's median length (the first warms up, the second is timed) and one
    evaluation batch. Returns {"seconds", "step_seconds", "steps", "eval_batches", "cached"}; with `reuse`, a request
    finetuned before (`is_finetuned`) is read back at once: {"seconds": 0.0, "cached": True}. Nothing is saved."""
    import torch

    check_finetune_data(dataset)
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
    if reuse and is_finetuned(resolved, dataset, config):
        return {"seconds": 0.0, "step_seconds": 0.0, "steps": 0, "eval_batches": 0, "cached": True}
    with quiet_transformers():
        lm = load_model(resolved, device=device, dtype="float32", trust_remote_code=trust_remote_code)
    train_rows, val_rows = validation_split(dataset, config.val_frac, config.seed)
    ids = encode(lm, dataset, config.max_length)
    lengths = np.array([len(x) for x in ids])
    typical = np.argsort(np.abs(lengths - np.median(lengths)))[: config.batch_size]  # a batch of median-length rows
    forward = forward_kwargs(lm.model)
    labels = torch.as_tensor(np.asarray(dataset.labels, np.int64))
    with heavy_compute(), torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model, head, params, optimiser = _training_setup(lm, config)
        times, prefix, prefix_seconds = [], None, 0.0
        for i in range(2):  # the first warms up; then the frozen blocks' one pass (per row) and a step after it
            if i == 1:
                t0 = time.perf_counter()
                prefix = frozen_prefix.build(lm, ids, typical, config.train_last, 2 * config.batch_size, forward)
                prefix_seconds = (time.perf_counter() - t0) / len(typical) if prefix else 0.0
            t0 = time.perf_counter()
            train_step(lm, (model, head, params, optimiser), ids, labels, typical, forward, prefix)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        head_logits(lm, head, ids, np.concatenate([typical, typical]), 2 * config.batch_size, forward, prefix)
        eval_batch = time.perf_counter() - t0
    steps = config.epochs * math.ceil(len(train_rows) / config.batch_size)
    evals_per_run = config.epochs if config.eval_every is None else max(1, steps // config.eval_every)
    eval_batches = evals_per_run * math.ceil(len(val_rows) / (2 * config.batch_size)) + math.ceil(len(train_rows) / (2 * config.batch_size))
    seconds = prefix_seconds * (len(train_rows) + len(val_rows)) + steps * times[-1] + eval_batches * eval_batch
    return {"seconds": float(seconds), "step_seconds": float(times[-1]), "steps": int(steps), "eval_batches": int(eval_batches),
            "cached": False}


def _fmt(x: float | None) -> str:
    return "n/a (no validation split)" if x is None else f"{x:.3f}"
