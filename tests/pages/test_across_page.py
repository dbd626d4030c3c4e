"""The Across models page, run headless with AppTest on two tiny GPT-2 models of different widths
(32 and 48): the similarity heatmap and its best matches, the linked side-by-side projections, map
fits (least squares and live gradient descent) with the probe transfer table, and bad input."""
from __future__ import annotations

import base64
import json

import numpy as np
import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from repmap_core.analysis.between import TRANSFER_EXPLAINED, between_models
from repmap_core.analysis.similarity import layer_similarity
from repmap_core.analysis.similarity_null import NULL_PERMUTATIONS
from repmap_core.analysis.stats import format_estimate
from repmap_core.capture.activations import get_activations
from repmap_core.papers.published import GAO_BETWEEN_VECTOR_ACCURACY
from repmap_core.share.figures_across import best_match_cells
from tests.conftest import ROOT
from tests.pages import tiles
from tests.tiny_models import build_tiny_model

pytestmark = pytest.mark.slow
PAGE = str(ROOT / "views" / "across.py")
DATA = "builtin:sentiment"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[int, str]:
    root = tmp_path_factory.mktemp("across_models")
    return {w: str(build_tiny_model("gpt2", root / f"gpt2_w{w}", n_layers=3, width=w, seed=w)) for w in (32, 48)}


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("across_cache")


@pytest.fixture
def page(shared_cache, monkeypatch):
    monkeypatch.setenv("REPMAP_CACHE", str(shared_cache))  # computed once, reopened by later tests
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def compute(at: AppTest, source: str, target: str, limit: int = 0) -> AppTest:
    at.text_input(key="across.source.model_other").set_value(source)
    at.text_input(key="across.target.model_other").set_value(target)
    at.selectbox(key="across.data_choice").set_value(DATA)
    at.number_input(key="across.limit").set_value(limit)
    at.button(key="FormSubmitter:across.form-Compute").click().run()
    return ok(at)


def fit(at: AppTest, method: str, **fields) -> AppTest:
    at.selectbox(key="across.method").set_value(method)
    for name, value in fields.items():
        getattr(at, "text_input" if name == "alpha" else "number_input")(key=f"across.{name}").set_value(value)
    at.button(key="FormSubmitter:across.fit_form-Fit").click().run()
    return ok(at)


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def chart_with(at: AppTest, trace_type: str) -> dict:
    return next(c for c in charts(at) if any(t.get("type") == trace_type for t in c["data"]))


def side_chart(at: AppTest) -> dict:
    return next(c for c in charts(at) if "xaxis2" in c["layout"] and c["data"][0].get("mode") == "markers"
                and "customdata" in c["data"][0] and c["data"][0].get("type") in ("scatter", "scattergl"))


def values(v) -> np.ndarray:
    """A plotly array: a list, or (plotly 6+) a base64 typed array {"dtype", "bdata"}."""
    if isinstance(v, dict) and "bdata" in v:
        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        shape = v.get("shape")
        return arr.reshape([int(x) for x in str(shape).split(",")]) if shape else arr
    return np.asarray(v, dtype=float) if isinstance(v, list) and v and isinstance(v[0], list) else np.asarray(v)


def metrics(at: AppTest) -> dict[str, str]:
    """Each tile's value with its interval from the line under it ("0.912 [0.870, 0.941]")."""
    assert not any("[" in m.value for m in at.metric)  # the interval sits under the tile, not in it
    return tiles(at)


def activations(path: str):
    return get_activations(path, DATA, "all", "auto")


