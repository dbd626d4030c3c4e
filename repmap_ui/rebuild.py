"""Views rebuilt from a remembered request and the cache alone (nothing extracted): after a refresh,
in a new session, or for Share. Each returns the same state dict its page computes, or None when
some activations are not in the cache."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from repmap_core.activations import cached_activations
from repmap_core.data import load_dataset
from repmap_core.errors import RepmapError
from repmap_core.finetune import MANIFEST_NAME, read_finetune_manifest
from repmap_core.probes import layer_separation
from repmap_core.recent import recall

STATE_KEYS = {"explorer": "explorer.result", "shift": "shift.result", "across": "across.result"}


@st.cache_data(show_spinner=False, max_entries=64)
def separation_rows(key: str, layers: tuple[int, ...], _aset) -> list:
    """Per-layer separation of an activation set, kept per process by its cache key and layers (the
    memory-mapped arrays are not hashed): the layer explorer, the shift page and rebuilt views share it."""
    return layer_separation({L: _aset[L] for L in layers}, _aset.labels, _aset.pair_ids)


def explorer(req: dict) -> dict | None:
    dataset = load_dataset(req["data"], text_col=req.get("text_col") or None, label_col=req.get("label_col") or None,
                           limit=req.get("limit") or None)
    aset = cached_activations(req["model"], dataset, req["layers"], req["position"], max_length=req.get("max_length", 512))
    if aset is None:
        return None
    return {"request": req, "dataset": dataset, "aset": aset,
            "rows": separation_rows(aset.manifest["key"], tuple(aset.layer_list), aset)}


def shift(req: dict) -> dict | None:
    dataset = load_dataset(req["data"], limit=req.get("limit") or None)
    sets = {k: cached_activations(req[k], dataset, req["layers"], req["position"]) for k in ("base", "finetuned")}
    if any(v is None for v in sets.values()):
        return None
    trained_on = read_finetune_manifest(req["finetuned"])["dataset"] if (Path(req["finetuned"]) / MANIFEST_NAME).exists() else None
    return {"request": req, "dataset": dataset, **sets,
            "rows": {k: separation_rows(v.manifest["key"], tuple(v.layer_list), v) for k, v in sets.items()},
            "in_sample": bool(trained_on) and trained_on.get("fingerprint") == dataset.fingerprint}


def across(req: dict) -> dict | None:
    dataset = load_dataset(req["data"], limit=req.get("limit") or None)
    sets = {k: cached_activations(req[k], dataset, "all", req["position"]) for k in ("source", "target")}
    if any(v is None for v in sets.values()):
        return None
    return {"request": req, "dataset": dataset, "source": sets["source"], "target": sets["target"], "sims": {}}


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
