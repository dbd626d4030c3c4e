"""Shareable state: the URL parser's answers, and pages that read their choices from the URL and write
them back (AppTest)."""
from __future__ import annotations

import json

import pytest

from repmap_ui.urlstate import Bool, Choice, Float, Int, IntList, Layers, Text, layers_among, parse
from tests.conftest import ROOT

SPECS = [Int("limit", 2000, lo=0), Int("points", 3000, lo=100, hi=100_000), Float("test", 0.2, lo=0.05, hi=0.9),
         Choice("method", "pca", ("pca", "tsne", "umap")), Text("model", "gpt2"), Layers("layers", "all"),
         IntList("shown", ()), Bool("bias", True)]


def one_sentence(text: str) -> bool:
    return "\n" not in text and text.count(". ") == 0 and text.endswith(".")


# --------------------------------------------------------------------------- the parser


def test_valid_values_are_read_with_their_types():
    values, notices = parse(SPECS, {"limit": "40", "points": "500", "test": "0.3", "method": "tsne", "model": " x/y ",
                                    "layers": "0, 2,-1", "shown": "2,0", "bias": "0"})
    assert notices == []
    assert values == {"limit": 40, "points": 500, "test": 0.3, "method": "tsne", "model": "x/y", "layers": "0,2,-1",
                      "shown": (2, 0), "bias": False}


def test_absent_values_are_the_defaults():
    assert parse(SPECS, {}) == ({s.key: s.default for s in SPECS}, [])
    assert parse(SPECS, {"layers": "ALL"})[0]["layers"] == "all"


@pytest.mark.parametrize("key, raw, says", [
    ("limit", "abc", "The link's limit='abc' is not a whole number, so the default 2000 is used instead."),
    ("limit", "-5", "The link's limit='-5' is outside at least 0, so the default 2000 is used instead."),
    ("points", "5", "The link's points='5' is outside 100 to 100000, so the default 3000 is used instead."),
    ("test", "nan", "The link's test='nan' is outside 0.05 to 0.9, so the default 0.2 is used instead."),
    ("test", "half", "The link's test='half' is not a number, so the default 0.2 is used instead."),
    ("method", "lda", "The link's method='lda' is not one of pca, tsne, umap, so the default 'pca' is used instead."),
    ("layers", "0,x", "The link's layers='0,x' is not 'all' or a list of whole numbers like 0,3,-1, so the default "
                      "'all' is used instead."),
    ("shown", "1;2", "The link's shown='1;2' is not a list of whole numbers like 0,3,5, so the default none is used "
                     "instead."),
    ("bias", "maybe", "The link's bias='maybe' is not 1 or 0, so the default True is used instead."),
    ("model", "a\nb", "The link's model='a\\nb' is not a single line of at most 1000 characters, so the default "
                      "'gpt2' is used instead."),
])
def test_a_bad_value_falls_back_to_the_default_with_one_sentence(key, raw, says):
    values, notices = parse(SPECS, {key: raw, "limit": "7"} if key != "limit" else {key: raw})
    default = next(s.default for s in SPECS if s.key == key)
    assert values[key] == default
    assert notices == [says]
    assert one_sentence(notices[0])
    assert key != "limit" and values["limit"] == 7 or key == "limit"  # the other parameters are still read


def test_several_bad_values_give_one_notice_each():
    values, notices = parse(SPECS, {"limit": "abc", "method": "lda", "seed": "whatever"})  # seed: not this page's
    assert values["limit"] == 2000 and values["method"] == "pca" and len(notices) == 2
    assert "'abc'" in notices[0] and "'lda'" in notices[1]


def test_layers_not_computed_fall_back_with_one_sentence():
    assert layers_among("shown", (2, 0), [0, 1, 2], [0, 1]) == ((2, 0), None)
    value, note = layers_among("shown", (1, 9), [0, 1, 2], [0, 1, 2])
    assert value == [0, 1, 2]
    assert note == ("The link's shown='1,9' names layer 9, not among those computed (0 to 2), so 0, 1, 2 is used "
                    "instead.")
    value, note = layers_among("ls", 14, list(range(12)), 11)
    assert value == 11 and "ls='14'" in note and one_sentence(note)


