"""A memo for analyses whose result is one array (projections, shared axes), kept in the cache: computed once
per identity, even when several sessions ask at once, and only read when a link asks for it (`may_compute`).
The analysis itself never imports the cache: a page hands it a memo."""
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
