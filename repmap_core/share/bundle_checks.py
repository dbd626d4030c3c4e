"""What a bundle file may hold, checked before any of it is used: a crafted bundle gets one sentence, never a
crash, an exhausted memory or a session half changed.

- **Sizes.** Each zip member's unpacked size is read from the zip's directory and capped before it is read
  (`bundle.json` at 256 MB, the arrays at the bundle's limit), and counted again while it is read.
- **JSON.** Before `bundle.json` is parsed, its nesting depth (at most 64) and its number of values (at most
  2,000,000) are counted on the raw bytes, so a 1 GB list or 5,000 nested brackets is refused unparsed.
- **Meta.** The format, version, date, views, row cap and seed, each of its type.
- **Values.** Every field of every class a bundle names is checked against the class's type hints before the
  class is built, and then for the shapes the pages rely on: an activation set's arrays against its manifest
  and labels, a data set's columns against its texts, the rows and layers a view's parts share, a similarity
  matrix against its layers, a curve's arrays against its multipliers.
- **Settings.** Each widget value is of its widget's type (a seed a whole number, a method a string, ...).
"""
from __future__ import annotations

import dataclasses
import io
import re
import types
import typing
import zipfile
from typing import Any

import numpy as np

from repmap_core.errors import RepmapError

MAX_JSON_BYTES = 256 * 2**20
MAX_JSON_DEPTH = 64
MAX_JSON_VALUES = 2_000_000
MAX_TEXT = 200  # characters of a meta string (a version, a date)
DAMAGED = "This bundle holds values repmap does not understand ({}); it may be damaged or altered."

# the widget values a bundle may set, by type (a value of another type would break the widget)
SETTING_TYPES: dict[str, type] = {
    **dict.fromkeys(("explorer.method", "shift.method", "within.method", "within.alpha", "across.metric",
                     "across.projection", "across.method", "across.alpha", "steer.side", "steer.scale", "steer.map"), str),
    **dict.fromkeys(("explorer.seed", "explorer.max_points", "shift.layer", "shift.max_points", "shift.arrows",
                     "within.layer", "within.steps", "across.rank", "across.steps", "across.seed", "steer.steps",
                     "steer.sent_layer", "steer.layer_s", "steer.layer_t", "steer.t.steps"), int),
    **dict.fromkeys(("within.test_frac", "across.test_frac", "steer.alpha_min", "steer.alpha_max", "steer.preview_alpha",
                     "steer.t.alpha_min", "steer.t.alpha_max"), float),
    **dict.fromkeys(("explorer.shown", "shift.grid_layers"), list),
    "steer.bias": bool,
}


