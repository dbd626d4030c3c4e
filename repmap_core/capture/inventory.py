"""What the cache holds, every byte of it, under readable names: for the Cache page and its deletes.

Kinds: activation sets (`activations/`), finetuned models (`models/`), GGUF conversions (`gguf/`),
projection results (`projections/`), per-layer scores (`scores/`), uploaded tables (`uploads/`), saved data sets
such as weak labels (`datasets/`), the demo tour's finished steps (`results/`), and the job speeds measured here
(`speed/`). Anything else under the cache root (lock files, temp folders left by a killed
writer) is counted as "other", so the items always add up to the total on disk.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from repmap_core.capture import gguf, store
from repmap_core.capture.model_config import FINETUNE_MANIFEST, short_name
from repmap_core.locations import cache_root

__all__ = ["CacheItem", "inventory", "delete_item", "KIND_NAMES"]

KIND_NAMES = {"activations": "activations", "models": "finetuned model", "gguf": "converted GGUF model",
              "projections": "projection", "scores": "per-layer scores", "uploads": "uploaded table", "datasets": "saved data set",
              "results": "finished result (demo tour)", "speed": "measured job speeds", "other": "other"}
PROJECTION_NAMES = {"pca": "PCA", "pca_std": "standardised PCA", "tsne": "t-SNE", "umap": "UMAP"}


@dataclass(frozen=True)
class CacheItem:
    """One deletable thing in the cache."""

    kind: str  # a key of KIND_NAMES
    id: str  # folder or file name under its kind's folder
    name: str  # what it is, for people: model, data, layers...
    bytes: int
    created: str  # "2026-12-06 07:25", local time, or ""

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, self.kind)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _when(iso: str | None, path: Path) -> str:
    try:
        t = datetime.fromisoformat(iso) if iso else datetime.fromtimestamp(path.stat().st_mtime)
        return t.strftime("%Y-%m-%d %H:%M")
    except (ValueError, OSError):
        return ""


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _model_name(model: str) -> str:
    """A hub id's last part, or for a finetuned folder in the cache, what it was finetuned from and on."""
    m = _json(Path(model) / FINETUNE_MANIFEST) if "/" in str(model) and Path(model).is_dir() else {}
    if m:
        return f"{short_name(m.get('base_model', '?'))} finetuned on {m.get('dataset', {}).get('name', '?')} ({Path(model).name[:8]})"
    return short_name(model)


def inventory() -> list[CacheItem]:
    """Every item in the cache, newest first; their bytes add up to `store.cache_size_bytes()`."""
    root = cache_root()
    items: list[CacheItem] = []
    by_key = {e.key: e for e in store.list_entries()}
    for path in sorted(root.iterdir()):
        kind = path.name if path.is_dir() and path.name in KIND_NAMES else "other"
        if kind == "other":
            items.append(CacheItem("other", path.name, path.name, _size(path), _when(None, path)))
            continue
        for sub in sorted(path.iterdir()):
            if sub.suffix == ".lock" and sub.is_file() and sub.stat().st_size == 0:
                continue  # a writer's lock: empty, and recreated on the next write
            items.append(_describe(kind, sub, by_key))
    return sorted(items, key=lambda i: i.created, reverse=True)


