"""Exports: standalone HTML and PNG figures, CSV tables, safetensors arrays with manifests; and the
pages offering them (AppTest on tiny models), the array files decoding to what was fitted."""
from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import streamlit.testing.v1.app_test as app_test_module
from safetensors.numpy import load as safetensors_load
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from repmap_core import __version__
from repmap_core.errors import RepmapError
from repmap_core.results.manifests import export_manifest
from repmap_core.results.view_results import ExplorerResult
from repmap_core.share.exports import (
    PNG_SIGNATURE,
    arrays_bundle,
    arrays_safetensors,
    figure_html,
    figure_png,
    png_available,
    png_size,
    read_arrays,
    safe_filename,
    table_csv,
)
from tests.browser import find_chromium, require_or_skip
from tests.conftest import ROOT

SCRIPT_SRC = re.compile(rb"<script[^>]*\bsrc\s*=", re.IGNORECASE)


def small_figure(width: int | None = 400, height: int | None = 300) -> go.Figure:
    fig = go.Figure([go.Scatter(x=[1, 2, 3], y=[3, 1, 2], name="trace_alpha_label"),
                     go.Bar(x=["p", "q"], y=[0.25, 0.75], name="bars_beta")])
    fig.update_layout(title="Separation by layer", width=width, height=height)
    return fig


# ---------------------------------------------------------------------------------------------
# figures


def test_html_is_self_contained_with_the_figure_data():
    page = figure_html(small_figure(), "Layer <separation>")
    text = page.decode("utf-8")
    assert not SCRIPT_SRC.search(page), "a <script src=...> would need the network"
    start = text.index("<script>/**\n* plotly.js v")  # the whole bundle is inside, inline
    end = text.index("</script>", start)
    assert end - start > 3_000_000
    outside = text[:start] + text[end:]
    assert "http://" not in outside and "https://" not in outside  # nothing else fetched or linked
    assert "<title>Layer &lt;separation&gt;</title>" in text
    assert "trace_alpha_label" in text and "bars_beta" in text and "Separation by layer" in text


def test_png_available_is_cached_and_matches_chromium():
    assert png_available() is png_available()
    assert png_available() == (find_chromium() is not None)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["auto", "playwright"])
def test_png_has_the_signature_and_the_requested_size(engine):
    if find_chromium() is None:
        require_or_skip("Chromium not found (shutil.which('chromium') and /usr/bin/chromium); PNG export needs it")
    data = figure_png(small_figure(400, 300), scale=2, engine=engine)
    assert data.startswith(PNG_SIGNATURE)
    width, height = png_size(data)
    assert abs(width - 800) <= 8 and abs(height - 600) <= 8, (width, height)


@pytest.mark.slow
def test_png_uses_a_default_size_when_the_figure_sets_none():
    if find_chromium() is None:
        require_or_skip("Chromium not found; PNG export needs it")
    assert png_size(figure_png(small_figure(None, None), scale=1)) == (900, 560)


def test_png_without_chromium_says_so_in_one_sentence(monkeypatch):
    monkeypatch.setattr("repmap_core.share.exports.find_chromium", lambda: None)
    with pytest.raises(RepmapError, match=r"^PNG export needs Chromium \(apt-get install chromium\); the HTML export"):
        figure_png(small_figure())



def test_png_with_chromium_but_no_driver_names_the_missing_package(monkeypatch):
    """A user install (requirements.txt) has no playwright or kaleido: the sentence must not blame Chromium."""
    from repmap_core.share import exports

    monkeypatch.setattr(exports, "find_chromium", lambda: "/usr/bin/chromium")
    monkeypatch.setattr(exports, "_has_module", lambda name: False)
    monkeypatch.setattr(exports, "png_available", lambda: False)
    assert exports.png_unavailable_reason() == exports.PNG_NEEDS_DRIVER
    assert "pip install playwright" in exports.PNG_NEEDS_DRIVER and "\n" not in exports.PNG_NEEDS_DRIVER
    with pytest.raises(RepmapError, match="pip install playwright"):
        figure_png(small_figure())
    monkeypatch.setattr(exports, "find_chromium", lambda: None)
    assert exports.png_unavailable_reason() == exports.PNG_NEEDS_CHROMIUM


# ---------------------------------------------------------------------------------------------
# tables


