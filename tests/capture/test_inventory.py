"""Every byte of the cache under a readable name: activation sets, finetuned models, GGUF conversions,
saved data sets, uploads and leftovers add up to the total on disk; deleting an item removes it and
what belongs to it, and nothing outside the cache can be named."""
from __future__ import annotations

import json

import numpy as np
import pytest

from repmap_core.capture import gguf, store
from repmap_core.capture.inventory import CacheItem, delete_item, inventory
from repmap_core.capture.model_config import FINETUNE_MANIFEST
from repmap_core.data.load import TextDataset
from repmap_core.finetune.checkpoints import FORMAT, HEAD_NAME, save_dataset
from repmap_core.locations import cache_root

KEY = "0123456789abcdef" * 2


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPMAP_CACHE", str(tmp_path))
    root = cache_root()
    for layer in (0, 3):  # one activation set of two layers, 5 rows of width 4
        manifest = {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "dataset_spec": "builtin:sentiment",
                    "position": "last", "layer": layer, "n_rows": 5, "d_model": 4, "created": "2026-03-04T05:06:07"}
        store.write_file(store.layer_path(KEY, layer), {"activations": np.zeros((5, 4), np.float32)}, manifest)
    model = root / "models" / ("ab" * 16)
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / HEAD_NAME).write_bytes(b"\0" * 100)
    (model / FINETUNE_MANIFEST).write_text(json.dumps({"format": FORMAT, "base_model": "gpt2", "dataset": {"name": "builtin:sentiment"},
                                                   "metrics": {"val_acc": 0.875}, "created": "2026-03-05T00:00:00"}))
    conv = root / "gguf" / ("cd" * 16)
    conv.mkdir(parents=True)
    (conv / gguf.MANIFEST_NAME).write_text(json.dumps({"model": "org/SmolLM2", "quantization": "Q4_1",
                                                       "source_file": "smol.gguf", "created": "2026-03-01T00:00:00"}))
    ds = TextDataset("weak", ["a", "b"], np.array([1, 0], np.int8), np.full(2, -1), np.full((2, 2), -1))
    save_dataset(ds, "sentiment, weak labels from gpt2")
    (root / "uploads").mkdir()
    (root / "uploads" / "f00dfeed1234567.csv").write_text("text,label\nx,1\n")
    (root / "activations" / f"{KEY}.lock").write_text("")  # a writer's empty lock: not an item
    (root / "stray.txt").write_text("left by hand")
    return root


def test_every_item_has_a_readable_name_and_the_bytes_add_up(cache):
    items = inventory()
    assert sum(i.bytes for i in items) == store.cache_size_bytes()
    names = {i.kind: i.name for i in items}
    assert names["activations"] == "SmolLM2-135M-Instruct · builtin:sentiment · last · 5 rows · layers 0, 3"
    assert names["models"] == "gpt2 finetuned on builtin:sentiment (val acc 0.88)"
    assert names["gguf"] == "SmolLM2 (Q4_1) from smol.gguf"
    assert names["datasets"] == "sentiment, weak labels from gpt2 (2 rows)"
    assert names["uploads"].startswith("upload f00dfeed1234") and names["other"] == "stray.txt"
    planted_dates = [i.kind for i in items if i.kind in ("models", "activations", "gguf")]
    assert planted_dates == ["models", "activations", "gguf"]  # newest first, by the dates their manifests record
    assert next(i for i in items if i.kind == "activations").created == "2026-03-04 05:06"
    assert not any(i.id.endswith(".lock") for i in items)


def test_deleting_an_item_removes_it_and_its_sidecar(cache):
    items = {i.kind: i for i in inventory()}
    delete_item(items["activations"])
    delete_item(items["datasets"])
    assert not (cache / "activations" / KEY).exists()
    assert not list((cache / "datasets").iterdir())  # the rows and their description
    left = {i.kind for i in inventory()}
    assert "activations" not in left and "datasets" not in left and "models" in left


def test_an_item_naming_a_path_outside_its_folder_is_refused(cache, tmp_path):
    outside = tmp_path.parent / "keep-me.txt"
    outside.write_text("not the cache's")
    with pytest.raises(ValueError, match="not a cache item"):
        delete_item(CacheItem("uploads", "../../keep-me.txt", "x", 1, ""))
    assert outside.exists()


def test_per_layer_scores_are_listed_by_the_activations_they_score_and_deleted(cache):
    """Issue 25: per-layer scores are kept in the cache (results.scores), so the Cache page names and deletes them."""
    from repmap_core.capture.memo import records_memo

    records_memo({"activations": KEY, "rows": 5}, "scores", "separation")([0], lambda items: {0: {"layer": 0, "acc": 0.9}})
    items = inventory()
    assert sum(i.bytes for i in items) == store.cache_size_bytes()
    (scores,) = [i for i in items if i.kind == "scores"]
    assert scores.name == "scores of SmolLM2-135M-Instruct · builtin:sentiment · last · 5 rows"
    assert scores.kind_name == "per-layer scores"
    delete_item(scores)
    assert not [i for i in inventory() if i.kind == "scores"]


def test_projections_tour_steps_and_speeds_are_named_for_what_they_hold(cache):
    """The Cache page listed projections as hashes: each is named by its method, the model and data it
    projected (or the before and after of a finetune), its layer, points and seed."""
    from repmap_core.capture import memo, speed

    xy = lambda: np.zeros((5, 2), np.float32)  # noqa: E731
    memo.disk_memo({"activations": KEY, "layer": 3, "rows": 5})({"method": "tsne", "seed": 2, "n": 5}, xy)
    memo.disk_memo({"before": KEY, "after": "ef" * 16, "layer": 0, "rows": 5})({"method": "umap", "seed": 0, "n": 10}, xy)
    (cache / "results").mkdir()
    (cache / "results" / "tour-0a1b.json").write_text(json.dumps({"title": "3. How finetuning moved the representations",
                                                                  "narrative": "…"}))
    speed.record_run("finetune", 10.0, 20.0)
    items = inventory()
    names = sorted(i.name for i in items if i.kind == "projections")
    assert names == ["UMAP of SmolLM2-135M-Instruct · builtin:sentiment before and after finetuning · layer 0 · 5 points · seed 0",
                     "t-SNE of SmolLM2-135M-Instruct · builtin:sentiment · layer 3 · 5 points · seed 2"]
    assert next(i.name for i in items if i.kind == "results") == "demo tour, step 3. How finetuning moved the representations"
    assert next(i.kind_name for i in items if i.kind == "speed") == "measured job speeds"
    assert sum(i.bytes for i in items) == store.cache_size_bytes()
