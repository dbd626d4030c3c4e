"""The on-disk cache: content-addressed, atomic, checked, memory-mapped.

Layout: `<root>/activations/<key>/layer_<L>.safetensors`, where `key` hashes the identity of
the computation (model + revision, data fingerprint, position, max length, dtype) and `<root>` is
`locations.cache_root()`. Each file holds `activations (n, d)`, `labels (n,)`, `pair_ids (n,)` and,
in its safetensors header, the manifest plus a sha256 over the manifest and every tensor's bytes.

- Writes go to a temp file in the same folder, are fsynced, then `os.replace`d into place, so a
  reader sees a whole file or none; a killed writer leaves only a temp file, which is never read.
- A per-key lock file serialises writers, so two processes computing one key make one entry.
- Reads memory-map the file. The first read of a file in a process checks its layout and
  checksum; a truncated, corrupted or mismatched file is deleted and reported as absent, so the
  caller recomputes it. Never pickle.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repmap_core import __version__
from repmap_core.jsonable import json_default
from repmap_core.locations import cache_root

log = logging.getLogger(__name__)
FORMAT = "repmap.activations/2"  # /2: the checksum covers dtypes and shapes
_DTYPES = {"F32": np.float32, "F16": np.float16, "I8": np.int8, "I64": np.int64, "I32": np.int32,
           "U8": np.uint8, "F64": np.float64, "BOOL": np.bool_}
_verified: dict[tuple[str, int, int], bool] = {}  # (path, size, mtime_ns) -> checksum ok


class CorruptEntry(Exception):
    """A cache file whose layout, manifest or checksum is wrong."""


def entry_key(identity: dict) -> str:
    """Hex key of a computation's identity (a JSON-able dict); never built from raw user strings."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def is_key(name: object) -> bool:
    """True for what `entry_key` makes (32 lowercase hex digits), so never a path or a user's string."""
    return isinstance(name, str) and len(name) == 32 and all(c in "0123456789abcdef" for c in name)


def entry_dir(key: str, kind: str = "activations") -> Path:
    """The folder of one entry; anything but a key (a path, `..`, a name) is refused."""
    if not is_key(key) or not (kind.isascii() and kind.isalpha() and kind.islower()):  # kind: a plain folder name
        raise ValueError(f"not a cache key: {key!r} ({kind!r})")
    return cache_root() / kind / key


@contextmanager
def entry_lock(key: str, kind: str = "activations") -> Iterator[None]:
    """Exclusive lock for writing one entry (other processes wait)."""
    from filelock import FileLock

    entry_dir(key, kind)  # validates the key before any path is built from it
    folder = cache_root() / kind
    folder.mkdir(parents=True, exist_ok=True)
    # one instance per path in this process, so a holder can re-enter (e.g. to delete a bad file);
    # the lock state is per thread, so two app sessions (threads) still exclude each other
    with FileLock(str(folder / f"{key}.lock"), is_singleton=True):
        yield


def _checksum(manifest_json: str, tensors: dict[str, np.ndarray]) -> str:
    """sha256 over the manifest and each tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(manifest_json.encode())
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        h.update(f"{name}\0{arr.dtype.str}\0{arr.shape}\0".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def write_file(path: Path, tensors: dict[str, np.ndarray], manifest: dict) -> None:
    """Atomically write tensors + manifest (+ checksum) as one safetensors file."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    manifest_json = json.dumps(manifest, sort_keys=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    meta = {"manifest": manifest_json, "sha256": _checksum(manifest_json, tensors)}
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    st = path.stat()
    _verified[(str(path), st.st_size, st.st_mtime_ns)] = True


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a fsynced temp file in the same folder, then
    `os.replace` it into place: a reader sees the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    return path


