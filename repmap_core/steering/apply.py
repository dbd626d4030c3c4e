"""Steering a model: the hook that adds `α · v` after a block, propensity on A/B questions, the
side effect on neutral text, and greedy generation.

A raw α means different things at every layer and model (SmolLM2's residual norms run 6 -> 139 ->
73 from block 0 to 14 to 29), so sweeps default to a *relative* α: the vector is scaled to unit
length and multiplied by α times the layer's mean residual norm (α = 0.5 adds half a typical
residual). Every sweep runs a random direction of the same norm beside the vector, and measures
the side effect (mean next-token loss on neutral text) at each α.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np

from repmap_core.analysis.stats import Estimate, bootstrap, wilson
from repmap_core.capture.hooks import block_hidden, with_hidden
from repmap_core.capture.models import LoadedModel
from repmap_core.errors import RepmapError
from repmap_core.progress import Progress
from repmap_core.steering.choices import ABPrompt
from repmap_core.steering.vectors import SteeringVector

__all__ = ["steer", "letter_logit_gaps", "PropensityCurve", "propensity_curve", "SweepResult", "propensity_sweep",
           "next_token_loss", "generate", "prompts_over_context", "context_room", "SCALES", "scale_factor"]

SCALES = ("relative", "raw", "unit")  # α × layer norm × unit vector; α × v as computed; α × unit vector


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
    if v.shape[0] != lm.info.d_model:
        raise RepmapError(
            f"This vector has width {v.shape[0]} and the model's residual stream {lm.info.d_model}; "
            "use a vector from this model, or carry it across with a map."
        )
    if normalize:
        v = v / max(float(np.linalg.norm(v)), 1e-30)
    block = lm.blocks[layer]
    param = next(lm.model.parameters())
    add = torch.as_tensor(alpha * v, dtype=param.dtype, device=param.device)  # (d,)

    def hook(module, inputs, output):
        hidden = block_hidden(output)  # (B, T, d)
        if from_position is None or hidden.shape[1] == 1:
            return with_hidden(output, hidden + add)
        mask = torch.zeros(hidden.shape[1], 1, dtype=hidden.dtype, device=hidden.device)
        mask[from_position:] = 1
        return with_hidden(output, hidden + mask * add)

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def scale_factor(vector: SteeringVector, scale: str, residual_norm: float | None) -> float:
    """What one unit of α multiplies the stored vector by under `scale`."""
    if scale == "raw":
        return 1.0
    if scale == "unit":
        return 1.0 / max(vector.norm, 1e-30)
    if scale == "relative":
        if not residual_norm:
            raise RepmapError("A relative multiplier needs the layer's residual norm; compute the vectors first.")
        return float(residual_norm) / max(vector.norm, 1e-30)
    raise RepmapError(f"Scale '{scale}' is not one of {', '.join(SCALES)}.")


def context_room(lm: LoadedModel, room: int = 0) -> int | None:
    """Tokens a prompt may have so that it plus `room` new tokens fit the model's context."""
    return None if not lm.info.max_positions else int(lm.info.max_positions) - int(room)


def prompts_over_context(lm: LoadedModel, prompts: Sequence[str], room: int = 0) -> int:
    """How many prompts are longer than the context allows (they are cut from the left, keeping the end)."""
    keep = context_room(lm, room)
    return 0 if keep is None else sum(len(lm.tokenizer(p)["input_ids"]) > keep for p in prompts)


def _encode_left(lm: LoadedModel, prompts: Sequence[str], room: int = 0):
    """Left-padded ids and mask; prompts longer than the context keep their end (where the letter goes)."""
    import torch

    tok = lm.tokenizer
    keep = context_room(lm, room)
    ids = [tok(p, add_special_tokens=True)["input_ids"] for p in prompts]
    if keep is not None:
        ids = [x[-keep:] for x in ids]
    T = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), T), int(tok.pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(ids), T), dtype=torch.long)
    for k, x in enumerate(ids):
        input_ids[k, T - len(x):] = torch.as_tensor(x)
        mask[k, T - len(x):] = 1
    return input_ids.to(lm.device), mask.to(lm.device)


def _require_lm(lm: LoadedModel) -> None:
    if not lm.has_lm_head:
        raise RepmapError("Steering needs the model's next-token logits: load it with its LM head (load_model(..., head=True)).")


def _left_padded_inputs(lm: LoadedModel, input_ids, mask, last_only: bool = False) -> dict:
    """The forward's keyword arguments for a left-padded batch: position ids that start at 0 on each
    row's first real token, where the model takes them; with `last_only`, logits at the last
    position only (`logits_to_keep=1`), which matters for big vocabularies (Gemma's 262k)."""
    accepted = inspect.signature(lm.model.forward).parameters
    kwargs = {"input_ids": input_ids, "attention_mask": mask, "use_cache": False}
    if "position_ids" in accepted:
        kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)
    if last_only and "logits_to_keep" in accepted:
        kwargs["logits_to_keep"] = 1
    return kwargs


