"""Session bundles: one file holding what is behind the current views, for another machine.

A bundle is a zip with `bundle.json` (the format, the settings, and each view's state as JSON)
and `arrays.safetensors` (every array the states hold, by name). No pickle anywhere: the JSON
names a class only from the whitelist below, and arrays come back through safetensors. Loading
checks sizes before reading, so a crafted zip cannot fill memory.

What a view's state may hold: dicts, lists, tuples, str/int/float/bool/None, numpy arrays
(memory-mapped ones are read in), pandas tables, and the result dataclasses of repmap_core
(data sets, activation sets, separation rows, fit results, vectors, curves, ...). With
`max_rows`, every data set with more rows is replaced by a seeded sample (both classes in
proportion), and the activation sets of the same rows follow it.

Example:
    >>> data = bundle_bytes({"explorer.result": state}, views=["explorer"])
    >>> load_bundle(data).states["explorer.result"].aset.n
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import zipfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from repmap_core import __version__
from repmap_core.analysis.stats import wilson
from repmap_core.errors import RepmapError, path_error, shown_path
from repmap_core.share import bundle_checks as checks
from repmap_core.share.bundle_size import most_rows, prepare, rows_that_fit

FORMAT = "repmap.bundle/1"
MAX_BUNDLE_BYTES = 4 * 1024**3  # refuse to inflate more than this
MEMBERS = {"bundle.json", "arrays.safetensors"}


@dataclasses.dataclass(frozen=True)
class ViewKeys:
    """One view's part of a session: its results (`states`) and the widget choices that matter (`settings`)."""

    title: str
    states: tuple[str, ...]  # session keys of results, arrays allowed
    settings: tuple[str, ...] = ()  # session keys of widget values (plain JSON values)
    required: str = ""  # the state without which the view has nothing to show


VIEWS: dict[str, ViewKeys] = {
    "explorer": ViewKeys("Layer explorer", ("explorer.result",),
                         ("explorer.method", "explorer.shown", "explorer.seed", "explorer.max_points"), "explorer.result"),
    "shift": ViewKeys("Finetuning shift", ("shift.result",),
                      ("shift.layer", "shift.method", "shift.max_points", "shift.arrows", "shift.grid_layers"), "shift.result"),
    "within": ViewKeys("Within-model fit", ("shift.result", "within.result"),
                       ("within.layer", "within.method", "within.alpha", "within.steps", "within.test_frac"),
                       "within.result"),
    "across": ViewKeys("Across models", ("across.result", "across.fit", "across.selected", "across.layer_s", "across.layer_t"),
                       ("across.metric", "across.projection", "across.method", "across.alpha", "across.rank", "across.steps", "across.test_frac",
                        "across.seed"), "across.result"),
    "steering": ViewKeys("Steering", ("steer.result", "steer.sweep", "steer.transfer", "steer.sentiment", "steer.layer.A",
                                      "steer.layer.B"),
                         ("steer.side", "steer.scale", "steer.alpha_min", "steer.alpha_max", "steer.steps", "steer.sent_layer",
                          "steer.preview_alpha", "steer.layer_s", "steer.layer_t", "steer.map", "steer.bias",
                          "steer.t.alpha_min", "steer.t.alpha_max", "steer.t.steps"), "steer.result"),
    "finetune": ViewKeys("Finetune (weak labels)", ("finetune.weak",), (), "finetune.weak"),
}


def available_views(session: Mapping[str, Any]) -> list[str]:
    """The views that have something to share in `session` (a session state or any mapping)."""
    return [name for name, v in VIEWS.items() if session.get(v.required) is not None]


def collect(session: Mapping[str, Any], views: list[str]) -> tuple[dict, dict]:
    """(states, settings) of the chosen views, read from `session`; unknown view names are refused."""
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise RepmapError(f"Unknown view '{unknown[0]}'; the views are {', '.join(VIEWS)}.")
    states, settings = {}, {}
    for name in views:
        for key in VIEWS[name].states:
            if session.get(key) is not None:
                states[key] = session.get(key)
        for key in VIEWS[name].settings:
            value = session.get(key)
            if value is not None and _plain(value):
                settings[key] = value
    return states, settings


