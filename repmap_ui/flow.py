"""How a page turns a request into a view: a link never starts work on its own.

A page's own default view may compute on open, and a request made in its form computes when
submitted. A request that comes from a link computes only when everything it needs is in the cache
already; otherwise the page says what the link asks for, what computing it would take here, and
waits for a press of Compute. So a link can make a shared server read only what is cached, until a
person decides.

One request on screen: the view, its URL, its header and every widget of its form are the same request. A
new result redraws the page from it (`run_request` ends with `st.rerun`), and before a form is drawn its
widgets are set from the view shown whenever they may disagree (`sync_request`: a new view, or widgets that
Streamlit dropped on a visit to another page). The view's own choices (projection, layers shown, a layer
pair) are kept through such a visit (`keep`)."""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import streamlit as st

from repmap_core.access import Refused, cap_rows
from repmap_core.capture.activations import cached_activations, estimate_seconds, plan_activations
from repmap_core.capture.model_names import local_model_path
from repmap_core.capture.models import needs_conversion
from repmap_core.errors import RepmapError
from repmap_core.results.recent import VIEWS as RECALLED
from repmap_core.results.recent import remember
from repmap_ui.text import md


def check_models(*models: str) -> None:
    """Refuse, in one sentence, any model a link names that this server may not open (a path outside its
    roots), before any of them is looked at: so a refusal is never hidden behind another model's gate."""
    for model in models:
        if model:
            local_model_path(str(model).strip())


def is_cached(model: str, data, layers, position: str, *, max_length: int = 512, limit: int | None = None) -> bool:
    """True when these activations can be read from the cache without computing anything."""
    if needs_conversion(model):
        return False
    return cached_activations(model, data, layers, position, max_length=max_length, limit=limit) is not None


def seconds_for(model: str, data, layers, position: str, *, limit: int | None = None) -> float | None:
    """About how long computing these activations takes here; None when it cannot be told ahead. A model the
    server may not open (outside its roots, not downloaded) is refused here, never shown as a cost."""
    try:
        if needs_conversion(model):
            return None
        return estimate_seconds(plan_activations(model, data, layers, position, limit=limit))
    except Refused:
        raise
    except RepmapError:
        return None


def link_gate(key: str, asks: str, cached: bool, seconds: float | None) -> bool:
    """True when the linked request may run now: cached, or its Compute button was pressed."""
    if cached:
        return True
    with st.container(border=True, key=f"{key}.link_gate"):
        st.markdown(f"**This link asks for** {md(asks)}.")
        cost = f"about {seconds:.0f} s of computing here" if seconds is not None else "computing (its size is not known ahead)"
        st.caption(f"It is not in this server's cache yet, so nothing has been computed: it would take {cost}.")
        pressed = st.button("Compute", key=f"{key}.link_compute", type="primary")
    if pressed:  # the person asked for the whole link: its view's projections too (`view_may_compute`)
        st.session_state[f"{key}.link_consent"] = True
    return pressed


SLOW_PROJECTIONS = ("tsne", "umap")  # seconds to minutes each, per layer; PCA takes a fraction of a second


def view_may_compute(key: str, view: dict, from_link: bool) -> bool:
    """False while the view on screen is the one a link asked for (`view`: the page's choices of projection,
    seed, points, ...) and nobody has pressed its Compute: a link's uncached t-SNE or UMAP waits as its
    activations do, whatever seed it names. A person changing the view, or pressing Compute, lets it compute.
    Call it on every run, so a change is seen."""
    pending = f"{key}.view_from_link"
    if from_link and not st.session_state.pop(f"{key}.link_consent", False):
        st.session_state[pending] = dict(view)
    if st.session_state.get(pending) not in (None, view):
        st.session_state.pop(pending)  # the view on screen is a person's own choice now
    return st.session_state.get(pending) is None or view.get("method") not in SLOW_PROJECTIONS