def read_members(data: bytes, names: set[str], max_bytes: int) -> dict[str, bytes]:
    """The zip's members (exactly `names`), each refused before it is read when its unpacked size is over its
    cap, and read no further than that size (a member that inflates past what it declared is damaged)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            found = [i.filename for i in infos]
            if set(found) != names or len(found) != len(names):
                extra = sorted(set(found) - names)
                raise RepmapError(f"This file is not a repmap bundle: it should hold only {' and '.join(sorted(names, key=len))}"
                                  + (f", and it holds {extra[0][:80]}." if extra else "."))
            total = sum(i.file_size for i in infos)
            if total > max_bytes:
                raise RepmapError(f"This bundle would unpack to {total / 1e6:.1f} MB, over the limit of "
                                  f"{max_bytes / 1e6:.1f} MB; it is refused.")
            out = {}
            for info in infos:
                cap = min(max_bytes, MAX_JSON_BYTES) if info.filename.endswith(".json") else max_bytes
                if info.file_size > cap:
                    raise RepmapError(f"This bundle's {info.filename} would unpack to {info.file_size / 1e6:.1f} MB, "
                                      f"over the limit of {cap / 1e6:.1f} MB for it; it is refused.")
                with z.open(info) as f:
                    out[info.filename] = f.read(info.file_size + 1)  # stops one byte past what it declared
                if len(out[info.filename]) != info.file_size:
                    raise ValueError("a member unpacks to another size than it declares")
            return out
    except zipfile.BadZipFile:
        raise RepmapError("This file is not a repmap bundle (not a zip file); export one from the Share page or the CLI.") from None
    except (ValueError, zipfile.LargeZipFile, NotImplementedError, OSError, EOFError, RuntimeError):
        raise RepmapError("This bundle is damaged (its contents could not be read); export it again.") from None


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def check_json(raw: bytes, name: str = "bundle.json") -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH or holding more than MAX_JSON_VALUES values, counted on
    the bytes (strings blanked first) before any parser builds a value of it."""
    if len(raw) > MAX_JSON_BYTES:
        raise RepmapError(f"This bundle's {name} is {len(raw) / 1e6:.1f} MB, over the limit of "
                          f"{MAX_JSON_BYTES / 1e6:.0f} MB; it is refused.")
    bare = np.frombuffer(_STRING.sub(b'""', raw), np.uint8)
    depth, deepest, values = 0, 0, 1
    for start in range(0, len(bare), 1 << 22):  # 4 MB at a time: the running sum stays small
        part = bare[start:start + (1 << 22)]
        opens, closes = (part == ord("[")) | (part == ord("{")), (part == ord("]")) | (part == ord("}"))
        running = depth + np.cumsum(opens.astype(np.int32) - closes.astype(np.int32))
        if len(running):
            deepest, depth = max(deepest, int(running.max())), int(running[-1])
        values += int(np.count_nonzero(part == ord(","))) + int(np.count_nonzero(opens))
        if deepest > MAX_JSON_DEPTH:
            raise RepmapError(f"This bundle's {name} nests values more than {MAX_JSON_DEPTH} deep, which no bundle "
                              "repmap writes does; it may be damaged or altered, and it was not read.")
        if values > MAX_JSON_VALUES:
            raise RepmapError(f"This bundle's {name} holds more than {MAX_JSON_VALUES:,} values, over the limit; "
                              "export it with fewer rows (or views) and try again.")


def parse_doc(raw: bytes, fmt: str) -> dict:
    """`bundle.json` parsed, once `check_json` has passed it, and of the format `fmt`."""
    import json

    check_json(raw)
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RepmapError("This bundle is damaged (its contents could not be read); export it again.") from None
    found = doc.get("format") if isinstance(doc, dict) else None
    if found != fmt:
        raise RepmapError(f"This bundle's format is {found!r}, and this repmap reads {fmt!r}." if found is None or (
            isinstance(found, str) and len(found) < 60) else "This bundle's format is not one repmap reads.")
    return doc


def check_meta(doc: dict, views: typing.Collection[str], fmt: str) -> dict:
    """The bundle's meta, each field of its type, or one sentence naming the first that is not."""
    meta = {k: doc.get(k) for k in ("format", "repmap", "created", "views", "max_rows", "seed")}
    for key in ("repmap", "created"):
        if meta[key] is not None and not (isinstance(meta[key], str) and len(meta[key]) <= MAX_TEXT):
            raise RepmapError(f"This bundle's {key} is not a short text; it may be damaged or altered.")
    if meta["views"] is None:
        meta["views"] = []
    if not (isinstance(meta["views"], list) and all(isinstance(v, str) for v in meta["views"])):
        raise RepmapError("This bundle's list of views is not a list of names; it may be damaged or altered.")
    for key, least in (("max_rows", 2), ("seed", 0)):
        value = meta[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not least <= value < 2**63):
            shown = repr(value)[:40]
            raise RepmapError(f"This bundle's {key} is {shown}, not a whole number of at least {least}; it may be "
                              "damaged or altered.")
    meta["views"] = [v for v in meta["views"] if v in views]
    meta["float16"] = doc.get("float16") is True  # activations stored as float16 (read back as float32)
    meta["format"] = fmt
    return meta


def check_settings(settings: dict) -> dict:
    """The settings this version knows, each of its widget's type (others are dropped: another version's)."""
    out = {}
    for key, value in settings.items():
        kind = SETTING_TYPES.get(key)
        if kind is None:
            continue
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
            value = float(value) if ok else value
        if kind is str:
            ok = ok and len(value) <= MAX_TEXT
        if kind is list:
            value = list(value) if isinstance(value, (list, tuple)) else value
            ok = isinstance(value, list) and len(value) <= 4096 and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not ok:
            raise RepmapError(f"This bundle's setting {key} is {repr(value)[:40]}, not a {kind.__name__}; it may be "
                              "damaged or altered.")
        out[key] = value
    return out


