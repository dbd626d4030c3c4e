"""Per-layer scores are results kept in the cache (issue 25, item 2): named by the activation set's key and the
scoring settings, read back without scoring again, scored only where missing, and recomputed when a setting
that decides them changes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from repmap_core.analysis import separation
from repmap_core.analysis.separation import layer_separation
from repmap_core.capture.activations import ActivationSet
from repmap_core.capture.memo import NotCached
from repmap_core.results import scores


def planted(n: int = 60, d: int = 8, layers=(0, 1, 2), seed: int = 0, key: str = "k" * 32) -> ActivationSet:
    """Labels readable along one direction, more so at deeper layers."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    arrays = {L: (rng.normal(size=(n, d)) + np.outer(2 * y - 1, np.eye(d)[0]) * (0.5 + L)).astype(np.float32)
              for L in layers}
    return ActivationSet(arrays, y, np.full(n, -1), {"key": key, "model": "planted", "n_layers": 4})


def test_scores_equal_layer_separation_and_are_read_back_without_scoring(cache_dir, monkeypatch):
    aset = planted()
    want = layer_separation(aset.layers, aset.labels, aset.pair_ids, null_permutations=20)
    seen = []
    got = scores.layer_scores(aset, null_permutations=20, progress=lambda f, m: seen.append(m))
    assert [dataclasses.asdict(r) for r in got] == [dataclasses.asdict(r) for r in want]
    assert seen[-1] == "Scored layer 2"
    assert list((cache_dir / "scores").rglob("*.safetensors")), "kept as safetensors in the cache"

    def never(*a, **k):
        raise AssertionError("scored again instead of read from the cache")

    monkeypatch.setattr(scores, "layer_separation", never)
    again = scores.layer_scores(aset, null_permutations=20)
    assert [dataclasses.asdict(r) for r in again] == [dataclasses.asdict(r) for r in want]
    assert scores.scores_cached(aset, null_permutations=20) and scores.scores_cached(aset, [1], null_permutations=20)
    # another setting that decides the numbers is another entry: not read from this one
    assert not scores.scores_cached(aset, null_permutations=30)
    with pytest.raises(NotCached):
        scores.layer_scores(aset, null_permutations=20, seed=1, may_compute=False)


def test_only_missing_layers_are_scored_and_nan_reads_back_as_nan(cache_dir, monkeypatch):
    aset = planted(layers=(0, 1, 2, 3))
    first = scores.layer_scores(aset, [0, 2], null_permutations=0)  # no null: its fields are NaN
    assert np.isnan(first[0].null_acc) and first[0].null_permutations == 0
    scored = []
    real = scores.layer_separation

    def counting(layers, *a, **k):
        scored.append(sorted(layers))
        return real(layers, *a, **k)

    monkeypatch.setattr(scores, "layer_separation", counting)
    rows = scores.layer_scores(aset, null_permutations=0)
    assert scored == [[1, 3]] and [r.layer for r in rows] == [0, 1, 2, 3]
    assert dataclasses.asdict(rows[0]) == pytest.approx(dataclasses.asdict(first[0]), nan_ok=True)
    assert isinstance(rows[0].layer, int) and isinstance(rows[0].scored_on, str)


def test_another_activation_set_or_a_new_scoring_version_scores_again(cache_dir, monkeypatch):
    aset = planted()
    scores.layer_scores(aset, null_permutations=0)
    assert not scores.scores_cached(planted(key="j" * 32), null_permutations=0)  # other activations, other key
    assert not scores.scores_cached(planted(n=40), null_permutations=0)  # same key, other rows: never mixed up
    monkeypatch.setattr(separation, "SCORING_VERSION", separation.SCORING_VERSION + 1)
    assert not scores.scores_cached(aset, null_permutations=0)


def test_a_damaged_scores_file_counts_as_absent(cache_dir):
    aset = planted()
    want = scores.layer_scores(aset, null_permutations=0)
    (path,) = (cache_dir / "scores").rglob("*.safetensors")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert not scores.scores_cached(aset, null_permutations=0)
    again = scores.layer_scores(aset, null_permutations=0)
    assert [r.probe_cv_acc for r in again] == [r.probe_cv_acc for r in want]
