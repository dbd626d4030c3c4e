"""Each view's result is built by one core function from its request: on a tiny model the builder
returns its dataclass holding what the page shows (the same numbers the core functions give
directly), rebuilds it from the cache alone, and a bundle stores and restores it."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from repmap_core.analysis.separation import layer_separation
from repmap_core.analysis.similarity import layer_similarity
from repmap_core.capture.activations import ActivationSet, get_activations
from repmap_core.data.load import TextDataset, load_dataset
from repmap_core.errors import RepmapError
from repmap_core.results.view_results import (
    AcrossResult,
    ExplorerResult,
    ShiftResult,
    SteeringResult,
    SteeringSweep,
    SteeringTransfer,
    across_result,
    explorer_result,
    separation_of,
    shift_result,
    steering_result,
    steering_sweep,
    steering_transfer,
)
from repmap_core.share.bundle import bundle_bytes, load_bundle
from repmap_core.steering import VectorSet
from tests.share.test_bundle import assert_same

SENTIMENT = "builtin:sentiment"


def explorer_req(model, **kw) -> dict:
    return dict({"model": str(model), "data": SENTIMENT, "layers": "all", "position": "auto", "limit": 40,
                 "max_length": 64, "text_col": "", "label_col": "", "trust": False}, **kw)


def round_trip(key: str, state):
    return load_bundle(bundle_bytes({key: state})).states[key]


def test_explorer_result_holds_the_activations_and_their_separation(tiny_gpt2):
    seen = []
    res = explorer_result(explorer_req(tiny_gpt2), progress=lambda f, m: seen.append((f, m)))
    assert isinstance(res, ExplorerResult) and res.request["model"] == str(tiny_gpt2)
    assert isinstance(res.dataset, TextDataset) and len(res.dataset) == 40
    assert isinstance(res.aset, ActivationSet) and res.aset.n == 40 and res.aset.layer_list == [0, 1, 2]
    assert np.array_equal(res.aset.labels, res.dataset.labels)
    want = layer_separation({L: res.aset[L] for L in res.aset.layer_list}, res.aset.labels, res.aset.pair_ids)
    assert [r.layer for r in res.rows] == [0, 1, 2]
    assert [r.probe_cv_acc for r in res.rows] == [r.probe_cv_acc for r in want]
    assert seen[-1] == (1.0, "Scored layer 2")  # the bar follows the layers scored
    # the cache alone gives the same view (a refresh, a new session); another request is not cached
    again = explorer_result(explorer_req(tiny_gpt2), cached_only=True)
    assert again.aset.manifest["key"] == res.aset.manifest["key"] and [r.probe_cv_acc for r in again.rows] == \
        [r.probe_cv_acc for r in res.rows]
    assert explorer_result(explorer_req(tiny_gpt2, layers="0"), cached_only=True) is not None  # a subset is cached
    assert explorer_result(explorer_req(tiny_gpt2, position="mean"), cached_only=True) is None
    # the separation function is the caller's (by default the scores kept in the cache, results.scores)
    calls = []
    explorer_result(explorer_req(tiny_gpt2), separation=lambda a, progress: calls.append(a.n) or separation_of(a))
    assert calls == [40]
    back = round_trip("explorer.result", res)
    assert isinstance(back, ExplorerResult)
    assert_same(res.rows, back.rows, "rows")
    assert back.request == res.request and back.dataset.fingerprint == res.dataset.fingerprint
    assert all(np.array_equal(back.aset[L], res.aset[L]) for L in res.aset.layer_list)


def test_explorer_result_refuses_one_class_before_extracting(tiny_gpt2, tmp_path, cache_dir):
    path = tmp_path / "one.csv"
    path.write_text("text,label\n" + "".join(f"row {i},1\n" for i in range(10)))
    with pytest.raises(RepmapError, match="one class|both"):
        explorer_result(explorer_req(tiny_gpt2, data=f"file:{path}"))
    assert not (cache_dir / "activations").exists()


def test_shift_result_pairs_base_and_finetuned_on_the_same_rows(tiny_gpt2, tmp_path):
    other = shutil.copytree(tiny_gpt2, tmp_path / "also-gpt2")  # same weights: "finetuned" for the purpose
    req = {"base": str(tiny_gpt2), "finetuned": str(other), "data": SENTIMENT, "layers": "0,-1", "position": "mean",
           "limit": 40}
    res = shift_result(req)
    assert isinstance(res, ShiftResult) and res.request is req and not res.in_sample
    assert res.base.layer_list == res.finetuned.layer_list == [0, 2] and res.base.n == res.finetuned.n == len(res.dataset)
    assert np.allclose(res.base[2], res.finetuned[2], atol=1e-5)  # the same weights give the same activations
    assert set(res.rows) == {"base", "finetuned"} and [r.layer for r in res.rows["finetuned"]] == [0, 2]
    assert shift_result(req, cached_only=True).base.manifest["key"] == res.base.manifest["key"]
    with pytest.raises(RepmapError, match="are the same"):
        shift_result(dict(req, finetuned=req["base"]))
    back = round_trip("shift.result", res)
    assert isinstance(back, ShiftResult) and back.in_sample is False and back.request == req
    assert_same(res.rows, back.rows, "rows")


def test_across_result_and_its_similarity_cache(tiny_gpt2):
    req = {"source": str(tiny_gpt2), "target": str(tiny_gpt2), "data": SENTIMENT, "position": "auto", "limit": 40}
    res = across_result(req)
    assert isinstance(res, AcrossResult) and res.sims == {} and res.same_model
    assert res.source.layer_list == res.target.layer_list == [0, 1, 2] and res.source.n == 40
    res.sims["linear_cka"] = layer_similarity(res.source.layers, res.target.layers, "linear_cka")
    assert np.allclose(np.diag(res.sims["linear_cka"].values), 1.0, atol=1e-5)  # each layer against itself
    assert across_result(req, cached_only=True).target.manifest["key"] == res.target.manifest["key"]
    assert across_result(dict(req, position="mean"), cached_only=True) is None
    back = round_trip("across.result", res)
    assert isinstance(back, AcrossResult) and back.same_model
    assert_same(res.sims, back.sims, "sims")


def test_steering_result_has_vectors_models_and_labels(tiny_gpt2, tmp_path):
    req = {"A": str(tiny_gpt2), "B": None, "data": "builtin:survival_instinct", "layers": "all", "method": "mean_diff",
           "test_frac": 0.3, "limit": 40}
    res = steering_result(req)
    assert isinstance(res, SteeringResult) and list(res.sets) == ["A"] and isinstance(res.sets["A"], VectorSet)
    assert sorted(res.sets["A"].vectors) == [0, 1, 2] and res.labels == {"A": f"A: {tiny_gpt2.name}"}
    resolved, info = res.models["A"]
    assert resolved.path and info.n_layers == 3 and not info.is_encoder
    back = round_trip("steer.result", res)
    assert isinstance(back, SteeringResult) and back.labels == res.labels
    assert all(np.array_equal(back.sets["A"].vectors[L].vector, res.sets["A"].vectors[L].vector) for L in (0, 1, 2))
    # a sweep with A's own model, then A's vector carried to B (the same weights in another folder)
    from repmap_core.capture.models import load_model

    lm = load_model(str(tiny_gpt2), head=True)
    alphas = np.array([-2.0, 0.0, 2.0])
    sweep = steering_sweep(res, "A", 1, alphas, lm, preview_alpha=1.0)
    assert isinstance(sweep, SteeringSweep) and sweep.label == res.labels["A"]
    assert sweep.out.sweep.curve.layer == 1 and np.allclose(sweep.out.sweep.curve.alphas, alphas)
    other = shutil.copytree(tiny_gpt2, tmp_path / "also-gpt2")
    both = steering_result(dict(req, B=str(other)))
    assert list(both.sets) == ["A", "B"] and both.labels["B"] == "B: also-gpt2"
    moved = steering_transfer(both, {"source": 1, "target": 1, "method": "none", "bias": True, "alphas": alphas}, lm)
    assert isinstance(moved, SteeringTransfer) and moved.r2 is None and {"native", "transferred"} <= set(moved.curves)
    assert moved.cosine == pytest.approx(1.0, abs=1e-4)  # same weights, no map: the same vector
    back = load_bundle(bundle_bytes({"steer.sweep": sweep, "steer.transfer": moved})).states
    assert isinstance(back["steer.sweep"], SteeringSweep) and isinstance(back["steer.transfer"], SteeringTransfer)
    assert_same(moved.curves, back["steer.transfer"].curves, "curves")
    assert np.array_equal(back["steer.sweep"].out.sweep.curve.gaps, sweep.out.sweep.curve.gaps)


def test_a_bigger_bundle_keeps_the_dataclass_when_rows_are_sampled(tiny_gpt2):
    res = explorer_result(explorer_req(tiny_gpt2))
    small = load_bundle(bundle_bytes({"explorer.result": res}, max_rows=20, seed=1)).states["explorer.result"]
    assert isinstance(small, ExplorerResult) and len(small.dataset) == small.aset.n == 20
    assert small.aset.manifest["bundle_rows"] == {"kept": 20, "of": 40, "seed": 1}
    full = get_activations(str(tiny_gpt2), load_dataset(SENTIMENT, limit=40), "all", "auto", max_length=64)
    row = res.dataset.texts.index(small.dataset.texts[0])
    assert np.array_equal(small.aset[1][0], np.asarray(full[1])[row])


def test_the_share_page_rebuild_makes_the_same_dataclasses_from_the_cache(tiny_gpt2):
    from repmap_core.results.recent import remember
    from repmap_ui.rebuild import rebuild_missing

    shown = explorer_result(explorer_req(tiny_gpt2))
    across_req = {"source": str(tiny_gpt2), "target": str(tiny_gpt2), "data": SENTIMENT, "position": "auto", "limit": 40}
    remember("explorer", shown.request)
    remember("across", across_req)  # never computed: nothing to rebuild it from
    session = {}
    assert rebuild_missing(session) == ["explorer"] and "across.result" not in session
    got = session["explorer.result"]
    assert isinstance(got, ExplorerResult) and got.aset.manifest["key"] == shown.aset.manifest["key"]
    assert [r.probe_cv_acc for r in got.rows] == [r.probe_cv_acc for r in shown.rows]
    across_result(across_req)
    assert rebuild_missing(session) == ["across"] and isinstance(session["across.result"], AcrossResult)


def test_share_finds_the_within_fit_and_the_steering_vectors_of_an_earlier_session(tiny_gpt2, tmp_path):
    """Issue 25, item 3: a fresh session's Share offered 3 of 5 views; the within fit (closed form, on the shift it
    was made on) and the steering vectors are rebuilt from the cache too, with nothing extracted."""
    from repmap_core.results.recent import remember
    from repmap_core.results.view_fits import GROUND_TRUTH, WithinFitResult, within_fit
    from repmap_ui.rebuild import rebuild_missing, remember_within

    other = shutil.copytree(tiny_gpt2, tmp_path / "also-gpt2")
    shift_req = {"base": str(tiny_gpt2), "finetuned": str(other), "data": SENTIMENT, "layers": "all",
                 "position": "mean", "limit": 40}
    shown = shift_result(shift_req)
    options = {"layer": 2, "method": "lstsq", "alpha": "auto", "steps": 2000, "test": 0.2, "labels": GROUND_TRUTH}
    fit = within_fit(shown, options)
    remember("shift", shift_req)
    remember_within(shown, options)
    steer_req = {"A": str(tiny_gpt2), "B": None, "data": "builtin:survival_instinct", "layers": "all",
                 "method": "mean_diff", "test_frac": 0.3, "limit": 40}
    remember("steering", steer_req)  # not computed yet: nothing to rebuild it from
    import repmap_core.capture.models as models
    from repmap_core.locations import cache_root

    session = {}
    assert rebuild_missing(session) == ["shift", "within"]
    got = session["within.result"]
    assert isinstance(got, WithinFitResult) and got.layer == 2 and got.options == options
    assert got.result.fit["r2_test"] == pytest.approx(fit.result.fit["r2_test"])
    assert np.allclose(got.arrays[0]["delta"], fit.arrays[0]["delta"])
    vectors = steering_result(steer_req)
    before = sorted(p for p in cache_root().rglob("*") if "activations" in p.parts)
    real = models.load_model
    try:  # the rebuild reads the cache only: no model is loaded, no activations are written
        models.load_model = lambda *a, **k: pytest.fail("a model was loaded in a rebuild")
        del session["within.result"]
        assert rebuild_missing(session) == ["within", "steering"]
    finally:
        models.load_model = real
    assert sorted(p for p in cache_root().rglob("*") if "activations" in p.parts) == before
    again = session["steer.result"]
    assert isinstance(again, SteeringResult) and again.request == dict(steer_req, trust=False)
    assert all(np.allclose(again.sets["A"].vectors[L].vector, vectors.sets["A"].vectors[L].vector) for L in (0, 1, 2))
    # a gradient-descent fit, or one on another shift, is not refitted behind the page's back
    remember_within(shown, dict(options, method="gd"))
    del session["within.result"]
    assert rebuild_missing(session) == []
    remember_within(shift_result(dict(shift_req, limit=20)), options)
    assert rebuild_missing(session) == []


def test_the_shift_says_how_many_of_its_rows_the_model_was_finetuned_on():
    """The tour finetunes on 400 of the 800 reviews; the shift page's 800 rows held those 400 without a word."""
    from repmap_core.data.load import load_dataset
    from repmap_core.results.view_results import rows_trained_on

    data = load_dataset(SENTIMENT)
    tune = data.take(np.arange(0, len(data), 2))  # every other review: the finetune's rows
    trained = {"name": data.name, "fingerprint": tune.fingerprint, "trained_row_keys": tune.row_keys(np.arange(360))}
    assert rows_trained_on(trained, data) == 360  # of all 800, the 360 it trained on (its validation rows excluded)
    assert rows_trained_on(trained, data.take(np.arange(1, len(data), 2))) == 0  # the other half: never seen
    assert rows_trained_on({"name": data.name, "fingerprint": "x"}, data) is None  # an older checkpoint: unknown
    assert rows_trained_on({"name": "builtin:hh_harmless", "fingerprint": "x"}, data) == 0
    assert rows_trained_on(None, data) == 0

    def note(**kw):
        return ShiftResult({}, data, None, None, {}, **kw).in_sample_note()

    assert note(trained_rows=360).startswith(f"360 of these {len(data):,} rows are rows the model was finetuned on")
    assert "440 it never saw" in note(trained_rows=360)
    assert "does not record which rows" in note(trained_rows=None)
    assert note(in_sample=True).startswith("These are the rows the model was finetuned on")
    assert note(trained_rows=0) is None