def _plain(value: Any) -> bool:
    if isinstance(value, (str, bool, int, float, np.integer, np.floating, np.bool_)):
        return True
    return isinstance(value, (list, tuple)) and all(_plain(v) for v in value)


def _registry() -> dict[str, type]:
    """The only classes a bundle may name (resolved here, never imported by name from a file)."""
    from repmap_core.analysis.between import BetweenResult
    from repmap_core.analysis.separation import LayerSeparation
    from repmap_core.analysis.similarity import SimilarityMatrix
    from repmap_core.analysis.stats import Estimate
    from repmap_core.analysis.within import WithinResult
    from repmap_core.capture.activations import ActivationSet
    from repmap_core.capture.models import ModelInfo, ResolvedModel
    from repmap_core.data.load import TextDataset
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
    from repmap_core.steering import LetterBalance, PropensityCurve, SteeringVector, SweepResult, VectorSet
    from repmap_core.steering.run import LayerSweep
    from repmap_core.steering.sentiment import SentimentSweep

    classes = [ActivationSet, TextDataset, BetweenResult, WithinResult, ModelInfo, ResolvedModel, LayerSeparation,
               SimilarityMatrix, PropensityCurve, SteeringVector, VectorSet, LetterBalance, SweepResult, LayerSweep,
               SentimentSweep, Estimate, ExplorerResult, ShiftResult, AcrossResult, SteeringResult, WithinFitResult,
               AcrossFitResult, SteeringSweep, SteeringTransfer, WeakLabelResult]
    return {c.__name__: c for c in classes}


# bundles written before the views' results were dataclasses hold these states as dicts of the same fields
LEGACY_DICT_STATES = {"explorer.result": "ExplorerResult", "shift.result": "ShiftResult", "across.result": "AcrossResult",
                      "steer.result": "SteeringResult", "within.result": "WithinFitResult", "across.fit": "AcrossFitResult",
                      "steer.sweep": "SteeringSweep", "steer.transfer": "SteeringTransfer",
                      "finetune.weak": "WeakLabelResult"}


def _from_legacy(key: str, state: Any, classes: dict[str, type]) -> Any:
    """`state` as its view's dataclass when an older bundle stored it as a dict (a missing field: TypeError)."""
    if key not in LEGACY_DICT_STATES or not isinstance(state, dict):
        return state
    cls = classes[LEGACY_DICT_STATES[key]]
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    if key == "finetune.weak" and isinstance(state.get("agreement"), float):  # stored as a bare share of rows
        low, high = wilson(state["agreement"] * state["rows"], state["rows"])
        state = dict(state, agreement=classes["Estimate"](state["agreement"], low, high, state["rows"], "wilson"))
    fields = {k: v for k, v in state.items() if k in names}
    checks.check_fields(cls, fields, key)
    built = cls(**fields)
    checks.check_shapes(built, key)
    return built


