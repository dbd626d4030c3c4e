"""Array files in and out: `.npy`, `.npz` (first array), `.safetensors` (first tensor). Never pickle."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from repmap_core.capture.model_memory import available_memory_bytes, safetensors_header
from repmap_core.errors import RepmapError, path_error, shown_path

NPY_MAGIC = b"\x93NUMPY"


def _size(n_bytes: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if n_bytes < 1000 or unit == "PB":
            return f"{n_bytes:,.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return ""


def _pickled(name: str) -> RepmapError:
    return RepmapError(f"'{name}' holds Python objects (pickle), which repmap never loads; save it as a plain numeric array.")


def _damaged(name: str, reason: str, fix: str) -> RepmapError:
    return RepmapError(f"'{name}' is damaged or not a {fix[0]} file ({reason}); {fix[1]}.")


_NPY_FIX = (".npy", "write it again with numpy.save")
_NPZ_FIX = (".npz", "write it again with numpy.savez")
_ST_FIX = ("safetensors", "write it again with safetensors' save_file")


def _npy_header(fp, name: str, data_bytes: int, fix: tuple[str, str]) -> tuple[tuple, np.dtype]:
    """Shape and dtype from a `.npy` header, checked against the bytes that follow it, so a header
    that promises more data than the file holds is refused before anything is allocated."""
    from numpy.lib import format as npy_format

    start = fp.read(len(NPY_MAGIC))
    if start != NPY_MAGIC:
        if start[:1] == b"\x80":  # a pickle stream (protocol 2 and later) renamed to .npy
            raise _pickled(name)
        raise _damaged(name, "it does not start with the NumPy header", fix)
    try:
        major, minor = fp.read(2)
        read = {1: npy_format.read_array_header_1_0, 2: npy_format.read_array_header_2_0}.get(major)
        if read is None:
            raise ValueError(f"unknown .npy format version {major}.{minor}")
        before = fp.tell()
        shape, _, dtype = read(fp)
        header_bytes = fp.tell() - before + len(NPY_MAGIC) + 2
    except (ValueError, SyntaxError, TypeError) as e:
        raise _damaged(name, f"its header cannot be read: {str(e).splitlines()[0][:120]}", fix) from None
    if dtype.hasobject:
        raise _pickled(name)
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    have = data_bytes - header_bytes
    if need > have:
        raise _damaged(name, f"its header promises shape {tuple(shape)} of {dtype} ({_size(need)}) but only "
                             f"{_size(max(have, 0))} of data follow", fix)
    return tuple(shape), dtype


def _check_fits_memory(name: str, n_bytes: int) -> None:
    available = available_memory_bytes()
    if available and n_bytes > available:
        raise RepmapError(f"'{name}' holds {_size(n_bytes)} of data, more than the {_size(available)} of memory free "
                          "here; use fewer rows or a machine with more memory.")


def _load_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        shape, dtype = _npy_header(f, path.name, path.stat().st_size, _NPY_FIX)
    _check_fits_memory(path.name, int(np.prod(shape, dtype=object)) * dtype.itemsize)
    return np.load(path, allow_pickle=False)


def _load_npz(path: Path) -> np.ndarray:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            members = [i for i in z.infolist() if i.filename.endswith(".npy")]
            if not members:
                raise RepmapError(f"'{path.name}' holds no arrays.")
            first = members[0]
            with z.open(first) as member:
                shape, dtype = _npy_header(member, path.name, first.file_size, _NPZ_FIX)
            _check_fits_memory(path.name, int(np.prod(shape, dtype=object)) * dtype.itemsize)
            with z.open(first) as member:
                return np.load(member, allow_pickle=False)
    except zipfile.BadZipFile as e:
        raise _damaged(path.name, f"not a readable zip archive: {str(e).splitlines()[0][:120]}", _NPZ_FIX) from None


def _load_safetensors(path: Path) -> np.ndarray:
    from safetensors import SafetensorError, safe_open

    try:
        header, _ = safetensors_header(path)
    except ValueError as e:
        raise _damaged(path.name, str(e), _ST_FIX) from None
    if not header:
        raise RepmapError(f"'{path.name}' holds no tensors.")
    first = sorted(header)[0]
    if str(header[first]["dtype"]).upper() in ("BF16", "F8_E4M3", "F8_E5M2"):
        raise RepmapError(f"Tensor '{first}' in '{path.name}' is {header[first]['dtype']}, which NumPy cannot hold; "
                          "save it as float32 (tensor.float()) and try again.")
    _check_fits_memory(path.name, int(header[first]["data_offsets"][1]) - int(header[first]["data_offsets"][0]))
    try:
        with safe_open(str(path), framework="numpy") as f:
            return f.get_tensor(first)
    except (SafetensorError, TypeError) as e:
        raise _damaged(path.name, str(e).splitlines()[0][:160], _ST_FIX) from None


def load_array(path: str | Path) -> np.ndarray:
    """The array in a `.npy`, the first array in a `.npz`, or the first tensor (by name) in a
    `.safetensors` file. Headers are checked against the file size before any data is read, so a
    damaged, truncated or oversized file is refused in one sentence instead of exhausting memory."""
    path = Path(path)
    try:
        if not path.is_file():
            raise RepmapError(f"Array file '{shown_path(path)}' does not exist; check the path.")
    except OSError as e:  # a name too long for the system, say: the user's path, in one sentence
        raise path_error(path, e, "an array file") from None
    suffix = path.suffix.lower()
    readers = {".npy": _load_npy, ".npz": _load_npz, ".safetensors": _load_safetensors}
    if suffix not in readers:
        raise RepmapError(f"'{path.name}' is not an array file repmap reads; use .npy, .npz or .safetensors (never .pt or .pkl).")
    try:
        array = readers[suffix](path)
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise _pickled(path.name) from None
        raise RepmapError(f"'{path.name}' could not be read as an array: {str(e).splitlines()[0]}.") from None
    except (OSError, EOFError) as e:
        raise RepmapError(f"'{path.name}' could not be read as an array: {str(e).splitlines()[0] if str(e) else 'truncated'}.") from None
    except MemoryError:
        raise RepmapError(f"'{path.name}' is too large to load into this machine's memory; use fewer rows.") from None
    if array.dtype.kind not in "biuf":  # complex numbers would lose their imaginary part, text has no numbers
        kind = {"c": "complex numbers", "U": "text", "S": "bytes", "M": "dates", "m": "time spans"}.get(
            array.dtype.kind, f"values of type {array.dtype}")
        raise RepmapError(f"'{path.name}' holds {kind} ({array.dtype}); repmap needs real numbers (float or int), so "
                          "save the activations as real values.")
    return array


def load_activations(path: str | Path, role: str) -> np.ndarray:
    """`load_array`, refusing an array whose rows are all the same (e.g. all zeros): such a set carries
    nothing to fit or probe, and every statistic on it (R², a probe, a similarity) is undefined.
    `role` names it in the sentence ("base activations")."""
    X = load_array(path)
    if X.ndim == 2 and len(X) > 1 and bool((X == X[:1]).all()):
        what = "all zeros" if not X[:1].any() else "every row equal to the first"
        raise RepmapError(
            f"'{Path(path).name}' ({role}) holds the same values in all {len(X)} rows ({what}), so nothing can be fitted "
            "or probed on it; check that it holds the layer's activations."
        )
    return X


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
    candidate = Path(path).parent / "manifest.json"
    try:
        manifest = json.loads(candidate.read_text(encoding="utf-8")) if candidate.is_file() else None
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None  # any other JSON is no manifest of ours


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