def mismatch(value: Any, hint: Any, path: str) -> str | None:
    """Where `value` departs from the type `hint` (a path), or None when it conforms."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (Any, object):
        return None
    if origin in (typing.Union, types.UnionType):
        return None if any(mismatch(value, a, path) is None for a in args) else path
    if origin is None:
        if hint is type(None):
            return None if value is None else path
        if hint is float:
            return None if isinstance(value, (int, float)) and not isinstance(value, bool) else path
        if hint is int:
            return None if isinstance(value, int) and not isinstance(value, bool) else path
        return None if isinstance(hint, type) and isinstance(value, hint) else path
    if not isinstance(value, origin):
        return path
    if origin in (list, set, frozenset) and args:
        return next((m for i, v in enumerate(value) if (m := mismatch(v, args[0], f"{path}[{i}]"))), None)
    if origin is tuple and args:
        hints = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(hints) != len(value):
            return path
        return next((m for i, (v, h) in enumerate(zip(value, hints)) if (m := mismatch(v, h, f"{path}[{i}]"))), None)
    if origin is dict and args:
        return next((m for k, v in value.items() if (m := mismatch(k, args[0], path) or mismatch(v, args[1], f"{path}[{k!r}]"))),
                    None)
    return None


def check_fields(cls: type, fields: dict, path: str) -> None:
    """Refuse fields that the class does not have, or whose values are not of its hinted types."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    for name, value in fields.items():
        where = mismatch(value, hints.get(name, Any), f"{path}.{name}") if name in known else f"{path}.{name}"
        if where:
            raise RepmapError(DAMAGED.format(where[:120]))


def _rows(obj: Any) -> int | None:
    from repmap_core.capture.activations import ActivationSet
    from repmap_core.data.load import TextDataset

    return len(obj.texts) if isinstance(obj, TextDataset) else len(obj.labels) if isinstance(obj, ActivationSet) else None


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise RepmapError(DAMAGED.format(what))


def check_shapes(obj: Any, path: str) -> None:
    """Refuse an object whose arrays disagree with each other or with the rows and layers around them."""
    from repmap_core.analysis.similarity import SimilarityMatrix
    from repmap_core.capture.activations import ActivationSet
    from repmap_core.data.load import TextDataset
    from repmap_core.steering import PropensityCurve, VectorSet

    if isinstance(obj, TextDataset):
        n = len(obj.texts)
        _need(all(isinstance(t, str) for t in obj.texts), f"{path}.texts")
        _need(obj.labels.shape == (n,) and obj.pair_ids.shape == (n,) and obj.answer_spans.shape == (n, 2)
              and all(a.dtype.kind in "iu" for a in (obj.labels, obj.pair_ids, obj.answer_spans)),
              f"{path}: its columns do not match its {n} texts")
    elif isinstance(obj, ActivationSet):
        n, m = len(obj.labels), obj.manifest
        widths = {a.shape[1] if a.ndim == 2 else -1 for a in obj.layers.values()}
        _need(obj.labels.ndim == 1 and obj.pair_ids.shape == (n,) and obj.labels.dtype.kind in "iub"
              and obj.pair_ids.dtype.kind in "iu", f"{path}: labels and pair ids")
        _need(bool(obj.layers) and all(a.ndim == 2 and len(a) == n and a.dtype.kind == "f" for a in obj.layers.values())
              and len(widths) == 1, f"{path}: every layer must hold {n} rows of one width")
        kept = m.get("bundle_rows", {}).get("kept", m.get("n_rows", n)) if isinstance(m.get("bundle_rows"), dict) else \
            m.get("n_rows", n)  # a subsampled bundle keeps the full set's manifest and says how many rows it kept
        _need(kept == n and m.get("d_model", min(widths)) == min(widths)
              and isinstance(m.get("n_layers"), int) and all(0 <= L < m["n_layers"] for L in obj.layers),
              f"{path}: the arrays do not match the manifest")
    elif isinstance(obj, SimilarityMatrix):
        shape = (len(obj.layers_a), len(obj.layers_b))
        _need(obj.values.shape == shape and (obj.null_high is None or obj.null_high.shape == shape),
              f"{path}: the matrix does not match its layers")
    elif isinstance(obj, PropensityCurve):
        k = obj.alphas.shape
        _need(obj.alphas.ndim == 1 and all(getattr(obj, a).shape == k for a in ("mean", "low", "high", "agreement"))
              and (obj.gaps.size == 0 or obj.gaps.shape[0] == k[0]), f"{path}: the curve's arrays")
    elif isinstance(obj, VectorSet):
        n = len(obj.dataset.texts)
        _need(all(r.ndim == 1 and r.dtype.kind in "iu" and (r.size == 0 or 0 <= r.min() and r.max() < n)
                  for r in (obj.train_rows, obj.test_rows)), f"{path}: rows outside its {n} rows")
        _need(obj.question_ids is None or obj.question_ids.shape == (n,), f"{path}.question_ids")
    if dataclasses.is_dataclass(obj):  # a view's parts describe the same rows
        counts = {_rows(getattr(obj, f.name)) for f in dataclasses.fields(obj)} - {None}
        _need(len(counts) <= 1, f"{path}: its parts hold different numbers of rows")
        rows, aset = getattr(obj, "rows", None), getattr(obj, "aset", None)
        if isinstance(rows, list) and isinstance(aset, ActivationSet):
            _need(all(getattr(r, "layer", None) in aset.layers for r in rows), f"{path}.rows: layers not extracted")
        base, finetuned = getattr(obj, "base", None), getattr(obj, "finetuned", None)
        if isinstance(base, ActivationSet) and isinstance(finetuned, ActivationSet):
            _need(set(base.layers) == set(finetuned.layers) and base.d == finetuned.d, f"{path}: before and after differ")


