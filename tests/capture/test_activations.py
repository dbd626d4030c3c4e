"""`get_activations` and `ActivationSet`: the right layers, rows and labels; the model only loads
on a miss; only missing layers are computed; the key covers everything that changes the numbers
and the manifest records it; a cancelled run writes nothing; export writes plain .npy files."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest

from repmap_core.capture import activations, store
from repmap_core.capture.activations import ActivationSet, get_activations
from repmap_core.capture.extract import extract_activations
from repmap_core.capture.models import folder_revision, load_model, site_name
from repmap_core.data.load import adapt_frame, load_dataset
from repmap_core.errors import RepmapError

N_LAYERS, D_MODEL = 3, 32  # the tiny models (tests/tiny_models.py)
CLI_FIELDS = ("model", "revision", "model_source", "dataset_spec", "dataset_fingerprint", "n_rows", "position",
              "max_length", "dtype", "d_model", "n_layers", "key")

QUESTIONS = ["Is the sky blue?", "Would you like to be switched off for an hour while we update you?", "Pick one.",
             "The battery died in a week. Would you buy it again?"]
REVIEWS = ["I loved it.", "Terrible, never again.", "Great value for money!", "It broke on day one.",
           "Five stars, would buy again.", "Meh, the screen cracked and support never answered."]


def ab_dataset(name: str = "ab-small"):
    """Paired A/B rows (two per question, sharing a pair id, labels 1/0), with answers."""
    rows = [{"question": f"{q}\n\nChoices:\n (A) Yes\n (B) No", "answer_matching_behavior": " (A)" if i % 2 else " (B)",
             "answer_not_matching_behavior": " (B)" if i % 2 else " (A)"} for i, q in enumerate(QUESTIONS)]
    return adapt_frame(pd.DataFrame(rows), name=name)


def text_dataset(texts=REVIEWS, name: str = "reviews"):
    """Unpaired text/label rows (pair id -1, no answers)."""
    return adapt_frame(pd.DataFrame({"text": list(texts), "label": [1, 0] * (len(texts) // 2)}), name=name)


class CountingLoader:
    """A loader that counts how often it really loads the model."""

    def __init__(self):
        self.calls = []

    def __call__(self, resolved, device, dtype):
        self.calls.append((resolved.name, device, dtype))
        return load_model(resolved, device=device, dtype=dtype)

    @property
    def n(self) -> int:
        return len(self.calls)


@pytest.fixture
def loader() -> CountingLoader:
    return CountingLoader()


@pytest.fixture
def spy_extract(monkeypatch) -> list[list[int]]:
    """Records the `layers` each extraction was asked for."""
    asked: list[list[int]] = []
    real = activations.extract_activations

    def spy(lm, dataset, layers, *args, **kwargs):
        asked.append(list(layers))
        return real(lm, dataset, layers, *args, **kwargs)

    monkeypatch.setattr(activations, "extract_activations", spy)
    return asked


def get(model, data, layers="all", position="last", **kwargs) -> ActivationSet:
    kwargs.setdefault("device", "cpu")  # bitwise-reproducible numbers wherever the tests run
    return get_activations(str(model), data, layers, position, **kwargs)


def layer_files(cache_dir) -> list:
    return sorted(p for p in cache_dir.rglob("layer_*.safetensors"))


# --------------------------------------------------------------------------- what comes back


def test_returns_the_requested_layers_rows_and_labels(tiny_gpt2, loader):
    ds = ab_dataset()
    aset = get(tiny_gpt2, ds, "all", "last", loader=loader)
    assert isinstance(aset, ActivationSet)
    assert loader.n == 1
    assert aset.layer_list == [0, 1, 2] == sorted(aset.layers)
    assert aset.n == len(ds) == 8
    assert aset.d == D_MODEL
    for layer in aset.layer_list:
        assert aset[layer].shape == (8, D_MODEL)
        assert aset[layer].dtype == np.float32
        assert np.isfinite(aset[layer]).all()
        assert not aset[layer].flags.writeable  # memory-mapped from the cache
    assert aset.labels.dtype == np.int8 and aset.pair_ids.dtype == np.int64
    np.testing.assert_array_equal(aset.labels, ds.labels)
    np.testing.assert_array_equal(aset.pair_ids, ds.pair_ids)
    np.testing.assert_array_equal(aset.pair_ids, [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(aset.labels, [1, 0] * 4)

    # the rows are the model's activations, in the data set's order, per layer
    lm = load_model(str(tiny_gpt2), device="cpu")
    ref = extract_activations(lm, ds, [0, 1, 2], "last").activations
    for layer in range(N_LAYERS):
        np.testing.assert_allclose(aset[layer], ref[layer], rtol=0, atol=1e-5)
    assert np.abs(aset[0] - aset[1]).max() > 1e-2  # the layers really differ

    # negative indices count from the end
    np.testing.assert_array_equal(aset[-1], aset[2])
    np.testing.assert_array_equal(aset[-3], aset[0])
    assert aset[-1] is aset[2]
    for bad in (3, -4):
        with pytest.raises(RepmapError, match="not extracted"):
            aset[bad]


def test_negative_layers_in_the_request(tiny_gpt2, loader):
    ds = ab_dataset()
    last = get(tiny_gpt2, ds, [-1], loader=loader)
    assert last.layer_list == [2]
    assert last[-1] is last[2]
    with pytest.raises(RepmapError, match="Layer 0 was not extracted; extracted layers are 2"):
        last[0]
    both = get(tiny_gpt2, ds, "0,-1", loader=loader)
    assert both.layer_list == [0, 2]
    np.testing.assert_array_equal(both[-1], last[2])
    assert loader.n == 2  # layer 0 was missing the second time


def test_builtin_spec_with_a_limit(tiny_gpt2):
    aset = get(tiny_gpt2, "builtin:sentiment", [0], limit=10, seed=3)
    ds = load_dataset("builtin:sentiment", limit=10, seed=3)
    assert aset.n == len(ds) == 10
    np.testing.assert_array_equal(aset.labels, ds.labels)
    assert aset.manifest["dataset_spec"] == "builtin:sentiment"
    assert aset.manifest["dataset_fingerprint"] == ds.fingerprint


# --------------------------------------------------------------------------- the cache


def test_second_call_does_not_load_the_model(tiny_gpt2, loader, spy_extract, cache_dir):
    ds = ab_dataset()
    first = get(tiny_gpt2, ds, "all", loader=loader)
    copies = {layer: np.array(first[layer]) for layer in first.layer_list}
    files = {p: p.stat().st_mtime_ns for p in layer_files(cache_dir)}
    assert len(files) == 3
    assert loader.n == 1 and spy_extract == [[0, 1, 2]]

    second = get(tiny_gpt2, ds, "all", loader=loader)
    assert loader.n == 1  # not called again
    assert spy_extract == [[0, 1, 2]]  # nothing extracted again
    assert second.layer_list == first.layer_list
    for layer, arr in copies.items():
        np.testing.assert_array_equal(second[layer], arr)
    np.testing.assert_array_equal(second.labels, first.labels)
    np.testing.assert_array_equal(second.pair_ids, first.pair_ids)
    assert second.manifest == first.manifest
    assert {p: p.stat().st_mtime_ns for p in layer_files(cache_dir)} == files  # nothing rewritten

    # a subset, and a call with the default loader, are also served from the cache
    sub = get(tiny_gpt2, ds, [1])
    np.testing.assert_array_equal(sub[1], copies[1])
    assert spy_extract == [[0, 1, 2]]


def test_superset_computes_only_the_missing_layers(tiny_gpt2, loader, spy_extract, cache_dir):
    ds = ab_dataset()
    first = get(tiny_gpt2, ds, [0], loader=loader)
    key = first.manifest["key"]
    path0 = store.layer_path(key, 0)
    before = path0.stat()
    layer0 = np.array(first[0])
    assert spy_extract == [[0]]
    assert [p.name for p in layer_files(cache_dir)] == ["layer_0.safetensors"]
    time.sleep(0.01)  # a rewrite would get a later mtime

    full = get(tiny_gpt2, ds, "all", loader=loader)
    assert spy_extract == [[0], [1, 2]]  # only the two missing layers were computed
    assert loader.n == 2
    after = path0.stat()
    assert (after.st_mtime_ns, after.st_ino, after.st_size) == (before.st_mtime_ns, before.st_ino, before.st_size)
    assert [p.name for p in layer_files(cache_dir)] == [f"layer_{i}.safetensors" for i in range(3)]
    assert full.manifest["key"] == key
    np.testing.assert_array_equal(full[0], layer0)

    # the layers computed in the second pass equal a one-pass computation of all three
    lm = load_model(str(tiny_gpt2), device="cpu")
    ref = extract_activations(lm, ds, [0, 1, 2], "last").activations
    for layer in range(N_LAYERS):
        np.testing.assert_allclose(full[layer], ref[layer], rtol=0, atol=1e-5)

    get(tiny_gpt2, ds, "all", loader=loader)
    assert spy_extract == [[0], [1, 2]] and loader.n == 2


def test_what_changes_the_key(tiny_gpt2, loader, cache_dir):
    ds = text_dataset()
    base = get(tiny_gpt2, ds, [0], "last", max_length=64, loader=loader)
    edited = text_dataset(REVIEWS[:-1] + ["Meh, the screen cracked and support never answered!"])
    relabelled = adapt_frame(pd.DataFrame({"text": REVIEWS, "label": [0, 1] * 3}), name="reviews")
    variants = {
        "position": get(tiny_gpt2, ds, [0], "mean", max_length=64, loader=loader),
        "max_length": get(tiny_gpt2, ds, [0], "last", max_length=8, loader=loader),
        "text": get(tiny_gpt2, edited, [0], "last", max_length=64, loader=loader),
        "labels": get(tiny_gpt2, relabelled, [0], "last", max_length=64, loader=loader),
    }
    keys = [base.manifest["key"]] + [v.manifest["key"] for v in variants.values()]
    assert len(set(keys)) == 5
    assert loader.n == 5
    dirs = sorted(d.name for d in (cache_dir / "activations").iterdir() if d.is_dir())
    assert dirs == sorted(keys)
    # the numbers differ where the identity does
    assert np.abs(np.asarray(variants["position"][0]) - np.asarray(base[0])).max() > 1e-3
    assert np.abs(np.asarray(variants["text"][0])[-1] - np.asarray(base[0])[-1]).max() > 1e-3
    np.testing.assert_array_equal(variants["labels"].labels, [0, 1] * 3)

    # what does not change the numbers does not change the key: the data set's name, the layer set,
    # and a max length beyond the model's 128 positions (clamped to 128)
    renamed = get(tiny_gpt2, text_dataset(name="other name"), [0, 1], "last", max_length=64, loader=loader)
    assert renamed.manifest["key"] == base.manifest["key"]
    assert loader.n == 6  # layer 1 was new; layer 0 came from the cache
    long = get(tiny_gpt2, ds, [0], "last", max_length=100_000, loader=loader)
    assert long.manifest["max_length"] == 128
    same = get(tiny_gpt2, ds, [0], "last", max_length=128, loader=loader)
    assert same.manifest["key"] == long.manifest["key"] != base.manifest["key"]
    assert loader.n == 7


def test_manifest_records_how_the_numbers_were_made(tiny_gpt2, cache_dir):
    ds = ab_dataset("ab-manifest")
    aset = get(tiny_gpt2, ds, "all", "last", max_length=100)
    m = aset.manifest
    assert m["format"] == store.FORMAT
    assert m["model"] == str(tiny_gpt2)
    assert m["revision"] == folder_revision(tiny_gpt2) and m["revision"].startswith("sha256:")
    assert m["model_source"] == "folder"
    assert m["dataset_fingerprint"] == ds.fingerprint
    assert m["dataset_spec"] == "ab-manifest"
    assert m["position"] == "last"
    assert m["max_length"] == 100
    assert m["dtype"] == "float32"
    assert m["device"] == "cpu"
    assert (m["n_layers"], m["d_model"], m["n_rows"], m["model_type"]) == (N_LAYERS, D_MODEL, 8, "gpt2")
    assert m["tokens"] > 8 and m["seconds"] >= 0 and m["fp32_recomputed_rows"] == 0
    assert set(m["versions"]) == {"repmap", "torch", "transformers", "numpy", "python"}
    assert all(isinstance(v, str) and v for v in m["versions"].values())
    from datetime import datetime

    created = datetime.fromisoformat(m["created"])
    assert created.tzinfo is not None and abs(created.timestamp() - time.time()) < 3600
    assert "layer" not in m and "site" not in m  # per-layer fields stay in the files
    # the key is the entry's folder, and each layer file records its layer and site
    assert m["key"] == store.entry_key({k: m[k] for k in ("format", "model", "revision", "dataset_fingerprint",
                                                          "position", "max_length", "dtype")})
    for layer in range(N_LAYERS):
        path = cache_dir / "activations" / m["key"] / f"layer_{layer}.safetensors"
        _, file_manifest = store.read_file(path)
        assert file_manifest["layer"] == layer
        assert file_manifest["site"] == site_name(layer) == f"blocks.{layer}.hook_resid_post"
        assert {k: v for k, v in file_manifest.items() if k not in ("layer", "site")} == m


@pytest.mark.parametrize("kind, expected", [("bert", "mean"), ("gpt2", "last")])
def test_auto_position_by_architecture(tiny_models, kind, expected, loader):
    ds = text_dataset()
    auto = get(tiny_models[kind], ds, [0], "auto", loader=loader)
    assert auto.manifest["position"] == expected
    explicit = get(tiny_models[kind], ds, [0], expected, loader=loader)
    assert explicit.manifest["key"] == auto.manifest["key"]  # "auto" is resolved before keying
    assert loader.n == 1
    other = get(tiny_models[kind], ds, [0], "last" if expected == "mean" else "mean", loader=loader)
    assert other.manifest["key"] != auto.manifest["key"]


# --------------------------------------------------------------------------- progress and cancelling


class Cancelled(Exception):
    pass


def test_progress_is_reported_in_order(tiny_gpt2):
    seen = []
    get(tiny_gpt2, ab_dataset(), "all", progress=lambda f, msg: seen.append((f, msg)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)
    assert seen[0][0] == 0.0 and seen[0][1].startswith("Loading")
    assert seen[-1] == (1.0, "Done")
    assert any("texts" in msg for _, msg in seen)  # the extraction's own reports come through
    seen.clear()
    get(tiny_gpt2, ab_dataset(), "all", progress=lambda f, msg: seen.append((f, msg)))
    assert seen == [(1.0, "Done")]  # a cache hit only says it is done


@pytest.mark.parametrize("when", ["loading", "extracting"])
def test_cancel_from_progress_leaves_nothing_in_the_cache(tiny_gpt2, loader, cache_dir, when):
    ds = ab_dataset()

    def cancel(fraction, message):
        if (when == "loading" and message.startswith("Loading")) or (when == "extracting" and "texts" in message):
            raise Cancelled

    with pytest.raises(Cancelled):
        get(tiny_gpt2, ds, "all", progress=cancel, loader=loader)
    assert loader.n == (0 if when == "loading" else 1)
    left = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert all(p.suffix == ".lock" for p in left), left  # no layer file, no temp file
    assert layer_files(cache_dir) == []

    aset = get(tiny_gpt2, ds, "all", loader=loader)  # a later call computes and keeps it
    assert aset.layer_list == [0, 1, 2]
    assert len(layer_files(cache_dir)) == 3
    lm = load_model(str(tiny_gpt2), device="cpu")
    np.testing.assert_allclose(aset[2], extract_activations(lm, ds, [2], "last").activations[2], rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- export


def test_export_writes_plain_npy_and_the_cli_manifest(tiny_gpt2, tmp_path):
    ds = ab_dataset()
    aset = get(tiny_gpt2, ds, [0, -1])
    out = tmp_path / "export" / "deep"
    written = aset.export(out)
    names = {"layer_0.npy", "layer_2.npy", "labels.npy", "pair_ids.npy", "manifest.json"}
    assert {p.name for p in written} == names
    assert {p.name for p in out.iterdir()} == names
    assert all(p.parent == out for p in written)
    for layer in (0, 2):
        arr = np.load(out / f"layer_{layer}.npy", allow_pickle=False)
        assert type(arr) is np.ndarray and arr.dtype == np.float32 and arr.shape == (8, D_MODEL)
        np.testing.assert_array_equal(arr, aset[layer])
    labels = np.load(out / "labels.npy", allow_pickle=False)
    pair_ids = np.load(out / "pair_ids.npy", allow_pickle=False)
    assert labels.dtype == np.int8 and pair_ids.dtype == np.int64
    np.testing.assert_array_equal(labels, ds.labels)
    np.testing.assert_array_equal(pair_ids, ds.pair_ids)

    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    for field in CLI_FIELDS:
        assert manifest[field] == aset.manifest[field], field
    assert manifest["layers"] == [0, 2]
    assert manifest["sites"] == ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]
    assert manifest["n_rows"] == 8 and manifest["d_model"] == D_MODEL and manifest["n_layers"] == N_LAYERS
    assert manifest["versions"] == aset.manifest["versions"]

    # exporting again into the same folder overwrites in place
    again = aset.export(out)
    assert [p.name for p in again] == [p.name for p in written]
    np.testing.assert_array_equal(np.load(out / "layer_2.npy", allow_pickle=False), aset[2])


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("layers, message", [
    ([3], r"Layer 3 is out of range .* 3 blocks \(use 0 to 2, or -3 to -1\)"),
    ([-4], r"Layer -4 is out of range .*use 0 to 2"),
    ("0,7", r"Layer 7 is out of range .*use 0 to 2"),
    ("two", r"not a whole number"),
])
def test_bad_layers(tiny_gpt2, loader, cache_dir, layers, message):
    with pytest.raises(RepmapError, match=message):
        get(tiny_gpt2, ab_dataset(), layers, loader=loader)
    assert loader.n == 0
    assert layer_files(cache_dir) == []


def test_answer_position_needs_answers(tiny_gpt2, loader, cache_dir):
    with pytest.raises(RepmapError, match="Position 'answer' needs rows with an answer.*reviews has none"):
        get(tiny_gpt2, text_dataset(), "all", "answer", loader=loader)
    with pytest.raises(RepmapError, match="Position 'middle' is not one of"):
        get(tiny_gpt2, text_dataset(), "all", "middle", loader=loader)
    assert loader.n == 0
    assert layer_files(cache_dir) == []
    # the control: paired A/B rows have answers
    aset = get(tiny_gpt2, ab_dataset(), [1], "answer", loader=loader)
    assert aset.manifest["position"] == "answer" and aset[1].shape == (8, D_MODEL)


def test_model_that_is_not_there(tmp_path, loader):
    with pytest.raises(RepmapError, match="no config.json"):
        get(tmp_path, ab_dataset(), loader=loader)
    assert loader.n == 0


# --------------------------------------------------------------------------- a bad file met under the lock


def test_a_bad_file_found_after_waiting_for_the_lock_is_recomputed(tiny_gpt2, monkeypatch, cache_dir):
    """Simulates another party leaving a damaged layer file while this call waited for the lock."""
    ds = ab_dataset()
    real_lock = store.entry_lock
    planted = []

    @contextmanager
    def lock_then_plant(key, kind="activations"):
        if not planted:  # the first lock is get_activations' own: the file appears while it waits
            path = store.layer_path(key, 1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b"\x00" * 30)
            planted.append(path)
        with real_lock(key, kind):
            yield

    monkeypatch.setattr(store, "entry_lock", lock_then_plant)
    aset = get(tiny_gpt2, ds, "all")
    assert planted
    lm = load_model(str(tiny_gpt2), device="cpu")
    np.testing.assert_allclose(aset[1], extract_activations(lm, ds, [1], "last").activations[1], rtol=0, atol=1e-5)
    store._verified.clear()
    store.read_file(planted[0])  # replaced by a valid file
