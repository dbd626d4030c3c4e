"""A view's last computed request, kept in the cache: written atomically, read back, never with
trust_remote_code on, rewritten only when it changed, and unreadable files skipped."""
from __future__ import annotations

import json

import pytest

from repmap_core.locations import cache_root
from repmap_core.results import recent


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPMAP_CACHE", str(tmp_path))
    return tmp_path


def test_a_request_is_kept_per_view_with_plain_values_only_and_trust_off(cache):
    recent.remember("explorer", {"model": "gpt2", "layers": "all", "limit": 200, "trust": True,
                                 "figure": object(), "rows": [1, 2]})
    recent.remember("across", {"source": "a", "target": "b"})
    kept = recent.recall()
    assert kept == {"explorer": {"model": "gpt2", "layers": "all", "limit": 200, "trust": False},
                    "across": {"source": "a", "target": "b", "trust": False}}
    assert not [p for p in (cache / "views").iterdir() if p.name.startswith(".tmp")]  # nothing half-written left


def test_the_same_request_again_is_not_rewritten_and_a_new_one_replaces_it(cache):
    recent.remember("shift", {"base": "a"})
    path = cache / "views" / "shift.json"
    first = json.loads(path.read_text())["created"]
    recent.remember("shift", {"base": "a"})
    assert json.loads(path.read_text())["created"] == first
    recent.remember("shift", {"base": "b"})
    assert recent.recall()["shift"]["base"] == "b"


def test_unreadable_files_are_skipped_forget_removes_and_unknown_views_are_refused(cache):
    recent.remember("explorer", {"model": "gpt2"})
    (cache_root() / "views" / "across.json").write_text("{not json")
    assert list(recent.recall()) == ["explorer"]
    recent.forget("explorer")
    assert recent.recall() == {}
    with pytest.raises(ValueError, match="not a view"):
        recent.remember("tour", {"model": "gpt2"})


ILL_TYPED = [b"[1, 2]", b'"a string"', b"42", b"null", b'{"request": [1, 2]}', b'{"request": "x"}',
             b'{"request": {"limit": [1]}}', b'{"request": {"model": {"a": 1}}}', b"\xff\xfe not utf-8", b"{not json"]


@pytest.mark.parametrize("content", ILL_TYPED)
def test_an_ill_typed_or_unreadable_entry_counts_as_none(content, cache_dir):
    """Issue 21, item 12: `views/across.json` holding `[1,2]` broke every new session (AttributeError): an entry
    of the wrong type is as good as none, and the others are still recalled."""
    recent.remember("explorer", {"model": "m", "data": "builtin:sentiment", "limit": 40})
    (cache_dir / "views" / "across.json").write_bytes(content)
    assert recent.recall() == {"explorer": {"model": "m", "data": "builtin:sentiment", "limit": 40, "trust": False}}
    recent.remember("across", {"source": "a", "target": "b"})  # and a new request replaces it
    assert recent.recall()["across"]["source"] == "a"


def test_every_page_opens_in_a_new_session_beside_ill_typed_entries(cache_dir):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    (cache_dir / "views").mkdir(parents=True)
    for view, content in zip(("explorer", "shift", "across"), ILL_TYPED):
        (cache_dir / "views" / f"{view}.json").write_bytes(content)
    (cache_dir / "tour").mkdir()
    for page in ("views/home.py", "views/share.py", "views/cache.py", "views/layer_explorer.py"):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.switch_page(page)
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