def test_csv_round_trips_with_a_meaningful_index_and_full_precision():
    df = pd.DataFrame({"probe_cv_acc": [0.5123456789, 0.987654321], "silhouette": [-0.1, 0.3]},
                      index=pd.Index([3, 7], name="layer"))
    back = pd.read_csv(io.BytesIO(table_csv(df.style.format(precision=2))), index_col="layer")
    pd.testing.assert_frame_equal(back, df)


def test_csv_skips_a_plain_range_index():
    df = pd.DataFrame({"multiplier": [-1.0, 0.0, 1.0], "propensity": [0.1, 0.2, 0.35]})
    text = table_csv(df).decode()
    assert text.splitlines()[0] == "multiplier,propensity"
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(text)), df)


# ---------------------------------------------------------------------------------------------
# arrays


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"A": rng.normal(size=(6, 4)).astype(np.float32), "b": rng.normal(size=6).astype(np.float64),
            "delta": rng.normal(size=6).astype(np.float16), "counts": np.arange(5, dtype=np.int64),
            "strided": rng.normal(size=(4, 6)).astype(np.float32).T}  # not contiguous: must still export


def test_safetensors_round_trip_keeps_arrays_dtypes_and_manifest():
    tensors = arrays()
    manifest = export_manifest("map", tensors, source={"model": "gpt2", "revision": "abc", "layer": 6},
                               metrics={"r2_test": 0.91, "n": np.int64(200)})
    data = arrays_safetensors(tensors, manifest)
    back, back_manifest = read_arrays(data)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)
    assert back_manifest == json.loads(json.dumps(manifest, default=int))
    assert back_manifest["kind"] == "map" and back_manifest["repmap_version"] == __version__
    assert back_manifest["arrays"]["A"] == {"shape": [6, 4], "dtype": "float32"}
    assert back_manifest["metrics"]["n"] == 200 and back_manifest["created"]
    plain = safetensors_load(data)  # the standard loader reads it too, nothing pickled
    assert np.array_equal(plain["strided"], tensors["strided"])


def test_bundle_zip_holds_the_safetensors_and_a_readable_manifest():
    tensors, manifest = arrays(), {"kind": "steering_vectors", "norms": {"6": 1.5}}
    data = arrays_bundle(tensors, manifest, name="steering_gpt2")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert sorted(z.namelist()) == ["steering_gpt2.json", "steering_gpt2.safetensors"]
        assert json.loads(z.read("steering_gpt2.json")) == manifest
    back, back_manifest = read_arrays(data)
    assert back_manifest == manifest and np.array_equal(back["A"], tensors["A"])


def test_arrays_refuse_objects_and_garbage():
    with pytest.raises(RepmapError, match="dtype object"):
        arrays_safetensors({"x": np.array([{"a": 1}], dtype=object)}, {})
    with pytest.raises(RepmapError, match="safetensors"):
        read_arrays(b"\x80\x04\x95 this is a pickle, not safetensors")


# ---------------------------------------------------------------------------------------------
# pages: what the download buttons hold


@pytest.fixture
def media(monkeypatch) -> list[MediaFileManager]:
    """Every MediaFileManager AppTest makes (one per run): deferred downloads live there."""
    made: list[MediaFileManager] = []

    class Recording(MediaFileManager):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(app_test_module, "MediaFileManager", Recording)
    return made


def downloads(at: AppTest, media: list[MediaFileManager]) -> dict[str, dict]:
    """Download buttons by key: label, file name, mime and a `data()` that makes the file."""
    out = {}
    for button in at.get("download_button"):
        entry = media[-1]._deferred_callables.get(button.proto.deferred_file_id)
        if entry is None:  # made eagerly: already in the storage
            stored = media[-1]._storage.get_file(button.proto.url.rsplit("/", 1)[-1])
            entry = {"filename": stored.filename, "mimetype": stored.mimetype, "callable": lambda s=stored: s.content}
        out[button.key] = {"label": button.label, "file_name": entry["filename"], "mime": entry["mimetype"],
                           "data": entry["callable"]}
    return out


def as_bytes(data) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


