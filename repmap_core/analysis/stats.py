"""Uncertainty for every number a user reads: intervals and nulls.

- `wilson`: a 95% interval for a share (an accuracy, an agreement rate) from k of n.
- `bootstrap`: a percentile interval for any statistic, resampling rows or whole groups (pairs,
  questions), so two rows of one pair never count as independent evidence.
- `Estimate`: a value with its interval (and, where one exists, a null to read it against), as
  results carry it and pages print it (`0.873 [0.84, 0.90]`).
- `r2_estimate`, `row_mean_estimate`: held-out R² and a per-row mean (e.g. cosine) with a bootstrap
  over rows or pairs; `random_direction_accuracy`: the null of "score rows along a direction".
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Estimate", "wilson", "bootstrap", "group_bootstrap_means", "mean_interval", "accuracy_estimate", "format_estimate", "format_null",
           "pearson_estimate", "r2_estimate", "row_mean_estimate", "random_direction_accuracy", "with_null"]

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

    def __post_init__(self) -> None:
        # plain floats (not numpy scalars), so results compare, save and load as they were made
        for name in ("value", "low", "high", "null", "null_high"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, float(v))
        object.__setattr__(self, "n", int(self.n))

    def as_dict(self) -> dict:
        """Plain values for JSON: a NaN or infinite bound becomes None (strict JSON has no NaN)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    def __str__(self) -> str:
        return format_estimate(self)


def with_null(e: Estimate, null: float | None, null_high: float | None) -> Estimate:
    """`e` with its null (the same statistic under no effect) and the null's upper 95% bound."""
    from dataclasses import replace

    return replace(e, null=None if null is None else float(null), null_high=None if null_high is None else float(null_high))


def format_estimate(e: Estimate | None, digits: int = 3) -> str:
    """`0.873 [0.841, 0.899]`; '–' for a missing estimate or a NaN value."""
    if e is None or e.value is None or not math.isfinite(e.value):
        return "–"
    return f"{e.value:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"


def format_null(e: Estimate | None, digits: int = 2) -> str:
    """`null 0.50 (95% ≤ 0.58)`: what the statistic reads under no effect; '' without a null."""
    if e is None or e.null is None or not math.isfinite(e.null):
        return ""
    high = f" (95% ≤ {e.null_high:.{digits}f})" if e.null_high is not None and math.isfinite(e.null_high) else ""
    return f"null {e.null:.{digits}f}{high}"


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a share k/n (good at small n and near 0 or 1)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at k = 0 or n the bound is exactly 0 or 1 (rounding would leave it a hair inside the value)
    return (0.0 if k <= 0 else max(0.0, centre - half)), (1.0 if k >= n else min(1.0, centre + half))


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
              n_boot: int = 1000, seed: int = 0, level: float = 0.95,
              bias_corrected: bool = False) -> tuple[float, float]:
    """Percentile interval of `statistic(rows)` over resamples of the `n` row indices; with
    `groups` (n,), whole groups are resampled (rows of one pair or question stay together).
    Resamples whose statistic is not finite (e.g. one class only) are dropped.

    `bias_corrected` shifts the percentile interval by the resamples' bias (full-sample value minus
    their median), for statistics whose resamples sit to one side of the value: a cosine with a
    resampled mean difference is pulled towards 0 by the resampling noise, so the plain percentile
    interval can miss the value itself (and Efron's BC percentiles, with nearly every resample
    below it, do too). The width stays the resamples' spread."""
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
    if bias_corrected:
        shift = float(statistic(np.arange(n))) - float(np.median(values))
        low, high = low + shift, high + shift
    return float(low), float(high)


