"""Cache browser: what has been computed, how big it is, and deleting entries."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from repmap_core import store

st.title("Cache")
root = store.cache_root()
entries = store.list_entries()
st.caption(f"Activations are cached in `{root}` (set `REPMAP_CACHE` to move it): "
           f"{len(entries)} entries, {store.cache_size_bytes() / 1e6:.1f} MB in all, including projections and uploads.")

if not entries:
    st.info("Nothing is cached yet. Open the layer explorer to compute activations.")
else:
    table = pd.DataFrame([{
        "model": e.model, "data": e.dataset, "position": e.position, "layers": ", ".join(map(str, e.layers)),
        "rows": e.n_rows, "width": e.d_model, "MB": round(e.bytes / 1e6, 2), "created": e.created, "key": e.key,
    } for e in entries])
    st.dataframe(table, hide_index=True, key="cache.table")
    labels = {e.key: f"{e.model} · {e.dataset} · {e.position} · {len(e.layers)} layers · {e.bytes / 1e6:.1f} MB"
              for e in entries}
    doomed = st.multiselect("Entries to delete", list(labels), format_func=labels.get, key="cache.doomed")
    if st.button("Delete selected", disabled=not doomed, key="cache.delete"):
        for key in doomed:
            store.delete_entry(key)
        st.session_state.pop("cache.doomed", None)
        st.success(f"Deleted {len(doomed)} entr{'y' if len(doomed) == 1 else 'ies'}.")
        st.rerun()
