"""What each array export holds: the arrays a view's fit or vectors leave the app as, and the manifest
that says what they are and where they came from (models, revisions, layers, data, settings, metrics).

- `export_manifest(kind, tensors, **fields)`: the fields every array export carries.
- `within_export` (A, b, δ of the within-model fit), `map_export` (a map and the probe it carries,
  described by `map_manifest`), `steering_export` (CAA vectors, readable by `steering.load_vectors`).

Each returns `(tensors, manifest)`; `share/exports.py` writes them as safetensors (the file format),
the views' fits (`view_fits.py`) build them as they fit.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np

from repmap_core import __version__
from repmap_core.capture.model_layout import site_name
from repmap_core.jsonable import json_default
from repmap_core.steering.vectors import vectors_metadata

ARRAYS_FORMAT = "repmap.arrays/1"


def export_manifest(kind: str, tensors: dict[str, np.ndarray], **fields) -> dict:
    """The fields every array export carries: format, kind, shapes and dtypes of its arrays, the
    repmap version and the time it was made; then `fields` (models, layers, data, metrics...)."""
    return {"format": ARRAYS_FORMAT, "kind": kind, "repmap_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "arrays": {k: {"shape": list(np.shape(v)), "dtype": str(np.asarray(v).dtype)} for k, v in tensors.items()},
            **json.loads(json.dumps(fields, sort_keys=True, default=json_default, ensure_ascii=False))}


def _source(m: dict) -> dict:
    """The identifying part of an `ActivationSet.manifest`."""
    return {k: m.get(k) for k in ("model", "revision", "position", "d_model", "dtype", "key")}


def _data(m: dict) -> dict:
    return {"spec": m.get("dataset_spec"), "fingerprint": m.get("dataset_fingerprint"), "n_rows": m.get("n_rows")}


def map_export(A: np.ndarray, b: np.ndarray, map_manifest: dict, probe: dict[str, np.ndarray] | None = None
               ) -> tuple[dict[str, np.ndarray], dict]:
    """A fitted source → target map `t ≈ A s + b` (A (d_t, d_s), b (d_t,)) and, when given, the
    source probe and its carried forms (`between.transferred_probe`). `map_manifest`: the
    Across page's manifest (models, revisions, layers, data, method, metrics, transfer)."""
    tensors = {"A": A, "b": b, **(probe or {})}
    return tensors, export_manifest("map", tensors, **map_manifest)


def within_export(A: np.ndarray, b: np.ndarray, delta: np.ndarray, result, base_manifest: dict, finetuned_manifest: dict,
                  layer: int, settings: dict) -> tuple[dict[str, np.ndarray], dict]:
    """The within-model fit λ̃ ≈ Aλ + b + y·δ (A (d, d), b (d,), δ (d,)) with its metrics: δ's
    projection accuracies, the Table 1 probes, R², δ's cosines. `result`: a `WithinResult`."""
    tensors = {"A": A, "b": b, "delta": delta}
    return tensors, export_manifest(
        "within_fit", tensors, convention="λ̃ ≈ A λ + b + y δ, y = ±1; A (d, d), b (d,), delta (d,)",
        base=_source(base_manifest), finetuned=_source(finetuned_manifest), layer=int(layer), site=site_name(layer),
        data=_data(base_manifest), settings=settings,
        metrics={"delta_projection_accuracy": result.delta_projection_accuracy,
                 "delta_projection_accuracy_centered": result.delta_projection_accuracy_centered,
                 "fit": result.fit, "probe": result.probe, "delta_cosine": result.delta_cosine,
                 "intervals": {k: e.as_dict() for k, e in getattr(result, "intervals", {}).items()}},
        n_train=result.n_train, n_test=result.n_test, fit_labels=result.fit_labels)


def steering_export(vectors: dict, activations_manifest: dict, settings: dict
                    ) -> tuple[dict[str, np.ndarray], dict, dict[str, str]]:
    """CAA steering vectors (layer -> `SteeringVector`, each (d,)) as `layer_<L>` arrays, a manifest
    (model, revision, layers, data, method, norms, pairs) and the header entry `steering.load_vectors`
    reads back, so the file opens in repmap again."""
    layers = sorted(vectors)
    tensors = {f"layer_{L}": vectors[L].vector for L in layers}
    first = vectors[layers[0]]
    manifest = export_manifest(
        "steering_vectors", tensors, method=f"CAA ({first.method})", model=first.model or activations_manifest.get("model"),
        revision=first.revision or activations_manifest.get("revision"), position=first.position,
        layers=layers, sites=[site_name(L) for L in layers], data=_data(activations_manifest),
        norms={str(L): vectors[L].norm for L in layers}, pairs={str(L): int(vectors[L].count) for L in layers},
        settings=settings)
    return tensors, manifest, vectors_metadata({L: vectors[L] for L in layers})


def map_manifest(source: dict, target: dict, layers: tuple[int, int], method: str, params: dict, result,
                 test_frac: float, seed: int) -> dict:
    """What a saved map needs to be reused and trusted: both models and revisions, the layers, the
    data fingerprint, the position, the method and its parameters, and the held-out metrics.
    `source`, `target`: `ActivationSet.manifest`s; `result`: a `BetweenResult`."""
    def side(m: dict, layer: int) -> dict:
        return {"model": m["model"], "revision": m["revision"], "layer": int(layer), "site": site_name(layer),
                "d_model": int(m["d_model"]), "position": m["position"], "cache_key": m["key"]}

    return {"format": "repmap.map/1", "convention": "t ≈ A s + b; A (d_t, d_s), b (d_t,)",
            "source": side(source, layers[0]), "target": side(target, layers[1]),
            "data": {"spec": source["dataset_spec"], "fingerprint": source["dataset_fingerprint"],
                     "n_rows": int(source["n_rows"])},
            "method": method, "params": params, "test_frac": float(test_frac), "seed": int(seed),
            "metrics": result.map, "probe": result.probe,
            "transfer": {k: v for k, v in result.transfer.items() if k != "details"},
            "intervals": {k: e.as_dict() for k, e in getattr(result, "intervals", {}).items()},
            "n_train": result.n_train, "n_test": result.n_test}
