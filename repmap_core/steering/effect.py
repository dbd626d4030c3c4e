"""What a steering sweep shows: slopes per unit α, the vector against a random direction, the verdict.

A sweep adds `α · v` and, beside it, a random direction of the same norm. Adding any vector that
large moves propensity too (on SmolLM2 a random direction can push it down by as much as the
vector does), so the effect of the vector is its slope *minus* the random direction's, paired by
question: that difference, with its interval, is what the verdict states first, and the raw slope
is reported beside it. The verdict never names a direction the paired difference does not show:
a vector whose propensity falls, but falls less than a random direction's, is said to move toward
the behaviour relative to the random direction while its raw propensity falls.
"""
from __future__ import annotations

import math

import numpy as np

from repmap_core.analysis.stats import Estimate, bootstrap

__all__ = ["Verdicted", "slopes", "slope_estimates", "steering_effect", "verdict"]


def slopes(alphas: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Least-squares slope of each column of `gaps` (k, n) against `alphas` (k,): one per question (n,)."""
    a = np.asarray(alphas, np.float64) - np.mean(alphas)
    gaps = np.asarray(gaps, np.float64)
    return (a[:, None] * (gaps - gaps.mean(0))).sum(0) / max(float((a ** 2).sum()), 1e-30)


def slope_estimates(alphas: np.ndarray, gaps: np.ndarray, random_gaps: np.ndarray | None, groups: np.ndarray | None,
                    seed: int = 0) -> tuple[Estimate, Estimate | None, Estimate | None]:
    """Mean slope per unit α of the vector, of the random direction, and of their difference (each
    question's vector slope minus its random slope), with bootstrap intervals over questions
    (`groups` (n,) names each column's question: its two letter orders resample together)."""
    def estimate(per: np.ndarray) -> Estimate:
        low, high = bootstrap(lambda idx: per[idx].mean(), len(per), groups=groups, seed=seed)
        return Estimate(float(per.mean()), low, high, len(per), "bootstrap (questions)")

    per_v = slopes(alphas, gaps)
    if random_gaps is None:
        return estimate(per_v), None, None
    per_r = slopes(alphas, random_gaps)
    return estimate(per_v), estimate(per_r), estimate(per_v - per_r)


def _excludes_zero(e: Estimate | None) -> int:
    """+1 / -1 when the interval lies above / below 0; 0 when it holds 0 or is undefined."""
    if e is None or not (math.isfinite(e.low) and math.isfinite(e.high)):
        return 0
    return 1 if e.low > 0 else -1 if e.high < 0 else 0


def steering_effect(slope: Estimate, random_slope: Estimate | None, difference: Estimate | None) -> int:
    """+1 (toward the behaviour) or -1 (against it) when the vector steers: its slope minus the random
    direction's (paired) excludes 0 *and* its own slope excludes 0 on the same side; 0 otherwise.
    Without a random direction the slope alone decides."""
    own = _excludes_zero(slope)
    if random_slope is None or difference is None:
        return own
    beyond = _excludes_zero(difference)
    return beyond if beyond != 0 and beyond == own else 0


class Verdicted:
    """What a sweep with `slope`, `random_slope` and `difference` fields shows: `effect` and `steers`."""

    @property
    def effect(self) -> int:
        """+1 / -1: steers toward / against beyond the random direction; 0: no steering shown."""
        return steering_effect(self.slope, self.random_slope, self.difference)

    @property
    def steers(self) -> bool:
        return self.effect != 0


def verdict(layer: int, slope: Estimate, random_slope: Estimate | None, difference: Estimate | None, scale_unit: str,
            what: str = "propensity", unit: str = "logits", toward: str = "the behaviour") -> str:
    """One sentence on what the sweep at `layer` shows, led by the vector's effect relative to a random
    direction of the same norm (`difference`, paired by question, with its interval) and then the raw
    slope. `scale_unit` says what one unit of α is (e.g. "× the layer's residual spread")."""
    f = lambda e: f"{e.value:+.2f} [{e.low:+.2f}, {e.high:+.2f}]"  # noqa: E731
    per = f"{unit} per unit α ({scale_unit})"
    if not (math.isfinite(slope.low) and math.isfinite(slope.high)):
        return f"Cannot tell at layer {layer}: too few held-out questions for an interval ({what} {f(slope)} {per})."
    if random_slope is None or difference is None:
        own = _excludes_zero(slope)
        moves = {1: "rises", -1: "falls", 0: "does not move beyond its interval"}[own]
        return (f"{'Steers' if own else 'No steering'} at layer {layer} (no random direction to compare): "
                f"{what} {moves}, {f(slope)} {per}.")
    rel, own = _excludes_zero(difference), _excludes_zero(slope)
    beyond = f"{f(difference)} {per} beyond a random direction of the same norm, paired by question"
    if rel == 0:
        return (f"No steering at layer {layer} beyond a random direction: the vector minus a random direction of the same "
                f"norm is {f(difference)} {per}, paired by question (the vector alone {f(slope)}, the random direction "
                f"{f(random_slope)}).")
    side = "toward" if rel > 0 else "against"
    if rel == own:
        moves = "rises" if rel > 0 else "falls"
        return (f"Steers {side} {toward} at layer {layer}: {what} {moves} {f(slope)} {per}, {f(difference)} beyond a "
                f"random direction of the same norm, paired by question (the random direction {f(random_slope)}).")
    own_text = {1: "rises", -1: "falls", 0: "does not move beyond its interval"}[own]
    return (f"Moves {side} {toward} only relative to a random direction at layer {layer}: {beyond}, while {what} itself "
            f"{own_text} ({f(slope)}; the random direction {f(random_slope)}): most of the raw change is what adding any "
            "vector this large does.")