def _forward_last_logits(lm: LoadedModel, input_ids, mask):
    """Logits at the last position only `(B, V)`."""
    import torch

    with torch.inference_mode():
        return lm.model(**_left_padded_inputs(lm, input_ids, mask, last_only=True)).logits[:, -1].float()


def letter_logit_gaps(lm: LoadedModel, prompts: Sequence[ABPrompt], batch_size: int = 16) -> np.ndarray:
    """`logit(matching) − logit(other)` at each prompt's last position (n,), under whatever
    steering hooks are active."""
    import torch

    _require_lm(lm)
    out = []
    for s in range(0, len(prompts), batch_size):
        chunk = prompts[s:s + batch_size]
        logits = _forward_last_logits(lm, *_encode_left(lm, [p.prompt for p in chunk]))
        m = torch.as_tensor([p.matching_id for p in chunk], device=logits.device)
        o = torch.as_tensor([p.other_id for p in chunk], device=logits.device)
        out.append((logits.gather(1, m[:, None]) - logits.gather(1, o[:, None]))[:, 0].cpu().numpy())
    return np.concatenate(out)


@dataclass(frozen=True, eq=False)
class PropensityCurve:
    """Mean propensity over held-out questions per multiplier, with a 95% band; agreement (the
    share of questions whose matching letter wins) with its Wilson interval; `gaps` (k, n) keeps
    every question's propensity so intervals of anything derived can resample questions."""

    alphas: np.ndarray  # (k,) multipliers as the user gave them
    mean: np.ndarray  # (k,)
    low: np.ndarray  # mean − 1.96 se
    high: np.ndarray
    agreement: np.ndarray  # (k,)
    layer: int
    n_questions: int
    agreement_low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    agreement_high: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gaps: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (k, n)
    scale: str = "raw"  # how α was applied (relative | raw | unit)
    factor: float = 1.0  # what one unit of α multiplied the stored vector by
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (n,) question of each prompt

    def as_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items() if k != "gaps"}


def propensity_curve(alphas: np.ndarray, gaps: np.ndarray, layer: int, *, scale: str = "raw", factor: float = 1.0,
                     groups: np.ndarray | None = None) -> PropensityCurve:
    """Summarise per-question propensities `gaps` (k, n) into a curve with its intervals."""
    gaps = np.asarray(gaps, np.float64)
    n = gaps.shape[1]
    mean = gaps.mean(1)
    se = gaps.std(1, ddof=1) / math.sqrt(n) if n > 1 else np.zeros(len(mean))
    wins = (gaps > 0).sum(1)
    bounds = np.array([wilson(k, n) for k in wins])
    return PropensityCurve(np.asarray(alphas, np.float64), mean, mean - 1.96 * se, mean + 1.96 * se, wins / n, int(layer),
                           int(n), bounds[:, 0], bounds[:, 1], gaps, scale, float(factor),
                           np.arange(n) if groups is None else np.asarray(groups))


@dataclass(frozen=True, eq=False)
class SweepResult:
    """A sweep of one vector, the random direction of the same norm beside it, and the side effect."""

    curve: PropensityCurve
    random: PropensityCurve | None
    slope: Estimate  # propensity per unit α (least squares over α, per question), bootstrap over questions
    random_slope: Estimate | None
    difference: Estimate | None  # vector slope − random slope, paired by question
    side_effect: dict  # alpha -> mean next-token loss on neutral text (nats), with "base" at α = 0
    residual_norm: float | None
    verdict: str  # one sentence: does this layer steer, beyond the random direction?

    @property
    def steers(self) -> bool:
        return self.verdict.startswith("Steers")