def read_file(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Memory-map a cache file; raise `CorruptEntry` if its layout or checksum is wrong."""
    st = path.stat()
    size = st.st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CorruptEntry("file shorter than its header")
        n = int.from_bytes(head, "little")
        if n <= 0 or 8 + n > size:
            raise CorruptEntry("header length beyond the end of the file")
        try:
            header = json.loads(f.read(n))
            meta = header.pop("__metadata__")
            manifest_json, checksum = meta["manifest"], meta["sha256"]
            manifest = json.loads(manifest_json)
            if not isinstance(manifest, dict):
                raise TypeError("manifest is not an object")
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
            raise CorruptEntry(f"unreadable header ({e})") from None
    start = 8 + n
    try:
        table = {name: (_DTYPES[info["dtype"]], tuple(int(x) for x in info["shape"]),
                        *(int(x) for x in info["data_offsets"])) for name, info in header.items()}
        if any(len(v) != 4 for v in table.values()):
            raise ValueError("data_offsets must have two entries")
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CorruptEntry("malformed tensor table") from None
    end = max((v[3] for v in table.values()), default=0)
    if start + end != size:
        raise CorruptEntry(f"file is {size} bytes, its header says {start + end}")
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    tensors = {}
    for name, (dtype, shape, b, e) in table.items():
        if not 0 <= b <= e or (e - b) != int(np.prod(shape)) * np.dtype(dtype).itemsize:
            raise CorruptEntry(f"tensor {name} has an inconsistent size")
        tensors[name] = mm[start + b:start + e].view(dtype).reshape(shape)
    memo = (str(path), size, st.st_mtime_ns)
    if not _verified.get(memo):
        if _checksum(manifest_json, tensors) != checksum:
            raise CorruptEntry("checksum mismatch")
        _verified[memo] = True
    return tensors, manifest


def layer_path(key: str, layer: int) -> Path:
    return entry_dir(key) / f"layer_{int(layer)}.safetensors"


def read_layer(key: str, layer: int, identity: dict) -> tuple[dict[str, np.ndarray], dict] | None:
    """The cached layer if present and valid for `identity`; a bad file is deleted (-> None)."""
    path = layer_path(key, layer)
    if not path.exists():
        return None
    try:
        tensors, manifest = read_file(path)
        mismatch = [k for k, v in identity.items() if manifest.get(k) != v]
        if mismatch or manifest.get("layer") != int(layer):
            raise CorruptEntry(f"manifest does not match the request ({', '.join(mismatch) or 'layer'})")
        if "activations" not in tensors:
            raise CorruptEntry("no activations tensor")
    except (CorruptEntry, OSError) as e:
        log.warning("cache file %s is invalid (%s); it will be recomputed", path, e)
        with entry_lock(key):
            path.unlink(missing_ok=True)
        return None
    return tensors, manifest


def clean_temp_files(key: str) -> int:
    """Remove temp files a killed writer left in an entry (call while holding its lock); both
    ours (`.tmp-*`) and the one safetensors writes before renaming onto ours (`.tmp*`)."""
    folder = entry_dir(key)
    removed = 0
    for p in folder.glob(".tmp*") if folder.exists() else []:
        p.unlink(missing_ok=True)
        removed += 1
    return removed


@dataclass(frozen=True)
class CacheEntry:
    """One cached activation set (all layers computed for one identity), for the cache browser."""

    key: str
    model: str
    dataset: str
    position: str
    layers: tuple[int, ...]
    n_rows: int
    d_model: int
    bytes: int
    created: str


def list_entries() -> list[CacheEntry]:
    """Every activation entry in the cache, newest first (reads headers only)."""
    folder = cache_root() / "activations"
    out = []
    for d in sorted(folder.iterdir()) if folder.exists() else []:
        if not d.is_dir() or not is_key(d.name):  # a folder repmap did not make: not an entry
            continue
        files = sorted(d.glob("layer_*.safetensors"))
        manifests = []
        for f in files:
            try:
                manifests.append(_read_manifest(f))
            except (CorruptEntry, OSError):
                continue
        if not manifests:
            continue
        m = manifests[0]
        out.append(CacheEntry(
            key=d.name, model=m.get("model", "?"), dataset=m.get("dataset_spec", "?"), position=m.get("position", "?"),
            layers=tuple(sorted(x["layer"] for x in manifests)), n_rows=int(m.get("n_rows", 0)),
            d_model=int(m.get("d_model", 0)), bytes=sum(f.stat().st_size for f in files),
            created=max(x.get("created", "") for x in manifests),
        ))
    return sorted(out, key=lambda e: e.created, reverse=True)


def _read_manifest(path: Path) -> dict:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n <= 0 or n > 100_000_000:
            raise CorruptEntry("bad header length")
        return json.loads(json.loads(f.read(n))["__metadata__"]["manifest"])


def delete_entry(key: str, kind: str = "activations") -> None:
    """Delete one cache entry (under its lock, so no writer is mid-way)."""
    with entry_lock(key, kind):
        shutil.rmtree(entry_dir(key, kind), ignore_errors=True)


def cache_size_bytes() -> int:
    return sum(p.stat().st_size for p in cache_root().rglob("*") if p.is_file())


def library_versions() -> dict:
    """What every manifest records about the software that made an entry."""
    import platform

    import torch
    import transformers

    return {"repmap": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def now_iso() -> str:
    """Local time with microseconds: entries made within one second must still sort by age."""
    from datetime import datetime

    return datetime.now().astimezone().isoformat(timespec="microseconds")


class LayerStreamWriter:
    """Write one layer's cache file block by block, for data larger than memory.

    The safetensors header goes first (with room reserved for the final manifest and checksum),
    rows are written at their offsets with `os.pwrite` (no mapping, so resident memory stays
    flat), and `commit` hashes the tensors back from disk, writes the final header in place,
    fsyncs and `os.replace`s the temp file into place: the same atomic, checked file as
    `write_file` makes. `abort` (or an exception in a `with` block) removes the temp file.
    """

    RESERVE = 16_384  # bytes kept free in the header for the manifest's final values

    def __init__(self, path: Path, n: int, d: int, manifest: dict):
        self.path, self.n, self.d = Path(path), int(n), int(d)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # data section: activations (n, d) f32, pair_ids (n,) i64, labels (n,) i8: contiguous, no gaps
        a, p, y = self.n * self.d * 4, self.n * 8, self.n
        self.table = {"activations": ("F32", [self.n, self.d], 0, a), "pair_ids": ("I64", [self.n], a, a + p),
                      "labels": ("I8", [self.n], a + p, a + p + y)}
        header = self._header(manifest, "0" * 64)
        self.header_len = (len(header) + self.RESERVE + 7) // 8 * 8
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=self.path.parent)
        self.tmp, self.fd = Path(tmp), fd
        os.pwrite(fd, self.header_len.to_bytes(8, "little") + header.ljust(self.header_len), 0)
        os.ftruncate(fd, 8 + self.header_len + a + p + y)

    def _header(self, manifest: dict, checksum: str) -> bytes:
        meta = {"manifest": json.dumps(manifest, sort_keys=True), "sha256": checksum}
        body = {"__metadata__": meta, **{k: {"dtype": t, "shape": s, "data_offsets": [b, e]}
                                         for k, (t, s, b, e) in self.table.items()}}
        return json.dumps(body, separators=(",", ":")).encode()

    def write_rows(self, start: int, activations: np.ndarray, labels: np.ndarray, pair_ids: np.ndarray) -> None:
        """Rows `start .. start + k` of each tensor: activations (k, d), labels (k,), pair_ids (k,)."""
        base = 8 + self.header_len
        k = len(activations)
        if start < 0 or start + k > self.n or np.shape(activations) != (k, self.d):
            raise ValueError(f"rows {start}..{start + k} of shape {np.shape(activations)} do not fit ({self.n}, {self.d})")
        for name, arr, size in (("activations", np.ascontiguousarray(activations, np.float32), 4 * self.d),
                                ("pair_ids", np.ascontiguousarray(pair_ids, np.int64), 8),
                                ("labels", np.ascontiguousarray(labels, np.int8), 1)):
            os.pwrite(self.fd, memoryview(arr).cast("B"), base + self.table[name][2] + start * size)

    def commit(self, manifest: dict) -> None:
        """Checksum (the same as `write_file`'s), final header, fsync, rename into place."""
        manifest_json = json.dumps(manifest, sort_keys=True)
        h = hashlib.sha256(manifest_json.encode())
        base = 8 + self.header_len
        for name in sorted(self.table):  # the order and prefixes of _checksum
            t, shape, b, e = self.table[name]
            dtype = np.dtype(_DTYPES[t])
            h.update(f"{name}\0{dtype.str}\0{tuple(shape)}\0".encode())
            for off in range(b, e, 1 << 24):
                h.update(os.pread(self.fd, min(1 << 24, e - off), base + off))
        header = self._header(manifest, h.hexdigest())
        if len(header) > self.header_len:
            raise ValueError("the final manifest outgrew the space reserved in the header")
        os.pwrite(self.fd, header.ljust(self.header_len), 8)
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        os.replace(self.tmp, self.path)
        st = self.path.stat()
        _verified[(str(self.path), st.st_size, st.st_mtime_ns)] = True

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> LayerStreamWriter:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None or self.fd >= 0:
            self.abort()


def disk_memo(cache_id: dict, kind: str = "projections", name: str = "coords"):
    """A memo for an analysis whose result is one array, kept in this cache: `memo(what, compute)`
    returns the array stored under `cache_id` plus `what` (the analysis's own settings), or runs
    `compute()` and stores it. A corrupt or mismatched file is recomputed. The analysis itself never
    imports the cache: the caller (a page) hands it this memo."""

    def memo(what: dict, compute):
        identity = dict(cache_id, **what)
        # as it will read back from JSON: tuples become lists, numpy scalars plain numbers
        identity = json.loads(json.dumps(identity, default=json_default))
        path = entry_dir(entry_key(identity), kind) / f"{name}.safetensors"
        if path.exists():
            try:
                tensors, manifest = read_file(path)
                if all(manifest.get(k) == v for k, v in identity.items()):
                    return np.array(tensors[name])  # a writable copy, like a fresh result
            except (CorruptEntry, OSError, KeyError):
                pass
        result = compute()
        write_file(path, {name: result}, identity)
        return result

    return memo
