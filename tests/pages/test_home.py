"""Home, the default page: what repmap is, where it runs, and a link with a thumbnail to every view."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT


def test_home_is_the_default_page_with_status_and_a_link_per_view(cache_dir):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["repmap"]
    text = [m.value for m in at.markdown]
    intro = text[0]
    assert intro.startswith("repmap shows how a language model lays out a concept") and intro.count(". ") == 2
    assert intro.endswith(".")  # three sentences
    assert any(t.startswith("**Device** · CPU") or t.startswith("**Device** · GPU") for t in text)
    # the precision models run in, and why (the tests force fp32: conftest sets REPMAP_DTYPE)
    assert any(t.startswith("**Device** ·") and t.endswith("fp32 (forced by REPMAP_DTYPE)") for t in text), text
    assert "**Hub** · offline: local and embedded models only" in text  # HF_HUB_OFFLINE=1 in the tests
    assert any(t.startswith("**Cache** ·") and str(cache_dir) in t for t in text)

    views = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "views").glob("*.py") if p.stem != "home")
    links = at.get("page_link")
    assert sorted(link.proto.page for link in links) == sorted(Path(v).stem for v in views)  # url paths
    # every linked view has its thumbnail, small, and the page shows it
    for page in views:
        thumb = ROOT / "docs" / "thumbnails" / f"{Path(page).stem}.png"
        assert thumb.exists(), thumb
        assert thumb.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and thumb.stat().st_size < 60_000
    assert len(at.get("image")) == len(views)
    assert (ROOT / "docs" / "make_thumbnails.py").exists()


def test_layer_explorer_keeps_its_url_path():
    from repmap_ui.pages import PAGES

    assert [p.file for p in PAGES if p.default] == ["views/home.py"]
    assert next(p for p in PAGES if p.file == "views/layer_explorer.py").url_path == "layer_explorer"
    # every page file is in the registry, and the registry names no file that is not there
    assert sorted(p.file for p in PAGES) == sorted(f"views/{f.name}" for f in (ROOT / "views").glob("*.py"))
