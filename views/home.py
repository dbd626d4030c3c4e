"""Home: what repmap is, where it runs (device, cache, hub), and a link with a thumbnail to each view."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from repmap_core.capture import store
from repmap_core.locations import cache_root
from repmap_ui.common import environment
from repmap_ui.pages import PAGES

ROOT = Path(__file__).resolve().parents[1]
THUMBNAILS = ROOT / "docs" / "thumbnails"

INTRO = (
    "repmap shows how a language model lays out a concept across its layers, as projections, probes and separation scores. "
    "It measures how finetuning moves that layout, and whether one affine map with a task direction explains the move. "
    "It fits linear maps between models and layers and carries probes and steering vectors across them, as in the papers it reproduces."
)

# a card per page (Home itself aside); the thumbnail is docs/thumbnails/<stem>.png (docs/make_thumbnails.py)
VIEWS = [(p.file, p.title, p.icon, p.blurb) for p in PAGES if not p.default]


def thumbnail(page: str) -> Path:
    return THUMBNAILS / f"{Path(page).stem}.png"


st.title("repmap")
st.markdown(INTRO)

env = environment()
c1, c2, c3 = st.columns(3)
c1.markdown(f"**Device** · {env['device']}")
c2.markdown("**Hub** · offline: local and embedded models only" if env["offline"] else "**Hub** · online")
c3.markdown(f"**Cache** · {store.cache_size_bytes() / 1e6:.1f} MB in `{cache_root()}`")

views = [v for v in VIEWS if (ROOT / v[0]).exists()]
for start in range(0, len(views), 3):
    for col, (page, title, icon, line) in zip(st.columns(3), views[start:start + 3]):
        with col.container(border=True):
            if thumbnail(page).exists():
                st.image(str(thumbnail(page)), width="stretch")
            st.page_link(page, label=title, icon=icon)
            st.caption(line)
