"""Share: export the results behind the views as one bundle file (or an HTML report), and import
a bundle made elsewhere, so the views show it here without any model or recomputation."""
from __future__ import annotations

import streamlit as st

from repmap_core import __version__
from repmap_core.errors import RepmapError
from repmap_core.papers.published import BESIDE_A_RUN
from repmap_core.share.bundle import (
    VIEWS,
    available_views,
    bundle_bytes,
    collect,
    estimate_bytes,
    fit_rows,
    load_bundle,
)
from repmap_core.share.report import build_report
from repmap_ui.common import check_upload_size, show_error, upload_cap_bytes, upload_cap_mb
from repmap_ui.flow import drop_kept, keep_values, with_kept
from repmap_ui.pages import PAGE_OF_VIEW
from repmap_ui.rebuild import rebuild_missing
from repmap_ui.text import md

PAGES = PAGE_OF_VIEW

st.title("Share")
st.caption("One file with the activations, fits and settings behind the views (a zip of JSON and safetensors, never "
           "pickle): open it on another machine, with no GPU, no models and no network, and the views come back as "
           "they are here. Or a single HTML page with their figures, tables and settings.")


def human(size: int) -> str:
    """Bytes as Streamlit's uploader counts them (MB = 2**20 bytes), so a size compares with the cap as shown."""
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{max(size / 2**10, 0.1):.1f} kB"


def title(view: str) -> str:
    return VIEWS[view].title


def signature(views: list[str], max_rows: int | None, seed: int, states: dict, float16: bool = False) -> tuple:
    # a new result is a new object: a prepared file is stale once any chosen state is replaced
    return tuple(views), max_rows, seed, float16, tuple((k, id(v)) for k, v in states.items())


def memo(key: str, sig: tuple, compute):
    """`compute()`, kept in the session under `key` while `sig` holds (an estimate packs every array)."""
    kept = st.session_state.get(key)
    if kept is None or kept[0] != sig:
        kept = (sig, compute())
        st.session_state[key] = kept
    return kept[1]


def default_rows(fit: int | None) -> None:
    """Max rows follows the most that fits Import's cap (0: all rows fit) until a person types a value of their own."""
    auto, before = fit or 0, st.session_state.get("share.max_rows_auto")
    if "share.max_rows" not in st.session_state or st.session_state["share.max_rows"] == before:
        st.session_state["share.max_rows"] = auto
    st.session_state["share.max_rows_auto"] = auto


def export_section() -> None:
    st.header("Export")
    with st.spinner("Looking for views computed in earlier sessions"):
        rebuilt = rebuild_missing(st.session_state)
    if rebuilt:
        st.caption(f"Rebuilt from the cache (computed in an earlier session or before a refresh): "
                   f"{', '.join(map(title, rebuilt))}.")
    available = available_views(st.session_state)
    if not available:
        st.info("Nothing to share yet: compute something on a view first, or import a bundle below.")
        return
    views = st.multiselect("Views to include", available, default=available, key="share.views", format_func=title)
    c1, c2, c3 = st.columns(3, vertical_alignment="bottom")
    seed = int(c2.number_input("Seed of the sample", min_value=0, value=0, key="share.seed"))
    float16 = c3.checkbox("Activations as float16", value=True, key="share.float16",
                          help="half the bytes; each value kept to about 1 part in 2,000, read back as float32. Scores, "
                               "fits and vectors are stored as computed. A layer with values float16 cannot hold stays "
                               "float32.")
    if not views:
        st.info("Pick at least one view to include.")
        return
    states, settings = collect(with_kept(st.session_state), views)
    cap = upload_cap_bytes()
    try:
        fit = memo("share.fit", signature(views, cap, seed, states, float16),
                   lambda: fit_rows(states, cap, seed=seed, float16=float16))
    except RepmapError as e:
        show_error(e)
        return
    default_rows(fit)
    max_rows = int(c1.number_input("Max rows per data set (0 = all)", min_value=0, step=100, key="share.max_rows",
                                   help="keep a seeded sample of each data set (both classes in proportion); its "
                                        "activations follow the same rows. Scores already computed stay as they are."))
    sig = signature(views, max_rows or None, seed, states, float16)
    try:
        size = memo("share.estimate", sig, lambda: estimate_bytes(states, max_rows=max_rows or None, seed=seed,
                                                                  float16=float16))
    except RepmapError as e:
        show_error(e)
        return
    m1, m2 = st.columns(2)
    m1.metric("Size before compression", human(size), help="arrays and texts; the zip is no larger")
    m2.metric("Import accepts up to", f"{upload_cap_mb()} MB", help="this server's upload cap (server.maxUploadSize in "
              ".streamlit/config.toml): the largest file Share's Import, like every uploader here, takes")
    if size > cap:
        st.warning(f"At {human(size)} this bundle is over the {upload_cap_mb()} MB that Import accepts here: "
                   + (f"set Max rows per data set to {fit:,} or fewer" if fit else "choose fewer views")
                   + (", or store activations as float16." if not float16 else "."), icon=":material/warning:")
    elif fit and max_rows == fit:
        st.caption(f"Every row would take the bundle past the {upload_cap_mb()} MB that Import accepts here, so each "
                   f"data set keeps a seeded sample of at most {fit:,} rows, the most that fits (0 keeps every row: a "
                   "file only the command line opens, `python -m repmap_core report --bundle FILE`).")
    b1, b2 = st.columns(2)
    try:
        if b1.button("Make the bundle", key="share.prepare", type="primary"):
            with st.spinner(f"Packing {', '.join(map(title, views))}"):
                data = bundle_bytes(states, settings, views=views, max_rows=max_rows or None, seed=seed, float16=float16)
            st.session_state["share.prepared"] = {"data": data, "signature": sig}
        if b2.button("Make the report", key="share.report"):
            with st.spinner("Drawing the figures"):
                page = build_report(states, settings, views, meta={"repmap": __version__}, beside=BESIDE_A_RUN)
            st.session_state["share.report_html"] = {"data": page.encode("utf-8"), "signature": sig}
    except RepmapError as e:
        show_error(e)
    prepared = st.session_state.get("share.prepared")
    if prepared and prepared["signature"] == sig:
        b1.download_button(f"Download the bundle ({human(len(prepared['data']))})", prepared["data"],
                           "repmap_session.zip", "application/zip", key="share.download", icon=":material/download:")
        if len(prepared["data"]) > cap:
            b1.warning(f"This file is {human(len(prepared['data']))}, over the {upload_cap_mb()} MB that Import "
                       "accepts here; lower Max rows per data set to share it through the app.", icon=":material/warning:")
    report = st.session_state.get("share.report_html")
    if report and report["signature"] == sig:
        b2.download_button(f"Download report.html ({human(len(report['data']))})", report["data"], "report.html",
                           "text/html", key="share.download_report", icon=":material/download:")