def check_states(states: dict) -> None:
    """Each view's state of its kind, and the states of one view consistent with each other (a selection's
    rows and a chosen layer among those of the result they belong to)."""
    from repmap_core.analysis.between import BetweenResult
    from repmap_core.analysis.within import WithinResult
    from repmap_core.results.view_fits import AcrossFitResult, WithinFitResult
    from repmap_core.results.view_results import (
        AcrossResult,
        ExplorerResult,
        ShiftResult,
        SteeringResult,
        SteeringSweep,
        SteeringTransfer,
        WeakLabelResult,
    )
    from repmap_core.steering import SteeringVector, VectorSet
    from repmap_core.steering.run import LayerSweep
    from repmap_core.steering.sentiment import SentimentSweep

    kinds = {"explorer.result": ExplorerResult, "shift.result": ShiftResult, "within.result": WithinFitResult,
             "across.result": AcrossResult, "across.fit": AcrossFitResult, "across.selected": list[int],
             "across.layer_s": int, "across.layer_t": int, "steer.result": SteeringResult, "steer.sweep": SteeringSweep,
             "steer.transfer": SteeringTransfer, "steer.sentiment": SentimentSweep, "steer.layer.A": int,
             "steer.layer.B": int, "finetune.weak": WeakLabelResult}
    parts = {(WithinFitResult, "result"): WithinResult, (AcrossFitResult, "result"): BetweenResult,
             (SteeringSweep, "out"): LayerSweep, (SteeringTransfer, "carried"): SteeringVector | None}
    for key, value in states.items():
        if value is None:
            continue
        _need(mismatch(value, kinds.get(key, object), key) is None, key)
        for (cls, name), kind in parts.items():
            if isinstance(value, cls):
                _need(mismatch(getattr(value, name), kind, f"{key}.{name}") is None, f"{key}.{name}")
        if isinstance(value, SteeringResult):
            _need(all(isinstance(v, VectorSet) for v in value.sets.values()) and set(value.sets) <= {"A", "B"}
                  and all(isinstance(value.labels.get(k), str) for k in value.sets), f"{key}.sets")
    across, shift = states.get("across.result"), states.get("shift.result")
    if isinstance(across, AcrossResult):
        n = len(across.dataset.texts)
        _need(all(0 <= r < n for r in states.get("across.selected") or []), "across.selected: rows outside the data")
        for side, aset in (("s", across.source), ("t", across.target)):
            _need(states.get(f"across.layer_{side}") in (None, *aset.layers), f"across.layer_{side}")
    within = states.get("within.result")
    if isinstance(within, WithinFitResult) and isinstance(shift, ShiftResult):
        _need(within.layer in shift.base.layers, "within.result.layer: not among the shift's layers")
