"""The Finetuning shift and Within-model fit pages, driven by AppTest on tiny finetuned models."""
from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from repmap_core.data.load import load_dataset
from repmap_core.finetune.train import FinetuneConfig, finetune
from tests.conftest import ROOT
from tests.pages import tiles

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_models):
    """One cache for the module holding two tiny finetuned models (GPT-2, then BERT as a weak labeller)."""
    cache = tmp_path_factory.mktemp("shift_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("REPMAP_CACHE", str(cache))
    data = load_dataset("builtin:sentiment", limit=120)
    cfg = FinetuneConfig(epochs=1, batch_size=16, lr=1e-3)
    weak = finetune(str(tiny_models["bert"]), data, cfg)
    strong = finetune(str(tiny_models["gpt2"]), data, cfg)  # the newest: the pages open on it
    mp.undo()
    return {"cache": cache, "gpt2": str(tiny_models["gpt2"]), "bert": str(tiny_models["bert"]),
            "ft": strong.path, "weak": weak.path}


@pytest.fixture
def app(shared, monkeypatch) -> AppTest:
    monkeypatch.setenv("REPMAP_CACHE", str(shared["cache"]))
    # each test opens its page by name (Home is the default page)
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)


def charts(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def ok(at):
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_shift_page_opens_on_the_newest_finetuned_model(app, shared):
    ok(app.switch_page("views/shift.py").run())
    assert not app.error, [e.value for e in app.error]
    sep, scatter, grid = charts(app)
    assert {t["name"] for t in sep["data"]} == {"base", "finetuned"}
    names = {t["name"] for t in scatter["data"]}
    assert {"before · label 0", "after · label 1", "moves · label 0"} <= names
    lines = next(t for t in scatter["data"] if t["name"] == "moves · label 1")
    assert lines["mode"] == "lines"
    assert "(lines for 300 of 800 rows)" in scatter["layout"]["title"]["text"]
    assert [a["text"] for a in grid["layout"]["annotations"]] == ["layer 0", "layer 1", "layer 2"]
    captions = " ".join(c.value for c in app.caption)
    assert "Mean move at layer 2" in captions and "raised the probe's cross-validated accuracy" in captions
    # PCA on the base model's axes instead of the union
    ok(app.segmented_control(key="shift.method").set_value("pca_base").run())
    assert len(charts(app)) == 3
    # custom axes: the task direction after finetuning against the mean move, named on the axes
    ok(app.segmented_control(key="shift.method").set_value("custom").run())
    ok(app.selectbox(key="shift.y_axis").set_value("mean_move").run())
    _, scatter, grid = charts(app)
    assert scatter["layout"]["xaxis"]["title"]["text"].startswith("class-mean difference after finetuning")
    assert scatter["layout"]["yaxis"]["title"]["text"] == "mean move (after − before)"
    assert grid["layout"]["title"]["text"].startswith("Custom axes before and after finetuning")
    assert any("two directions' cosine" in c.value for c in app.caption)


def test_within_page_closed_form_then_gd_then_weak_labels(app, shared):
    ok(app.switch_page("views/within_fit.py").run())
    ok(app.button(key="FormSubmitter:within.fit-Fit").click().run())
    labels = [m.label for m in app.metric]
    assert labels == ["sign(λ̃·δ) accuracy", "sign((λ̃−μ)·δ) accuracy", "Held-out R²", "cos(δ, class-mean difference)"]
    # every headline with its 95% interval ("0.912 [0.870, 0.941]": the value in the tile, the interval under it),
    # and its null in the help
    shown = tiles(app)
    for m in app.metric:
        assert "[" not in m.value, m.value  # a tile holds its value alone: the interval cut it ("0.880 [0.856, …")
        value, interval = shown[m.label].split(" ", 1)
        low, high = (float(x) for x in interval.strip("[]").split(", "))
        assert low <= float(value) <= high, (m.label, m.value)
        if m.label != "Held-out R²":
            assert "random directions: null" in m.help, m.help
    res = app.session_state["within.result"].result
    assert res.fit["alpha_chosen"] and res.fit["r2_test"] > 0  # ridge chosen on held-out rows, without touching α
    print("tiny within page:", {m.label: m.value for m in app.metric})
    table = app.dataframe[0].value
    assert len(table) == 5 and list(table.columns) == ["train", "test", "test 95% interval", "null (shuffled labels)"]
    assert table["test 95% interval"].str.startswith("[").all() and table["null (shuffled labels)"].str.startswith("null").all()
    assert table.index[2].startswith("modelled λ̂ = Aλ+b+yδ (uses the true label)")
    assert [s.value for s in app.subheader][0].startswith("Table 1")
    assert app.get("download_button")
    # gradient descent: the curve of loss, R² and δ accuracy stays after the fit
    app.selectbox(key="within.method").set_value("gd")
    ok(app.button(key="FormSubmitter:within.fit-Fit").click().run())
    curve = charts(app)[0]
    assert {"loss", "R² (held-out)", "sign(λ̃·δ) acc"} <= {t["name"] for t in curve["data"]}
    step = app.session_state["within.result"].result.fit["step_reported"]  # GD keeps its best held-out step
    assert f"reported: step {step} (lowest held-out loss)" in curve["layout"]["title"]["text"]
    assert f"the parameters reported are those of step {step}" in " ".join(c.value for c in app.caption)
    # Table 2: δ fitted with a weak model's labels
    app.selectbox(key="within.method").set_value("lstsq")
    app.selectbox(key="within.labels").set_value(shared["weak"])
    ok(app.button(key="FormSubmitter:within.fit-Fit").click().run())
    assert [s.value for s in app.subheader][0].startswith("Table 2")


def test_mismatched_base_is_refused_and_the_last_view_stays(app, shared):
    ok(app.switch_page("views/shift.py").run())
    before = len(charts(app))
    app.text_input(key="shift.base.model_other").set_value(shared["bert"])
    app.text_input(key="shift.ft.model_other").set_value(shared["ft"])
    ok(app.button(key="FormSubmitter:shift.form-Compare").click().run())
    errors = [e.value for e in app.error]
    assert len(errors) == 1 and "was finetuned from" in errors[0] and "not " + shared["bert"] in errors[0]
    assert len(charts(app)) == before
    app.text_input(key="shift.base.model_other").set_value(shared["gpt2"])
    app.text_input(key="shift.ft.model_other").set_value(shared["gpt2"])
    ok(app.button(key="FormSubmitter:shift.form-Compare").click().run())
    assert "are the same" in app.error[0].value


def test_comparing_on_the_finetuning_rows_warns(app, shared):
    ok(app.switch_page("views/shift.py").run())
    # 800 rows, among them the rows the model was finetuned on: counted by the keys its finetune records
    assert len(app.warning) == 1 and "of these 800 rows are rows the model was finetuned on" in app.warning[0].value
    app.text_input(key="shift.base.model_other").set_value(shared["gpt2"])
    app.text_input(key="shift.ft.model_other").set_value(shared["ft"])
    app.number_input(key="shift.limit").set_value(120)
    ok(app.button(key="FormSubmitter:shift.form-Compare").click().run())
    assert len(app.warning) == 1 and "rows the model was finetuned on" in app.warning[0].value


def chosen(at: AppTest, prefix: str) -> str:
    """The model a picker names: its typed text when filled, else its choice (what Compare would send)."""
    return at.text_input(key=f"{prefix}.model_other").value.strip() or at.selectbox(key=f"{prefix}.model_choice").value


def test_the_form_holds_the_pair_shown_and_compare_unchanged_shows_it_again(app, shared):
    """Issue 25, item 1: the page opened on the newest checkpoint and its base while the Base picker read the first
    model listed; Compare unchanged then failed ("finetuned from X, not Y"). Every widget now holds the pair shown."""
    ok(app.switch_page("views/shift.py").run())
    shown = app.session_state["shift.result"].request
    assert (shown["base"], shown["finetuned"]) == (shared["gpt2"], shared["ft"])
    assert chosen(app, "shift.base") == shared["gpt2"] and chosen(app, "shift.ft") == shared["ft"]
    assert app.text_input(key="shift.layers").value == shown["layers"]
    assert app.query_params["base"] == shared["gpt2"]
    ok(app.button(key="FormSubmitter:shift.form-Compare").click().run())
    assert not app.error, [e.value for e in app.error]
    assert app.session_state["shift.result"].request == shown
    ok(app.switch_page("views/within_fit.py").run())  # the other page on the same pair: its form holds it too
    assert chosen(app, "within.base") == shared["gpt2"] and chosen(app, "within.ft") == shared["ft"]
    ok(app.switch_page("views/shift.py").run())  # and back: the widgets Streamlit dropped are set again
    assert chosen(app, "shift.base") == shared["gpt2"] and chosen(app, "shift.ft") == shared["ft"]
