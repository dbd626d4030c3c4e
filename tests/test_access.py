"""Safe to serve: what a link can make the app read, load, download and compute (issue 14).

The policy (repmap_core/access.py) is enforced by the app for every request, whatever its source;
the CLI keeps full access. Here: the allowed roots, downloads off, a link that computes nothing
until Compute is pressed, markdown in every URL parameter shown as text, the caps, and uploads that
expand past the cap."""
from __future__ import annotations

import gzip
import io
import json

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
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
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
    with pytest.raises(RepmapError, match="expands to more than 50 MB once decompressed"):
        check_upload_limits("bomb.csv.gz", bomb, ".csv.gz")
    check_upload_limits("fine.csv.gz", gz_bomb(1), ".csv.gz")  # 1 MB is fine