def test_compute_draws_the_heatmap_with_best_matches_and_the_side_by_side_view(page, models):
    assert "Compute" in page.info[0].value  # nothing is computed before asked
    compute(page, models[32], models[48])
    src, tgt = activations(models[32]), activations(models[48])
    assert (src.d, tgt.d) == (32, 48)
    # the default: debiased CKA, each cell beside its shuffled-row null
    expected = layer_similarity(src.layers, tgt.layers, "cka_debiased", null_permutations=NULL_PERMUTATIONS)

    heat_fig = chart_with(page, "heatmap")
    heat = next(t for t in heat_fig["data"] if t["type"] == "heatmap")
    z = values(heat["z"])
    assert z.shape == (3, 3) and np.allclose(z, expected.values, atol=1e-9)
    assert np.allclose(values(heat["customdata"]).reshape(3, 3), expected.null_high, atol=1e-9)
    assert "debiased linear CKA" in heat_fig["layout"]["title"]["text"] and "rows shuffled" in heat_fig["layout"]["title"]["text"]
    assert (heat["zmin"], heat["zmax"]) == (0.0, 1.0)
    assert best_match_cells(go.Figure(heat_fig)) == expected.best_match()
    starred = [t for row in heat["text"] for t in row if t.startswith("★")]
    assert len(starred) == 3
    caption = " ".join(c.value for c in page.caption)
    assert "Best match per source layer: " + ", ".join(f"{a}→{b}" for a, b in expected.best_match().items()) in caption

    side = side_chart(page)
    assert [a["text"] for a in side["layout"]["annotations"]] == ["gpt2_w32 layer 2 (PCA)", "gpt2_w48 layer 2 (PCA)"]
    assert {t.get("xaxis", "x") for t in side["data"]} == {"x", "x2"}
    for panel in ("x", "x2"):
        ids = np.concatenate([values(t["customdata"]) for t in side["data"] if t.get("xaxis", "x") == panel])
        assert sorted(ids.tolist()) == list(range(800))  # every row in both panels
    assert page.selectbox(key="across.layer_s").value == 2 and page.selectbox(key="across.layer_t").value == 2


def test_use_the_best_match_sets_the_target_layer(page, models):
    compute(page, models[32], models[48])
    best = layer_similarity(activations(models[32]).layers, activations(models[48]).layers, "cka_debiased").best_match()
    page.selectbox(key="across.layer_s").set_value(0).run()
    other = next(L for L in (0, 1, 2) if L != best[0])
    page.selectbox(key="across.layer_t").set_value(other).run()
    page.button(key="across.best").click().run()
    ok(page)
    assert page.selectbox(key="across.layer_s").value == 0
    assert page.selectbox(key="across.layer_t").value == best[0] != other
    titles = [a["text"] for a in side_chart(page)["layout"]["annotations"]]
    assert titles == ["gpt2_w32 layer 0 (PCA)", f"gpt2_w48 layer {best[0]} (PCA)"]


def test_a_stored_selection_highlights_the_same_rows_in_both_panels(page, models):
    compute(page, models[32], models[48])
    chosen = [0, 3, 7, 100, 250, 489]
    page.session_state["across.selected"] = chosen  # what a box or lasso stores (AppTest cannot drag one)
    page.run()
    ok(page)
    side = side_chart(page)
    for panel in ("x", "x2"):
        lit = []
        for t in (t for t in side["data"] if t.get("xaxis", "x") == panel):
            ids = values(t["customdata"])
            lit += ids[values(t["selectedpoints"]).astype(int)].tolist()
            assert t["unselected"]["marker"]["opacity"] < 0.3
        assert sorted(lit) == chosen
    assert side["layout"]["title"]["text"].startswith("6 rows selected")
    page.button(key="across.clear").click().run()
    assert all("selectedpoints" not in t for t in side_chart(ok(page))["data"])


