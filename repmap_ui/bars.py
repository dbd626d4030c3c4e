"""Progress bars for work a page does while the person waits: each line says what runs, the time so far and
the time left (`repmap_core.progress.Pace`: from the estimate made before the start until the work gives a
pace), and the sidebar's cache size is measured again as the work fills the cache."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import streamlit as st

from repmap_core.progress import Pace, Progress
from repmap_ui.common import refresh_cache_line


@contextlib.contextmanager
def timed_bar(text: str, estimate: float | None = None, *, where=None, prefix: str = "") -> Iterator[Progress]:
    """A progress bar in `where` (the page by default) for the block's work; yields the `Progress` to hand the
    work. `estimate`: seconds, made before the start. `prefix` goes before each message. Removed at the end."""
    bar = (where or st).progress(0.0, text=text)

    def draw(fraction: float, message: str) -> None:
        bar.progress(fraction, text=f"{prefix}{message}")
        refresh_cache_line()

    pace = Pace(draw, estimate)
    try:
        yield pace
    finally:
        bar.empty()
