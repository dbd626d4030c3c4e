"""The sidebar's status while a page works: the cache's size is measured again as long work fills it."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest


def test_the_sidebar_measures_the_cache_again_while_a_page_works(cache_dir):
    """It read 0.0 MB mid-tour with 570 MB in the cache: drawn once when the page started, never again until it
    ended. A bar's progress now measures it again (at most every 10 s)."""
    def page():
        from repmap_core.locations import cache_root
        from repmap_ui import common
        from repmap_ui.bars import timed_bar

        common.sidebar_status()
        cache_root().mkdir(parents=True, exist_ok=True)
        with timed_bar("Working") as progress:
            (cache_root() / "activations.bin").write_bytes(b"\0" * 3_000_000)  # the work fills the cache
            progress(0.5, "half way")  # under 10 s since the sidebar was drawn: not measured again yet
            common._sidebar.at -= common.CACHE_REFRESH_S
            progress(0.9, "nearly")

    at = AppTest.from_function(page, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    cache = [c.value for c in at.sidebar.caption if c.value.startswith("**Cache**")]
    assert cache == [f"**Cache** · 3.0 MB in `{cache_dir.name}/`"]