def test_layers_out_of_the_models_range_fall_back(tiny_gpt2):
    from repmap_ui.urlstate import layers_in_range

    assert layers_in_range("layers", "0,-1", str(tiny_gpt2)) == ("0,-1", None)
    value, note = layers_in_range("layers", "0,7", str(tiny_gpt2))
    assert value == "all"
    assert note == (f"The link's layers='0,7' names a layer outside {tiny_gpt2.name}'s 3 blocks (0 to 2, or -3 to -1), "
                    "so 'all' is used instead.")
    assert layers_in_range("layers", "0,7", "no/such-model-anywhere") == ("0,7", None)  # the page's request says why


# --------------------------------------------------------------------------- the pages


def explorer(cache, monkeypatch, params: dict[str, str]):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("REPMAP_CACHE", str(cache))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.switch_page("views/layer_explorer.py")
    at.query_params.update(params)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return press_compute(at)


def press_compute(at):
    """A link to a view not yet in the cache waits for Compute (it never starts work on its own): press it,
    as the person opening the link would."""
    gate = [b for b in at.button if (b.key or "").endswith(".link_compute")]
    if gate:
        gate[0].click().run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def grid_titles(at) -> list[str]:
    grid = json.loads(at.get("plotly_chart")[1].proto.spec)
    return [a["text"] for a in grid["layout"].get("annotations", [])]


@pytest.fixture(scope="module")
def page_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("urlstate_cache")


def test_a_link_sets_the_widgets_and_the_result_and_reopens_from_the_cache(tiny_gpt2, page_cache, monkeypatch):
    import repmap_ui.common as common

    params = {"model": str(tiny_gpt2), "data": "builtin:sentiment", "limit": "40", "layers": "0,2", "method": "pca",
              "seed": "3", "shown": "2", "points": "200"}
    at = explorer(page_cache, monkeypatch, params)
    assert not at.error and not at.warning, ([e.value for e in at.error], [w.value for w in at.warning])
    assert at.text_input(key="explorer.model_other").value == str(tiny_gpt2)
    assert at.number_input(key="explorer.limit").value == 40
    assert at.text_input(key="explorer.layers").value == "0,2"
    assert at.number_input(key="explorer.seed").value == 3
    assert at.number_input(key="explorer.max_points").value == 200
    assert at.multiselect(key="explorer.shown").value == [2]
    assert metrics(at)["Rows"] == "40" and metrics(at)["Width"] == "32"
    aset = at.session_state["explorer.result"].aset
    assert aset.layer_list == [0, 2] and aset.n == 40
    assert len(grid_titles(at)) == 1 and "2" in grid_titles(at)[0]  # one panel: layer 2
    assert at.query_params == {k: v for k, v in params.items() if k not in ("method", "data")}  # defaults: left out

    def no_model(trust):
        def load(*args):
            raise AssertionError("the linked request was recomputed instead of read from the cache")
        return load

    monkeypatch.setattr(common, "model_loader", no_model)
    again = explorer(page_cache, monkeypatch, params)  # a new session opening the same link
    assert not again.error, [e.value for e in again.error]
    assert metrics(again) == metrics(at)
    assert again.session_state["explorer.result"].aset.manifest["key"] == aset.manifest["key"]


def test_bad_link_values_fall_back_with_one_notice_each(tiny_gpt2, page_cache, monkeypatch):
    at = explorer(page_cache, monkeypatch, {"model": str(tiny_gpt2), "limit": "40", "layers": "0,9",
                                            "method": "lda", "shown": "1"})
    assert not at.error, [e.value for e in at.error]
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 2 and all("\n" not in w for w in warnings), warnings
    assert "method='lda'" in warnings[0] and "layers='0,9'" in warnings[1]
    assert at.session_state["explorer.result"].aset.layer_list == [0, 1, 2]  # all layers, the default
    assert at.multiselect(key="explorer.shown").value == [1]
    assert at.query_params == {"model": str(tiny_gpt2), "limit": "40", "shown": "1"}  # what is shown now