def _describe(kind: str, sub: Path, by_key: dict) -> CacheItem:
    size, name, created = _size(sub), sub.name, None
    if kind == "activations" and (e := by_key.get(sub.name)) is not None:
        layers = ", ".join(map(str, e.layers)) if len(e.layers) <= 6 else f"{len(e.layers)} layers ({e.layers[0]}–{e.layers[-1]})"
        name, created = f"{_model_name(e.model)} · {e.dataset} · {e.position} · {e.n_rows:,} rows · layers {layers}", e.created
    elif kind == "models" and (m := _json(sub / FINETUNE_MANIFEST)):
        acc = m.get("metrics", {}).get("val_acc")
        data = m.get("dataset", {}).get("name", "?")
        name = f"{short_name(m.get('base_model', '?'))} finetuned on {data}" + ("" if acc is None else f" (val acc {acc:.2f})")
        created = m.get("created")
    elif kind == "gguf" and (m := _json(sub / gguf.MANIFEST_NAME)):
        name, created = f"{short_name(m.get('model', '?'))} ({m.get('quantization', '?')}) from {m.get('source_file', '?')}", m.get("created")
    elif kind == "datasets" and sub.suffix == ".jsonl" and (m := _json(sub.with_suffix(".json"))):
        name, created = f"{m.get('name', sub.name)} ({m.get('rows', '?')} rows)", m.get("created")
    elif kind == "uploads":
        name = f"upload {sub.name[:12]}… ({sub.suffix.lstrip('.') or 'file'})"
    elif kind == "projections":
        name, created = _projection_name(sub, by_key), None
    elif kind == "scores" and (e := by_key.get(_scored(sub))) is not None:
        name = f"scores of {_model_name(e.model)} · {e.dataset} · {e.position} · {e.n_rows:,} rows"
    elif kind == "results" and (m := _json(sub)) and isinstance(m.get("title"), str):
        name = f"demo tour, step {m['title']}"
    elif kind == "speed":
        name = "how long the last job of each kind took here (calibrates the next estimate)"
    if sub.name.startswith((".tmp-", ".")) or sub.suffix == ".lock":
        name = f"{sub.name} (temp or lock file)"
    return CacheItem(kind, sub.name, name, size, _when(created, sub))


def _scored(sub: Path) -> str | None:
    """The activations' key a scores entry was computed from (its manifest says), or None."""
    try:
        _, manifest = store.read_file(sub / "separation.safetensors")
    except (store.CorruptEntry, OSError):
        return None
    return manifest.get("activations")


def _projection_name(folder: Path, by_key: dict) -> str:
    """'t-SNE of SmolLM2-135M-Instruct · builtin:sentiment · layer 14 · 800 points · seed 0', read from the memo's
    own manifest (what it was computed from); 'projection 1a2b3c…' when that cannot be read."""
    def source(key) -> str:
        e = by_key.get(key)
        return f"{_model_name(e.model)} · {e.dataset}" if e is not None else f"activations {str(key)[:8]}… (deleted)"

    for path in sorted(folder.glob("*.safetensors")):
        try:
            m = store._read_manifest(path)  # the memo's identity: what it projected, and how
        except (store.CorruptEntry, OSError):
            continue
        method = PROJECTION_NAMES.get(m.get("method"), str(m.get("method", "projection")))
        if "before" in m:  # the same rows before and after finetuning, on shared axes
            what = f"{source(m['before'])} before and after finetuning ({_model_name(by_key[m['after']].model)})" \
                if m.get("after") in by_key else f"{source(m['before'])} before and after finetuning"
        else:
            what = source(m.get("activations"))
        points = m.get("rows", m.get("n"))
        return (f"{method} of {what} · layer {m['layer']}" + (f" · {points:,} points" if isinstance(points, int) else "")
                + (f" · seed {m['seed']}" if isinstance(m.get("seed"), int) else ""))
    return f"projection {folder.name[:12]}…"


def delete_item(item: CacheItem) -> None:
    """Delete one item (under its entry's lock for the kinds that have one)."""
    root = cache_root()
    path = root / item.id if item.kind == "other" else root / item.kind / item.id
    if path.resolve().parent not in (root.resolve(), (root / item.kind).resolve()):
        raise ValueError(f"not a cache item: {item.id!r}")
    if item.kind in ("activations", "models", "gguf", "projections", "scores") and store.is_key(item.id):
        store.delete_entry(item.id, item.kind)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
        if item.kind == "datasets":
            path.with_suffix(".json").unlink(missing_ok=True)
