"""Finetuned models in the cache: writing one atomically, reading its manifest, listing them, and
using one (class probabilities, weak labels for another data set).

A finetuned model is a cache entry `<cache>/models/<key>/` (see `finetune.py` for the key). The folder
is a normal Hugging Face model folder (safetensors + tokenizer), so `load_model` and extraction
work on it unchanged. Next to the weights are `classifier.safetensors` (the head) and
`repmap_finetune.json` (what made it and how training went). Everything is written into a
`.tmp-` folder that is renamed into place only when complete, so a crash or a cancel never
leaves a half-written model under a real name. Never pickle.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repmap_core.capture import store
from repmap_core.capture.model_config import FINETUNE_MANIFEST
from repmap_core.capture.models import LoadedModel, load_model, quiet_transformers
from repmap_core.data.load import TextDataset
from repmap_core.errors import RepmapError
from repmap_core.finetune.classifier import encode, forward_kwargs, head_logits, pooling
from repmap_core.locations import cache_root

FORMAT = "repmap.finetune/1"
HEAD_NAME = "classifier.safetensors"


@dataclass(frozen=True)
class FinetunedModel:
    """One complete finetuned model in the cache, for pickers."""

    path: str
    base_model: str
    dataset: str
    val_acc: float | None
    created: str


def save_checkpoint(lm: LoadedModel, head, manifest: dict, final: Path,
                    before_commit: Callable[[], None] | None = None) -> None:
    """Write the folder under a `.tmp-<key>-` name, then rename it onto `final` (replacing an old one).

    `before_commit()` runs once everything is written and before the rename: if it raises (a
    cancel), the temp folder is removed and nothing is left under a model's name."""
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
        (tmp / FINETUNE_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        if before_commit is not None:
            before_commit()
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


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a complete finetuned folder, or None if it is absent, partial or not ours."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / FINETUNE_MANIFEST).read_text(encoding="utf-8"))
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
    manifest = read_manifest(Path(path).expanduser())
    if manifest is None:
        raise RepmapError(f"'{path}' is not a finetuned model folder (it has no valid {FINETUNE_MANIFEST}); finetune a model first.")
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
    folder = cache_root() / "models"
    out = []
    for d in sorted(folder.iterdir()) if folder.exists() else []:
        if d.name.startswith(".") or not d.is_dir() or (manifest := read_manifest(d)) is None:
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
    if pooling(lm) != manifest["pooling"]:
        raise RepmapError(f"'{path}' was trained with {manifest['pooling']} pooling, but its model now reads as {pooling(lm)}.")
    try:
        tensors, _ = store.read_file(Path(path).expanduser() / HEAD_NAME)  # checks the checksum
        state = {k: torch.tensor(np.array(tensors[k], np.float32)) for k in ("weight", "bias")}
    except (store.CorruptEntry, OSError, KeyError) as e:
        raise RepmapError(f"The classifier head in '{path}' is unreadable ({e}); finetune the model again with force.") from None
    head = torch.nn.Linear(lm.info.d_model, 2).to(lm.device)
    head.load_state_dict(state)
    head.eval()
    ids = encode(lm, dataset, int(manifest["config"]["max_length"]))
    logits = head_logits(lm, head, ids, np.arange(len(dataset)), batch_size, forward_kwargs(lm.model))  # (n, 2)
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
    folder = cache_root() / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dataset.fingerprint}.jsonl"
    lines = (json.dumps({"text": t, "label": int(y), "pair_id": int(p)}, ensure_ascii=False)
             for t, y, p in zip(dataset.texts, dataset.labels, dataset.pair_ids))
    store.write_text_atomic(path, "".join(line + "\n" for line in lines))
    about = {"name": re.sub(r"\s+", " ", str(name_hint)).strip()[:200], "source": dataset.name,
             "rows": len(dataset), "fingerprint": dataset.fingerprint, "paired": dataset.is_paired,
             "created": store.now_iso()}
    store.write_text_atomic(path.with_suffix(".json"), json.dumps(about, indent=2, sort_keys=True))
    return f"file:{path}"
