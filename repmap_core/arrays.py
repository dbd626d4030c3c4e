"""Array files in and out: `.npy`, `.npz` (first array), `.safetensors` (first tensor). Never pickle."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from repmap_core.errors import RepmapError


def load_array(path: str | Path) -> np.ndarray:
    """The array in a `.npy`, the first array in a `.npz`, or the first tensor in a `.safetensors` file."""
    path = Path(path)
    if not path.is_file():
        raise RepmapError(f"Array file '{path}' does not exist; check the path.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if not z.files:
                    raise RepmapError(f"'{path.name}' holds no arrays.")
                return z[z.files[0]]
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
            if not tensors:
                raise RepmapError(f"'{path.name}' holds no tensors.")
            return tensors[sorted(tensors)[0]] if len(tensors) > 1 else next(iter(tensors.values()))
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise RepmapError(
                f"'{path.name}' holds Python objects (pickle), which repmap never loads; save it as a plain numeric array."
            ) from None
        raise RepmapError(f"'{path.name}' could not be read as an array: {str(e).splitlines()[0]}.") from None
    except (OSError, EOFError) as e:
        raise RepmapError(f"'{path.name}' could not be read as an array: {str(e).splitlines()[0] if str(e) else 'truncated'}.") from None
    raise RepmapError(f"'{path.name}' is not an array file repmap reads; use .npy, .npz or .safetensors (never .pt or .pkl).")


def load_labels(path: str | Path) -> np.ndarray:
    """A 1-D label array of 0/1 or -1/+1, returned as int8 0/1."""
    y = load_array(path)
    if y.ndim == 2 and 1 in y.shape:  # a column or row vector
        y = y.reshape(-1)
    if y.ndim != 1:
        raise RepmapError(f"Labels in '{Path(path).name}' must be one value per row, not shape {y.shape}.")
    values = set(np.unique(y).tolist())
    if values <= {0, 1}:
        return y.astype(np.int8)
    if values <= {-1, 1}:
        return (y > 0).astype(np.int8)
    raise RepmapError(f"Labels in '{Path(path).name}' must be 0/1 or -1/+1, and they have values {sorted(values)[:5]}.")


def save_arrays(path: str | Path, **arrays: np.ndarray) -> Path:
    """Write named arrays to `.npz` (or `.safetensors` by suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".safetensors":
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))
    else:
        np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    return path


def export_manifest(path: str | Path) -> dict | None:
    """The `manifest.json` that `extract --export` wrote beside an array file, if there is one."""
    import json

    candidate = Path(path).parent / "manifest.json"
    try:
        return json.loads(candidate.read_text(encoding="utf-8")) if candidate.is_file() else None
    except (OSError, ValueError):
        return None


def check_same_data(first: str | Path, second: str | Path, names: tuple[str, str]) -> None:
    """Refuse two exported activation sets made from different data (their fingerprints differ):
    their rows are different texts, so no map or fit between them means anything."""
    a, b = export_manifest(first), export_manifest(second)
    fa, fb = (a or {}).get("dataset_fingerprint"), (b or {}).get("dataset_fingerprint")
    if fa and fb and fa != fb:
        raise RepmapError(
            f"The {names[0]} and {names[1]} activations come from different data ({a.get('dataset_spec', '?')}, "
            f"fingerprint {fa[:8]}, vs {b.get('dataset_spec', '?')}, fingerprint {fb[:8]}); extract both on the same rows."
        )
