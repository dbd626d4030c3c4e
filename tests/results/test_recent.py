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
        recent.remember("steering", {"model": "gpt2"})