def group_bootstrap_means(values: np.ndarray, groups: np.ndarray | None = None, *, n_boot: int = 2000, seed: int = 0,
                          level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals of the row means of `values` (k, n), resampling whole `groups` (n,), e.g.
    the two letter orders of one question, which are no independent evidence: rows of a group are
    averaged first and the groups are resampled (all k rows with the same draw, so curves stay
    paired). Returns (low (k,), high (k,)). Vectorised: one (n_boot, g) x (g, k) product.

    Rows of a group are averaged with equal weight per row, so with groups of equal size the
    resampled statistic is the plain mean of the rows it holds."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))  # (k, n)
    groups = np.arange(values.shape[1]) if groups is None else np.asarray(groups)
    uniq, inverse = np.unique(groups, return_inverse=True)
    sizes = np.bincount(inverse).astype(np.float64)  # (g,)
    sums = np.zeros((values.shape[0], len(uniq)))
    np.add.at(sums.T, inverse, values.T)  # (k, g) per-group sums
    counts = np.random.default_rng(seed).multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq)), size=n_boot)  # (B, g)
    means = (counts @ sums.T) / (counts @ sizes)[:, None]  # (B, k)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return low, high


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


def r2_estimate(T: np.ndarray, T_hat: np.ndarray, groups: np.ndarray | None = None, *, n_boot: int = 500,
                seed: int = 0) -> Estimate:
    """Variance-weighted R² of `T_hat` (n, d) against `T` (n, d) with a bias-corrected bootstrap
    interval over rows (whole `groups`, e.g. pairs, when given). Each resample recomputes SST around its own mean,
    from per-row sums, so a resample costs O(n d) and 500 of them ~0.1 s at 200 x 384.
    The null (R² of predicting the mean of the rows, 0 by construction) is set to 0."""
    T = np.asarray(T, dtype=np.float64)
    sse = ((T - np.asarray(T_hat, dtype=np.float64)) ** 2).sum(1)  # (n,)
    sq = (T ** 2).sum(1)  # (n,)

    def r2(idx: np.ndarray) -> float:
        counts = np.bincount(idx, minlength=len(T)).astype(np.float64)
        m = counts.sum()
        total = counts @ T  # (d,)
        sst = counts @ sq - total @ total / m
        return 1.0 - float(counts @ sse) / sst if sst > 0 else float("nan")

    value = r2(np.arange(len(T)))
    groups = groups if groups is not None and _has_real_groups(groups) else None
    low, high = bootstrap(r2, len(T), groups=groups, n_boot=n_boot, seed=seed, bias_corrected=True)
    return Estimate(value, low, min(high, 1.0), len(T), "bootstrap (pairs)" if groups is not None else "bootstrap (rows)",
                    null=0.0)


def row_mean_estimate(values: np.ndarray, groups: np.ndarray | None = None, *, n_boot: int = 1000,
                      seed: int = 0) -> Estimate:
    """Mean of per-row `values` (n,) (e.g. mapped-vs-true cosines) with a bootstrap interval over rows
    (whole `groups` when given)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    groups = groups if groups is not None and _has_real_groups(groups) else None
    low, high = bootstrap(lambda idx: values[idx].mean(), len(values), groups=groups, n_boot=n_boot, seed=seed)
    return Estimate(float(values.mean()), low, high, len(values),
                    "bootstrap (pairs)" if groups is not None else "bootstrap (rows)")


def random_direction_accuracy(X: np.ndarray, y: np.ndarray, *, n_directions: int = 200, seed: int = 0,
                              center: np.ndarray | None = None) -> tuple[float, float]:
    """The null for "classify rows by the sign of their projection on a direction": the accuracy
    of `n_directions` random unit directions of the space of `X` (n, d) on labels `y` (n,) 0/1,
    scoring `sign((x − center)·r)` (`center` (d,), e.g. the training mean; None scores `sign(x·r)`).
    Returns (mean, 95th percentile). Costs one (n, d) x (d, n_directions) product."""
    X = np.asarray(X, dtype=np.float64)
    if center is not None:
        X = X - np.asarray(center, dtype=np.float64)
    R = np.random.default_rng(seed).normal(size=(X.shape[1], n_directions))  # (d, k): isotropic directions
    acc = ((X @ R > 0) == (np.asarray(y).reshape(-1, 1) == 1)).mean(0)  # (k,)
    return float(acc.mean()), float(np.percentile(acc, 95))
