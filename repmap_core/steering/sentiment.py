"""A behaviour a 135M model can show: the sentiment of its continuations, steered.

SmolLM2-135M answers A/B behaviour questions near chance, so letter propensity has little to move.
Sentiment is different: a small LM's continuations are plainly positive or negative. The vector
is the class-mean difference (positive − negative reviews) of the layer's last-token activations;
the model continues neutral openings ("The food at the restaurant was") greedily under `α · v`;
an independent judge scores each continuation: a linear probe on the embedded MiniLM's
mean-pooled activations, trained on the built-in real reviews (its held-out accuracy is reported).
A random direction of the same norm is steered beside it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from repmap_core.analysis.stats import Estimate, bootstrap
from repmap_core.capture.models import LoadedModel
from repmap_core.progress import Progress
from repmap_core.steering.apply import SCALE_UNITS, generate, scale_factor
from repmap_core.steering.effect import Verdicted, slope_estimates, verdict
from repmap_core.steering.vectors import SteeringVector

__all__ = ["OPENINGS", "SentimentJudge", "sentiment_judge", "sentiment_vector", "SentimentSweep", "sentiment_sweep"]

OPENINGS = (  # neutral openings: nothing in them leans either way
    "I went to see the new movie last night and it", "The food at the restaurant was", "My new phone arrived today and",
    "The hotel room was", "I read the book over the weekend and", "The customer service at the store was",
    "This laptop is", "Our trip to the beach was", "The concert last night was", "The new update to the app is",
    "I tried the recipe and it was", "The service at the bank was", "The headphones I bought are",
    "The museum exhibition was", "My experience with the airline was", "The film's ending was",
)


@dataclass(frozen=True, eq=False)
class SentimentJudge:
    """P(positive) of a text: a probe on MiniLM's mean-pooled block `layer`, trained on the built-in reviews."""

    probe: object  # LinearProbe
    layer: int
    held_out_accuracy: float
    model: str

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        from repmap_core.capture.extract import extract_activations
        from repmap_core.data.load import TextDataset

        texts = [t if t.strip() else "." for t in texts]
        ds = TextDataset("continuations", list(texts), np.zeros(len(texts), np.int8), np.full(len(texts), -1),
                         np.full((len(texts), 2), -1))
        X = extract_activations(_judge_model(), ds, [self.layer], "mean", max_length=128).activations[self.layer]
        z = self.probe.decision_function(X)
        return 1.0 / (1.0 + np.exp(-z))


@lru_cache(maxsize=1)
def _judge_model():
    from repmap_core.capture.models import EMBEDDED_MODEL_ID, load_model

    return load_model(EMBEDDED_MODEL_ID, device="cpu", dtype="float32")


@lru_cache(maxsize=1)
def sentiment_judge(layer: int = 4) -> SentimentJudge:
    """The judge, fitted once per process on the built-in reviews (MiniLM activations come from the cache)."""
    from repmap_core.analysis.probes import LinearProbe
    from repmap_core.analysis.splits import train_test_split_groups
    from repmap_core.capture.activations import get_activations
    from repmap_core.locations import EMBEDDED_MODEL_ID

    aset = get_activations(EMBEDDED_MODEL_ID, "builtin:sentiment", [layer], "mean", dtype=_judge_model().dtype,
                           loader=lambda r, d, t: _judge_model())
    X, y = np.asarray(aset[layer]), aset.labels.astype(np.int64)
    tr, te = train_test_split_groups(y, aset.pair_ids, 0.2, 0)
    held_out = float(LinearProbe().fit(X[tr], y[tr]).score(X[te], y[te]))
    return SentimentJudge(LinearProbe().fit(X, y), layer, held_out, EMBEDDED_MODEL_ID)


def sentiment_vector(aset, layer: int) -> SteeringVector:
    """Mean last-token activation of positive rows minus that of negative rows, at `layer` (d,)."""
    X = np.asarray(aset[layer], np.float64)
    y = aset.labels.astype(bool)
    m = aset.manifest
    return SteeringVector((X[y].mean(0) - X[~y].mean(0)).astype(np.float32), int(layer), m.get("model", ""),
                          m.get("revision", ""), "mean_diff", m.get("position", "last"), m.get("dataset_fingerprint", ""),
                          int(len(y)), {"behaviour": "sentiment (positive − negative)"})


@dataclass(frozen=True, eq=False)
class SentimentSweep(Verdicted):
    """Judged sentiment of continuations per multiplier, for the vector and a random direction."""

    alphas: np.ndarray  # (k,)
    positive: np.ndarray  # (k, n) judged P(positive) of each opening's continuation
    random_positive: np.ndarray  # (k, n)
    texts: list  # k lists of n continuations (the vector's)
    layer: int
    scale: str
    slope: Estimate  # mean P(positive) per unit α, bootstrap over openings
    random_slope: Estimate
    difference: Estimate  # vector slope − random slope, paired by opening
    verdict: str
    judge_accuracy: float


    def mean_interval(self, which: str = "vector") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean P(positive) per α with a 95% bootstrap interval over openings."""
        P = self.positive if which == "vector" else self.random_positive
        lows, highs = zip(*(bootstrap(lambda idx, row=row: row[idx].mean(), len(row)) for row in P))
        return P.mean(1), np.asarray(lows), np.asarray(highs)


def sentiment_sweep(lm: LoadedModel, layer: int, vector: SteeringVector, alphas: Sequence[float], *,
                    scale: str = "spread", residual_norm: float | None = None, residual_spread: float | None = None,
                    openings: Sequence[str] = OPENINGS,
                    max_new_tokens: int = 20, seed: int = 0, progress: Progress | None = None) -> SentimentSweep:
    """Steer the continuations of `openings` with `α · v` (and a random direction) and judge them."""
    judge = sentiment_judge()
    factor = scale_factor(vector, scale, residual_norm, residual_spread)
    alphas = np.asarray(list(alphas), np.float64)
    out: dict[str, list] = {"vector": [], "random": []}
    texts: list[list[str]] = []
    runs = [("vector", vector), ("random", vector.random_like(seed))]
    for i, (name, v) in enumerate(runs):
        for k, a in enumerate(alphas):
            cont = generate(lm, list(openings), layer=layer, vector=v, alpha=float(a) * factor, max_new_tokens=max_new_tokens)
            out[name].append(judge(cont))
            if name == "vector":
                texts.append(cont)
            if progress:
                progress((i * len(alphas) + k + 1) / (2 * len(alphas)),
                         f"{name} ×{a:+g}: judged positive {out[name][-1].mean():.0%}")
    P, R = np.stack(out["vector"]), np.stack(out["random"])
    slope, rslope, diff = slope_estimates(alphas, P, R, None, seed)
    text = verdict(layer, slope, rslope, diff, SCALE_UNITS[scale], what="judged positivity", unit="P(positive)",
                   toward="positive")
    return SentimentSweep(alphas, P, R, texts, int(layer), scale, slope, rslope, diff, text, judge.held_out_accuracy)
