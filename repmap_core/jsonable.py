"""Results as JSON: numpy values as the plain numbers and lists JSON holds.

Two forms of one conversion: `json_default` for `json.dumps(..., default=json_default)` (called
only on what json cannot write itself), and `to_json_values` for a whole nested result converted
ahead of time, with NaN and infinity as None (they have no JSON spelling).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def json_default(x: Any) -> Any:
    """What `json.dumps` writes for a value it does not know: numpy arrays as lists, numpy scalars
    as Python numbers, sets sorted, anything else as its `str`."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (set, frozenset)):
        return sorted(x)
    return str(x)


def to_json_values(x: Any) -> Any:
    """`x` with dict keys as strings, tuples and arrays as lists, numpy scalars as Python numbers and
    non-finite floats as None; other values are returned as they are.

    >>> to_json_values({1: (np.float32(0.5), np.nan)})
    {'1': [0.5, None]}
    """
    if isinstance(x, dict):
        return {str(k): to_json_values(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_json_values(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_json_values(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