@pytest.mark.slow
def test_layer_explorer_offers_html_png_and_csv(tiny_gpt2, media):
    from repmap_core.analysis.separation import layer_separation
    from repmap_core.capture.activations import get_activations
    from repmap_core.data.load import load_dataset

    dataset = load_dataset("builtin:sentiment", limit=40)
    aset = get_activations(str(tiny_gpt2), dataset, "all", "auto")
    rows = layer_separation({L: aset[L] for L in aset.layer_list}, aset.labels, aset.pair_ids)
    req = {"model": str(tiny_gpt2), "data": "builtin:sentiment", "layers": "all", "position": "auto", "limit": 40,
           "max_length": 512, "text_col": "", "label_col": "", "trust": False}
    at = AppTest.from_file(str(ROOT / "views" / "layer_explorer.py"), default_timeout=300)
    at.session_state["explorer.result"] = ExplorerResult(req, dataset, aset, rows)
    ok(at.run())
    found = downloads(at, media)
    stem = safe_filename(f"layer_separation_{tiny_gpt2.name}_{dataset.name}")
    html = found["explorer.curve.export_html"]
    assert (html["file_name"], html["mime"]) == (f"{stem}.html", "text/html")
    page = as_bytes(html["data"]())
    assert not SCRIPT_SRC.search(page) and b"probe (cross-validated)" in page and b"Fisher ratio" in page
    assert found["explorer.grid.export_html"]["file_name"].startswith("layers_pca_")
    csv = found["explorer.table.export_csv"]
    assert (csv["file_name"], csv["mime"]) == (f"{stem}.csv", "text/csv")
    back = pd.read_csv(io.BytesIO(as_bytes(csv["data"]())), index_col="layer")
    assert list(back.index) == aset.layer_list
    assert np.allclose(back["probe_cv_acc"], [r.probe_cv_acc for r in rows])
    if png_available():
        png = found["explorer.curve.export_png"]
        assert (png["file_name"], png["mime"]) == (f"{stem}.png", "image/png")
        assert as_bytes(png["data"]()).startswith(PNG_SIGNATURE)
    else:
        assert "explorer.curve.export_png" not in found
        assert any("PNG export needs Chromium" in c.value for c in at.caption)


def safetensors_download(found: dict, key: str) -> tuple[dict, dict[str, np.ndarray], dict]:
    item = found[f"{key}.safetensors"]
    assert item["file_name"].endswith(".safetensors") and item["mime"] == "application/octet-stream"
    data = as_bytes(item["data"]())
    tensors, manifest = read_arrays(data)
    assert set(safetensors_load(data)) == set(tensors)
    sidecar = found[f"{key}.manifest"]
    assert sidecar["file_name"] == item["file_name"].replace(".safetensors", ".json")
    assert sidecar["mime"] == "application/json" and json.loads(as_bytes(sidecar["data"]())) == manifest
    return item, tensors, manifest


@pytest.mark.slow
def test_across_page_map_download_decodes_to_the_fitted_map(tiny_gpt2, tmp_path_factory, media):
    from repmap_core.analysis.between import transferred_probe
    from tests.tiny_models import build_tiny_model

    wide = str(build_tiny_model("gpt2", tmp_path_factory.mktemp("exports_models") / "gpt2_w48", width=48, seed=48))
    at = AppTest.from_file(str(ROOT / "views" / "across.py"), default_timeout=300)
    ok(at.run())
    at.text_input(key="across.source.model_other").set_value(str(tiny_gpt2))
    at.text_input(key="across.target.model_other").set_value(wide)
    at.selectbox(key="across.data_choice").set_value("builtin:sentiment")
    at.number_input(key="across.limit").set_value(200)
    ok(at.button(key="FormSubmitter:across.form-Compute").click().run())
    at.selectbox(key="across.method").set_value("lstsq")
    ok(at.button(key="FormSubmitter:across.fit_form-Fit").click().run())
    fitted = at.session_state["across.fit"]
    found = downloads(at, media)
    item, tensors, manifest = safetensors_download(found, "across.dl_map")
    assert item["file_name"].startswith(f"map_{tiny_gpt2.name}_L")
    assert np.array_equal(tensors["A"], fitted.A) and np.array_equal(tensors["b"], fitted.b)
    assert tensors["A"].shape == (48, 32)
    res = fitted.result
    assert manifest["kind"] == "map" and manifest["metrics"]["r2_test"] == pytest.approx(res.map["r2_test"])
    assert manifest["source"]["model"] == str(tiny_gpt2) and manifest["target"]["model"] == wide
    assert manifest["source"]["revision"] and manifest["data"]["fingerprint"]
    assert manifest["arrays"]["A"]["shape"] == [48, 32] and manifest["repmap_version"] == __version__
    # the carried probe: A w, and the same probe the page's numbers came from
    assert np.allclose(tensors["probe_vector_w"], fitted.A @ tensors["probe_source_w"], atol=1e-4)
    result = at.session_state["across.result"]
    src = result.source
    again = transferred_probe(np.asarray(src[fitted.layers[0]]), src.labels, _Affine(fitted.A, fitted.b),
                              pair_ids=src.pair_ids, test_frac=fitted.request["test_frac"],
                              seed=fitted.request["seed"])
    assert np.allclose(tensors["probe_source_w"], again["probe_source_w"], atol=1e-5)
    tgt = np.asarray(result.target[fitted.layers[1]])
    y = src.labels
    acc = ((tgt @ tensors["probe_functional_w"] + tensors["probe_functional_c"][0] > 0) == (y == 1)).mean()
    assert acc > 0.5  # the carried functional still reads the label on the target
    # figures on the page offer HTML, tables CSV
    assert found["across.heatmap.export_html"]["mime"] == "text/html"
    assert found["across.transfer.export_csv"]["file_name"].startswith("transfer_")