def test_least_squares_fit_shows_metrics_transfer_table_and_exports(page, models):
    compute(page, models[32], models[48])
    page.selectbox(key="across.layer_s").set_value(1).run()
    fit(page, "lstsq", test_frac=0.25, seed=3)
    assert [s.value for s in page.subheader] == ["least squares: source layer 1 → target layer 2"]
    src, tgt = activations(models[32]), activations(models[48])
    expected, _ = between_models(np.asarray(src[1]), np.asarray(tgt[2]), src.labels, pair_ids=src.pair_ids,
                                 method="lstsq", test_frac=0.25, seed=3)
    m = metrics(page)
    iv = expected.intervals  # each tile: the value and its 95% interval, "0.912 [0.870, 0.941]"
    assert m["R² test"] == format_estimate(iv["map.r2_test"]) and m["R² train"] == format_estimate(iv["map.r2_train"])
    assert m["R² test"].startswith(f"{expected.map['r2_test']:.3f} [")
    assert m["Retrieval top-1 (test)"] == format_estimate(iv["map.retrieval_top1"])
    assert m["Probe on source (test)"] == format_estimate(iv["probe.source"])
    assert m["Transfer: vector A w"] == format_estimate(iv["transfer.vector"])
    assert m["Transfer: functional (readout)"] == format_estimate(iv["transfer.functional"])
    assert m["Transfer: functional (readout)"].startswith(f"{expected.transfer['functional']:.3f} [")
    helps = {x.label: x.help for x in page.metric}
    assert "random directions: null 0." in helps["Transfer: functional (readout)"]
    assert "shuffled labels: null 0." in helps["Probe on source (test)"]
    # the published number is not a tile of this run's: it stands, as "paper", beside the comparable one
    assert not any("Gao" in label for label in m)
    paper = next(c.value for c in page.caption if c.value.startswith("Paper, beside this run's A w"))
    assert f"{GAO_BETWEEN_VECTOR_ACCURACY:.4f}" in paper and m["Transfer: vector A w"] in paper
    table = page.dataframe[0].value
    assert list(table["mode"]) == list(TRANSFER_EXPLAINED)
    assert list(table["what it is"]) == list(TRANSFER_EXPLAINED.values())
    assert any("functional, not a point" in c.value and "readout" in c.value for c in page.caption)  # the help line
    assert not any(c.value.startswith("Only") for c in page.caption)  # 367 training rows for a 32-wide source
    per_dim = chart_with(page, "bar")
    assert len(values(per_dim["data"][0]["y"])) == 48  # one bar per target dimension
    buttons = {b.key: b.label for b in page.get("download_button")}  # every figure and table has its own too
    assert {k: buttons.get(k) for k in ("across.dl_map.safetensors", "across.dl_map.manifest",
                                        "across.transfer.export_csv", "across.dl_sim")} == {
        "across.dl_map.safetensors": "Arrays + manifest (safetensors)", "across.dl_map.manifest": "Manifest only (JSON)",
        "across.transfer.export_csv": "CSV", "across.dl_sim": "Similarity matrix (CSV)"}
    saved = page.session_state["across.fit"]
    assert saved.A.shape == (48, 32) and saved.b.shape == (48,)
    manifest = saved.manifest
    assert manifest["source"]["layer"] == 1 and manifest["target"]["model"] == models[48]
    assert manifest["data"]["fingerprint"] == src.manifest["dataset_fingerprint"] and manifest["method"] == "lstsq"


def test_gradient_descent_fit_streams_its_curve_and_ends_with_the_same_panels(page, models):
    compute(page, models[32], models[48])
    fit(page, "gd", steps=300, seed=1)
    assert [s.value for s in page.subheader] == ["gradient descent (Gao et al.): source layer 2 → target layer 2"]
    history = page.session_state["across.fit"].history
    assert len(history) >= 5 and history[0][0] == 10 and history[-1][0] <= 300
    assert history[-1][1] < history[0][1]  # the loss went down
    curve = next(c for c in charts(page) if any(t.get("name") == "held-out R²" for t in c["data"]))
    loss, r2 = curve["data"]
    assert values(loss["x"]).tolist() == [h[0] for h in history] and r2["yaxis"] == "y2"
    # the fit keeps the parameters best on a held-out tenth of its training rows: its reported
    # R² is one the live curve passed through, not necessarily the last
    live_r2 = [h[2] for h in history]
    final = page.session_state["across.fit"].result.map["r2_test"]
    assert min(live_r2) - 1e-3 <= final <= max(live_r2) + 1e-3
    assert list(page.dataframe[0].value["mode"]) == list(TRANSFER_EXPLAINED)
    assert float(metrics(page)["Transfer: vector A w"].split(" ")[0]) >= 0.0
    m = page.session_state["across.fit"].result.map
    assert 0 < m["step_reported"] <= m["steps"] <= 300  # and the page says which step it reports
    assert any(f"the map reported is step {m['step_reported']}'s" in c.value for c in page.caption)
    assert f"reported: step {m['step_reported']}" in curve["layout"]["title"]["text"]


def test_up_down_pair_shows_its_down_map_and_round_trip(page, models):
    compute(page, models[32], models[48])
    fit(page, "updown", steps=200, seed=0)
    assert [s.value for s in page.subheader] == ["up/down pair, round-trip loss (LRT, stitching): source layer 2 → target layer 2"]
    m = page.session_state["across.fit"].result.map
    assert m["method"] == "updown" and 0.0 <= m["round_trip_error_test"] < 1.0 and np.isfinite(m["down_r2_test"])
    caption = next(c.value for c in page.caption if c.value.startswith("Down map target → source"))
    assert f"relative error {m['round_trip_error_test']:.3f}" in caption
    assert page.session_state["across.fit"].A.shape == (48, 32)  # exported like any affine map


