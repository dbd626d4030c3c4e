"""Page tests (Streamlit's AppTest) and what they share."""
from __future__ import annotations


def tiles(at) -> dict[str, str]:
    """Every metric tile as a reader sees it: its value, and for an estimate its 95% interval from the caption under it
    (`repmap_ui.tiles`), joined as "0.880 [0.856, 0.903]", the way `format_estimate` writes it."""
    out = {}
    for block in [*at.columns, at.main]:
        intervals = [c.value[4:] for c in block.caption if c.value.startswith("95% [")]
        for m in block.metric:
            if m.label not in out:
                out[m.label] = m.value + (f" {intervals[0]}" if len(block.metric) == 1 and intervals else "")
    return out
