"""repmap: see how a language model lays out a concept, how finetuning moves it, and whether a
linear map carries it to another model. Run with `streamlit run app.py` (on a shared lab server:
`REPMAP_MODE=shared streamlit run app.py`, see SECURITY.md)."""
import os
from pathlib import Path

if os.environ.get("REPMAP_MODE", "").strip().lower() == "shared":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub reads it: no hub calls at all

import streamlit as st  # noqa: E402

from repmap_ui.common import apply_policy, run_with_sidebar  # noqa: E402
from repmap_ui.pages import PAGES  # noqa: E402

# a local file: a material-icon or emoji favicon is fetched from the network, which fails offline
st.set_page_config(page_title="repmap", page_icon=str(Path(__file__).parent / "repmap_ui" / "assets" / "favicon.png"),
                   layout="wide")
apply_policy()  # what links and forms may make this server read, load, download and compute

st.session_state.setdefault("explorer.result", None)

pages = [st.Page(p.file, title=p.title, icon=p.icon, default=p.default, **({"url_path": p.url_path} if p.url_path else {}))
         for p in PAGES]
page = st.navigation(pages)
run_with_sidebar(page)
