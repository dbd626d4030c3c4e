"""The base/finetuned/data choice shared by the Finetuning shift and Within-model fit pages."""
from __future__ import annotations

import streamlit as st

from repmap_core.access import cap_rows
from repmap_core.data.load import load_dataset
from repmap_core.errors import RepmapError
from repmap_core.finetune.checkpoints import list_finetuned
from repmap_core.results.view_results import ShiftResult, shift_result
from repmap_ui import urlstate
from repmap_ui.bars import timed_bar
from repmap_ui.common import model_loader
from repmap_ui.flow import cap_note, check_models, is_cached, link_gate, run_request, seconds_for, sync_request
from repmap_ui.pickers import (
    chosen_data,
    chosen_model,
    data_picker,
    model_picker,
    seed_data_picker,
    seed_fields,
    seed_model_picker,
)
from repmap_ui.text import md
from repmap_ui.urlstate import Choice, Int, Layers, Text

RESULT = "shift.result"
# the base/finetuned/data choice in the URL of both pages that share it
URL_REQUEST = [Text("base", ""), Text("finetuned", ""), Text("data", "builtin:sentiment"), Layers("layers", "all"),
               Choice("position", "auto", ("auto", "last", "mean", "answer")), Int("limit", 2000, lo=0)]


def shift_source(result: ShiftResult) -> str:
    """What a shift's figures were made from, for their exports: the base model, its finetune and the data."""
    ft = result.request["finetuned"]
    return f"{result.request['base'].split('/')[-1]} before and after finetuning ({ft.rstrip('/').split('/')[-1][:8]}) · " \
           f"{result.dataset.name}"


def default_pair() -> tuple[str, str] | None:
    """The newest finetuned checkpoint and its base, to show something on first open."""
    done = list_finetuned()
    return (done[0].base_model, done[0].path) if done else None


def shift_form(key: str = "shift") -> dict | None:
    """Base model, finetuned model (checkpoints listed first), data, layers; a request when submitted."""
    finetuned = [m.path for m in list_finetuned()]
    labels = {m.path: f"finetuned {m.base_model.split('/')[-1]} on {m.dataset}" for m in list_finetuned()}
    current = st.session_state.get(RESULT)
    title = "Base model, finetuned model and data"
    if current:
        r = current.request
        title += f" · {r['base'].split('/')[-1]} vs {labels.get(r['finetuned'], r['finetuned'].split('/')[-1])}"
    # folded when something is (about to be) shown: a result, or the newest checkpoint on first open
    with st.expander(title, expanded=current is None and not finetuned), st.form(f"{key}.form"):
        c1, c2 = st.columns(2)
        with c1:
            base = model_picker(f"{key}.base", "Base model")
        with c2:
            ft = model_picker(f"{key}.ft", "Finetuned model", extra=finetuned)
            st.caption("Finetune one on the Finetune page, or give any finetuned checkpoint (hub id or folder).")
        data = data_picker(key)
        c3, c4, c5 = st.columns(3)
        layers = c3.text_input("Layers", value="all", key=f"{key}.layers")
        position = c4.selectbox("Token position", ["auto", "last", "mean", "answer"], key=f"{key}.position")
        limit = c5.number_input("Max rows (0 = all)", min_value=0, value=2000, step=500, key=f"{key}.limit")
        if not st.form_submit_button("Compare", type="primary"):
            return None
    return {"base": chosen_model(*base), "finetuned": chosen_model(*ft), "data": chosen_data(*data),
            "layers": layers, "position": position, "limit": int(limit)}


def seeder(key: str):
    """Sets every widget of the page `key`'s form from a request (the view's on screen)."""
    def seed(req: dict) -> None:
        seed_model_picker(f"{key}.base", req["base"])
        seed_model_picker(f"{key}.ft", req["finetuned"], extra=[m.path for m in list_finetuned()])
        seed_data_picker(key, req["data"])
        seed_fields(key, req, {"layers": "layers", "position": "position", "limit": "limit"})
    return seed


# what belongs to the shown pair of models, dropped when another pair is shown: the layers picked, the within fit
RESET = ("shift.layer", "shift.grid_layers", "within.layer", "within.result")


def compute_shift(req: dict) -> ShiftResult:
    """Activations of both models on the same rows, checked to belong together, with separation."""
    with st.status(f"Activations of both models on {md(req['data'])}", expanded=True) as status:
        with timed_bar("Checking the cache") as progress:
            result = shift_result(req, loader=model_loader(False), progress=progress)
        status.update(label=f"{len(result.dataset)} rows × {len(result.base.layer_list)} layers, before and after",
                      state="complete", expanded=False)
    return result


def from_link(key: str) -> dict | None:
    """The request of a link this page did not write itself, seeded into the form; None without one."""
    if not urlstate.is_link(key, URL_REQUEST):
        return None
    url, notices = urlstate.read(URL_REQUEST)
    if url["base"] and url["layers"] != "all":
        url["layers"], note = urlstate.layers_in_range("layers", url["layers"], url["base"])
        notices += [note] if note else []
    urlstate.show_notices(notices)
    if url["base"]:
        seed_model_picker(f"{key}.base", url["base"])
    if url["finetuned"]:
        seed_model_picker(f"{key}.ft", url["finetuned"], extra=[m.path for m in list_finetuned()])
    seed_data_picker(key, url["data"])
    urlstate.seed(url, {k: f"{key}.{k}" for k in ("layers", "position", "limit")})
    return url if url["base"] and url["finetuned"] else None


def shift_selection(key: str) -> ShiftResult | None:
    """Draw the form; compute on submit, on a link, or on first open when a finetuned model exists;
    return the current result, keeping the last good one on error."""
    try:
        shown = st.session_state.get(RESULT)
        linked = urlstate.not_shown(from_link(key), shown)
        sync_request(key, shown.request if shown else None, seeder(key), f"{key}.base.model_choice")
        req = shift_form(key)
        if req is None and linked:  # a link computes only what is cached, until Compute is pressed
            check_models(linked["base"], linked["finetuned"])
            data = load_dataset(linked["data"], limit=cap_rows(linked["limit"] or None)[0])
            cached = all(is_cached(linked[k], data, linked["layers"], linked["position"]) for k in ("base", "finetuned"))
            seconds = sum(filter(None, (seconds_for(linked[k], data, linked["layers"], linked["position"])
                                        for k in ("base", "finetuned"))))
            if link_gate(key, f"{linked['base']} and {linked['finetuned']} on {data.name} ({len(data):,} rows)", cached,
                         seconds or None):
                req = linked
        if req is None and st.session_state.get(RESULT) is None and (pair := default_pair()):
            req = {"base": pair[0], "finetuned": pair[1], "data": "builtin:sentiment", "layers": "all",
                   "position": "auto", "limit": 2000}
            # the newest checkpoint's own data set, when it is one the picker can name
            newest = list_finetuned()[0]
            if newest.dataset.startswith(("builtin:", "file:", "hf:")):
                req["data"] = newest.dataset
        if req is not None:
            run_request("shift", req, compute_shift, state=RESULT, reset=RESET)
    except RepmapError as e:
        st.error(str(e), icon=":material/error:")
    if (result := st.session_state.get(RESULT)) is not None:
        cap_note("shift")
        urlstate.write(key, URL_REQUEST, result.request)  # what is shown, not a request that failed
    return result
