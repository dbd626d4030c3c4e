"""Tests for repmap_core.steering.effect: the verdict states the vector's effect relative to a random
direction of the same norm (paired by question), never a direction that difference does not show."""
from __future__ import annotations

import numpy as np
import pytest

from repmap_core.analysis.stats import Estimate, wilson
from repmap_core.steering.effect import slope_estimates, slopes, steering_effect, verdict

UNIT = "× the layer's residual spread"


def e(value: float, low: float, high: float) -> Estimate:
    return Estimate(value, low, high, 40, "bootstrap (questions)")


def planted_gaps(vector_slope: float, random_slope: float, n_questions: int = 40, noise: float = 0.05, seed: int = 0):
    """Propensities (k, 2n) of questions asked in both letter orders, with known slopes per unit α."""
    rng = np.random.default_rng(seed)
    alphas = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    groups = np.repeat(np.arange(n_questions), 2)
    offset = rng.normal(size=2 * n_questions)  # each prompt's own baseline, letter orders anti-correlated
    offset[1::2] = -offset[::2]

    def gaps(slope):
        return offset + slope * alphas[:, None] + noise * rng.normal(size=(len(alphas), 2 * n_questions))

    return alphas, gaps(vector_slope), gaps(random_slope), groups


def test_slopes_recover_a_planted_slope_per_question():
    alphas = np.array([-1.0, 0.0, 1.0, 2.0])
    gaps = np.outer(alphas, [0.5, -2.0]) + np.array([1.0, 3.0])
    assert slopes(alphas, gaps) == pytest.approx([0.5, -2.0])


def test_a_random_direction_that_falls_more_is_not_called_steering_against():
    """The case the issue found on SmolLM2: the vector's propensity falls (-0.08), a random direction's
    falls more (-0.21); paired, the vector pushes toward the behaviour (+0.13). The verdict must say so."""
    alphas, vec, rnd, groups = planted_gaps(-0.08, -0.21)
    slope, rslope, diff = slope_estimates(alphas, vec, rnd, groups)
    assert slope.high < 0 and diff.low > 0  # what the data says
    text = verdict(14, slope, rslope, diff, UNIT)
    assert not text.startswith("Steers against") and "against" not in text.split(":")[0]
    assert text.startswith("Moves toward the behaviour only relative to a random direction at layer 14")
    assert f"{diff.value:+.2f}" in text and f"{slope.value:+.2f}" in text and "falls" in text
    assert steering_effect(slope, rslope, diff) == 0


@pytest.mark.parametrize("v, r, start, effect", [
    (0.30, 0.00, "Steers toward the behaviour at layer 3", 1),
    (-0.30, 0.00, "Steers against the behaviour at layer 3", -1),
    (0.00, 0.00, "No steering at layer 3 beyond a random direction", 0),
    (0.25, 0.40, "Moves against the behaviour only relative to a random direction at layer 3", 0),
    (0.00, -0.30, "Moves toward the behaviour only relative to a random direction at layer 3", 0),
])
def test_the_verdict_follows_the_paired_difference(v, r, start, effect):
    alphas, vec, rnd, groups = planted_gaps(v, r, seed=7)
    slope, rslope, diff = slope_estimates(alphas, vec, rnd, groups)
    text = verdict(3, slope, rslope, diff, UNIT)
    assert text.startswith(start), text
    assert steering_effect(slope, rslope, diff) == effect
    assert UNIT in text and "paired by question" in text


def test_without_a_random_direction_the_slope_alone_decides_and_says_so():
    text = verdict(5, e(0.4, 0.2, 0.6), None, None, UNIT)
    assert text.startswith("Steers at layer 5 (no random direction to compare)") and "rises" in text
    assert steering_effect(e(0.4, 0.2, 0.6), None, None) == 1
    assert verdict(5, e(0.1, float("nan"), float("nan")), None, None, UNIT).startswith("Cannot tell at layer 5")


