"""Session bundles: every whitelisted class survives the round trip, subsampling keeps classes and
row alignment, bad files get one sentence, and (the acceptance test) a bundle exported from the
Share page reproduces the views in a fresh process with no model, no cache and no hub."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pandas as pd
import pytest

from repmap_core.analysis.between import BetweenResult, between_models
from repmap_core.analysis.separation import LayerSeparation, layer_separation
from repmap_core.analysis.similarity import SimilarityMatrix, layer_similarity
from repmap_core.analysis.stats import Estimate, format_estimate
from repmap_core.analysis.within import WithinResult, within_model
from repmap_core.capture.activations import ActivationSet
from repmap_core.capture.models import ModelInfo, ResolvedModel
from repmap_core.data.load import TextDataset, load_dataset
from repmap_core.errors import RepmapError
from repmap_core.results.view_fits import AcrossFitResult, WithinFitResult
from repmap_core.results.view_results import (
    AcrossResult,
    ExplorerResult,
    ShiftResult,
    SteeringResult,
    SteeringSweep,
    WeakLabelResult,
)
from repmap_core.share.bundle import FORMAT, VIEWS, available_views, bundle_bytes, collect, estimate_bytes, load_bundle
from repmap_core.steering import (
    LetterBalance,
    PropensityCurve,
    SteeringVector,
    SweepResult,
    VectorSet,
    propensity_curve,
    vectors_from_activations,
)
from repmap_core.steering.run import LayerSweep
from tests.conftest import ROOT
from tests.pages import tiles


def curve_gaps(states) -> np.ndarray:
    return states["steer.sweep"].out.sweep.curve.gaps


def _aset(ds: TextDataset, width: int, seed: int, model: str, position: str = "last", n_layers: int = 3) -> ActivationSet:
    """Activations with a planted label direction, so probes and maps have something to find."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=width)
    y = ds.labels.astype(np.float32)[:, None] * 2 - 1
    layers = {L: (rng.normal(size=(len(ds), width)) + (L + 1) * 0.5 * y * direction).astype(np.float32)
              for L in range(n_layers)}
    manifest = {"model": model, "revision": f"sha256:{seed:040d}", "dataset_spec": ds.name,
                "dataset_fingerprint": ds.fingerprint, "n_rows": len(ds), "position": position, "max_length": 64,
                "dtype": "float32", "key": f"key{seed}{position}", "n_layers": n_layers, "d_model": width,
                "model_type": "gpt2", "versions": {"repmap": "0.1.0"}, "created": "2025-01-01T00:00:00"}
    return ActivationSet(layers, ds.labels.copy(), ds.pair_ids.copy(), manifest)


