"""One layer's cache file written block by block (`LayerStreamWriter`), for data larger than memory: the same
atomic, checksummed safetensors file `store.write_file` makes, without ever holding the whole layer."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from repmap_core.capture.store import _DTYPES, _verified, write_failure


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
            try:
                os.pwrite(self.fd, memoryview(arr).cast("B"), base + self.table[name][2] + start * size)
            except OSError as e:  # a full disk mid-way: one sentence naming the cache and what is left to write
                left = (self.n - start) * (4 * self.d + 9)
                raise write_failure(e, self.path.name, left) or e from None

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