def test_the_steering_pair_says_how_its_models_are_related(tiny_models, tmp_path):
    """Rimsky's comparison reads as base vs chat only for a base and its chat version: the pair's relation is named
    (the same weights; different families; one family, unchecked) with what it can and cannot show."""
    from repmap_core.capture.models import model_info, resolve_model
    from repmap_core.results.view_results import pair_relation

    def info(path):
        r = resolve_model(str(path))
        return r, model_info(r)

    gpt2, llama = tiny_models["gpt2"], tiny_models["llama"]
    same = pair_relation(str(gpt2), info(gpt2), str(gpt2), info(gpt2))
    assert same.startswith("A and B are the same weights") and "1 by construction" in same
    apart = pair_relation(str(gpt2), info(gpt2), str(llama), info(llama))
    assert "different families" in apart and "gpt2" in apart and "llama" in apart and "RLHF" in apart


def test_a_pair_finetuned_here_is_named_as_such(tiny_models, tmp_path):
    import json
    import shutil

    from repmap_core.capture.model_config import FINETUNE_MANIFEST
    from repmap_core.capture.models import model_info, resolve_model
    from repmap_core.finetune.checkpoints import FORMAT, HEAD_NAME
    from repmap_core.results.view_results import pair_relation

    base = tiny_models["gpt2"]
    tuned = tmp_path / "tuned"
    shutil.copytree(base, tuned)
    (tuned / HEAD_NAME).write_bytes(b"")
    (tuned / FINETUNE_MANIFEST).write_text(json.dumps({
        "format": FORMAT, "base_model": resolve_model(str(base)).name, "dataset": {"name": "builtin:sentiment", "rows": 400},
        "config": {}, "metrics": {}, "pooling": "last", "created": "2026-12-07T00:00:00"}))
    pair = [(str(p), (r := resolve_model(str(p)), model_info(r))) for p in (base, tuned)]
    text = pair_relation(pair[0][0], pair[0][1], pair[1][0], pair[1][1])
    assert "was finetuned from" in text and "400 rows of builtin:sentiment" in text and "not chat tuning or RLHF" in text