def synthetic_states() -> dict:
    """Every view's session state, built by the real core functions on planted activations."""
    ds = load_dataset("builtin:sentiment", limit=120)
    base, ft = _aset(ds, 16, 1, "tiny/base"), _aset(ds, 16, 2, "tiny/finetuned")
    rows = layer_separation(base.layers, base.labels, base.pair_ids)
    rows_ft = layer_separation(ft.layers, ft.labels, ft.pair_ids)
    within, _ = within_model(base[2], ft[2], base.labels, pair_ids=base.pair_ids)
    wide = _aset(ds, 24, 3, "tiny/wide")
    between, fitted = between_models(base[2], wide[2], base.labels, pair_ids=base.pair_ids, method="lstsq")
    sim = layer_similarity(base.layers, wide.layers, "linear_cka")
    sim_null = layer_similarity(base.layers, wide.layers, "cka_debiased", null_permutations=5)  # with its null array
    ab = load_dataset("builtin:survival_instinct", limit=40)
    steer_set = _aset(ab, 16, 4, "tiny/steer", position="answer")
    vectors = vectors_from_activations(steer_set)
    vs = VectorSet(vectors, ab, np.arange(0, 30), np.arange(30, len(ab)), steer_set.manifest,
                   LetterBalance({"A": 15, "B": 15}, True, 15), {L: 3.0 for L in vectors}, ab.pair_ids.copy())
    alphas = np.linspace(-2, 2, 5)
    gaps = alphas[:, None] * 0.1 + np.linspace(-0.05, 0.05, 5)[None, :]
    curve = propensity_curve(alphas, gaps, 1, scale="relative", factor=2.0)
    rand = propensity_curve(alphas, gaps * 0, 1, scale="relative", factor=2.0)
    slope = Estimate(0.1, 0.08, 0.12, 5, "bootstrap (questions)")
    sweep = SweepResult(curve, rand, slope, Estimate(0.0, -0.01, 0.01, 5, "bootstrap (questions)"), slope,
                        {"base": 4.0, **{float(a): 4.0 + abs(float(a)) for a in alphas}}, 3.0, "Steers at layer 1: ...")
    models = {"A": (ResolvedModel("tiny/steer", "/nowhere/tiny", "sha256:abc", "folder"), ModelInfo(3, 16, "gpt2", False, 128))}
    return {
        "explorer.result": ExplorerResult({"model": "tiny/base", "data": "builtin:sentiment", "layers": "all", "position": "auto",
                                           "limit": 120, "max_length": 64, "text_col": "", "label_col": "", "trust": False},
                                          ds, base, rows),
        "shift.result": ShiftResult({"base": "tiny/base", "finetuned": "tiny/finetuned", "data": "builtin:sentiment",
                                     "layers": "all", "position": "auto", "limit": 120}, ds,
                                    base, ft, {"base": rows, "finetuned": rows_ft}, False),
        "within.result": WithinFitResult(within, 2, []),
        "across.result": AcrossResult({"source": "tiny/base", "target": "tiny/wide", "data": "builtin:sentiment",
                                       "position": "auto", "limit": 120}, ds, base,
                                      wide, {"linear_cka": sim, "cka_debiased": sim_null}),
        "across.fit": AcrossFitResult(between, (2, 2), {"method": "lstsq", "alpha": "auto", "rank": 8, "steps": 500,
                                                        "test_frac": 0.2, "seed": 0},
                                      [(1, 0.5, 0.1), (2, 0.25, 0.4)], fitted.A_, fitted.b_,
                                      {"format": "repmap.map/1", "method": "lstsq"}),
        "across.selected": [1, 5, 7], "across.layer_s": 2, "across.layer_t": 2,
        "steer.result": SteeringResult({"A": "tiny/steer", "B": None, "data": "builtin:survival_instinct", "layers": "all",
                                        "method": "mean_diff", "test_frac": 0.3, "limit": 40}, {"A": vs}, models,
                                       {"A": "A: steer"}),
        "steer.sweep": SteeringSweep("A: steer", LayerSweep(sweep, ["q1", "q2"], ["a", "b"], ["c", "d"], 1.0, 0)),
        "steer.transfer": None, "steer.layer.A": 1,
        "finetune.weak": WeakLabelResult("file:/nowhere/weak.csv", 120, 61, "weak", "s",
                                         Estimate(0.9, 0.833, 0.942, 120, "wilson"), True),
    }