class _Affine:
    def __init__(self, A, b):
        self.A_, self.b_ = A, b


@pytest.mark.slow
def test_within_page_delta_download_decodes_to_the_fit(tiny_gpt2, tmp_path_factory, media):
    from repmap_core.analysis.within import within_model
    from tests.tiny_models import build_tiny_model

    other = str(build_tiny_model("gpt2", tmp_path_factory.mktemp("exports_within") / "gpt2_other", seed=7))
    at = AppTest.from_file(str(ROOT / "views" / "within_fit.py"), default_timeout=300)
    ok(at.run())
    at.text_input(key="within.base.model_other").set_value(str(tiny_gpt2))
    at.text_input(key="within.ft.model_other").set_value(other)
    at.selectbox(key="within.data_choice").set_value("builtin:sentiment")
    at.number_input(key="within.limit").set_value(160)
    ok(at.button(key="FormSubmitter:within.form-Compare").click().run())
    ok(at.button(key="FormSubmitter:within.fit-Fit").click().run())
    done = at.session_state["within.result"]
    found = downloads(at, media)
    item, tensors, manifest = safetensors_download(found, "within.dl_arrays")
    assert item["file_name"] == f"within_fit_layer{done.layer}.safetensors"
    shift = at.session_state["shift.result"]
    base, ft = shift.base, shift.finetuned
    L = done.layer
    res, fit = within_model(base[L], ft[L], base.labels, pair_ids=base.pair_ids, test_frac=0.2)
    assert np.allclose(tensors["delta"], fit.delta_, atol=1e-5) and np.allclose(tensors["A"], fit.A_, atol=1e-5)
    assert np.allclose(tensors["b"], fit.b_, atol=1e-5)
    m = manifest["metrics"]
    assert manifest["kind"] == "within_fit" and manifest["layer"] == L
    assert m["delta_projection_accuracy"] == pytest.approx(done.result.delta_projection_accuracy)
    assert m["fit"]["r2_test"] == pytest.approx(done.result.fit["r2_test"])
    assert manifest["base"]["model"] == str(tiny_gpt2) and manifest["finetuned"]["model"] == other
    table = found["within.table.export_csv"]
    back = pd.read_csv(io.BytesIO(as_bytes(table["data"]())), index_col="representation")
    assert np.allclose(back.loc["base λ", "test"], done.result.probe["base"]["test"])