def test_changing_a_widget_or_submitting_the_form_updates_the_url(tiny_gpt2, page_cache, monkeypatch):
    at = explorer(page_cache, monkeypatch, {"model": str(tiny_gpt2), "limit": "40"})
    assert at.query_params == {"model": str(tiny_gpt2), "limit": "40"}
    at.segmented_control(key="explorer.method").set_value("tsne")
    at.number_input(key="explorer.seed").set_value(5).run()
    assert not at.exception and not at.error
    assert at.query_params == {"model": str(tiny_gpt2), "limit": "40", "method": "tsne", "seed": "5"}

    at.number_input(key="explorer.limit").set_value(30)
    at.text_input(key="explorer.layers").set_value("-1")
    at.button(key="FormSubmitter:explorer.form-Compute").click().run()
    assert not at.exception and not at.error
    assert metrics(at)["Rows"] == "30"
    assert at.query_params == {"model": str(tiny_gpt2), "limit": "30", "layers": "-1", "method": "tsne", "seed": "5"}


def test_the_copy_link_box_shows_the_url_with_the_choices(tiny_gpt2, page_cache, monkeypatch):
    at = explorer(page_cache, monkeypatch, {"model": str(tiny_gpt2), "limit": "40", "seed": "3"})
    from urllib.parse import parse_qsl, urlsplit

    codes = [c.value for c in at.sidebar.get("code")]
    assert len(codes) == 1
    assert dict(parse_qsl(urlsplit(codes[0]).query)) == {"model": str(tiny_gpt2), "limit": "40", "seed": "3"}


def open_page(path: str, cache, monkeypatch, params: dict[str, str]):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("REPMAP_CACHE", str(cache))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.switch_page(path)
    at.query_params.update(params)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return press_compute(at)


def test_across_models_link_sets_the_models_metric_and_layer_pair(tiny_gpt2, page_cache, monkeypatch):
    params = {"source": str(tiny_gpt2), "target": str(tiny_gpt2), "data": "builtin:sentiment", "limit": "40",
              "metric": "svcca", "ls": "0", "lt": "2"}
    at = open_page("views/across.py", page_cache, monkeypatch, params)
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["across.result"].source.n == 40
    assert at.selectbox(key="across.metric").value == "svcca"
    assert at.selectbox(key="across.layer_s").value == 0 and at.selectbox(key="across.layer_t").value == 2
    assert at.query_params == params

    at = open_page("views/across.py", page_cache, monkeypatch, dict(params, lt="7"))
    assert [w.value for w in at.warning if "lt=" in w.value] == [
        "The link's lt='7' names layer 7, not among those computed (0 to 2), so 2 is used instead."]
    assert at.selectbox(key="across.layer_t").value == 2  # the page's default: the last layer


def test_finetuning_shift_link_compares_the_named_models(tiny_gpt2, tmp_path, page_cache, monkeypatch):
    import shutil

    other = shutil.copytree(tiny_gpt2, tmp_path / "also-gpt2")  # same weights: "finetuned" for the page's purpose
    params = {"base": str(tiny_gpt2), "finetuned": str(other), "limit": "40", "layers": "0,-1", "position": "mean"}
    at = open_page("views/shift.py", page_cache, monkeypatch, params)
    assert not at.error, [e.value for e in at.error]
    result = at.session_state["shift.result"]
    assert result.base.n == 40 and result.base.layer_list == [0, 2]
    assert result.request["position"] == "mean"
    assert at.selectbox(key="shift.position").value == "mean" and at.text_input(key="shift.layers").value == "0,-1"
    assert at.query_params == params


def test_steering_link_computes_the_named_vectors(tiny_gpt2, page_cache, monkeypatch):
    params = {"a": str(tiny_gpt2), "limit": "40", "layers": "1,2", "vector": "pca_diff", "test": "0.25"}
    at = open_page("views/steering.py", page_cache, monkeypatch, params)
    assert not at.error, [e.value for e in at.error]
    req = at.session_state["steer.result"].request
    assert (req["A"], req["B"], req["method"], req["test_frac"], req["limit"]) == (str(tiny_gpt2), None, "pca_diff", 0.25, 40)
    assert sorted(at.session_state["steer.result"].sets["A"].vectors) == [1, 2]
    assert at.selectbox(key="steer.method").value == "pca_diff" and at.number_input(key="steer.test_frac").value == 0.25
    assert at.query_params == params


