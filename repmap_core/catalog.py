"""What can be used without network, for pickers: the embedded models, the local Hugging Face
cache, embedded GGUF models and finetuned checkpoints.

Kept apart from `models.py` (which loads), so that `models.py` never needs `checkpoints.py` (finetuned
folders): the catalogue reads both.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from repmap_core.capture import gguf
from repmap_core.capture.model_config import short_name
from repmap_core.finetune.checkpoints import list_finetuned
from repmap_core.locations import EMBEDDED_MODEL_ID, embedded_model_path

__all__ = ["LocalModel", "list_local_models", "short_name"]


@dataclass(frozen=True)
class LocalModel:
    """A model that can be used without network: for pickers."""

    name: str  # what resolve_model takes: a hub id, or a folder for finetuned checkpoints
    source: str  # "embedded" | "embedded-gguf" | "hf-cache" | "finetuned"
    size_mb: float
    label: str = ""  # how a picker shows it (defaults to the name)
    causal: bool = True  # has next-token logits (steering, propensity); False for encoders


def _folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e6


def list_local_models() -> list[LocalModel]:
    """The embedded models, every model repo in the local Hugging Face cache, and finetuned checkpoints."""
    out: list[LocalModel] = []
    path = embedded_model_path()
    if path is not None:
        out.append(LocalModel(EMBEDDED_MODEL_ID, "embedded", _folder_mb(path), f"{EMBEDDED_MODEL_ID} (encoder, embedded)",
                              causal=False))
    hf_cached: set[str] = set()
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            if repo.repo_type == "model" and repo.repo_id != EMBEDDED_MODEL_ID:
                hf_cached.add(repo.repo_id)
                out.append(LocalModel(repo.repo_id, "hf-cache", repo.size_on_disk / 1e6))
    except Exception:  # no cache folder yet, or an unreadable one: nothing cached to list
        pass
    for entry in gguf.installed_embedded():
        if entry.model_id not in hf_cached:  # the HF cache's full-precision copy is what resolves then
            out.append(LocalModel(entry.model_id, "embedded-gguf", gguf.file_mb(entry),
                                  f"{entry.model_id} ({entry.quantization} GGUF, embedded)"))
    for ft in list_finetuned():
        acc = "" if ft.val_acc is None else f", val acc {ft.val_acc:.2f}"
        data = f"file:{Path(ft.dataset[5:]).name}" if ft.dataset.startswith("file:") else ft.dataset
        out.append(LocalModel(ft.path, "finetuned", _folder_mb(Path(ft.path)),
                              f"finetuned {short_name(ft.base_model)} on {data}{acc} · {Path(ft.path).name[:8]}"))
    return out
