"""Streamlit-side helpers shared by the pages (the only package besides views/ that imports streamlit)."""
