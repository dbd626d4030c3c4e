"""Steering a model: the hook that adds `α · v` after a block, propensity on A/B questions, the
side effect on neutral text, and greedy generation.

A raw α means different things at every layer and model (SmolLM2's residual norms run 6 -> 139 ->
73 from block 0 to 14 to 29), so sweeps default to α in units of the layer's *residual spread*:
the vector is scaled to unit length and multiplied by α times the root-mean-square distance of
the layer's residuals from their mean (α = 1 moves a residual as far as residuals typically lie
from each other's centre). The mean residual norm (`scale="relative"`) is mostly the mean vector
(138.6 at SmolLM2's block 14 against a spread of 53), so α = 1 there is 2.6 spreads and wrecks
the model's text. Every sweep runs a random direction of the same norm beside the vector, and
measures the side effect (next-token loss on neutral text, with its interval over texts) at each α.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np

from repmap_core.analysis.stats import Estimate, bootstrap, group_bootstrap_means, wilson
from repmap_core.capture.hooks import block_hidden, with_hidden
from repmap_core.capture.models import LoadedModel
from repmap_core.errors import RepmapError
from repmap_core.progress import Progress
from repmap_core.steering.choices import ABPrompt
from repmap_core.steering.effect import Verdicted, slope_estimates, verdict
from repmap_core.steering.letters import (
    encode_left,
    left_padded_inputs,
    letter_logit_gaps,
    require_lm,
)
from repmap_core.steering.sweep_prefix import letter_gaps
from repmap_core.steering.vectors import SteeringVector

__all__ = ["steer", "PropensityCurve", "propensity_curve", "SweepResult", "propensity_sweep",
           "next_token_loss", "next_token_losses", "generate", "SCALES",
           "SCALE_UNITS", "scale_factor"]

# what one unit of α adds, per scale (the first is the default everywhere)
SCALE_UNITS = {"spread": "× the layer's residual spread", "relative": "× the layer's mean residual norm",
               "raw": "× the vector as computed", "unit": "× a unit vector"}
SCALES = tuple(SCALE_UNITS)


@contextmanager
def steer(lm: LoadedModel, layer: int, vector: SteeringVector | np.ndarray, alpha: float, *,
          normalize: bool = False, from_position: int | None = None) -> Iterator[None]:
    """Add `alpha · v` to the residual stream after block `layer` for the duration of the block.

    All positions by default; with `from_position=k`, only columns >= k of the (left-padded) input
    and every newly generated token (decoding steps carry one token each). Works with batching,
    padding (pads are masked anyway) and `generate`. The hook is removed in `finally`.
    """
    import torch

    v = vector.vector if isinstance(vector, SteeringVector) else np.asarray(vector, np.float32)
    check_width(lm, v)
    if normalize:
        v = v / max(float(np.linalg.norm(v)), 1e-30)
    block = lm.blocks[layer]
    param = next(lm.model.parameters())
    # the sum is taken in fp32 and rounded once to the model's dtype (bf16 on a CPU with bf16 units): a small
    # α·v is not rounded to bf16 before it meets a residual 10-100x its size
    add = torch.as_tensor(alpha * v, dtype=torch.float32, device=param.device)  # (d,)

    def hook(module, inputs, output):
        hidden = block_hidden(output)  # (B, T, d)
        if from_position is None or hidden.shape[1] == 1:
            return with_hidden(output, (hidden.float() + add).to(hidden.dtype))
        mask = torch.zeros(hidden.shape[1], 1, dtype=torch.float32, device=hidden.device)
        mask[from_position:] = 1
        return with_hidden(output, (hidden.float() + mask * add).to(hidden.dtype))

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def check_width(lm: LoadedModel, v: np.ndarray) -> None:
    """Refuse, in one sentence, a vector (d,) of another width than `lm`'s residual stream."""
    if v.shape[0] != lm.info.d_model:
        raise RepmapError(
            f"This vector has width {v.shape[0]} and the model's residual stream {lm.info.d_model}; "
            "use a vector from this model, or carry it across with a map."
        )


def scale_factor(vector: SteeringVector, scale: str, residual_norm: float | None = None,
                 residual_spread: float | None = None) -> float:
    """What one unit of α multiplies the stored vector by under `scale` (see `SCALE_UNITS`)."""
    if scale == "raw":
        return 1.0
    if scale == "unit":
        return 1.0 / max(vector.norm, 1e-30)
    reference = {"relative": residual_norm, "spread": residual_spread}.get(scale, -1.0)
    if reference == -1.0:
        raise RepmapError(f"Scale '{scale}' is not one of {', '.join(SCALES)}.")
    if not reference:
        what = "mean residual norm" if scale == "relative" else "residual spread"
        raise RepmapError(f"A multiplier {SCALE_UNITS[scale]} needs the layer's {what}; compute the vectors again "
                          "(results saved by an older version hold only the mean norm: use the scale 'relative').")
    return float(reference) / max(vector.norm, 1e-30)


