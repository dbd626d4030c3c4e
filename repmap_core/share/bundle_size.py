"""What makes a bundle smaller, and the largest one that fits a cap: its data sets sampled to fewer rows
(the activation sets of the same rows follow them), and its activations stored as float16.

Activations are most of a bundle's bytes (SmolLM2 on the 800 reviews, 30 blocks of 576 floats: 55 MB in
float32), so float16 halves a bundle while every result stays as computed (scores, fits, vectors are kept
in float32): a projection redrawn from float16 activations differs from the original by about 1 part in
2,000 of each value. A layer with a value float16 cannot hold (|x| > 65,504, or not finite) stays float32.
The importer reads float16 back as float32, so the pages compute as they always do.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from repmap_core.errors import RepmapError

HALF_MAX = float(np.finfo(np.float16).max)  # 65,504


def _items(state: Any) -> dict | None:
    """A state's parts by name (a dict's items, or a dataclass's fields), or None for anything else."""
    if isinstance(state, dict):
        return state
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return {f.name: getattr(state, f.name) for f in dataclasses.fields(state) if f.init}
    return None


def _rebuilt(state: Any, parts: dict) -> Any:
    return parts if isinstance(state, dict) else dataclasses.replace(state, **parts)


def subsample(state: Any, max_rows: int, seed: int) -> Any:
    """A copy of `state` in which each data set of more than `max_rows` rows, and the activation
    sets of the same rows beside it, keep a seeded sample of rows (both classes in proportion)."""
    from repmap_core.analysis.projection import sample_rows
    from repmap_core.capture.activations import ActivationSet
    from repmap_core.data.load import TextDataset

    items = _items(state)
    if items is None:
        return state
    ds = next((v for v in items.values() if isinstance(v, TextDataset)), None)
    if ds is None or len(ds) <= max_rows:
        return state
    rows = sample_rows(ds.labels, max_rows, seed)
    note = {"kept": int(len(rows)), "of": int(len(ds)), "seed": int(seed)}
    out = {}
    for k, v in items.items():
        if isinstance(v, TextDataset):
            v = v.take(rows)
        elif isinstance(v, ActivationSet) and v.n == len(ds):
            # a new key: projections cached under the full set's key must not be reused for these rows
            key = f"{v.manifest.get('key', '')}~rows{len(rows)}of{len(ds)}s{seed}"
            v = ActivationSet({L: np.asarray(a)[rows] for L, a in v.layers.items()}, v.labels[rows], v.pair_ids[rows],
                              dict(v.manifest, key=key, bundle_rows=note))
        out[k] = v
    return _rebuilt(state, out)


def half(a: np.ndarray) -> np.ndarray:
    """`a` as float16 when every value fits (finite, |x| ≤ 65,504), else `a` itself."""
    a = np.asarray(a)
    if a.dtype != np.float32 and a.dtype != np.float64:
        return a
    if a.size and not (np.isfinite(a).all() and float(np.abs(a).max()) <= HALF_MAX):
        return a  # a massive activation or an inf: float32 keeps it
    return a.astype(np.float16)


def halved(state: Any, memo: dict[int, np.ndarray] | None = None) -> Any:
    """A copy of `state` whose activation sets hold float16 layers where their values fit (the manifest says
    `bundle_dtype: float16` then). `memo` (id of an array -> its float16 copy) keeps an array shared by two
    sets (a model against itself) stored once."""
    from repmap_core.capture.activations import ActivationSet

    memo = {} if memo is None else memo
    items = _items(state)
    if items is None:
        return state
    out, changed = {}, False
    for k, v in items.items():
        if isinstance(v, ActivationSet):
            layers = {}
            for L, a in v.layers.items():
                if id(a) not in memo:
                    memo[id(a)] = half(a)
                layers[L] = memo[id(a)]
            if any(a.dtype == np.float16 for a in layers.values()):
                v, changed = ActivationSet(layers, v.labels, v.pair_ids, dict(v.manifest, bundle_dtype="float16")), True
        out[k] = v
    return _rebuilt(state, out) if changed else state


def prepare(states: dict[str, Any], max_rows: int | None, seed: int, float16: bool = False) -> dict[str, Any]:
    """The states a bundle stores: sampled to `max_rows` rows per data set (None: all), activations in float16
    with `float16`."""
    states = {k: v for k, v in states.items() if v is not None}
    out = dict(states)
    if max_rows is not None:
        if max_rows < 2:
            raise RepmapError(f"A bundle needs at least 2 rows per data set, not {max_rows}.")
        out = {k: subsample(v, max_rows, seed) for k, v in states.items()}
        if out.get("across.result") is not states.get("across.result"):
            out.pop("across.selected", None)  # its row numbers were those of the full data set
    if float16:
        memo: dict[int, np.ndarray] = {}
        out = {k: halved(v, memo) for k, v in out.items()}
    return out


def most_rows(states: dict[str, Any]) -> int:
    """The rows of the largest data set among the states (0 without one)."""
    from repmap_core.data.load import TextDataset

    sizes = [len(v) for s in states.values() for v in (_items(s) or {}).values() if isinstance(v, TextDataset)]
    return max(sizes, default=0)


def nice(rows: int) -> int:
    """`rows` rounded down to a number a person would type: 1,234 -> 1,200; 87 -> 80."""
    step = 100 if rows >= 1000 else 50 if rows >= 200 else 10 if rows >= 20 else 1
    return max(rows // step * step, 2)


def rows_that_fit(size: Callable[[int | None], int], largest: int, cap_bytes: int, tries: int = 5) -> int | None:
    """The largest round row cap whose bundle's `size(max_rows)` stays within `cap_bytes`: None when all rows
    fit. Bytes grow about in proportion with rows, so each try scales the last by how far it is over."""
    full = size(None)
    if full <= cap_bytes or largest <= 2:
        return None
    rows, got = largest, full
    for _ in range(tries):
        rows = nice(int(rows * cap_bytes / got * 0.98))
        got = size(rows)
        if got <= cap_bytes or rows <= 2:
            return rows
    return rows
