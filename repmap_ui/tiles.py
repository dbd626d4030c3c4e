"""Metric tiles that fit their numbers: the value in the tile, its 95% interval on a line of its own under it.

A tile is a fifth or a quarter of the page wide; "0.880 [0.856, 0.903]" in a tile's large type did not fit and
was cut to "0.880 [0.856, …". So the tile shows the value, and a caption under it the interval (and how it was
made, in the tile's help with whatever else the page says there)."""
from __future__ import annotations

import math

import streamlit as st

from repmap_core.analysis.stats import Estimate


def value_text(e: Estimate | None, digits: int = 3) -> str:
    """The estimate's value as the tile shows it; '–' when there is none."""
    if e is None or e.value is None or not math.isfinite(e.value):
        return "–"
    return f"{e.value:.{digits}f}"


def interval_text(e: Estimate | None, digits: int = 3) -> str:
    """'95% [0.856, 0.903]', the line under the tile; '' when the estimate has no interval."""
    if e is None or not all(isinstance(v, float) and math.isfinite(v) for v in (e.value, e.low, e.high)):
        return ""
    return f"95% [{e.low:.{digits}f}, {e.high:.{digits}f}]"


def estimate_tile(label: str, e: Estimate | None, *, where=None, help: str | None = None, digits: int = 3) -> None:
    """`st.metric(label, value)` in `where` (a column), with the 95% interval in a caption under it."""
    where = where or st
    where.metric(label, value_text(e, digits), help=help)
    where.caption(interval_text(e, digits) or "no interval")
