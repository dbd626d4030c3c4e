"""repmap: see how a language model lays out a concept, how finetuning moves it, and whether a
linear map carries it to another model. Run with `streamlit run app.py`."""
import streamlit as st

from repmap_ui.common import run_with_sidebar

st.set_page_config(page_title="repmap", page_icon=":material/hub:", layout="wide")

st.session_state.setdefault("explorer.result", None)

pages = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/layer_explorer.py", title="Layer explorer", icon=":material/stacked_line_chart:", url_path="layer_explorer"),
    st.Page("views/shift.py", title="Finetuning shift", icon=":material/moving:"),
    st.Page("views/within_fit.py", title="Within-model fit", icon=":material/functions:"),
    st.Page("views/finetune.py", title="Finetune", icon=":material/model_training:"),
    st.Page("views/across.py", title="Across models", icon=":material/compare_arrows:"),
    st.Page("views/steering.py", title="Steering", icon=":material/explore:"),
    st.Page("views/share.py", title="Share", icon=":material/share:"),
    st.Page("views/presets.py", title="Reproduce the papers", icon=":material/science:"),
    st.Page("views/cache.py", title="Cache", icon=":material/storage:"),
]
page = st.navigation(pages)
run_with_sidebar(page)
