"""What the Steering page and the `steer` command run: one layer's sweep, with its baseline,
side effect, verdict and a generation preview, from a computed `VectorSet`."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from repmap_core.capture.models import LoadedModel
from repmap_core.progress import Progress
from repmap_core.steering.apply import SweepResult, generate, propensity_sweep, scale_factor
from repmap_core.steering.choices import ab_prompts
from repmap_core.steering.compare import VectorSet
from repmap_core.steering.letters import prompts_over_context

__all__ = ["DEFAULT_ALPHAS", "LayerSweep", "sweep_layer", "neutral_texts", "estimate_sweep_seconds", "sentiment_layer"]

# multipliers in units of the layer's residual spread: at the ends the next-token loss on neutral text rises by
# about a nat on SmolLM2 (measured: docs/steering_scale.md), so a sweep shows steering before it shows breakage
DEFAULT_ALPHAS = "-1,-0.5,0,0.5,1"



@lru_cache(maxsize=1)
def neutral_texts(n: int = 24) -> tuple[str, ...]:
    """Ordinary sentences (built-in real reviews, both classes) on which the side effect of steering
    is measured as the change in next-token loss."""
    from repmap_core.data.load import load_dataset

    ds = load_dataset("builtin:sentiment", limit=n, seed=7)
    return tuple(ds.texts)


@dataclass(frozen=True, eq=False)
class LayerSweep:
    """A sweep of one layer's vector (and a random direction), with generations beside it."""

    sweep: SweepResult
    preview_prompts: list
    plain: list
    steered: list
    preview_alpha: float
    cut: int  # held-out prompts longer than the context (cut to their end)


def sweep_layer(vs: VectorSet, lm: LoadedModel, layer: int, alphas: Sequence[float], *, scale: str = "spread",
                preview_alpha: float | None = None, seed: int = 0, n_preview: int = 3, max_new_tokens: int = 30,
                progress: Progress | None = None) -> LayerSweep:
    """Sweep `vs`'s vector at `layer` over `alphas` on the held-out questions (both letter orders),
    beside a random direction of the same norm, with the side effect on neutral text; then greedy
    generations of a few held-out questions without and with steering at `preview_alpha`."""
    prompts = ab_prompts(vs.held_out, lm.tokenizer)
    cut = prompts_over_context(lm, [p.prompt for p in prompts])
    result = propensity_sweep(lm, prompts, layer, vs.vectors[layer], alphas, scale=scale, baseline=True,
                              neutral_texts=neutral_texts(), groups=vs.held_out_groups(), seed=seed, progress=progress,
                              **vs.scales(layer))
    a = float(preview_alpha if preview_alpha is not None else max(alphas, key=abs))
    shown = [p.prompt for p in prompts[:n_preview]]
    factor = scale_factor(vs.vectors[layer], scale, **vs.scales(layer))
    plain = generate(lm, shown, max_new_tokens=max_new_tokens)
    steered = generate(lm, shown, layer=layer, vector=vs.vectors[layer], alpha=a * factor, max_new_tokens=max_new_tokens)
    return LayerSweep(result, shown, plain, steered, a, cut)


def estimate_sweep_seconds(lm: LoadedModel, vs: VectorSet, n_alphas: int, tokens_per_second: float,
                           layer: int | None = None) -> float:
    """Seconds a sweep will take here: forwards over the held-out prompts for the vector and the
    random direction at each α, plus the side-effect texts, at a rate measured on this machine. With
    `layer`, where the blocks up to it run once per batch (`sweep_prefix.reusable`), each α and direction
    costs only the share of the forward after it."""
    from repmap_core.steering.sweep_prefix import reusable

    prompts = ab_prompts(vs.held_out, lm.tokenizer)
    prompt_tokens = sum(len(lm.tokenizer(p.prompt)["input_ids"]) for p in prompts)
    side_tokens = sum(len(lm.tokenizer(t)["input_ids"]) for t in neutral_texts())
    swept = 2 * n_alphas * prompt_tokens
    if layer is not None and reusable(lm, layer):
        after = (lm.info.n_layers - layer - 1) / lm.info.n_layers
        swept = prompt_tokens * (1 + 2 * n_alphas * after)
    total = swept + n_alphas * side_tokens + 2 * 3 * 30 * 40  # + the preview's generations, roughly
    return float(total / max(tokens_per_second, 1.0))


def sentiment_layer(model: str, lm: LoadedModel, layer: int, alphas: Sequence[float], *, scale: str = "spread",
                    seed: int = 0, loader=None, progress: Progress | None = None):
    """Sentiment steering at `layer`: the vector from the built-in real reviews' last-token activations
    (positive − negative class means, from the cache), steered on neutral openings and judged."""
    from repmap_core.capture.activations import get_activations
    from repmap_core.steering.compare import residual_scales
    from repmap_core.steering.sentiment import sentiment_sweep, sentiment_vector

    aset = get_activations(model, "builtin:sentiment", [layer], "last", loader=loader, progress=progress)
    norm, spread = residual_scales(aset[layer])
    return sentiment_sweep(lm, layer, sentiment_vector(aset, layer), alphas, scale=scale, residual_norm=norm,
                           residual_spread=spread, seed=seed, progress=progress)
