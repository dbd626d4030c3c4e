"""Tests for repmap_core.results.manifests: what each array export's manifest says (kind, arrays, models,
layers, data, metrics), checked on planted fits, and that the safetensors files carry it back."""
from __future__ import annotations

import json

import numpy as np
import pytest

from repmap_core import __version__
from repmap_core.analysis.between import between_models
from repmap_core.analysis.within import within_model
from repmap_core.results.manifests import (
    ARRAYS_FORMAT,
    export_manifest,
    map_export,
    map_manifest,
    steering_export,
    within_export,
)
from repmap_core.share.exports import arrays_safetensors, read_arrays
from repmap_core.steering.vectors import SteeringVector, load_vectors

SIDE = {"model": "gpt2", "revision": "abc", "d_model": 12, "position": "last", "key": "k1", "dtype": "float32",
        "dataset_spec": "builtin:sentiment", "dataset_fingerprint": "fp", "n_rows": 300}


def planted_between(n: int = 300, d_s: int = 12, d_t: int = 16, seed: int = 0):
    """Source rows whose label is the sign of a planted direction; target = a planted affine map of them."""
    rng = np.random.default_rng(seed)
    S = rng.normal(size=(n, d_s)).astype(np.float32)
    y = (S @ rng.normal(size=d_s) > 0).astype(np.int64)
    T = (S @ rng.normal(size=(d_s, d_t)) + 0.5 + 0.01 * rng.normal(size=(n, d_t))).astype(np.float32)
    return S, T, y


def test_every_export_manifest_names_its_format_kind_arrays_and_version():
    tensors = {"A": np.zeros((3, 2), np.float32), "n": np.arange(4)}
    m = export_manifest("map", tensors, metrics={"r2": np.float32(0.5), "n": np.int64(7)})
    assert m["format"] == ARRAYS_FORMAT and m["kind"] == "map" and m["repmap_version"] == __version__
    assert m["arrays"] == {"A": {"shape": [3, 2], "dtype": "float32"}, "n": {"shape": [4], "dtype": "int64"}}
    assert m["metrics"] == {"r2": 0.5, "n": 7} and m["created"]
    assert json.loads(json.dumps(m)) == m  # plain JSON: numpy scalars became numbers


def test_map_safetensors_round_trips_the_map_and_its_manifest(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load

    S, T, y = planted_between()
    result, fitted = between_models(S, T, y, method="ridge")
    side = {"model": "gpt2", "revision": "abc", "d_model": 12, "position": "last", "key": "k1",
            "dataset_spec": "builtin:sentiment", "dataset_fingerprint": "fp", "n_rows": 300}
    manifest = map_manifest(side, dict(side, model="gpt2-xl", d_model=16, key="k2"), (6, -1), "ridge", {"alpha": None},
                            result, 0.2, 0)
    assert manifest["source"]["site"] == "blocks.6.hook_resid_post" and manifest["target"]["model"] == "gpt2-xl"
    assert manifest["data"]["fingerprint"] == "fp" and manifest["metrics"]["r2_test"] == result.map["r2_test"]
    data = arrays_safetensors({"A": fitted.A_, "b": fitted.b_}, manifest)
    arrays = load(data)
    assert arrays["A"].shape == (16, 12) and np.array_equal(arrays["A"], fitted.A_)
    assert np.array_equal(arrays["b"], fitted.b_)
    path = tmp_path / "map.safetensors"
    path.write_bytes(data)
    with safe_open(str(path), "np") as f:
        back = json.loads(f.metadata()["manifest"])
    assert back["method"] == "ridge" and back["source"]["revision"] == "abc" and back["params"] == {"alpha": None}


def test_map_export_carries_the_map_its_probe_and_the_manifest():
    S, T, y = planted_between()
    result, fitted = between_models(S, T, y, method="ridge")
    manifest = map_manifest(SIDE, dict(SIDE, model="gpt2-xl", d_model=16, key="k2"), (6, -1), "ridge", {"alpha": None},
                            result, 0.2, 0)
    probe = {"probe_source_w": np.ones(12, np.float32)}
    tensors, m = map_export(fitted.A_, fitted.b_, manifest, probe)
    assert set(tensors) == {"A", "b", "probe_source_w"} and tensors["A"] is fitted.A_
    assert m["kind"] == "map" and m["arrays"]["A"]["shape"] == [16, 12] and m["method"] == "ridge"
    assert m["transfer"] == {k: v for k, v in result.transfer.items() if k != "details"}


def test_within_export_holds_a_b_delta_and_the_fits_numbers():
    rng = np.random.default_rng(0)
    before = rng.normal(size=(240, 8))
    y = np.arange(240) % 2
    after = before @ (np.eye(8) + 0.1 * rng.normal(size=(8, 8))) + np.outer(2 * y - 1, rng.normal(size=8))
    result, fit = within_model(before, after, y)
    tensors, m = within_export(fit.A_, fit.b_, fit.delta_, result, SIDE, dict(SIDE, model="gpt2-ft"), 6, {"method": "lstsq"})
    assert set(tensors) == {"A", "b", "delta"} and np.array_equal(tensors["delta"], fit.delta_)
    assert m["kind"] == "within_fit" and m["layer"] == 6 and m["site"] == "blocks.6.hook_resid_post"
    assert m["base"]["model"] == "gpt2" and m["finetuned"]["model"] == "gpt2-ft" and m["data"]["fingerprint"] == "fp"
    assert m["metrics"]["delta_projection_accuracy"] == pytest.approx(result.delta_projection_accuracy)
    assert m["n_train"] == result.n_train and m["settings"] == {"method": "lstsq"}


def test_steering_export_reopens_as_the_same_vectors(tmp_path):
    rng = np.random.default_rng(0)
    vectors = {L: SteeringVector(rng.normal(size=8).astype(np.float32), layer=L, count=20, model="gpt2", revision="abc",
                                 position="answer", method="mean_diff") for L in (2, 5)}
    tensors, m, header = steering_export(vectors, SIDE, {"limit": 40})
    assert sorted(tensors) == ["layer_2", "layer_5"] and m["kind"] == "steering_vectors" and m["layers"] == [2, 5]
    assert m["method"] == "CAA (mean_diff)" and m["pairs"] == {"2": 20, "5": 20}
    assert m["norms"]["5"] == pytest.approx(vectors[5].norm)
    path = tmp_path / "vectors.safetensors"
    path.write_bytes(arrays_safetensors(tensors, m, header))
    assert read_arrays(path.read_bytes())[1] == json.loads(json.dumps(m))
    back = load_vectors(path)
    assert {L: v.vector.tolist() for L, v in back.items()} == {L: v.vector.tolist() for L, v in vectors.items()}
