"""Model and data pickers shared by the pages (work inside or outside an st.form)."""
from __future__ import annotations

import streamlit as st

from repmap_core.capture.models import EMBEDDED_MODEL_ID
from repmap_core.data.load import list_builtin
from repmap_ui.common import local_models, save_upload, table_uploader


def model_picker(key: str, label: str = "Model", extra: list[str] | None = None) -> tuple[str, str]:
    """A select box of models available locally (plus `extra`, e.g. finetuned checkpoints) and a text
    box for any hub id or folder, which wins when filled. Returns (choice, typed)."""
    labels = local_models()
    models = (extra or []) + [m for m in (list(labels) or [EMBEDDED_MODEL_ID]) if m not in (extra or [])]
    choice = st.selectbox(f"{label} (available locally)", models, key=f"{key}.model_choice",
                          format_func=lambda m: labels.get(m, m))
    typed = st.text_input("…or any Hugging Face id or local folder", key=f"{key}.model_other",
                          placeholder="gpt2, EleutherAI/pythia-70m, /path/to/model")
    return choice, typed


def chosen_model(choice: str, typed: str) -> str:
    return typed.strip() or choice


def data_picker(key: str, with_upload: bool = True):
    """Built-in data sets, a typed spec, or an upload; returns (choice, typed, upload)."""
    builtin = list_builtin()
    choice = st.selectbox("Data set", [f"builtin:{k}" for k in builtin], key=f"{key}.data_choice",
                          help="\n".join(f"builtin:{k}: {v}" for k, v in builtin.items()))
    typed = st.text_input("…or a data spec", key=f"{key}.data_other",
                          placeholder="hf:amazon_polarity:test[:2000] or file:/path/data.csv")
    upload = None
    if with_upload:
        upload = table_uploader("…or upload a table (CSV, TSV, JSONL, JSON, parquet)", key=f"{key}.upload")
    return choice, typed, upload


def chosen_data(choice: str, typed: str, upload) -> str:
    """The data spec the user meant: an upload wins, then a typed spec, then the list."""
    if upload is not None:
        return save_upload(upload)
    return typed.strip() or choice


def seed_model_picker(key: str, model: str, extra: list[str] | None = None) -> None:
    """Show `model` in `model_picker(key)` on its next draw: picked from the list when it is there, typed otherwise."""
    listed = model in (extra or []) + (list(local_models()) or [EMBEDDED_MODEL_ID])  # the select box's options
    st.session_state[f"{key}.model_choice" if listed else f"{key}.model_other"] = model
    if listed:
        st.session_state[f"{key}.model_other"] = ""


def seed_data_picker(key: str, data: str) -> None:
    """Show the spec `data` in `data_picker(key)` on its next draw, as `seed_model_picker` does."""
    listed = data in {f"builtin:{k}" for k in list_builtin()}
    st.session_state[f"{key}.data_choice" if listed else f"{key}.data_other"] = data
    if listed:
        st.session_state[f"{key}.data_other"] = ""


def two_models_and_data(key: str, models: tuple[tuple[str, str], tuple[str, str]], with_upload: bool = True):
    """Two model pickers and a data picker side by side (source and target, teacher and student);
    `models` is ((name, label), (name, label)). Returns the two pickers' and the data picker's values
    (pass them to `chosen_model` / `chosen_data` once the form is submitted)."""
    columns = st.columns(3)
    picked = []
    for column, (name, label) in zip(columns, models):
        with column:
            picked.append(model_picker(f"{key}.{name}", label))
    with columns[2]:
        data = data_picker(key, with_upload=with_upload)
    return picked[0], picked[1], data


def seed_fields(prefix: str, request: dict, fields: dict[str, str]) -> None:
    """Show a request's plain values in its form's other widgets on their next draw: `fields` maps a request
    key to its widget's key under `prefix` (`{"limit": "limit"}` sets `<prefix>.limit`)."""
    for name, widget in fields.items():
        if name in request:
            st.session_state[f"{prefix}.{widget}"] = request[name]