def view_gate(key: str, asks: str) -> bool:
    """The Compute card for a linked view whose projections are not cached; True (and the view a person's
    from now on) once pressed."""
    if link_gate(f"{key}.view", asks, False, None):
        st.session_state.pop(f"{key}.view_from_link", None)
        st.session_state.pop(f"{key}.view.link_consent", None)
        return True
    return False


def run_request(view: str, req: dict, compute, *, state: str | None = None, reset: tuple[str, ...] = ()) -> None:
    """Compute `req` for `view` within the server's row cap, keep the result as the view's (`state`, by default
    "<view>.result"), remember the request in the cache, and draw the page again from it (`st.rerun`): what this
    run drew above the computation (the form's header, a switch button, the pickers) was the previous view's, and
    the next run sets every widget of the request from the new one (`sync_request`). `reset`: the page's view
    choices that belong to the old result (layers shown), dropped so the new one opens on its own defaults. A
    refused request raises its one sentence: the previous result stays, and the form keeps what was typed so it
    can be corrected (set back from the view when the person leaves the page and comes back)."""
    limit, note = cap_rows(req["limit"] or None)
    req["limit"] = int(limit or 0)
    if note:
        st.info(note, icon=":material/speed:")
    result = compute(req)
    st.session_state[state or f"{view}.result"] = result
    if note and getattr(result, "n_rows", req["limit"]) < req["limit"]:
        note = None  # "all rows" of a data set under the cap: nothing was cut
    st.session_state[f"{view}.note"] = note  # said beside the view for as long as it is shown (`cap_note`)
    drop_kept(reset)
    if view in RECALLED:
        remember(view, req)
    st.rerun()


def cap_note(view: str) -> None:
    """The row cap's sentence for the view on screen, when the server's cap cut its rows."""
    if note := st.session_state.get(f"{view}.note"):
        st.info(note, icon=":material/speed:")


def sync_request(page: str, request: dict | None, seed: Callable[[dict], None], probe: str) -> None:
    """Set every widget of the page's request form from `request`, the request of the view on screen, whenever
    the two may disagree: the view is new to the widgets (computed, switched to, opened from a link, rebuilt after
    a refresh, imported) or the widgets were dropped (Streamlit forgets a widget that a run does not draw: a visit
    to another page). `seed(request)` sets them; `probe` is one of their keys. Call before the form is drawn."""
    if request is None:
        return
    signature = json.dumps(request, sort_keys=True, default=str)
    if st.session_state.get(f"{page}.widgets_of") != signature or probe not in st.session_state:
        seed(request)
        st.session_state[f"{page}.widgets_of"] = signature


def _kept(key: str) -> dict:
    """Where `key`'s choice is kept: one store per page, named by the key's prefix ("explorer.shown" -> explorer)."""
    return st.session_state.setdefault(f"{key.split('.')[0]}.kept", {})


def keep(keys: Sequence[str]) -> None:
    """Keep the choices of these widgets (a view's projection, the layers shown, a layer pair) through a visit to
    another page, where Streamlit would drop them: noted on every run, put back when they are missing. Call on
    every run, before they are drawn."""
    for key in keys:
        if key in st.session_state:
            _kept(key)[key] = st.session_state[key]
        elif key in _kept(key):
            st.session_state[key] = _kept(key)[key]


def keep_values(values: dict) -> None:
    """Note these choices as kept (an imported bundle's layer pair, say), so the page that draws their widgets
    finds them after a visit elsewhere, where Streamlit drops widget values it did not draw."""
    for key, value in values.items():
        _kept(key)[key] = value


def with_kept(session) -> dict:
    """The session's values with every kept choice its pages' widgets hold when drawn (Streamlit drops a widget's
    value on a run that does not draw it: on the Share page, the Across layer pair is only kept)."""
    kept = {k: v for store in [v for k, v in session.items() if str(k).endswith(".kept") and isinstance(v, dict)]
            for k, v in store.items()}
    return kept | dict(session)


def drop_kept(keys: Sequence[str]) -> None:
    """Forget these choices (on screen and kept), so their widgets open on their defaults."""
    for key in keys:
        st.session_state.pop(key, None)
        _kept(key).pop(key, None)