def apply_bundle(bundle) -> list[str]:
    """Put the bundle's states and settings into this session; return the views that now show them."""
    touched = [name for name, v in VIEWS.items() if any(k in bundle.states for k in v.states)]
    for name in touched:  # a view is replaced whole: no stale fit beside new activations
        drop_kept(VIEWS[name].states + VIEWS[name].settings)
    st.session_state.update(bundle.states)
    st.session_state.update(bundle.settings)
    keep_values(bundle.states | bundle.settings)  # the pages' widgets (a layer pair) find them after this page's run
    for key in ("share.prepared", "share.report_html"):
        st.session_state.pop(key, None)
    return [v for v in VIEWS if bundle.states.get(VIEWS[v].required) is not None]


def import_section() -> None:
    st.header("Import")
    cap = upload_cap_mb()
    uploaded = st.file_uploader(f"A bundle (.zip) exported from repmap, up to {cap} MB", key="share.upload",
                                max_upload_size=cap, help="Its views replace the same views in this session; the others stay.")
    st.caption(f"This server takes files up to {cap} MB; your browser refuses a bigger one before repmap sees it "
               "(a red mark beside its name), so export it again with a lower Max rows per data set, or make a smaller "
               "copy with `python -m repmap_core bundle --bundle FILE --out smaller.zip --max-rows 1000`.")
    if uploaded is not None and st.session_state.get("share.imported_file") != uploaded.file_id:
        try:
            check_upload_size(uploaded, "export it again with a lower Max rows per data set, or make a smaller copy "
                                        "with `python -m repmap_core bundle --out`")
            bundle = load_bundle(uploaded.getvalue())  # everything is checked before the session is touched
            if not bundle.states:
                raise RepmapError(f"'{uploaded.name}' holds no view to show.")
        except RepmapError as e:
            show_error(e)  # nothing in the session was changed
        else:
            shown = apply_bundle(bundle)
            st.session_state["share.imported_file"] = uploaded.file_id
            st.session_state["share.imported"] = {"name": uploaded.name, "views": shown, "meta": bundle.meta}
            st.rerun()  # the Export section above now lists the imported views
    done = st.session_state.get("share.imported")
    if done:  # every string of the bundle escaped, as a link's values are: a bundle is as untrusted as a link
        made = f", made {md(done['meta']['created'])}" if done["meta"].get("created") else ""
        sample = (f"; data sets were sampled to at most {int(done['meta']['max_rows']):,} rows"
                  if done["meta"].get("max_rows") else "") + ("; activations stored as float16"
                                                              if done["meta"].get("float16") else "")
        st.success(f"Imported {md(done['name'])} (repmap {md(done['meta'].get('repmap'))}{made}{sample}). These pages now show "
                   f"its results, without loading a model: {', '.join(map(title, done['views']))}.",
                   icon=":material/check_circle:")
        cols = st.columns(max(len(done["views"]), 1))
        for col, view in zip(cols, done["views"]):
            col.page_link(PAGES[view], label=title(view), icon=":material/open_in_new:")


export_section()
import_section()