@dataclass(frozen=True, eq=False)
class PropensityCurve:
    """Mean propensity over held-out prompts per multiplier, with a 95% band; agreement (the share of
    prompts whose matching letter wins) with its interval; `gaps` (k, n) keeps every prompt's
    propensity so intervals of anything derived can resample questions. The unit of every interval
    is the question (`groups`): its two letter orders are strongly anti-correlated (r = -0.91 on
    SmolLM2), so they are averaged, never counted as two independent rows."""

    alphas: np.ndarray  # (k,) multipliers as the user gave them
    mean: np.ndarray  # (k,)
    low: np.ndarray  # 95% bootstrap over questions
    high: np.ndarray
    agreement: np.ndarray  # (k,)
    layer: int
    n_questions: int  # prompts (a question asked in both letter orders counts twice here)
    agreement_low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    agreement_high: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gaps: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (k, n)
    scale: str = "raw"  # how α was applied (a key of SCALE_UNITS)
    factor: float = 1.0  # what one unit of α multiplied the stored vector by
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (n,) question of each prompt

    @property
    def n_groups(self) -> int:
        """Distinct questions (the unit of the intervals)."""
        return int(len(np.unique(self.groups))) if len(self.groups) else self.n_questions

    def as_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items() if k != "gaps"}


def propensity_curve(alphas: np.ndarray, gaps: np.ndarray, layer: int, *, scale: str = "raw", factor: float = 1.0,
                     groups: np.ndarray | None = None, seed: int = 0) -> PropensityCurve:
    """Summarise per-prompt propensities `gaps` (k, n) into a curve with 95% intervals over `groups`
    (n,), the question of each prompt (None: every prompt its own question). The band and the
    agreement's interval are percentile bootstraps over questions; where every resample gives the same
    agreement (all questions win, or a letter-biased model wins each question in exactly one of its
    two orders), the Wilson interval with the questions as its n instead."""
    gaps = np.asarray(gaps, np.float64)
    n = gaps.shape[1]
    groups = np.arange(n) if groups is None else np.asarray(groups)
    wins = (gaps > 0).astype(np.float64)
    if n > 1:
        low, high = group_bootstrap_means(gaps, groups, seed=seed)
        a_low, a_high = group_bootstrap_means(wins, groups, seed=seed)
    else:
        low, high, a_low, a_high = (np.full(gaps.shape[0], np.nan) for _ in range(4))
    agreement = wins.mean(1)
    n_q = len(np.unique(groups))
    for i, share in enumerate(agreement):
        if not a_high[i] > a_low[i]:  # every resample agrees (all questions win, or each wins in one letter order only)
            a_low[i], a_high[i] = wilson(share * n_q, n_q)
    return PropensityCurve(np.asarray(alphas, np.float64), gaps.mean(1), low, high, agreement, int(layer), int(n),
                           a_low, a_high, gaps, scale, float(factor), groups)


@dataclass(frozen=True, eq=False)
class SweepResult(Verdicted):
    """A sweep of one vector, the random direction of the same norm beside it, and the side effect."""

    curve: PropensityCurve
    random: PropensityCurve | None
    slope: Estimate  # propensity per unit α (least squares over α, per question), bootstrap over questions
    random_slope: Estimate | None
    difference: Estimate | None  # vector slope − random slope, paired by question
    side_effect: dict  # alpha -> mean next-token loss on neutral text (nats), with "base" at α = 0
    residual_norm: float | None
    verdict: str  # one sentence, led by the vector's effect relative to the random direction
    side_effect_delta: dict = field(default_factory=dict)  # alpha -> Estimate of the loss minus the unsteered loss
    residual_spread: float | None = None  # the layer's residual spread (what α multiplies under scale "spread")
    vector_norm: float | None = None  # the stored vector's norm (one unit of α adds curve.factor × this)


