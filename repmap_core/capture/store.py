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
  caller recomputes it. A JSON entry of the wrong type is absent too (`read_json`). Never pickle.
- A cache that cannot be written (read-only, not ours) still serves what it holds: locks fall back to
  this process, and writes the cache can do without (memos, the last request of a view) are skipped
  with one notice (`write_notice`). A full disk is one sentence naming the folder and the space needed.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repmap_core import __version__
from repmap_core.errors import RepmapError
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


UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}  # a cache this process may read but not write
FULL = {errno.ENOSPC, errno.EDQUOT}
_process_locks: dict[str, threading.RLock] = {}
_skipped: dict[str, str] = {}  # cache root -> the one notice about writes skipped there


@contextmanager
def entry_lock(key: str, kind: str = "activations") -> Iterator[None]:
    """Exclusive lock for writing one entry (other processes wait). On a cache that cannot be written (no
    lock file can be made), exclusion within this process is what is left, and reading still works."""
    from filelock import FileLock

    entry_dir(key, kind)  # validates the key before any path is built from it
    folder = cache_root() / kind
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # one instance per path in this process, so a holder can re-enter (e.g. to delete a bad file);
        # the lock state is per thread, so two app sessions (threads) still exclude each other
        lock = FileLock(str(folder / f"{key}.lock"), is_singleton=True)
        lock.acquire()
    except OSError as e:
        if e.errno not in UNWRITABLE:
            raise
        lock = _process_locks.setdefault(f"{kind}/{key}", threading.RLock())
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _space_error(e: BaseException) -> bool:
    text = str(e)  # safetensors reports a full disk as its own error, with the OS's words inside
    return getattr(e, "errno", None) in FULL or "No space left" in text or "StorageFull" in text or "Disk quota" in text


def write_failure(e: BaseException, what: str, needed: int) -> RepmapError | None:
    """One sentence for a failed write to the cache (a full disk, a cache that cannot be written), naming the
    folder and the space needed; None for any other error (a bug, reported as one)."""
    root = cache_root()
    if _space_error(e):
        free = shutil.disk_usage(root).free
        return RepmapError(f"The cache folder {root} ran out of space while writing {what}: it needs about "
                           f"{_size(needed)} more, and {_size(free)} are free; free some space (the Cache page deletes "
                           "entries) or set REPMAP_CACHE to a folder on a larger disk.")
    if getattr(e, "errno", None) in UNWRITABLE:
        return RepmapError(f"The cache folder {root} cannot be written ({os.strerror(e.errno).lower()}), so {what} cannot "
                           "be kept; make it writable, or set REPMAP_CACHE to a folder this user can write.")
    return None


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 100_000 else f"{max(n, 0) / 1e3:,.0f} kB"


def check_room(needed: int, what: str) -> None:
    """Refuse, before any work, a computation whose results the cache has no room for (or cannot write)."""
    root = cache_root()
    probe = None
    try:
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=root)
        os.close(fd)
    except OSError as e:
        if (error := write_failure(e, what, needed)) is not None:
            raise error from None
        raise
    finally:
        if probe:
            Path(probe).unlink(missing_ok=True)
    if needed > shutil.disk_usage(root).free:
        raise write_failure(OSError(errno.ENOSPC, "No space left on device"), what, needed)


def skipped_write(e: OSError, what: str) -> None:
    """Note that a write the cache can do without (a memo, a view's last request) failed and was skipped:
    logged once per cache, and kept for `write_notice`. Any other failure is raised as it is."""
    if getattr(e, "errno", None) not in UNWRITABLE | FULL:
        raise e
    root = str(cache_root())
    if root not in _skipped:
        _skipped[root] = (f"The cache at {root} cannot be written ({os.strerror(e.errno).lower()}): views are computed "
                          f"and shown, but not kept (first skipped: {what}).")
        log.warning(_skipped[root])


def write_notice() -> str | None:
    """The one notice about writes skipped in this process's cache, or None when every write went through."""
    return _skipped.get(str(cache_root()))


def read_json(path: Path) -> dict | None:
    """A JSON object kept in the cache, or None when the file is absent, unreadable, or holds valid JSON of
    another type (a list, a number): an ill-typed entry is as good as none, never an error."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


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
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the entry's folder, if this write made it and left it empty: nothing half-kept
        if _space_error(e):  # a full disk is the user's environment: one sentence, not a crash
            raise write_failure(e, path.name, sum(t.nbytes for t in tensors.values()) + len(manifest_json)) from None
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
        with entry_lock(key), contextlib.suppress(OSError):  # a read-only cache keeps it, and reports it absent
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
        try:
            manifest = json.loads(json.loads(f.read(n))["__metadata__"]["manifest"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise CorruptEntry(f"unreadable header ({type(e).__name__})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layer"), int):
        raise CorruptEntry("the manifest is not ours")
    return manifest


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