class _Encoder:
    """To JSON-able values; arrays are set aside in `self.arrays` (name -> array), shared when the same object recurs."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.seen: dict[int, str] = {}  # id(array) -> name: an array held twice is stored once
        self.keep: list = []  # the arrays whose ids are in `seen`, alive while encoding
        self.classes = _registry()

    def encode(self, obj: Any) -> Any:
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, (int, np.integer)):
            return int(obj)
        if isinstance(obj, (float, np.floating)):
            x = float(obj)
            return x if math.isfinite(x) else {"__float__": str(x)}
        if isinstance(obj, np.ndarray):
            if obj.dtype == object or obj.dtype.kind in "USV":
                return {"__list_array__": [self.encode(x) for x in obj.tolist()]}
            if id(obj) not in self.seen:
                name = f"a{len(self.arrays)}"
                self.arrays[name] = np.ascontiguousarray(np.asarray(obj))  # a memory-mapped array is read in here
                self.seen[id(obj)] = name
                self.keep.append(obj)
            return {"__array__": self.seen[id(obj)]}
        if isinstance(obj, pd.DataFrame):
            split = obj.to_dict("split")
            return {"__frame__": {"columns": [self.encode(c) for c in split["columns"]],
                                  "index": [self.encode(i) for i in split["index"]],
                                  "index_name": self.encode(obj.index.name),
                                  "data": [[self.encode(v) for v in row] for row in split["data"]]}}
        if isinstance(obj, tuple):
            return {"__tuple__": [self.encode(x) for x in obj]}
        if isinstance(obj, list):
            return [self.encode(x) for x in obj]
        if isinstance(obj, dict):
            return {"__dict__": [[self.encode(k), self.encode(v)] for k, v in obj.items()]}
        name = type(obj).__name__
        if dataclasses.is_dataclass(obj) and self.classes.get(name) is type(obj):
            return {"__class__": name, "fields": {f.name: self.encode(getattr(obj, f.name))
                                                  for f in dataclasses.fields(obj) if f.init}}
        raise RepmapError(f"A view holds a {name}, which a bundle cannot carry; report it as a bug.")


class _Decoder:
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.classes = _registry()

    def decode(self, obj: Any) -> Any:
        if isinstance(obj, list):
            return [self.decode(x) for x in obj]
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        if not isinstance(obj, dict) or len(obj) != 1 and "__class__" not in obj:
            raise ValueError("untagged value")
        if "__array__" in obj:
            return self.arrays[str(obj["__array__"])]
        if "__float__" in obj:
            if obj["__float__"] not in ("nan", "inf", "-inf"):
                raise ValueError("bad float")
            return float(obj["__float__"])
        if "__list_array__" in obj:
            return np.asarray([self.decode(x) for x in obj["__list_array__"]])
        if "__frame__" in obj:
            f = obj["__frame__"]
            frame = pd.DataFrame([self.decode(r) for r in f["data"]], columns=self.decode(f["columns"]),
                                 index=self.decode(f["index"]))
            frame.index.name = self.decode(f.get("index_name"))
            return frame
        if "__tuple__" in obj:
            return tuple(self.decode(x) for x in obj["__tuple__"])
        if "__dict__" in obj:
            return {_key(self.decode(k)): self.decode(v) for k, v in obj["__dict__"]}
        if "__class__" in obj:
            cls = self.classes.get(obj["__class__"]) if isinstance(obj["__class__"], str) else None
            if cls is None:
                raise RepmapError(f"This bundle names a class '{str(obj['__class__'])[:80]}', which repmap does not load; "
                                  "it was made by another version or altered.")
            fields = {str(k): self.decode(v) for k, v in obj["fields"].items()}
            checks.check_fields(cls, fields, cls.__name__)  # types before the class is built
            built = cls(**fields)
            checks.check_shapes(built, cls.__name__)  # then its arrays against each other and its rows
            return built
        raise ValueError("unknown tag")


def _key(k: Any) -> Any:
    return k if not isinstance(k, list) else tuple(k)


@dataclasses.dataclass(frozen=True, eq=False)
class Bundle:
    """What a bundle file holds: each view's state (by session key), the widget settings, and
    `meta` (format, repmap version, created time, the views included, subsampling)."""

    states: dict
    settings: dict
    meta: dict

    @property
    def views(self) -> list[str]:
        """The views this bundle can show (those whose required state it holds)."""
        return [v for v in self.meta.get("views", VIEWS) if v in VIEWS and VIEWS[v].required in self.states]


def bundle_bytes(states: dict[str, Any], settings: dict | None = None, *, views: list[str] | None = None,
                 max_rows: int | None = None, seed: int = 0, float16: bool = False) -> bytes:
    """The bundle file for `states` (session key -> state) and `settings` (widget key -> value), as bytes.

    views: the names (keys of `VIEWS`) the states are for, recorded for the importer and the report.
    max_rows: keep at most this many rows of each data set (seeded, classes in proportion).
    float16: store activations as float16 where their values fit (half the bytes; `bundle_size`).
    """
    states = prepare(states, max_rows, seed, float16)
    enc = _Encoder()
    encoded = {k: enc.encode(v) for k, v in states.items()}
    meta = {"format": FORMAT, "repmap": __version__, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "views": list(views) if views is not None else [v for v in VIEWS if VIEWS[v].required in states],
            "max_rows": max_rows, "seed": seed, "float16": bool(float16)}
    doc = dict(meta, settings=enc.encode(settings or {}), states=encoded,
               arrays={k: {"dtype": str(a.dtype), "shape": list(a.shape)} for k, a in enc.arrays.items()})
    from safetensors.numpy import save

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("bundle.json", json.dumps(doc, allow_nan=False))
        z.writestr("arrays.safetensors", save(enc.arrays) if enc.arrays else b"")
    return buf.getvalue()


def estimate_bytes(states: dict[str, Any], *, max_rows: int | None = None, seed: int = 0, float16: bool = False) -> int:
    """About how large a bundle of `states` is before compression: its arrays plus its texts, to show first.
    The zip is no larger (float16 activations compress little, the texts much), so a bundle whose estimate is
    within an importer's cap is accepted there."""
    states = prepare(states, max_rows, seed, float16)
    enc = _Encoder()
    encoded = [enc.encode(v) for v in states.values()]
    return int(sum(a.nbytes for a in enc.arrays.values()) + len(json.dumps(encoded, allow_nan=False)))