def _slopes(alphas: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Least-squares slope of propensity against α, per question (n,)."""
    a = np.asarray(alphas, np.float64) - np.mean(alphas)
    return (a[:, None] * (gaps - gaps.mean(0))).sum(0) / max(float((a ** 2).sum()), 1e-30)


def slope_estimates(alphas: np.ndarray, gaps: np.ndarray, random_gaps: np.ndarray | None, groups: np.ndarray | None,
                    seed: int = 0) -> tuple[Estimate, Estimate | None, Estimate | None]:
    """Mean slope per unit α of the vector, of the random direction, and of their difference (each
    question's vector slope minus its random slope), with bootstrap intervals over questions."""
    def estimate(per: np.ndarray) -> Estimate:
        low, high = bootstrap(lambda idx: per[idx].mean(), len(per), groups=groups, seed=seed)
        return Estimate(float(per.mean()), low, high, len(per), "bootstrap (questions)")

    per_v = _slopes(alphas, gaps)
    if random_gaps is None:
        return estimate(per_v), None, None
    per_r = _slopes(alphas, random_gaps)
    return estimate(per_v), estimate(per_r), estimate(per_v - per_r)


def verdict(layer: int, slope: Estimate, random_slope: Estimate | None, difference: Estimate | None, scale: str,
            what: str = "propensity", unit: str = "logits") -> str:
    """One sentence: does the vector steer at `layer`, beyond a random direction of the same norm?
    It steers when its slope's interval excludes 0 and so does the interval of its difference from
    the random direction's slope (paired by question)."""
    per = "per unit α (× the layer's residual norm)" if scale == "relative" else "per unit α"
    shown = f"{slope.value:+.2f} [{slope.low:+.2f}, {slope.high:+.2f}] {unit} {per}"
    rand = ("" if random_slope is None else
            f"; a random direction of the same norm: {random_slope.value:+.2f} [{random_slope.low:+.2f}, {random_slope.high:+.2f}]")
    if not (math.isfinite(slope.low) and math.isfinite(slope.high)):
        return f"Cannot tell at layer {layer}: too few held-out questions for an interval ({shown}{rand})."
    beyond = difference is None or difference.low > 0 or difference.high < 0
    if slope.low > 0 and beyond:
        return f"Steers at layer {layer}: {what} rises {shown}{rand}."
    if slope.high < 0 and beyond:
        return f"Steers against the behaviour at layer {layer}: {what} falls {shown}{rand}."
    return f"No steering at layer {layer} beyond a random direction: {shown}{rand}."


def next_token_loss(lm: LoadedModel, texts: Sequence[str], batch_size: int = 16) -> float:
    """Mean next-token cross-entropy (nats per token) on `texts`, under whatever hooks are active."""
    import torch
    import torch.nn.functional as F

    _require_lm(lm)
    total, count = 0.0, 0
    for s in range(0, len(texts), batch_size):
        input_ids, mask = _encode_left(lm, texts[s:s + batch_size])
        with torch.inference_mode():
            logits = lm.model(**_left_padded_inputs(lm, input_ids, mask)).logits[:, :-1].float()  # (B, T-1, V)
        target = input_ids[:, 1:]
        keep = mask[:, 1:].bool() & mask[:, :-1].bool()
        loss = F.cross_entropy(logits[keep], target[keep], reduction="sum")
        total += float(loss)
        count += int(keep.sum())
    return total / max(count, 1)


def propensity_sweep(lm: LoadedModel, prompts: Sequence[ABPrompt], layer: int, vector: SteeringVector | np.ndarray,
                     alphas: Sequence[float], *, scale: str = "raw", residual_norm: float | None = None,
                     baseline: bool = False, neutral_texts: Sequence[str] = (), groups: np.ndarray | None = None,
                     seed: int = 0, normalize: bool = False, batch_size: int = 16,
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
    if normalize:
        scale = "unit"
    factor = scale_factor(v, scale, residual_norm)
    alphas = np.asarray(list(alphas), dtype=np.float64)
    runs = [("vector", v)] + ([("random", v.random_like(seed))] if baseline else [])
    total = len(alphas) * (len(runs) + (1 if neutral_texts else 0))
    done = 0
    gaps: dict[str, list] = {name: [] for name, _ in runs}
    side: dict = {}
    for name, vec in runs:
        for a in alphas:
            with steer(lm, layer, vec, float(a) * factor):
                gaps[name].append(letter_logit_gaps(lm, prompts, batch_size))
            done += 1
            if progress:
                progress(done / total, f"{name} ×{a:+g}: propensity {gaps[name][-1].mean():+.3f}")
    if neutral_texts:
        side["base"] = next_token_loss(lm, neutral_texts, batch_size)
        for a in alphas:
            with steer(lm, layer, v, float(a) * factor):
                side[float(a)] = next_token_loss(lm, neutral_texts, batch_size)
            done += 1
            if progress:
                progress(done / total, f"side effect ×{a:+g}: loss {side[float(a)]:.3f} nats")
    curve = propensity_curve(alphas, np.stack(gaps["vector"]), layer, scale=scale, factor=factor, groups=groups)
    if not baseline and not neutral_texts:
        return curve
    rand = propensity_curve(alphas, np.stack(gaps["random"]), layer, scale=scale, factor=factor, groups=groups) if baseline else None
    slope, rslope, diff = slope_estimates(alphas, curve.gaps, None if rand is None else rand.gaps, curve.groups, seed)
    return SweepResult(curve, rand, slope, rslope, diff, side, residual_norm, verdict(layer, slope, rslope, diff, scale))


def generate(lm: LoadedModel, prompts: Sequence[str], *, layer: int | None = None, vector=None, alpha: float = 0.0,
             max_new_tokens: int = 40) -> list[str]:
    """Greedy continuations of `prompts`; with a vector, steered at the last prompt position (which
    predicts the first new token) and every generated token."""
    import torch

    _require_lm(lm)
    input_ids, mask = _encode_left(lm, prompts, room=max_new_tokens)
    ctx = steer(lm, layer, vector, alpha, from_position=input_ids.shape[1] - 1) if vector is not None else nullcontext()
    with torch.inference_mode(), ctx:
        out = lm.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=int(lm.tokenizer.pad_token_id))
    return lm.tokenizer.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True)