def test_the_sentiment_wording():
    text = verdict(8, e(0.4, 0.3, 0.5), e(0.0, -0.1, 0.1), e(0.4, 0.25, 0.55), UNIT, what="judged positivity",
                   unit="P(positive)", toward="positive")
    assert text.startswith("Steers toward positive at layer 8: judged positivity rises +0.40 [+0.30, +0.50] P(positive)")


@pytest.mark.slow
def test_real_smollm2_sweep_intervals_are_over_questions_and_the_verdict_follows_the_pairing(smollm2):
    """Real weights (SmolLM2, block 14, a real A/B behaviour set in both letter orders): the band and
    the agreement's interval match an independent bootstrap over questions (within 1.5x), where
    treating the two letter orders as independent rows is several times too wide; the verdict's
    sign follows the paired difference, also when a planted random direction falls more than the
    vector; and α = ±1 (units of the residual spread) costs a moderate side effect."""
    from repmap_core.capture.models import load_model
    from repmap_core.data.load import load_dataset
    from repmap_core.steering import compute_vectors
    from repmap_core.steering.run import sweep_layer

    lm = load_model(smollm2, head=True)
    vs = compute_vectors(smollm2, load_dataset("builtin:survival_instinct", limit=120), [14], loader=lambda r, d, t: lm)
    alphas = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    res = sweep_layer(vs, lm, 14, alphas, n_preview=1, max_new_tokens=4).sweep
    curve, groups = res.curve, res.curve.groups
    assert curve.scale == "spread" and curve.factor * res.vector_norm == pytest.approx(vs.spread(14), rel=1e-5)
    assert len(np.unique(groups)) * 2 == curve.n_questions  # every question in both letter orders

    rng = np.random.default_rng(99)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    boots, wins = [], []
    for _ in range(2000):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        boots.append(curve.gaps[:, idx].mean(1))
        wins.append((curve.gaps[:, idx] > 0).mean(1))
    lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
    ours, ref = (curve.high - curve.low) / 2, (hi - lo) / 2
    assert np.all(ours <= 1.5 * ref) and np.all(ref <= 1.5 * ours)
    a_lo, a_hi = np.percentile(wins, [2.5, 97.5], axis=0)
    inner = (curve.agreement > 0) & (curve.agreement < 1)
    moves = a_hi > a_lo  # where every resample agrees (each question wins in one letter order: 50% in each), the
    width = curve.agreement_high - curve.agreement_low  # bootstrap has no width and the Wilson interval over questions
    assert np.all(np.abs(width - (a_hi - a_lo))[inner & moves] <= 0.5 * (a_hi - a_lo)[inner & moves] + 0.02)
    n_q = len(members)
    for i in np.flatnonzero(~moves):
        assert (curve.agreement_low[i], curve.agreement_high[i]) == pytest.approx(wilson(curve.agreement[i] * n_q, n_q))
        assert width[i] > 0
    rowwise = 1.96 * curve.gaps.std(1, ddof=1) / np.sqrt(curve.n_questions)  # the old band: prompts as independent rows
    assert np.max(rowwise / ref) > 1.5  # the letter orders are anti-correlated: that band was too wide

    per = slopes(alphas, curve.gaps) - slopes(alphas, res.random.gaps)
    assert res.difference.value == pytest.approx(per.mean(), abs=1e-9)
    low, high = res.difference.low, res.difference.high
    assert res.effect in ((np.sign(per.mean()), 0) if (low > 0 or high < 0) else (0,))
    planted = curve.gaps - 0.5 * alphas[:, None]  # a "random direction" that falls by 0.5 per unit α more
    s, r, d = slope_estimates(alphas, curve.gaps, planted, groups)
    assert d.low > 0 and steering_effect(s, r, d) >= 0
    assert not verdict(14, s, r, d, UNIT).startswith("Steers against")
    for a in (-1.0, 1.0):
        change = res.side_effect_delta[a]
        assert change.low <= change.value <= change.high and change.value < 1.5  # nats per token
