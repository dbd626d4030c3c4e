"""Pages run headless with Streamlit's AppTest: what they draw, and that bad input leaves one
sentence on screen while the previous result stays."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from repmap_core.capture import store
from repmap_core.locations import cache_root
from tests.conftest import ROOT
from tests.pages import tiles

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("app_cache")


@pytest.fixture
def app(shared_cache, monkeypatch) -> AppTest:
    # one cache for the module, so the default view is computed once and reopened after
    monkeypatch.setenv("REPMAP_CACHE", str(shared_cache))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.switch_page("views/layer_explorer.py")  # opened by name: Home is the default page
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    """Each tile's value, with its interval from the line under it where it has one ("0.873 [0.850, 0.894]")."""
    return tiles(at)


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def values(v) -> np.ndarray:
    """A plotly array: a list, or (plotly 6+) a base64 typed array {"dtype", "bdata"}."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
    return np.asarray(v)


def submit(at: AppTest) -> AppTest:
    at.button(key="FormSubmitter:explorer.form-Compute").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_default_page_shows_the_embedded_model_on_builtin_data(app):
    assert [t.value for t in app.title] == ["Layer explorer"]
    m = metrics(app)
    assert m["Rows"] == "800" and m["Width"] == "384" and m["Best layer"] in {str(i) for i in range(6)}
    # the headline with its 95% interval, "0.873 [0.850, 0.894]", clear of the shuffled-label null
    value, interval = m["Probe accuracy there (cv)"].split(" ", 1)
    low, high = (float(x) for x in interval.strip("[]").split(", "))
    assert 0.6 < low <= float(value) <= high <= 1.0 and high - low < 0.1
    curve, grid = charts(app)
    assert any("best: layer" in a.get("text", "") for a in curve["layout"]["annotations"])
    names = {t.get("name") for t in curve["data"]}
    assert {"probe (cross-validated)", "probe (held-out 20%)", "silhouette", "Fisher ratio", "cv 95% interval",
            "shuffled-label null", "shuffled-label null, 95th percentile"} <= names
    null = next(t for t in curve["data"] if t.get("name") == "shuffled-label null")
    assert all(abs(v - 0.5) < 0.1 for v in values(null["y"])) and len(values(null["y"])) == 6
    assert max(values(null["customdata"])) < low  # every layer's null is below the best layer's interval
    captions = " ".join(c.value for c in app.caption)
    assert f"At layer {m['Best layer']}: {m['Probe accuracy there (cv)']} against null 0." in captions
    # small multiples: one subplot per layer, two classes each, the texts on hover
    titles = [a["text"] for a in grid["layout"]["annotations"]]
    assert titles == [f"layer {i}" for i in range(6)]
    assert len(grid["data"]) == 12 and sum(len(values(t["x"])) for t in grid["data"][:2]) == 800
    assert any("phone" in h.lower() for h in grid["data"][0]["text"] + grid["data"][1]["text"])
    table = app.dataframe[0].value
    assert list(table.index) == [0, 1, 2, 3, 4, 5] and {"probe_cv_acc", "probe_cv_low", "null_acc"} <= set(table.columns)
    sidebar = " ".join(c.value for c in app.sidebar.caption)
    assert "CPU" in sidebar and "offline" in sidebar and "MB" in sidebar


def test_rerun_on_cached_data_keeps_the_result_and_switches_projection(app):
    before = metrics(app)
    app.segmented_control(key="explorer.method").set_value("tsne").run()
    assert not app.exception
    assert metrics(app) == before
    assert charts(app)[1]["layout"]["title"]["text"].startswith("t-SNE of each layer")
    app.multiselect(key="explorer.shown").set_value([0, 5]).run()
    grid = charts(app)[1]
    assert [a["text"] for a in grid["layout"]["annotations"]] == ["layer 0", "layer 5"]


def test_switching_to_another_model_and_layers(app, tiny_gpt2):
    app.text_input(key="explorer.model_other").set_value(str(tiny_gpt2))
    app.text_input(key="explorer.layers").set_value("0,-1")
    submit(app)
    m = metrics(app)
    assert m["Width"] == "32" and m["Rows"] == "800"
    assert list(app.dataframe[0].value.index) == [0, 2]
    assert "position **last**" in " ".join(c.value for c in app.caption)  # auto -> last for a causal LM


def test_uploaded_table_is_used(app, tiny_bert):
    rows = "text,label\n" + "".join(f"{'good' if i % 2 else 'bad'} thing number {i},{i % 2}\n" for i in range(40))
    app.text_input(key="explorer.model_other").set_value(str(tiny_bert))
    app.file_uploader(key="explorer.upload").upload("mine.csv", rows.encode(), "text/csv")
    submit(app)
    assert metrics(app)["Rows"] == "40" and metrics(app)["Width"] == "32"
    # stored by content hash, never by the name the user gave it
    uploads = list((cache_root() / "uploads").iterdir())
    assert uploads and all("mine" not in p.name for p in uploads)


BAD_INPUTS = [
    ("model", "someone/absent-model", "is not available offline"),
    ("model", "../" * 24 + "etc/passwd", "loads model folders only under"),  # /etc/passwd from any clone: outside the roots
    ("data", "file:{missing_col}", "match no known schema"),
    ("data", "file:{empty}", "is empty"),
    ("data", "file:{three_labels}", "Labels must be binary"),
    ("data", "file:{latin1}", "is not valid UTF-8"),
    ("data", "file:/no/such/file.csv", "reads data files only under"),  # the roots are checked before existence
    ("layers", "0,99", "Layer 99 is out of range"),
    ("position", "answer", "Position 'answer' needs rows with an answer"),
]


@pytest.mark.parametrize("field, value, phrase", BAD_INPUTS, ids=[b[2][:24] for b in BAD_INPUTS])
def test_bad_input_shows_one_sentence_and_keeps_the_result(app, tmp_path, field, value, phrase):
    files = {"missing_col": "review,stars\nnice,5\n", "empty": "", "three_labels": "text,label\na,0\nb,1\nc,2\n"}
    for key, content in files.items():
        (tmp_path / f"{key}.csv").write_text(content, encoding="utf-8")
        value = value.replace(f"{{{key}}}", str(tmp_path / f"{key}.csv"))
    (tmp_path / "latin1.csv").write_bytes("text,label\ncaf\u00e9,1\n".encode("latin-1"))
    value = value.replace("{latin1}", str(tmp_path / "latin1.csv"))
    before = metrics(app)
    target = {"model": ("text_input", "explorer.model_other"), "data": ("text_input", "explorer.data_other"),
              "layers": ("text_input", "explorer.layers"), "position": ("selectbox", "explorer.position")}[field]
    getattr(app, target[0])(key=target[1]).set_value(value)
    submit(app)
    errors = [e.value for e in app.error]
    assert len(errors) == 1 and phrase in errors[0], errors
    assert "\n" not in errors[0] and "Traceback" not in errors[0]
    assert metrics(app) == before  # the last good view is still on screen
    assert len(charts(app)) == 2


def test_cache_page_lists_and_deletes_entries(app):
    app.switch_page("views/cache.py").run()
    assert not app.exception
    assert [t.value for t in app.title] == ["Cache"]
    from repmap_core.capture.inventory import inventory

    items = inventory()
    # the accounting adds up: the items' bytes are everything on disk
    assert sum(i.bytes for i in items) == store.cache_size_bytes()
    assert f"{len(items)} item" in app.caption[0].value and f"{store.cache_size_bytes() / 1e6:.1f} MB" in app.caption[0].value
    table = app.dataframe[1].value
    row = table[table["what"].str.startswith("all-MiniLM-L6-v2 · builtin:sentiment · mean · 800 rows")]
    assert len(row) == 1 and row["kind"].iloc[0] == "activations"
    assert len(row["created"].iloc[0]) == len("2026-12-06 07:25")  # readable, not raw ISO
    key = next(i for i in items if i.kind == "activations" and i.name.startswith("all-MiniLM-L6-v2"))
    app.multiselect(key="cache.doomed").set_value([f"activations/{key.id}"]).run()
    app.button(key="cache.delete").click().run()
    assert not app.exception
    assert key.id not in {e.key for e in store.list_entries()}
    assert not (cache_root() / "activations" / key.id).exists()


def test_the_switch_sets_header_button_pickers_and_url_to_the_model_shown(app, tiny_gpt2, monkeypatch):
    """Issue 25, item 1: after the one-click switch the header, the switch button, the model picker and the URL
    all name the model on screen, and pressing Compute unchanged shows the same view."""
    import repmap_ui.explorer_form as form

    other = str(tiny_gpt2)
    monkeypatch.setattr(form, "default_causal_model", lambda: other)  # the causal LM the switch offers
    app.run()
    assert [b.label for b in app.button if b.key == "explorer.quick"] == [f"Show {tiny_gpt2.name} instead (causal LM, "
                                                                           "30 blocks; the first time converts it and "
                                                                           "extracts for about a minute here)"]
    app.button(key="explorer.quick").click().run()
    assert not app.exception, [e.value for e in app.exception]
    shown = app.session_state["explorer.result"].request
    assert shown["model"] == other and metrics(app)["Width"] == "32"
    assert app.expander[0].label.endswith(f"· {tiny_gpt2.name} on builtin:sentiment")  # the header: the model shown
    assert [b.label for b in app.button if b.key == "explorer.quick"] == ["Show all-MiniLM-L6-v2 instead (encoder)"]
    assert app.text_input(key="explorer.model_other").value == other  # the picker: the model shown
    assert app.text_input(key="explorer.layers").value == "all" and app.number_input(key="explorer.limit").value == 2000
    assert app.query_params.get("model") == other
    before = metrics(app)
    submit(app)  # Compute, nothing changed: the same request, the same view
    assert app.session_state["explorer.result"].request == shown and metrics(app) == before
    assert not app.error


def test_the_view_choices_survive_a_visit_to_another_page(app):
    """Issue 25, item 2: the projection and the layers shown are kept when the person goes to another page and back."""
    app.segmented_control(key="explorer.method").set_value("pca_std").run()
    app.multiselect(key="explorer.shown").set_value([1, 4]).run()
    assert not app.exception
    app.switch_page("views/home.py").run()
    app.switch_page("views/layer_explorer.py").run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.segmented_control(key="explorer.method").value == "pca_std"
    assert app.multiselect(key="explorer.shown").value == [1, 4]
    grid = charts(app)[1]
    assert [a["text"] for a in grid["layout"]["annotations"]] == ["layer 1", "layer 4"]
    assert grid["layout"]["xaxis"]["title"]["text"] == "standardised PC 1"  # labelled as standardised
    assert app.text_input(key="explorer.model_other").value == ""  # the request form: the view's (MiniLM, listed)
    assert app.selectbox(key="explorer.model_choice").value == "sentence-transformers/all-MiniLM-L6-v2"