def assert_same(a, b, path="state"):
    """Deep equality over dicts, lists, arrays, frames and dataclasses (field by field)."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, path
        assert np.array_equal(a, b), path
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
    elif dataclasses.is_dataclass(a):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b and type(a) is type(b), f"{path}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def states() -> dict:
    return synthetic_states()


def test_every_whitelisted_class_round_trips(states):
    settings = {"explorer.shown": [0, 2], "explorer.method": "pca", "across.metric": "linear_cka"}
    data = bundle_bytes(states, settings)
    back = load_bundle(data)
    kept = {k: v for k, v in states.items() if v is not None}
    assert list(back.states) == list(kept)
    for key in kept:
        assert_same(kept[key], back.states[key], key)
    assert back.settings == settings
    assert back.meta["format"] == FORMAT and back.meta["repmap"]
    assert set(back.views) == {"explorer", "shift", "within", "across", "steering", "finetune"}
    # the classes really are the whitelisted ones, with their metrics intact
    ex = back.states["explorer.result"]
    assert isinstance(ex, ExplorerResult)
    assert isinstance(ex.aset, ActivationSet) and isinstance(ex.dataset, TextDataset)
    assert isinstance(ex.rows[0], LayerSeparation)
    assert [r.probe_cv_acc for r in ex.rows] == [r.probe_cv_acc for r in states["explorer.result"].rows]
    assert isinstance(back.states["within.result"], WithinFitResult)
    assert isinstance(back.states["within.result"].result, WithinResult)
    assert back.states["within.result"].result.probe == states["within.result"].result.probe
    assert isinstance(back.states["across.fit"], AcrossFitResult) and back.states["across.fit"].layers == (2, 2)
    assert isinstance(back.states["across.fit"].result, BetweenResult)
    assert isinstance(back.states["across.result"], AcrossResult) and isinstance(back.states["shift.result"], ShiftResult)
    assert isinstance(back.states["across.result"].sims["linear_cka"], SimilarityMatrix)
    assert isinstance(back.states["steer.result"], SteeringResult)
    vs = back.states["steer.result"].sets["A"]
    assert isinstance(vs, VectorSet) and isinstance(vs.vectors[1], SteeringVector)
    assert isinstance(back.states["steer.sweep"].out.sweep.curve, PropensityCurve)
    assert_same(back.states["steer.sweep"].out.sweep.curve.gaps, curve_gaps(states))
    assert isinstance(back.states["steer.result"].models["A"][0], ResolvedModel)
    assert isinstance(back.states["steer.result"].models["A"][1], ModelInfo)
    assert ex.dataset.fingerprint == states["explorer.result"].dataset.fingerprint


def test_no_pickle_in_the_file_and_shared_arrays_stored_once(states):
    data = bundle_bytes({"explorer.result": states["explorer.result"], "shift.result": states["shift.result"]})
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert sorted(z.namelist()) == ["arrays.safetensors", "bundle.json"]
        doc = json.loads(z.read("bundle.json"))
    # the base activations appear in both states but once in the file: 3 layers + labels + pair ids + dataset arrays
    base = states["explorer.result"].aset
    stored = [a for a in doc["arrays"].values() if a["shape"] == [base.n, base.d]]
    assert len(stored) == 6  # 3 layers of base + 3 of finetuned, not 9


def test_collect_and_available_views(states):
    session = dict(states, **{"explorer.method": "umap", "explorer.shown": [0, 1], "unrelated": object()})
    assert available_views(session) == ["explorer", "shift", "within", "across", "steering", "finetune"]
    picked, settings = collect(session, ["explorer", "within"])
    assert set(picked) == {"explorer.result", "shift.result", "within.result"}  # within needs the shift's activations
    assert settings == {"explorer.method": "umap", "explorer.shown": [0, 1]}
    with pytest.raises(RepmapError, match="Unknown view 'nope'"):
        collect(session, ["nope"])


def test_subsampling_keeps_classes_and_row_alignment(states):
    full = states["shift.result"]
    data = bundle_bytes({"shift.result": full, "across.result": states["across.result"], "across.selected": [1, 2]},
                        max_rows=40, seed=3)
    back = load_bundle(data).states
    small = back["shift.result"]
    assert isinstance(small, ShiftResult) and small.request == full.request
    ds, base, ft = small.dataset, small.base, small.finetuned
    assert len(ds) == base.n == ft.n == 40
    # classes in proportion: 120 rows -> 40 keeps the share of label 1 within one row
    share = full.dataset.labels.mean()
    assert abs(int(ds.labels.sum()) - share * 40) <= 1 and set(np.unique(ds.labels)) == {0, 1}
    # row alignment: every kept row is the same row in the data set and in both activation sets
    lookup = {t: i for i, t in enumerate(full.dataset.texts)}
    idx = np.array([lookup[t] for t in ds.texts])
    assert np.array_equal(base.labels, full.base.labels[idx]) and np.array_equal(ds.labels, full.dataset.labels[idx])
    for L in base.layer_list:
        assert np.array_equal(base[L], np.asarray(full.base[L])[idx])
        assert np.array_equal(ft[L], np.asarray(full.finetuned[L])[idx])
    assert np.array_equal(base.pair_ids, full.base.pair_ids[idx])
    assert base.manifest["bundle_rows"] == {"kept": 40, "of": 120, "seed": 3}
    assert base.manifest["key"] != full.base.manifest["key"]  # no projection cached for all rows is reused
    assert small.rows == full.rows  # the scores shown were computed on all rows and say so in the manifest
    assert "across.selected" not in back  # row numbers of the full data set would point at the wrong rows
    # seeded: the same call gives the same rows
    again = load_bundle(bundle_bytes({"shift.result": full}, max_rows=40, seed=3)).states["shift.result"].dataset
    assert again.texts == ds.texts
    # the estimate shrinks with the rows and is shown before anything is written
    assert estimate_bytes({"shift.result": full}, max_rows=40) < estimate_bytes({"shift.result": full}) / 2
    assert estimate_bytes({"shift.result": full}) > 2 * 3 * 120 * 16 * 4


def test_subsampling_refuses_fewer_than_two_rows(states):
    with pytest.raises(RepmapError, match="at least 2 rows"):
        bundle_bytes({"shift.result": states["shift.result"]}, max_rows=1)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def _one_sentence(message: str) -> None:
    assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message and "Traceback" not in message


def _with_doc(data: bytes, change) -> bytes:
    members = _members(data)
    doc = json.loads(members["bundle.json"])
    change(doc)
    members["bundle.json"] = json.dumps(doc).encode()
    return _zip(members)


@pytest.fixture(scope="module")
def good(states) -> bytes:
    return bundle_bytes({"explorer.result": states["explorer.result"]}, {"explorer.method": "pca"})


def _rename_class(doc: dict) -> None:
    doc["states"]["explorer.result"]["fields"]["aset"]["__class__"] = "subprocess.Popen"


BAD = {
    "not a zip": (lambda good: b"PK\x03\x04 this is not a zip at all", "not a zip file"),
    "text file": (lambda good: b"hello", "not a zip file"),
    "pickle member": (lambda good: _zip(dict(_members(good), **{"state.pkl": b"\x80\x04N."})), "it holds state.pkl"),
    "only a pickle": (lambda good: _zip({"session.pickle": b"\x80\x04N."}), "should hold only bundle.json"),
    "unknown class": (lambda good: _with_doc(good, _rename_class), "names a class 'subprocess.Popen'"),
    "wrong format": (lambda good: _with_doc(good, lambda d: d.update(format="repmap.bundle/99")), "format is 'repmap.bundle/99'"),
    "no format": (lambda good: _with_doc(good, lambda d: d.pop("format")), "format is None"),
    "bad json": (lambda good: _zip(dict(_members(good), **{"bundle.json": b"{not json"})), "is damaged"),
    "bad safetensors": (lambda good: _zip(dict(_members(good), **{"arrays.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{}"})),
                        "arrays.safetensors is damaged"),
    "missing array": (lambda good: _with_doc(good, lambda d: d["arrays"].pop("a0")), "do not match its description"),
    "untagged value": (lambda good: _with_doc(good, lambda d: d["states"].update({"explorer.result": {"x": 1, "y": 2}})),
                       "values repmap does not understand"),
    "bad fields": (lambda good: _with_doc(good, lambda d: d["states"].update(
        {"explorer.result": {"__class__": "ActivationSet", "fields": {"evil": 1}}})), "values repmap does not understand"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_get_one_sentence(good, case):
    make, expected = BAD[case]
    with pytest.raises(RepmapError) as e:
        load_bundle(make(good))
    assert expected in str(e.value)
    _one_sentence(str(e.value))


def test_oversize_member_is_refused_before_reading(good, states):
    big = bundle_bytes({"shift.result": states["shift.result"]})
    size = sum(len(v) for v in _members(big).values())
    with pytest.raises(RepmapError, match="over the limit") as e:
        load_bundle(big, max_bytes=size // 2)
    _one_sentence(str(e.value))
    # a member that inflates hugely from a tiny zip (a zip bomb) is refused by its declared size
    bomb = _zip({"bundle.json": b'{"format": "repmap.bundle/1"}' + b" " * 50_000_000, "arrays.safetensors": b""})
    assert len(bomb) < 200_000
    with pytest.raises(RepmapError, match="over the limit"):
        load_bundle(bomb, max_bytes=10_000_000)


def test_missing_path_is_one_sentence(tmp_path):
    with pytest.raises(RepmapError, match="There is no bundle file at"):
        load_bundle(tmp_path / "absent.zip")


def test_unknown_session_keys_in_a_file_are_ignored(good):
    def add(doc):
        doc["states"]["secrets.password"] = "x"
        doc["settings"]["__dict__"].append(["server.anything", 1])
    back = load_bundle(_with_doc(good, add))
    assert "secrets.password" not in back.states and "server.anything" not in back.settings
    assert back.settings == {"explorer.method": "pca"}


# ------------------------------------------------------------------ the acceptance test: another machine

IMPORTER = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    from streamlit.testing.v1 import AppTest

    root, bundle, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    import repmap_core.capture.activations as acts
    import repmap_core.capture.models as models

    def refuse(*a, **k):
        raise AssertionError("a model was loaded or activations computed after import")
    acts.get_activations = refuse  # any view that would compute raises instead (AppTest runs pages in this process)
    models.load_model = refuse

    at = AppTest.from_file(os.path.join(root, "app.py"), default_timeout=120)
    at.switch_page("views/share.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.file_uploader(key="share.upload").upload("session.zip", bundle.read_bytes(), "application/zip")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    result = {"share_success": [s.value for s in at.success], "share_errors": [e.value for e in at.error],
              "page_links": [p.proto.label for p in at.get("page_link")]}
    for page in sys.argv[4].split(","):
        at.query_params.clear()  # a browser drops the query string on navigation; AppTest keeps it
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        result[page] = {"metrics": {m.label: m.value for m in at.metric}, "errors": [e.value for e in at.error],
                        "tables": [df.value.round(6).astype(str).to_dict("split") for df in at.dataframe],
                        "charts": len(at.get("plotly_chart")),
                        "layer_s": at.session_state["across.layer_s"] if "across.layer_s" in at.session_state else None}
    out.write_text(json.dumps(result, default=str))
''')


def goto(at, page: str):
    """Open `page` as the sidebar does: a browser drops the query string on navigation, AppTest keeps it
    (and a page would take another page's URL for a link to compute)."""
    at.query_params.clear()
    return at.switch_page(page).run()


def _page_numbers(at, page: str) -> dict:
    goto(at, page)
    assert not at.exception, (page, [e.value for e in at.exception])
    return {"metrics": {m.label: m.value for m in at.metric}, "errors": [e.value for e in at.error],
            "tables": [json.loads(json.dumps(df.value.round(6).astype(str).to_dict("split"), default=str)) for df in at.dataframe],
            "charts": len(at.get("plotly_chart")),
            "layer_s": at.session_state["across.layer_s"] if "across.layer_s" in at.session_state else None}


@pytest.mark.slow
def test_bundle_reproduces_the_views_in_a_fresh_process_without_the_model(tmp_path, tiny_models, monkeypatch):
    from streamlit.testing.v1 import AppTest

    model = tmp_path / "model"
    shutil.copytree(tiny_models["gpt2"], model)  # a private copy: it is taken away before the import
    monkeypatch.setenv("REPMAP_CACHE", str(tmp_path / "cache_a"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    # the layer explorer on the tiny model, 80 rows
    goto(at, "views/layer_explorer.py")
    assert not at.exception, [e.value for e in at.exception]
    at.text_input(key="explorer.model_other").set_value(str(model))
    at.number_input(key="explorer.limit").set_value(80)
    at.button(key="FormSubmitter:explorer.form-Compute").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    assert at.session_state["explorer.result"].aset.manifest["model"] == str(model)
    # across models: the tiny model against itself (its layers), then a ridge map with its probe transfer
    goto(at, "views/across.py")
    at.text_input(key="across.source.model_other").set_value(str(model))
    at.text_input(key="across.target.model_other").set_value(str(model))
    at.number_input(key="across.limit").set_value(80)
    at.button(key="FormSubmitter:across.form-Compute").click().run()
    at.selectbox(key="across.method").set_value("lstsq")
    at.button(key="FormSubmitter:across.fit_form-Fit").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    assert at.session_state["across.fit"] is not None
    pages = ["views/layer_explorer.py", "views/across.py"]
    original = {p: _page_numbers(at, p) for p in pages}
    assert original["views/layer_explorer.py"]["metrics"]["Rows"] == "80"
    assert "Transfer: functional (readout)" in original["views/across.py"]["metrics"]
    # export from the Share page: the size is shown before the file is made
    goto(at, "views/share.py")
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="share.views").value == ["explorer", "across"]
    assert any("MB" in m.value or "kB" in m.value for m in at.metric if m.label.startswith("Size"))
    at.button(key="share.prepare").click().run()
    assert not at.exception, [e.value for e in at.exception]
    data = at.session_state["share.prepared"]["data"]
    assert [b.label for b in at.get("download_button")][0].startswith("Download the bundle")
    bundle = tmp_path / "session.zip"
    bundle.write_bytes(data)

    # another machine: the model folder is gone, the caches are empty, the hub is off
    shutil.rmtree(model)
    empty = tmp_path / "elsewhere"
    (empty / "hf").mkdir(parents=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(empty / "hf"),
               REPMAP_CACHE=str(empty / "cache"), REPMAP_NO_WARMUP="1", PYTHONPATH=str(ROOT))
    out = tmp_path / "imported.json"
    proc = subprocess.run([sys.executable, "-c", IMPORTER, str(ROOT), str(bundle), str(out), ",".join(pages)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    imported = json.loads(out.read_text())
    assert not imported["share_errors"], imported["share_errors"]
    assert any("Layer explorer" in s and "Across models" in s for s in imported["share_success"]), imported["share_success"]
    assert {"Layer explorer", "Across models"} <= set(imported["page_links"])
    for page in pages:
        got, want = imported[page], original[page]
        assert not got["errors"], (page, got["errors"])
        assert got["metrics"] == want["metrics"], page
        assert got["tables"] == want["tables"], page
        assert got["charts"] == want["charts"], page
    assert imported["views/across.py"]["layer_s"] == original["views/across.py"]["layer_s"]
    assert not (empty / "cache" / "activations").exists(), "activations were computed on the new machine"
    assert not any((empty / "hf").iterdir())


# ------------------------------------------------------------------ the Share page, every view, no model

def _refuse(*args, **kwargs):
    raise AssertionError("a model was loaded or activations computed")


@pytest.fixture
def no_models(monkeypatch):
    """Every way a page could compute activations or load weights raises instead."""
    import repmap_core.capture.activations as activations
    import repmap_core.capture.models as models
    import repmap_core.finetune.checkpoints as checkpoints
    import repmap_core.finetune.train as finetune
    import repmap_core.results.view_results as view_results
    import repmap_core.steering as steering
    import repmap_ui.common as common
    import repmap_ui.steering_sections as steering_sections

    # modules that bound a name at import are patched too (and so restored after the test): patching
    # only the source modules would leave a module first imported here holding `_refuse` for good
    for module, name in ((activations, "get_activations"), (models, "load_model"), (steering, "compute_vectors"),
                         (models, "resolve_model"), (activations, "load_model"), (view_results, "get_activations"),
                         (common, "load_model"), (finetune, "load_model"), (finetune, "resolve_model"),
                         (checkpoints, "load_model"), (steering_sections, "load_model")):
        monkeypatch.setattr(module, name, _refuse)
    # the Finetune page's time estimate for its form's request (two training steps, measured on open) is not the
    # imported view; it stands in here so the rest of the page is checked to draw without any model
    import repmap_ui.estimates as estimates

    monkeypatch.setattr(estimates, "finetune_estimate", lambda req: None)
    monkeypatch.setattr(estimates, "w2s_estimate", lambda spec, req: None)


def _share_page(session: dict):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    for key, value in session.items():
        at.session_state[key] = value
    goto(at, "views/share.py")
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.slow
def test_share_page_exports_imports_and_every_view_renders_without_a_model(states, no_models):
    at = _share_page(dict({k: v for k, v in states.items() if v is not None}, **{"explorer.shown": [0, 2],
                                                                               "explorer.max_points": 500}))
    assert at.multiselect(key="share.views").options == [VIEWS[v].title for v in VIEWS]
    size = next(m for m in at.metric if m.label == "Size before compression").value
    at.number_input(key="share.max_rows").set_value(30).run()
    smaller = next(m for m in at.metric if m.label == "Size before compression").value
    assert float(smaller.split()[0]) * (1e3 if "MB" in smaller else 1) < float(size.split()[0]) * (1e3 if "MB" in size else 1)
    at.number_input(key="share.max_rows").set_value(0)
    at.multiselect(key="share.views").set_value(["explorer", "within", "steering"])
    at.button(key="share.prepare").click().run()
    at.button(key="share.report").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    labels = [b.label for b in at.get("download_button")]
    assert labels[0].startswith("Download the bundle (") and labels[1].startswith("Download report.html (")
    data = at.session_state["share.prepared"]["data"]
    report = at.session_state["share.report_html"]["data"].decode()
    assert "<h2>Within-model fit</h2>" in report and "<h2>Across models</h2>" not in report
    assert set(load_bundle(data).states) == {"explorer.result", "shift.result", "within.result", "steer.result",
                                             "steer.sweep", "steer.layer.A"}
    # changing the choice makes the prepared file stale: no download of something else than what is chosen
    at.multiselect(key="share.views").set_value(["explorer"]).run()
    assert not at.get("download_button")

    # a fresh session imports it; a bad file first: one sentence, nothing lost
    fresh = _share_page({"across.result": states["across.result"]})
    fresh.file_uploader(key="share.upload").upload("evil.zip", _zip({"x.pkl": b"\x80\x04N."}), "application/zip").run()
    assert [e.value for e in fresh.error] == ["This file is not a repmap bundle: it should hold only bundle.json and "
                                              "arrays.safetensors, and it holds x.pkl."]
    assert fresh.session_state["across.result"] is states["across.result"] and "explorer.result" not in fresh.session_state \
        or fresh.session_state["explorer.result"] is None
    fresh.file_uploader(key="share.upload").upload("session.zip", data, "application/zip").run()
    assert not fresh.exception and not fresh.error, [e.value for e in fresh.error]
    assert "Layer explorer, Finetuning shift, Within-model fit, Steering" in fresh.success[0].value
    assert [p.proto.label for p in fresh.get("page_link")] == ["Layer explorer", "Finetuning shift", "Within-model fit",
                                                                "Steering"]
    assert fresh.session_state["across.result"] is states["across.result"]  # a view the bundle lacks stays
    want = states["explorer.result"].rows
    pages = {"views/layer_explorer.py": "Best layer", "views/shift.py": None, "views/within_fit.py": "Held-out R²",
             "views/steering.py": None, "views/across.py": "R² test"}
    for page, metric in pages.items():
        goto(fresh, page)
        assert not fresh.exception and not fresh.error, (page, [e.value for e in fresh.exception], [e.value for e in fresh.error])
        assert fresh.get("plotly_chart") or page == "views/within_fit.py" and fresh.dataframe, page  # closed form: no curve
        if metric:
            assert metric in [m.label for m in fresh.metric] or page == "views/across.py", page
    goto(fresh, "views/layer_explorer.py")
    shown = tiles(fresh)
    best = max(want, key=lambda r: r.probe_cv_acc)
    assert shown["Rows"] == "120" and shown["Probe accuracy there (cv)"] == format_estimate(best.cv_estimate())
    # the widget choices came along: the layers shown and the point budget
    assert fresh.multiselect(key="explorer.shown").value == [0, 2] and fresh.number_input(key="explorer.max_points").value == 500
    goto(fresh, "views/within_fit.py")
    res = states["within.result"].result
    assert tiles(fresh)["Held-out R²"] == format_estimate(res.intervals["r2_test"])
    # the weak-label view, on a machine with no finetuned model at all
    goto(fresh, "views/share.py")
    weak = bundle_bytes({"finetune.weak": states["finetune.weak"]}, views=["finetune"])
    fresh.file_uploader(key="share.upload").upload("weak.zip", weak, "application/zip").run()
    assert [p.proto.label for p in fresh.get("page_link")] == ["Finetune (weak labels)"]
    goto(fresh, "views/finetune.py")
    assert not fresh.exception and not fresh.error
    assert tiles(fresh)["Agreement with the true labels"] == "0.900 [0.833, 0.942]"
    goto(fresh, "views/within_fit.py")  # the earlier import is still there
    assert tiles(fresh)["Held-out R²"] == format_estimate(res.intervals["r2_test"])


def test_a_bundle_of_the_older_dict_states_loads_as_the_dataclasses(states):
    """Bundles written when each view's result was a dict of the same fields still open."""
    from repmap_core.share.bundle import LEGACY_DICT_STATES

    def as_dict(v):
        return {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}

    old = {k: as_dict(v) if k in LEGACY_DICT_STATES else v for k, v in states.items() if v is not None}
    old["within.result"] = {"result": states["within.result"].result, "layer": 2, "points": []}  # before arrays, options
    back = load_bundle(bundle_bytes(old)).states
    for key in set(LEGACY_DICT_STATES) & set(old):  # the transfer is None in these states
        assert type(back[key]) is type(states[key]), key
        assert_same(states[key], back[key], key)
    # the weak-label set before it had an interval: a bare share of rows gets its Wilson interval
    bare = dict(old["finetune.weak"], agreement=0.9)
    weak = load_bundle(bundle_bytes({"finetune.weak": bare}, views=["finetune"])).states["finetune.weak"]
    assert isinstance(weak, WeakLabelResult) and format_estimate(weak.agreement) == "0.900 [0.833, 0.942]"
    assert back["within.result"].arrays is None and back["within.result"].options is None
    # a dict missing a field the view needs is refused in one sentence
    broken = {"explorer.result": {k: v for k, v in as_dict(states["explorer.result"]).items() if k != "aset"}}
    with pytest.raises(RepmapError, match="values repmap does not understand"):
        load_bundle(bundle_bytes(broken))
