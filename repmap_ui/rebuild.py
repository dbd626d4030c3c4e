"""Views rebuilt from a remembered request and the cache alone (nothing extracted): after a refresh,
in a new session, or for Share. Each returns the same result its page computes (a dataclass of
`repmap_core.results.view_results`), or None when some activations are not in the cache."""
from __future__ import annotations

import streamlit as st

from repmap_core.analysis.separation import layer_separation
from repmap_core.errors import RepmapError
from repmap_core.results.recent import recall
from repmap_core.results.view_results import (
    AcrossResult,
    ExplorerResult,
    ShiftResult,
    across_result,
    explorer_result,
    shift_result,
)

STATE_KEYS = {"explorer": "explorer.result", "shift": "shift.result", "across": "across.result"}


@st.cache_data(show_spinner=False, max_entries=64)
def separation_rows(key: str, layers: tuple[int, ...], _aset) -> list:
    """Per-layer separation of an activation set, kept per process by its cache key and layers (the
    memory-mapped arrays are not hashed): the layer explorer, the shift page and rebuilt views share it."""
    return layer_separation({L: _aset[L] for L in layers}, _aset.labels, _aset.pair_ids)


def cached_separation(aset) -> list:
    """`separation_rows` of an activation set: the per-process cache the view builders are given."""
    return separation_rows(aset.manifest["key"], tuple(aset.layer_list), aset)


def explorer(req: dict) -> ExplorerResult | None:
    return explorer_result(req, cached_only=True, separation=cached_separation)


def shift(req: dict) -> ShiftResult | None:
    return shift_result(req, cached_only=True, separation=cached_separation)


def across(req: dict) -> AcrossResult | None:
    return across_result(req, cached_only=True)


REBUILD = {"explorer": explorer, "shift": shift, "across": across}


def rebuild_missing(session) -> list[str]:
    """Put every remembered view this session lacks back into it, from the cache; return those rebuilt."""
    done = []
    for view, req in recall().items():
        if session.get(STATE_KEYS[view]) is not None:
            continue
        try:
            state = REBUILD[view](req)
        except (RepmapError, KeyError, TypeError, ValueError):
            continue  # a request from another version, or data that has gone: nothing to rebuild
        if state is not None:
            session[STATE_KEYS[view]] = state
            done.append(view)
    return done
