"""A page's choices in the URL, so a copied link reopens the same view.

Each page declares typed parameters with short URL keys (`Int("limit", 2000, lo=0)`), reads them
with `read`, which answers a bad value with the default and one sentence naming the parameter, the
value and what was used instead, and writes its current choices back with `write` (only the ones
that differ from the default). A link opened in a new session, or a link whose parameters this page
did not write itself (`is_link`), drives the page: it seeds the widgets and the first request, which
then comes straight from the activation cache. Remote code (`trust_remote_code`) never goes in a link.

>>> SPECS = [Int("limit", 2000, lo=0), Choice("method", "pca", ("pca", "tsne", "umap"))]
>>> parse(SPECS, {"limit": "abc", "method": "tsne"})[0]
{'limit': 2000, 'method': 'tsne'}
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import streamlit as st

from repmap_ui.text import md

MAX_TEXT = 1000  # a model id, a data spec or a folder; longer is not a choice anybody made


class Invalid(ValueError):
    """Why a URL value was refused, as the end of a sentence: "is not a whole number"."""


@dataclass(frozen=True)
class Param:
    key: str  # the short URL key, e.g. "limit"
    default: Any

    def parse(self, raw: str) -> Any:
        raise NotImplementedError

    def format(self, value: Any) -> str:
        return str(value)


@dataclass(frozen=True)
class Int(Param):
    lo: int | None = None
    hi: int | None = None

    def parse(self, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise Invalid("is not a whole number") from None
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise Invalid(f"is outside {bounds(self.lo, self.hi)}")
        return value


@dataclass(frozen=True)
class Float(Param):
    lo: float | None = None
    hi: float | None = None

    def parse(self, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise Invalid("is not a number") from None
        if value != value or (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise Invalid(f"is outside {bounds(self.lo, self.hi)}")
        return value

    def format(self, value: Any) -> str:
        return f"{float(value):g}"


@dataclass(frozen=True)
class Choice(Param):
    choices: tuple[str, ...] = ()

    def parse(self, raw: str) -> str:
        if raw not in self.choices:
            raise Invalid(f"is not one of {', '.join(self.choices)}")
        return raw


@dataclass(frozen=True)
class Text(Param):
    def parse(self, raw: str) -> str:
        if len(raw) > MAX_TEXT or any(ord(ch) < 32 for ch in raw):
            raise Invalid(f"is not a single line of at most {MAX_TEXT} characters")
        return raw.strip()


@dataclass(frozen=True)
class Layers(Param):
    """A layer request as the pages' text box takes it: `all` or whole numbers like `0,3,-1`.
    Whether each is in range depends on the model: see `layers_in_range`."""

    def parse(self, raw: str) -> str:
        text = raw.strip().lower()
        if text in ("", "all"):
            return "all"
        try:
            return ",".join(str(int(x)) for x in text.split(","))
        except ValueError:
            raise Invalid("is not 'all' or a list of whole numbers like 0,3,-1") from None


@dataclass(frozen=True)
class IntList(Param):
    """Several whole numbers (layers shown, say); which ones are allowed is known later (`restrict`)."""

    def parse(self, raw: str) -> tuple[int, ...]:
        if not raw.strip():
            return ()
        try:
            return tuple(int(x) for x in raw.split(","))
        except ValueError:
            raise Invalid("is not a list of whole numbers like 0,3,5") from None

    def format(self, value: Any) -> str:
        return ",".join(str(int(x)) for x in value)


@dataclass(frozen=True)
class Bool(Param):
    def parse(self, raw: str) -> bool:
        text = raw.strip().lower()
        if text not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise Invalid("is not 1 or 0")
        return text in ("1", "true", "yes", "on")

    def format(self, value: Any) -> str:
        return "1" if value else "0"


def bounds(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{lo:g} to {hi:g}"
    return f"at least {lo:g}" if lo is not None else f"at most {hi:g}"


def shown(value: Any) -> str:
    """A value as a notice prints it."""
    if isinstance(value, (tuple, list)):
        return ", ".join(map(str, value)) or "none"
    return f"'{value}'" if isinstance(value, str) else str(value)


def notice(key: str, raw: str, reason: str, used: Any) -> str:
    """The one sentence for a refused value: parameter, value, why, and what is used instead."""
    return f"The link's {key}={raw!r} {reason}, so the default {shown(used)} is used instead."


def parse(specs: Sequence[Param], params: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Every spec's value from `params` (its default when absent or refused) and one notice per refusal."""
    values: dict[str, Any] = {}
    notices: list[str] = []
    for spec in specs:
        values[spec.key] = spec.default
        if spec.key not in params:
            continue
        raw = str(params[spec.key])
        try:
            values[spec.key] = spec.parse(raw)
        except Invalid as e:
            notices.append(notice(spec.key, raw, str(e), spec.default))
    return values, notices


