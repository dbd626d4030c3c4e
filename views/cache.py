"""Cache browser: everything that has been computed, stored or uploaded, how big it is, and deleting it."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from repmap_core.capture.inventory import KIND_NAMES, delete_item, inventory
from repmap_core.locations import cache_root
from repmap_ui.common import local_models

st.title("Cache")
root = cache_root()
items = inventory()
total = sum(i.bytes for i in items)
st.caption(f"Everything repmap computes or stores lives in `{root.name}/` (set `REPMAP_CACHE` to move it): "
           f"{len(items)} item{'' if len(items) == 1 else 's'}, {total / 1e6:.1f} MB in all.")

if not items:
    st.info("Nothing is cached yet. Open the layer explorer to compute activations.")
    st.stop()

kinds = pd.DataFrame([{"kind": i.kind_name, "MB": i.bytes / 1e6} for i in items]).groupby("kind")["MB"].agg(["count", "sum"])
st.dataframe(kinds.rename(columns={"count": "items", "sum": "MB"}).style.format({"MB": "{:.1f}"}), key="cache.kinds")
table = pd.DataFrame([{"kind": i.kind_name, "what": i.name, "MB": round(i.bytes / 1e6, 2), "created": i.created}
                      for i in items])
st.dataframe(table, hide_index=True, key="cache.table", column_config={"what": st.column_config.TextColumn(width="large")})
labels = {f"{i.kind}/{i.id}": f"{i.kind_name}: {i.name} · {i.bytes / 1e6:.1f} MB" for i in items}
doomed = st.multiselect("Items to delete", list(labels), format_func=labels.get, key="cache.doomed")
if st.button("Delete selected", disabled=not doomed, key="cache.delete"):
    chosen = [i for i in items if f"{i.kind}/{i.id}" in doomed]
    for item in chosen:
        delete_item(item)
    if any(i.kind in ("models", "gguf") for i in chosen):
        local_models.clear()  # the pickers must stop offering them
    st.session_state.pop("cache.doomed", None)
    st.success(f"Deleted {len(chosen)} item{'' if len(chosen) == 1 else 's'}.")
    st.rerun()
st.caption("Kinds: " + "; ".join(f"{v}" for k, v in KIND_NAMES.items() if k != "other") +
           ". Deleting activations or a projection only costs recomputing them; a converted GGUF model is converted "
           "again on its next use; a finetuned model is gone until you finetune it again.")
