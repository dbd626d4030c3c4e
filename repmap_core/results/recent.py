"""The last request each view computed, kept in the cache (`<cache>/views/<view>.json`), so a view
survives a refresh or a new session: Share finds what was computed, and rebuilds it from the cache.

A request is the plain dict a page computes from (model ids, data spec, layers, position, limit);
it never holds `trust_remote_code` as true (a rebuilt view never runs a model's own code).
"""
from __future__ import annotations

import json
from pathlib import Path

from repmap_core.capture import store
from repmap_core.locations import cache_root

__all__ = ["remember", "recall", "forget"]
# views rebuilt from cached activations alone (the within fit from the shift it was made on, by its closed form)
VIEWS = ("explorer", "shift", "within", "across", "steering")


def _path(view: str) -> Path:
    if view not in VIEWS:
        raise ValueError(f"not a view with a remembered request: {view!r}")
    return cache_root() / "views" / f"{view}.json"


def remember(view: str, request: dict) -> None:
    """Keep `request` as `view`'s last computed one (atomic write; JSON values only). On a cache that cannot be
    written the write is skipped, with the cache's one notice (`store.write_notice`): the view still shows."""
    path = _path(view)
    plain = {k: v for k, v in request.items() if isinstance(v, (str, int, float, bool)) or v is None}
    plain["trust"] = False
    if recall().get(view) == plain:
        return  # the same view again (a rerun, a link reopened): nothing to write
    try:
        store.write_text_atomic(path, json.dumps({"view": view, "request": plain, "created": store.now_iso()}))
    except OSError as e:
        store.skipped_write(e, f"the {view} view's last request")


def recall() -> dict[str, dict]:
    """view -> its last request, for every view that has one: a file that is unreadable, or holds JSON of
    another shape (a list, a request that is not an object of plain values), counts as none."""
    out = {}
    for view in VIEWS:
        request = (store.read_json(_path(view)) or {}).get("request")
        if isinstance(request, dict) and all(isinstance(k, str) and (v is None or isinstance(v, (str, int, float, bool)))
                                             for k, v in request.items()):
            out[view] = request
    return out


def forget(view: str) -> None:
    _path(view).unlink(missing_ok=True)
