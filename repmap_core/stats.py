"""Uncertainty for every number a user reads: intervals and nulls.

- `wilson`: a 95% interval for a share (an accuracy, an agreement rate) from k of n.
- `bootstrap`: a percentile interval for any statistic, resampling rows or whole groups (pairs,
  questions), so two rows of one pair never count as independent evidence.
- `Estimate`: a value with its interval (and, where one exists, a null to read it against), as
  results carry it and pages print it (`0.873 [0.84, 0.90]`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = ["Estimate", "wilson", "bootstrap", "mean_interval", "accuracy_estimate", "format_estimate",
           "pearson_estimate"]

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A number with its 95% interval; `null` is the same statistic under no effect (a shuffled or
    random baseline) when one exists, `n` what it was computed from, `method` how the interval was made."""

    value: float
    low: float
    high: float
    n: int = 0
    method: str = ""  # "wilson" | "bootstrap (pairs)" | "normal" | ...
    null: float | None = None
    null_high: float | None = None  # the null's upper 95% bound (e.g. of shuffled-label runs)

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return format_estimate(self)


def format_estimate(e: Estimate | None, digits: int = 3) -> str:
    """`0.873 [0.841, 0.899]`; '–' for a missing estimate or a NaN value."""
    if e is None or e.value is None or not math.isfinite(e.value):
        return "–"
    return f"{e.value:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a share k/n (good at small n and near 0 or 1)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_estimate(correct: np.ndarray, groups: np.ndarray | None = None, *, seed: int = 0,
                      n_boot: int = 1000) -> Estimate:
    """The share of True in `correct` with a 95% interval: Wilson over rows, or a bootstrap over
    `groups` (e.g. pair ids) when rows come in groups that are not independent."""
    correct = np.asarray(correct, dtype=np.float64).reshape(-1)
    value = float(correct.mean()) if len(correct) else float("nan")
    if groups is not None and _has_real_groups(groups):
        low, high = bootstrap(lambda idx: correct[idx].mean(), len(correct), groups=groups, seed=seed, n_boot=n_boot)
        return Estimate(value, low, high, len(correct), "bootstrap (pairs)")
    low, high = wilson(correct.sum(), len(correct))
    return Estimate(value, low, high, len(correct), "wilson")


def _has_real_groups(groups: np.ndarray) -> bool:
    groups = np.asarray(groups)
    return len(groups) > 0 and len(np.unique(groups)) < len(groups)


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, *, groups: np.ndarray | None = None,
              n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of `statistic(rows)` over resamples of the `n` row indices; with
    `groups` (n,), whole groups are resampled (rows of one pair or question stay together).
    Resamples whose statistic is not finite (e.g. one class only) are dropped."""
    rng = np.random.default_rng(seed)
    if groups is not None:
        groups = np.asarray(groups)
        uniq, inverse = np.unique(groups, return_inverse=True)
        members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    values = []
    for _ in range(n_boot):
        if groups is None:
            idx = rng.integers(0, n, n)
        else:
            pick = rng.integers(0, len(members), len(members))
            idx = np.concatenate([members[g] for g in pick])
        v = statistic(idx)
        if v is not None and np.isfinite(v):
            values.append(float(v))
    if len(values) < max(10, n_boot // 10):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def mean_interval(x: Sequence[float]) -> Estimate:
    """Mean with a normal-approximation 95% interval (mean ± 1.96 se)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if len(x) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "normal")
    m = float(x.mean())
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0
    return Estimate(m, m - Z95 * se, m + Z95 * se, len(x), "normal")


def pearson_estimate(a: np.ndarray, b: np.ndarray, *, statistic_rows: Callable[[np.ndarray], tuple] | None = None,
                     n: int | None = None, n_boot: int = 1000, seed: int = 0) -> Estimate:
    """Pearson r of two curves with a bootstrap interval. `statistic_rows(idx) -> (a, b)` recomputes
    both curves from resampled rows (e.g. questions); without it, Fisher's z interval over the points."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    r = _pearson(a, b)
    if statistic_rows is not None and n:
        low, high = bootstrap(lambda idx: _pearson(*statistic_rows(idx)), n, n_boot=n_boot, seed=seed)
        return Estimate(r, low, high, n, "bootstrap (questions)")
    if len(a) > 3 and math.isfinite(r) and abs(r) < 1:
        z, se = math.atanh(r), 1 / math.sqrt(len(a) - 3)
        return Estimate(r, math.tanh(z - Z95 * se), math.tanh(z + Z95 * se), len(a), "fisher z")
    return Estimate(r, float("nan"), float("nan"), len(a), "fisher z")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