def layers_among(key: str, value: Any, allowed: Sequence[int], fallback: Any) -> tuple[Any, str | None]:
    """Keep `value` (a layer or a tuple of layers) if every layer is in `allowed`, else `fallback` and a
    notice. For layers known only once something is computed: those of the computed model, say."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    bad = [x for x in items if x not in allowed]
    if not bad:
        return value, None
    names = ", ".join(map(str, bad))
    span = f"{allowed[0]} to {allowed[-1]}" if allowed else "none"
    return fallback, (f"The link's {key}='{','.join(map(str, items))}' names layer{'s' if len(bad) > 1 else ''} {names}, "
                      f"not among those computed ({span}), so {shown(fallback)} is used instead.")


def layers_in_range(key: str, layers: str, model: str, fallback: str = "all") -> tuple[str, str | None]:
    """`layers` if every listed layer exists in `model` (read from its config, or a GGUF file's header: nothing
    is loaded or converted), else `fallback` and a notice. A model that cannot be resolved is left for the
    page's own request to report."""
    from repmap_core.capture.models import block_count, resolve_layers
    from repmap_core.errors import RepmapError

    if layers == "all":
        return layers, None
    try:
        n = block_count(model)
    except (RepmapError, OSError, ValueError):
        return layers, None
    try:
        resolve_layers(layers, n, model)
    except RepmapError:
        return fallback, (f"The link's {key}='{layers}' names a layer outside {model.rstrip('/').split('/')[-1]}'s "
                          f"{n} blocks (0 to {n - 1}, or -{n} to -1), so {shown(fallback)} is used instead.")
    return layers, None


def current(specs: Sequence[Param]) -> dict[str, str]:
    """This page's parameters as they are in the URL now."""
    keys = {s.key for s in specs}
    return {k: v for k, v in st.query_params.to_dict().items() if k in keys}


def read(specs: Sequence[Param]) -> tuple[dict[str, Any], list[str]]:
    """Values for `specs` from the URL (defaults where absent or refused) and one notice per refused value. A
    finetuned model the link names as `finetuned:<key>` (never the server's path, `write`) is read back as its
    folder, as the page's own request names it: so the link is the view's request and its picker lists it."""
    values, notices = parse(specs, current(specs))
    for spec in specs:
        if isinstance(spec, Text) and str(values[spec.key]).startswith("finetuned:"):
            values[spec.key] = local_name(values[spec.key])
    return values, notices


def local_name(name: str) -> str:
    """`finetuned:<key>` as the folder it names in this cache, when there is one; any other name as it is."""
    from repmap_core.capture.models import finetuned_folder
    from repmap_core.errors import RepmapError

    try:
        folder = finetuned_folder(name)
    except (RepmapError, ValueError):
        return name  # the page's request reports a bad name in one sentence
    return str(folder) if folder.is_dir() else name


def is_link(page: str, specs: Sequence[Param]) -> bool:
    """True when the URL holds parameters of `specs` that this page did not write itself: a copied
    link, or a link from another page. An empty URL (after moving between pages) is not a link."""
    url = current(specs)
    if not url:
        return False
    keys = {s.key for s in specs}
    written = st.session_state.get(f"{page}.url_written", {})
    return url != {k: v for k, v in written.items() if k in keys}


def not_shown(linked: dict | None, result: Any) -> dict | None:
    """`linked` unless the result on screen was made by the same request (an imported bundle, a
    reload of the page's own link): then None, so nothing is recomputed and no model is needed. A row limit
    compares as the server runs it: a link's "all rows" on a capped server is the cap its result was made with
    (compared as written, the link never matched its own result, and the page recomputed it on every run)."""
    if linked is None or not result:
        return linked
    shown = getattr(result, "request", None) or {}

    def norm(v: Any) -> str:
        return "" if v is None else str(v)

    def as_run(k: str, v: Any) -> str:  # a link's row limit as the server runs it (0, "all", cut to its cap)
        if k == "limit" and str(v or 0).isdigit():
            from repmap_core.access import cap_rows

            return norm(cap_rows(int(v or 0) or None)[0] or 0)
        return norm(v)

    same = all(as_run(k, shown.get(k)) == as_run(k, v) for k, v in linked.items() if k != "trust")
    return None if same else linked


def write(page: str, specs: Sequence[Param], values: Mapping[str, Any]) -> None:
    """Put `values` in the URL: a parameter that differs from its default is set, one equal to it removed.
    Only the keys of `specs` are touched; remembered so `is_link` knows the URL is the page's own."""
    written = dict(st.session_state.get(f"{page}.url_written", {}))
    for spec in specs:
        if spec.key not in values:
            continue
        value = values[spec.key]
        if isinstance(spec, Text) and isinstance(value, str) and value.startswith("/"):
            from repmap_core.capture.models import link_name

            value = link_name(value)  # a finetuned model: finetuned:<key>, never the server's absolute path
        text = spec.format(value)
        if text == spec.format(spec.default):
            written.pop(spec.key, None)
            if spec.key in st.query_params:
                del st.query_params[spec.key]
        else:
            written[spec.key] = text
            if st.query_params.get(spec.key) != text:
                st.query_params[spec.key] = text
    st.session_state[f"{page}.url_written"] = written


def seed(values: Mapping[str, Any], widgets: Mapping[str, str]) -> None:
    """Set widget state from URL values before the widgets are drawn: `widgets` maps URL key -> widget key."""
    for key, widget in widgets.items():
        if key in values:
            value = values[key]
            st.session_state[widget] = list(value) if isinstance(value, tuple) else value


def show_notices(notices: Sequence[str]) -> None:
    for text in notices:
        st.warning(md(text), icon=":material/link_off:")


def link() -> str:
    """The full URL of this view: the page's address (as the browser sees it) and its parameters."""
    base = st.context.url or ""
    query = urlencode(st.query_params.to_dict(), safe=",/:")  # readable: layers=0,3,5, model=org/name
    return f"{base}?{query}" if query else base


def copy_link_box(where=None) -> None:
    """A compact "Copy link" popover (in `where`, the sidebar by default), the full URL shown (st.code has
    a copy button, and the text is there to select where the clipboard is not allowed)."""
    with (where or st.sidebar).popover("Copy link to this view", icon=":material/link:", width="stretch"):
        st.caption("Opens the same choices on this server; computed results come from its cache.")
        st.code(link(), language=None, wrap_lines=True)