def test_a_link_to_what_is_already_shown_is_not_recomputed():
    """An imported bundle (or a reload of the page's own link) already shows the link's request:
    recomputing would need the model, which the importing machine may not have."""
    from types import SimpleNamespace

    from repmap_ui.urlstate import not_shown

    shown = SimpleNamespace(request={"model": "m", "data": "builtin:sentiment", "layers": "all", "limit": 60, "B": None,
                                     "trust": False})  # a view's result: only its request is read
    same = {"model": "m", "data": "builtin:sentiment", "layers": "all", "limit": 60, "B": "", "trust": False}
    assert not_shown(same, shown) is None
    other = dict(same, limit=61)
    assert not_shown(other, shown) == other
    assert not_shown(same, None) == same and not_shown(None, shown) is None


def test_a_link_for_all_rows_matches_its_result_on_a_capped_server(monkeypatch):
    """On a shared server a link's limit=0 ("all") runs as the server's cap; its result's request holds the cap.
    Compared as written, the link never matched its own result and the explorer recomputed it on every run."""
    from types import SimpleNamespace

    from repmap_core import access
    from repmap_ui.urlstate import not_shown

    monkeypatch.setenv("REPMAP_MODE", "shared")
    access.enforce(access.policy())
    try:
        cap = access.active().max_rows
        shown = SimpleNamespace(request={"model": "m", "data": "builtin:sentiment", "limit": cap, "trust": False})
        assert not_shown({"model": "m", "data": "builtin:sentiment", "limit": "0", "trust": False}, shown) is None
        assert not_shown({"model": "m", "data": "builtin:sentiment", "limit": str(cap + 1), "trust": False}, shown) is None
        fewer = {"model": "m", "data": "builtin:sentiment", "limit": "40", "trust": False}
        assert not_shown(fewer, shown) == fewer
    finally:
        access.enforce(None)


# --------------------------------------------------------------------------- view and fit options of the other pages


def link_notices(at) -> list[str]:
    return [w.value for w in at.warning if w.value.startswith("The link's")]


def test_finetuning_shift_link_sets_the_view_options(tiny_gpt2, tmp_path, page_cache, monkeypatch):
    import shutil

    other = shutil.copytree(tiny_gpt2, tmp_path / "also-gpt2")
    request = {"base": str(tiny_gpt2), "finetuned": str(other), "limit": "40", "layers": "0,-1", "position": "mean"}
    params = dict(request, layer="0", axes="pca_base", points="300", lines="50", grid="2")
    at = open_page("views/shift.py", page_cache, monkeypatch, params)
    assert not at.error and not link_notices(at), [e.value for e in at.error]
    assert at.selectbox(key="shift.layer").value == 0 and at.segmented_control(key="shift.method").value == "pca_base"
    assert at.number_input(key="shift.max_points").value == 300 and at.number_input(key="shift.arrows").value == 50
    assert at.multiselect(key="shift.grid_layers").value == [2]
    assert at.query_params == params

    at = open_page("views/shift.py", page_cache, monkeypatch, dict(params, layer="1"))  # layer 1 was not computed
    assert link_notices(at) == ["The link's layer='1' names layer 1, not among those computed (0 to 2), so 2 is used "
                                "instead."]
    assert at.selectbox(key="shift.layer").value == 2
    at.number_input(key="shift.arrows").set_value(10).run()
    assert not at.exception and not at.error
    assert dict(at.query_params) == {k: v for k, v in dict(params, lines="10").items() if k != "layer"}


