"""repmap: see how a language model lays out a concept, how finetuning moves it, and whether a
linear map carries it to another model. Run with `streamlit run app.py`."""
import streamlit as st

from repmap_ui.common import run_with_sidebar
from repmap_ui.pages import PAGES

st.set_page_config(page_title="repmap", page_icon=":material/hub:", layout="wide")

st.session_state.setdefault("explorer.result", None)

pages = [st.Page(p.file, title=p.title, icon=p.icon, default=p.default, **({"url_path": p.url_path} if p.url_path else {}))
         for p in PAGES]
page = st.navigation(pages)
run_with_sidebar(page)