@pytest.mark.slow
def test_steering_page_vector_download_decodes_to_the_vectors(tiny_gpt2, media, tmp_path):
    from repmap_core.steering import load_vectors

    at = AppTest.from_file(str(ROOT / "views" / "steering.py"), default_timeout=300)
    ok(at.run())
    at.text_input(key="steer.a.model_other").set_value(str(tiny_gpt2))
    at.selectbox(key="steer.b.model_choice").set_value("(none)")
    at.selectbox(key="steer.data_choice").set_value("builtin:survival_instinct")
    at.number_input(key="steer.limit").set_value(40)
    ok(at.button(key="FormSubmitter:steer.form-Compute vectors").click().run())
    vs = at.session_state["steer.result"].sets["A"]
    found = downloads(at, media)
    item, tensors, manifest = safetensors_download(found, "steer.dl_vectors.A")
    assert item["file_name"] == f"steering_{tiny_gpt2.name}.safetensors"
    assert sorted(tensors) == [f"layer_{L}" for L in sorted(vs.vectors)]
    for L, v in vs.vectors.items():
        assert np.array_equal(tensors[f"layer_{L}"], v.vector)
        assert manifest["norms"][str(L)] == pytest.approx(v.norm)
    assert manifest["kind"] == "steering_vectors" and manifest["method"] == "CAA (mean_diff)"
    assert manifest["model"] == vs.manifest["model"] and manifest["layers"] == sorted(vs.vectors)
    assert manifest["data"]["fingerprint"] == vs.manifest["dataset_fingerprint"]
    path = tmp_path / "vectors.safetensors"  # it opens in repmap again
    path.write_bytes(as_bytes(item["data"]()))
    reloaded = load_vectors(path)
    assert {L: r.vector.tolist() for L, r in reloaded.items()} == {L: v.vector.tolist() for L, v in vs.vectors.items()}
    heatmap = found["steer.heatmaps.export_html"]  # the export names the model and data it was made from
    assert heatmap["file_name"] == safe_filename(f"steering_layer_cosines__A: {tiny_gpt2.name} · builtin:survival_instinct") + ".html"
    named, page = f"A: {tiny_gpt2.name} · builtin:survival_instinct", as_bytes(heatmap["data"]())
    assert named.encode() in page or json.dumps(named)[1:-1].encode() in page  # plotly's JSON writes · as \u00b7


def test_exports_never_carry_streamlits_placeholder_colours(monkeypatch):
    """Inside the app Streamlit's theme is the default template; its colours (#000011...) are filled
    in only by Streamlit's front end, so an export built in the app must use plotly's own template."""
    import plotly.graph_objects as go
    import plotly.io as pio
    import streamlit  # noqa: F401  (registers the 'streamlit' template)

    from repmap_core.share.exports import figure_html
    from repmap_core.share.report import _figure_json

    monkeypatch.setattr(pio.templates, "default", "streamlit")
    fig = go.Figure(go.Heatmap(z=[[0, 1], [1, 0]]))
    assert "#000011" in fig.to_json()  # what the app's figures carry
    assert "#000011" not in figure_html(fig).decode() and "#000011" not in json.dumps(_figure_json(fig))
    assert "#0d0887" in json.dumps(_figure_json(fig))  # plotly's own colour scale instead


def test_an_exported_figure_names_its_model_and_data_in_its_file_name_and_under_its_title():
    """PNG exports carried no model or data name: the page's source goes into both."""
    from repmap_core.share.exports import labelled
    from repmap_ui.exports import export_stem

    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1]), layout=dict(title="Probe accuracy per layer", margin=dict(t=50)))
    out = labelled(fig, "SmolLM2-135M-Instruct · builtin:<sentiment>")
    assert out.layout.title.text.startswith("Probe accuracy per layer<br>")
    assert "SmolLM2-135M-Instruct · builtin:&lt;sentiment&gt; · repmap" in out.layout.title.text  # escaped, as text
    assert out.layout.margin.t == 70 and fig.layout.title.text == "Probe accuracy per layer"  # a copy: the app's unchanged
    assert labelled(go.Figure(), "MiniLM · x").layout.title.text.startswith("<span")
    assert export_stem("shift_layer29_pca", "SmolLM2-135M-Instruct before and after finetuning (1a2b3c4d) · builtin:sentiment") \
        == "shift_layer29_pca__SmolLM2-135M-Instruct_before_and_after_finetuning_1a2b3c4d_builtin_sentiment"
    assert export_stem("layer_separation_SmolLM2-135M-Instruct_builtin_sentiment", "SmolLM2-135M-Instruct · builtin:sentiment") \
        == "layer_separation_SmolLM2-135M-Instruct_builtin_sentiment"  # already named: not twice
    assert export_stem("tour_layers", None) == "tour_layers"