def test_within_fit_link_seeds_the_form_and_runs_a_closed_form_fit(tiny_gpt2, tmp_path, page_cache, monkeypatch):
    import shutil

    other = shutil.copytree(tiny_gpt2, tmp_path / "also-gpt2")
    request = {"base": str(tiny_gpt2), "finetuned": str(other), "limit": "40", "layers": "0,-1", "position": "mean"}
    params = dict(request, layer="0", alpha="0.5", test="0.3")
    at = open_page("views/within_fit.py", page_cache, monkeypatch, params)
    assert not at.error and not link_notices(at), [e.value for e in at.error]
    assert at.selectbox(key="within.layer").value == 0 and at.text_input(key="within.alpha").value == "0.5"
    assert at.slider(key="within.test_frac").value == 0.3
    assert at.session_state["within.result"].options["layer"] == 0  # closed form: fitted on opening the link
    assert at.query_params == params

    at.text_input(key="within.alpha").set_value("1")
    at.button(key="FormSubmitter:within.fit-Fit").click().run()
    assert not at.exception and not at.error
    assert at.query_params == dict(params, alpha="1")
    # 'auto', the default (chosen on held-out rows), leaves the URL; a bad value falls back to it in one sentence
    at = open_page("views/within_fit.py", page_cache, monkeypatch, dict(params, alpha="-2"))
    assert link_notices(at) == ["The link's alpha='-2' is not 'auto' or a number of 0 or more, so the default 'auto' "
                                "is used instead."]
    assert at.text_input(key="within.alpha").value == "auto" and "alpha" not in at.query_params

    gd = dict(request, method="gd", steps="50", test="0.9")  # gradient descent: seeded, not run; test out of range
    at = open_page("views/within_fit.py", page_cache, monkeypatch, gd)
    assert link_notices(at) == ["The link's test='0.9' is outside 0.1 to 0.5, so the default 0.2 is used instead."]
    assert at.selectbox(key="within.method").value == "gd" and at.number_input(key="within.steps").value == 50
    assert at.slider(key="within.test_frac").value == 0.2
    assert "within.result" not in at.session_state
    assert any("press Fit" in c.value for c in at.caption)
    assert at.query_params == {k: v for k, v in gd.items() if k != "test"}


def test_across_link_seeds_the_fit_form(tiny_gpt2, page_cache, monkeypatch):
    params = {"source": str(tiny_gpt2), "target": str(tiny_gpt2), "data": "builtin:sentiment", "limit": "40",
              "metric": "svcca", "ls": "0", "lt": "2", "map": "lowrank", "rank": "4", "seed": "2", "test": "0.3",
              "alpha": "0.5"}
    at = open_page("views/across.py", page_cache, monkeypatch, params)
    assert not at.error and not link_notices(at), [e.value for e in at.error]
    assert at.selectbox(key="across.method").value == "lowrank" and at.number_input(key="across.rank").value == 4
    assert at.number_input(key="across.seed").value == 2 and at.number_input(key="across.test_frac").value == 0.3
    assert at.text_input(key="across.alpha").value == "0.5"
    assert at.session_state["across.fit"] is None  # seeded, fitted when Fit is pressed
    assert at.query_params == params

    at.number_input(key="across.rank").set_value(5)
    at.button(key="FormSubmitter:across.fit_form-Fit").click().run()
    assert not at.exception and not at.error
    assert at.session_state["across.fit"] is not None
    assert at.query_params == dict(params, rank="5")

    at = open_page("views/across.py", page_cache, monkeypatch, dict(params, alpha="-1"))
    assert link_notices(at) == ["The link's alpha='-1' is not 'auto' or a positive number, so the default 'auto' is "
                                "used instead."]
    assert at.text_input(key="across.alpha").value == "auto"
    assert "alpha" not in at.query_params


def test_steering_link_sets_the_sweep_and_transfer_layers(tiny_gpt2, page_cache, monkeypatch):
    params = {"a": str(tiny_gpt2), "b": str(tiny_gpt2), "limit": "40", "layers": "1,2", "vector": "pca_diff",
              "test": "0.25", "la": "1", "lt": "1"}
    at = open_page("views/steering.py", page_cache, monkeypatch, params)
    assert not at.error and not link_notices(at), [e.value for e in at.error]
    assert at.selectbox(key="steer.layer.A").value == 1  # the middle layer, 2, is the default
    assert at.selectbox(key="steer.layer_s").value == 2 and at.selectbox(key="steer.layer_t").value == 1
    assert at.query_params == params

    at.selectbox(key="steer.layer.A").set_value(2)
    at.button(key="FormSubmitter:steer.sweep_form-Sweep").click().run()
    assert not at.exception and not at.error
    assert at.session_state["steer.sweep"].out.sweep.curve.layer == 2
    assert at.query_params == {k: v for k, v in params.items() if k != "la"}

    at = open_page("views/steering.py", page_cache, monkeypatch, dict(params, la="0"))  # no vector at layer 0
    assert link_notices(at) == ["The link's la='0' names layer 0, not among those computed (1 to 2), so 2 is used "
                                "instead."]
    assert at.selectbox(key="steer.layer.A").value == 2
