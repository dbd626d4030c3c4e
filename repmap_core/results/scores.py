"""Per-layer scores kept in the cache, like any other result: a probe's cross-validated accuracy with its
interval and shuffled-label null, silhouette and Fisher ratio (`analysis.separation.layer_separation`) for
each layer of an activation set, named by that set's cache key and every setting that decides the numbers
(`separation.scoring_settings`: folds, split, seed, the probe's penalty, the null's shuffles and row cap).

So a view whose activations are cached opens in seconds whatever the null costs (100 shuffles a layer, about
0.3-1 s a layer on SmolLM2 here): the Layer explorer, the Finetuning shift, the demo tour and a view rebuilt
after a refresh all read the same kept rows. Only the layers not kept yet are scored (asking for every layer
after three scores the rest), and two sessions asking at once score once (`capture.memo.records_memo`).

    >>> rows = layer_scores(aset, progress=print)   # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses

from repmap_core.analysis.separation import LayerSeparation, layer_separation, scoring_settings
from repmap_core.capture.activations import ActivationSet
from repmap_core.capture.memo import NotCached, records_memo
from repmap_core.progress import Progress

__all__ = ["layer_scores", "scores_cached", "NotCached"]


def _memo(aset: ActivationSet, settings: dict, may_compute: bool):
    return records_memo({"activations": str(aset.manifest["key"]), "rows": int(aset.n), **settings}, "scores",
                        "separation", may_compute=may_compute)


def _record(row: LayerSeparation) -> dict:
    return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}


def _row(record: dict) -> LayerSeparation:
    names = {f.name for f in dataclasses.fields(LayerSeparation)}
    return LayerSeparation(**{k: (float("nan") if v is None else v) for k, v in record.items() if k in names})


def layer_scores(aset: ActivationSet, layers=None, *, progress: Progress | None = None, may_compute: bool = True,
                 **scoring) -> list[LayerSeparation]:
    """`layer_separation` of `aset`'s `layers` (all by default), in layer order, read from the cache where kept
    and scored (then kept) where not. `progress(fraction, message)` follows the layers scored. `scoring` takes
    `layer_separation`'s settings (folds, test_frac, seed, null_permutations). With `may_compute=False`, a
    layer not kept raises `NotCached` (nothing is scored)."""
    layers = sorted(int(L) for L in (aset.layer_list if layers is None else layers))
    settings = scoring_settings(**scoring)

    def compute(missing: list[int]) -> dict[int, dict]:
        if progress:
            progress(0.0, f"Scoring {len(missing)} layer{'s' if len(missing) > 1 else ''} (a probe and its null each)")
        rows = layer_separation({L: aset[L] for L in missing}, aset.labels, aset.pair_ids, progress=progress,
                                **scoring)
        return {r.layer: _record(r) for r in rows}

    kept = _memo(aset, settings, may_compute)(layers, compute)
    return [_row(kept[L]) for L in layers]


def scores_cached(aset: ActivationSet, layers=None, **scoring) -> bool:
    """True when every layer's scores of `aset` are kept (a view would open without scoring anything)."""
    try:
        layer_scores(aset, layers, may_compute=False, **scoring)
    except NotCached:
        return False
    return True