BAD_FITS = [
    ("lowrank", {"rank": 40}, "The rank must be between 1 and 32 (the smaller width), not 40."),
    ("ridge", {"alpha": "lots"}, "Ridge alpha must be 'auto' or a positive number, not 'lots'."),
]


@pytest.mark.parametrize("method, fields, message", BAD_FITS, ids=["rank too large", "alpha not a number"])
def test_bad_fit_input_shows_one_sentence_and_keeps_the_previous_fit(page, models, method, fields, message):
    compute(page, models[32], models[48])
    fit(page, "lstsq")
    before = metrics(page)
    fit(page, method, **fields)
    assert [e.value for e in page.error] == [message]
    assert metrics(page) == before and [s.value for s in page.subheader] == ["least squares: source layer 2 → target layer 2"]


def test_procrustes_with_fewer_rows_than_the_width_is_refused(page, models):
    compute(page, models[48], models[48], limit=40)  # 32 training rows < width 48
    fit(page, "lstsq")
    assert any("Only 32 training rows for 48 features" in c.value for c in page.caption)
    fit(page, "procrustes")
    (error,) = [e.value for e in page.error]
    assert "Procrustes needs more rows than the narrower width (48)" in error and "\n" not in error
    assert page.subheader[0].value.startswith("least squares")


def test_one_model_twice_compares_its_layers_and_a_bad_model_keeps_the_view(page, models):
    compute(page, models[32], models[32])
    best = best_match_cells(go.Figure(chart_with(page, "heatmap")))
    assert sorted(best) == [0, 1, 2] and all(a != b for a, b in best.items())  # the trivial diagonal is skipped
    assert any("One model against itself" in c.value for c in page.caption)
    # last -> last would be the identity map: the source starts one layer earlier
    assert (page.selectbox(key="across.layer_s").value, page.selectbox(key="across.layer_t").value) == (1, 2)
    heat_before = chart_with(page, "heatmap")
    compute(page, "someone/absent-model", models[32])
    (error,) = [e.value for e in page.error]
    assert "absent-model" in error and "\n" not in error
    assert chart_with(page, "heatmap") == heat_before  # the last good result stays


def test_svcca_is_selectable_and_warned_about(page, models):
    compute(page, models[32], models[48])
    page.selectbox(key="across.metric").set_value("svcca").run()
    ok(page)
    fig = chart_with(page, "heatmap")
    assert fig["layout"]["title"]["text"].startswith("SVCCA")
    assert any("slower" in w.value for w in page.warning)
    expected = layer_similarity(activations(models[32]).layers, activations(models[48]).layers, "svcca")
    heat = next(t for t in fig["data"] if t["type"] == "heatmap")
    assert np.allclose(values(heat["z"]), expected.values, atol=1e-9)


def test_the_quick_pair_sets_both_pickers_to_the_models_shown(page, models, monkeypatch):
    """Issue 25, item 1: after the one-click MiniLM -> causal LM pair the Target picker read MiniLM; every widget of
    the request now holds the pair shown, and Compute unchanged shows it again."""
    import repmap_ui.common as common
    from repmap_core.capture.models import EMBEDDED_MODEL_ID

    monkeypatch.setattr(common, "default_causal_model", lambda: models[48])  # the causal LM the button offers
    ok(page.run())
    page.button(key="across.quick").click().run()
    ok(page)
    shown = page.session_state["across.result"].request
    assert (shown["source"], shown["target"]) == (EMBEDDED_MODEL_ID, models[48])

    def chosen(side: str) -> str:
        typed = page.text_input(key=f"across.{side}.model_other").value.strip()
        return typed or page.selectbox(key=f"across.{side}.model_choice").value

    assert (chosen("source"), chosen("target")) == (EMBEDDED_MODEL_ID, models[48])
    assert page.selectbox(key="across.data_choice").value == DATA and page.number_input(key="across.limit").value == 2000
    assert (page.query_params["source"], page.query_params["target"]) == (EMBEDDED_MODEL_ID, models[48])
    pair = (page.selectbox(key="across.layer_s").value, page.selectbox(key="across.layer_t").value)
    page.button(key="FormSubmitter:across.form-Compute").click().run()  # Compute, nothing changed
    ok(page)
    assert not page.error and page.session_state["across.result"].request == shown
    assert (page.selectbox(key="across.layer_s").value, page.selectbox(key="across.layer_t").value) == pair