def next_token_losses(lm: LoadedModel, texts: Sequence[str], batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Per text: the summed next-token cross-entropy (nats) and the number of predicted tokens, both
    (n,), under whatever hooks are active."""
    import torch
    import torch.nn.functional as F

    require_lm(lm)
    sums, counts = [], []
    for s in range(0, len(texts), batch_size):
        input_ids, mask = encode_left(lm, texts[s:s + batch_size])
        with torch.inference_mode():
            logits = lm.model(**left_padded_inputs(lm, input_ids, mask)).logits[:, :-1].float()  # (B, T-1, V)
        target = input_ids[:, 1:]
        keep = (mask[:, 1:].bool() & mask[:, :-1].bool()).float()  # (B, T-1)
        loss = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, T-1)
        sums.append((loss * keep).sum(1).double().cpu().numpy())
        counts.append(keep.sum(1).cpu().numpy())
    return np.concatenate(sums), np.concatenate(counts)


def next_token_loss(lm: LoadedModel, texts: Sequence[str], batch_size: int = 16) -> float:
    """Mean next-token cross-entropy (nats per token) on `texts`, under whatever hooks are active."""
    sums, counts = next_token_losses(lm, texts, batch_size)
    return float(sums.sum() / max(counts.sum(), 1))


def loss_change(base: tuple[np.ndarray, np.ndarray], steered: tuple[np.ndarray, np.ndarray], seed: int = 0) -> Estimate:
    """The steered minus the unsteered loss per token (nats), with a bootstrap interval over texts (paired)."""
    (b_sum, count), (s_sum, _) = base, steered

    def delta(idx: np.ndarray) -> float:
        return float((s_sum[idx].sum() - b_sum[idx].sum()) / max(count[idx].sum(), 1))

    low, high = bootstrap(delta, len(count), seed=seed)
    return Estimate(delta(np.arange(len(count))), low, high, len(count), "bootstrap (texts)")


def propensity_sweep(lm: LoadedModel, prompts: Sequence[ABPrompt], layer: int, vector: SteeringVector | np.ndarray,
                     alphas: Sequence[float], *, scale: str = "raw", residual_norm: float | None = None,
                     residual_spread: float | None = None, baseline: bool = False, neutral_texts: Sequence[str] = (),
                     groups: np.ndarray | None = None, seed: int = 0, normalize: bool = False, batch_size: int = 16,
                     progress: Progress | None = None):
    """Propensity on `prompts` with `α · factor · v` added after block `layer`, for each α.

    Returns a `PropensityCurve`; with `baseline=True` (or neutral texts given), a `SweepResult`
    holding the curve, the same sweep of a random direction of the vector's norm, the slope of each
    with its interval, the side effect on `neutral_texts` and the verdict. `groups` names each
    prompt's question (a question asked in both letter orders counts once in the intervals).
    """
    if not prompts:
        raise RepmapError("There are no held-out questions to score; use more A/B questions.")
    v = vector if isinstance(vector, SteeringVector) else SteeringVector(np.asarray(vector), layer)
    check_width(lm, v.vector)  # before any forward: the shared-blocks path adds it without `steer`
    if normalize:
        scale = "unit"
    factor = scale_factor(v, scale, residual_norm, residual_spread)
    alphas = np.asarray(list(alphas), dtype=np.float64)
    runs = [("vector", v)] + ([("random", v.random_like(seed))] if baseline else [])
    total = len(alphas) * (len(runs) + (1 if neutral_texts else 0))
    done = 0
    gaps: dict[str, list] = {name: [] for name, _ in runs}
    # blocks up to `layer` run once per batch of prompts, the rest once per multiplier and direction (where they can)
    settings = [(name, vec, float(a)) for name, vec in runs for a in alphas]  # every (direction, α), in order
    shared = letter_gaps(lm, prompts, layer, [(a * factor) * vec.vector for _, vec, a in settings], batch_size=batch_size,
                         progress=progress and (lambda f, msg: progress(f * len(settings) / total, msg)))
    for i, (name, vec, a) in enumerate(settings):
        if shared is not None:
            gaps[name].append(shared[i])
        else:
            with steer(lm, layer, vec, a * factor):
                gaps[name].append(letter_logit_gaps(lm, prompts, batch_size))
        done += 1
        if progress:
            progress(done / total, f"{name} ×{a:+g}: propensity {gaps[name][-1].mean():+.3f}")
    side: dict = {}
    delta: dict = {}
    if neutral_texts:
        base = next_token_losses(lm, neutral_texts, batch_size)
        side["base"] = float(base[0].sum() / max(base[1].sum(), 1))
        for a in alphas:
            with steer(lm, layer, v, float(a) * factor):
                steered = next_token_losses(lm, neutral_texts, batch_size)
            side[float(a)] = float(steered[0].sum() / max(steered[1].sum(), 1))
            delta[float(a)] = loss_change(base, steered, seed)
            done += 1
            if progress:
                progress(done / total, f"side effect ×{a:+g}: loss {side[float(a)]:.3f} nats")
    kw = dict(scale=scale, factor=factor, groups=groups, seed=seed)
    curve = propensity_curve(alphas, np.stack(gaps["vector"]), layer, **kw)
    if not baseline and not neutral_texts:
        return curve
    rand = propensity_curve(alphas, np.stack(gaps["random"]), layer, **kw) if baseline else None
    slope, rslope, diff = slope_estimates(alphas, curve.gaps, None if rand is None else rand.gaps, curve.groups, seed)
    text = verdict(layer, slope, rslope, diff, SCALE_UNITS[scale])
    return SweepResult(curve, rand, slope, rslope, diff, side, residual_norm, text, delta, residual_spread, v.norm)


def generate(lm: LoadedModel, prompts: Sequence[str], *, layer: int | None = None, vector=None, alpha: float = 0.0,
             max_new_tokens: int = 40) -> list[str]:
    """Greedy continuations of `prompts`; with a vector, steered at the last prompt position (which
    predicts the first new token) and every generated token."""
    import torch

    require_lm(lm)
    input_ids, mask = encode_left(lm, prompts, room=max_new_tokens)
    ctx = steer(lm, layer, vector, alpha, from_position=input_ids.shape[1] - 1) if vector is not None else nullcontext()
    with torch.inference_mode(), ctx:
        out = lm.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=int(lm.tokenizer.pad_token_id))
    return lm.tokenizer.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True)
