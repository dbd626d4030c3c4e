"""Memos kept in the cache: `disk_memo` for analyses whose result is one array (projections, shared axes),
`records_memo` for per-item records of plain numbers (per-layer scores). Each is computed once per identity,
even when several sessions ask at once, and only read when a link asks for it (`may_compute`). The analysis
itself never imports the cache: its caller hands it a memo."""
from __future__ import annotations

import errno
import json

import numpy as np

from repmap_core.capture.store import (
    CorruptEntry,
    entry_dir,
    entry_key,
    entry_lock,
    read_file,
    skipped_write,
    write_file,
)
from repmap_core.errors import RepmapError
from repmap_core.jsonable import json_default


class NotCached(LookupError):
    """What `disk_memo(..., may_compute=False)` raises on a miss: the caller asks a person first."""


def disk_memo(cache_id: dict, kind: str = "projections", name: str = "coords", *, may_compute: bool = True):
    """A memo for an analysis whose result is one array, kept in this cache: `memo(what, compute)`
    returns the array stored under `cache_id` plus `what` (the analysis's own settings), or runs
    `compute()` and stores it. A corrupt or mismatched file is recomputed. Identical requests at once (two
    sessions on one link) compute once: the first holds the entry's lock, the others wait and read its file.
    With `may_compute=False` a miss raises `NotCached` instead (a view a link asks for waits for Compute).
    The analysis itself never imports the cache: the caller (a page) hands it this memo."""

    def memo(what: dict, compute):
        identity = dict(cache_id, **what)
        # as it will read back from JSON: tuples become lists, numpy scalars plain numbers
        identity = json.loads(json.dumps(identity, default=json_default))
        key = entry_key(identity)
        path = entry_dir(key, kind) / f"{name}.safetensors"

        def stored():
            try:
                tensors, manifest = read_file(path)
                if all(manifest.get(k) == v for k, v in identity.items()):
                    return np.array(tensors[name])  # a writable copy, like a fresh result
            except (CorruptEntry, OSError, KeyError):
                pass
            return None

        if (hit := stored()) is not None:
            return hit
        if not may_compute:
            raise NotCached(key)
        with entry_lock(key, kind):  # one computation per key; the others wait here, then read
            if (hit := stored()) is not None:
                return hit
            result = compute()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_file(path, {name: result}, identity)
            except (OSError, RepmapError) as e:  # a memo the cache can do without: shown, not kept
                skipped_write(e if isinstance(e, OSError) else OSError(errno.ENOSPC, str(e)), f"{kind} {key[:8]}")
        return result

    return memo


RECORD_TYPES = ("int", "float", "bool", "str")


def _column_type(values: list) -> str:
    if all(isinstance(v, str) or v is None for v in values) and any(isinstance(v, str) for v in values):
        return "str"
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return "bool"
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values):
        return "int"
    if all(v is None or isinstance(v, (int, float, np.integer, np.floating)) for v in values):
        return "float"
    raise TypeError("a record holds plain numbers, booleans and strings only")


def _encode_records(records: dict[int, dict]) -> tuple[dict[str, np.ndarray], dict]:
    """Records (item -> {column: value}) as one float64 table plus the text columns, for `write_file`."""
    items = sorted(records)
    columns = sorted({c for r in records.values() for c in r})
    types = {c: _column_type([records[i].get(c) for i in items]) for c in columns}
    numeric = [c for c in columns if types[c] != "str"]
    table = np.array([[np.nan if records[i].get(c) is None else float(records[i][c]) for c in numeric] for i in items],
                     dtype=np.float64).reshape(len(items), len(numeric))
    text = {c: [records[i].get(c) for i in items] for c in columns if types[c] == "str"}
    return ({"items": np.asarray(items, dtype=np.int64), "table": table},
            {"numeric": numeric, "types": types, "text": text})


def _decode_records(tensors: dict[str, np.ndarray], layout: dict) -> dict[int, dict]:
    items = [int(i) for i in tensors["items"]]
    table = np.asarray(tensors["table"], dtype=np.float64)
    numeric, types, text = layout["numeric"], layout["types"], layout["text"]
    if table.shape != (len(items), len(numeric)) or any(len(v) != len(items) for v in text.values()) or any(
            t not in RECORD_TYPES for t in types.values()):
        raise CorruptEntry("records do not match their layout")
    cast = {"int": int, "bool": bool, "float": float}
    out = {}
    for row, item in enumerate(items):
        record = {c: cast[types[c]](table[row, j]) for j, c in enumerate(numeric)}
        record.update({c: values[row] for c, values in text.items()})
        out[item] = record
    return out


def records_memo(cache_id: dict, kind: str = "scores", name: str = "records", *, may_compute: bool = True):
    """A memo for per-item results made of plain numbers, booleans and short strings (per-layer scores), kept in
    this cache under `cache_id`: `memo(items, compute)` returns {item: record} for every item asked (whole
    numbers, such as layers), reading those already kept and calling `compute(missing)` -> {item: record} for
    the rest, once even when several sessions ask at once (the entry's lock), then keeping the union. Stored as
    one safetensors file (a float64 table, its text columns in the checksummed manifest), never pickle; a
    corrupt file counts as absent. A float column's NaN reads back as NaN. With `may_compute=False` a miss
    raises `NotCached`."""
    identity = json.loads(json.dumps(cache_id, default=json_default))
    key = entry_key(identity)
    path = entry_dir(key, kind) / f"{name}.safetensors"

    def stored() -> dict[int, dict]:
        try:
            tensors, manifest = read_file(path)
            if all(manifest.get(k) == v for k, v in identity.items()):
                return _decode_records(tensors, manifest["layout"])
        except (CorruptEntry, OSError, KeyError, TypeError, ValueError):
            pass
        return {}

    def memo(items, compute) -> dict[int, dict]:
        items = [int(i) for i in items]
        kept = stored()
        if all(i in kept for i in items):
            return {i: kept[i] for i in items}
        if not may_compute:
            raise NotCached(key)
        with entry_lock(key, kind):
            kept = stored()
            missing = [i for i in items if i not in kept]
            if missing:
                made = {int(i): dict(r) for i, r in compute(missing).items()}
                kept.update(made)
                tensors, layout = _encode_records(kept)
                kept = _decode_records(tensors, layout)  # as they read back: the same types on every call
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_file(path, tensors, dict(identity, layout=layout))
                except (OSError, RepmapError) as e:  # kept in memory for this answer, not on disk
                    skipped_write(e if isinstance(e, OSError) else OSError(errno.ENOSPC, str(e)), f"{kind} {key[:8]}")
        return {i: kept[i] for i in items}

    return memo
