"""numpy results as JSON: what json.dumps cannot write is converted, nested results become plain
values, and NaN or infinity (which JSON cannot spell) become null."""
from __future__ import annotations

import json

import numpy as np

from repmap_core.jsonable import json_default, to_json_values


def test_json_default_writes_numpy_values_and_sets_as_json_and_anything_else_as_text():
    blob = {"w": np.arange(3, dtype=np.float32) / 2, "n": np.int64(7), "ok": np.bool_(True), "layers": {3, 1, 2},
            "path": __import__("pathlib").Path("/x/y")}
    back = json.loads(json.dumps(blob, default=json_default, sort_keys=True))
    assert back == {"w": [0.0, 0.5, 1.0], "n": 7, "ok": True, "layers": [1, 2, 3], "path": "/x/y"}
    assert type(back["n"]) is int and type(back["ok"]) is bool


def test_to_json_values_converts_nested_results_and_drops_non_finite_numbers():
    raw = {1: (np.float32(0.25), np.nan), "m": np.array([[1.0, np.inf], [2.0, 3.0]]),
           "deep": [{"k": np.int32(-4)}, np.float64(-np.inf)], "text": "as is", "none": None}
    out = to_json_values(raw)
    assert out == {"1": [0.25, None], "m": [[1.0, None], [2.0, 3.0]], "deep": [{"k": -4}, None], "text": "as is",
                   "none": None}
    assert json.loads(json.dumps(out, allow_nan=False)) == out  # strict JSON: no NaN left anywhere
    assert type(out["deep"][0]["k"]) is int