def fit_rows(states: dict[str, Any], cap_bytes: int, *, seed: int = 0, float16: bool = False) -> int | None:
    """The row cap per data set (a round number) that makes the bundle of `states` fit within `cap_bytes`
    before compression, or None when it fits with every row: the Share page's default."""
    return rows_that_fit(lambda rows: estimate_bytes(states, max_rows=rows, seed=seed, float16=float16),
                         most_rows(states), cap_bytes)


def save_bundle(path: str | Path, states: dict[str, Any], settings: dict | None = None, **kw) -> Path:
    """Write `bundle_bytes(states, settings, **kw)` to `path`."""
    path = Path(path)
    path.write_bytes(bundle_bytes(states, settings, **kw))
    return path


def load_bundle(source: str | Path | bytes, *, max_bytes: int = MAX_BUNDLE_BYTES) -> Bundle:
    """Read a bundle (a path or its bytes): only JSON and safetensors, everything checked before it is used
    (`bundle_checks`: sizes before inflating, JSON depth and counts before parsing, each value's type and shape).

    Every problem is a RepmapError of one sentence: not a zip, other members (a pickle, say), a member or a
    total over `max_bytes` unpacked, another format, a class outside the whitelist, ill-typed values, arrays
    that do not match their description or each other.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            if not path.is_file():
                raise RepmapError(f"There is no bundle file at {shown_path(path)}.")
            data = path.read_bytes()
        except OSError as e:  # a name too long, no permission: the user's path, in one sentence
            raise path_error(path, e, "a bundle file") from None
    members = checks.read_members(data, MEMBERS, max_bytes)  # sizes capped before and while reading
    doc = checks.parse_doc(members["bundle.json"], FORMAT)  # depth and counts before parsing, then the format
    raw = members["arrays.safetensors"]
    meta = checks.check_meta(doc, VIEWS, FORMAT)
    try:
        arrays = load(raw) if raw else {}
    except (SafetensorError, ValueError, TypeError):
        raise RepmapError("This bundle's arrays.safetensors is damaged; export the bundle again.") from None
    declared = doc.get("arrays", {})
    if not isinstance(declared, dict) or set(declared) != set(arrays) or any(
            not isinstance(declared[k], dict) or list(arrays[k].shape) != declared[k].get("shape") for k in arrays):
        raise RepmapError("This bundle's arrays do not match its description; it may be damaged.")
    # activations stored as float16 (`bundle_size`) are computed on as float32, as every page expects
    arrays = {k: a.astype(np.float32) if a.dtype == np.float16 else a for k, a in arrays.items()}
    dec = _Decoder(arrays)
    try:
        if not isinstance(doc.get("states"), dict):
            raise ValueError("states")
        states = {str(k): _from_legacy(str(k), dec.decode(v), dec.classes) for k, v in doc["states"].items()}
        settings = dec.decode(doc.get("settings", {"__dict__": []}))
        if not isinstance(settings, dict):
            raise ValueError("settings")
    except RepmapError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError):
        raise RepmapError("This bundle holds values repmap does not understand; it may be damaged or altered.") from None
    allowed_states = {k for v in VIEWS.values() for k in v.states}
    allowed_settings = {k for v in VIEWS.values() for k in v.settings}
    states = {k: v for k, v in states.items() if k in allowed_states}
    checks.check_states(states)  # each view's state of its kind, and consistent with the others
    settings = checks.check_settings({k: v for k, v in settings.items() if k in allowed_settings})
    return Bundle(states, settings, meta)
