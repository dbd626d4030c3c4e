"""Vectors for whole models, compared (Rimsky) and carried across (LRT, stitching).

`compute_vectors` is the pipeline every page and recipe uses: A/B data in both letter orders ->
the model's chat template -> cached answer-token activations -> a split by question (a question
and its swapped twin stay on one side) -> one CAA vector per layer from the training questions,
with each layer's residual spread and mean residual norm (what multipliers are relative to) and the
letter balance reported.
`transfer_and_compare` is LRT's protocol: a map fitted on the two models' training activations
carries the source vector across, and the target is swept with its own vector, the carried one
and a random direction; Pearson r between the curves comes with a bootstrap interval over
held-out questions, and r(native, random) is its null.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from repmap_core.analysis.splits import split_pairs
from repmap_core.analysis.stats import Estimate, bootstrap
from repmap_core.capture.models import LoadedModel
from repmap_core.data.load import TextDataset
from repmap_core.errors import RepmapError
from repmap_core.progress import Progress
from repmap_core.steering.apply import PropensityCurve, SweepResult, propensity_sweep
from repmap_core.steering.choices import LetterBalance, ab_prompts, apply_chat_template, balanced_rows, letter_balanced
from repmap_core.steering.effect import slope_estimates, slopes
from repmap_core.steering.vectors import SteeringVector, vectors_from_activations

__all__ = ["VectorSet", "residual_scales", "compute_vectors", "prepared", "vectors_cached", "split_pairs", "transfer_vector",
           "compare_curves", "lrt_comparison", "TransferResult", "transfer_and_compare"]


@dataclass(frozen=True, eq=False)
class VectorSet:
    """Vectors of one model (layer -> vector) made from the training questions; the held-out rows score them."""

    vectors: dict[int, SteeringVector]
    dataset: TextDataset  # as the model saw it: both letter orders, chat template applied when it has one
    train_rows: np.ndarray
    test_rows: np.ndarray
    manifest: dict  # the activations' manifest (model, revision, fingerprint, ...)
    balance: LetterBalance | None = None  # of the training questions the vectors were made from
    residual_norms: dict | None = None  # layer -> mean residual norm at the answer token (training rows)
    question_ids: np.ndarray | None = None  # (n,) each row's original question
    residual_spreads: dict | None = None  # layer -> RMS distance of the residuals from their mean (training rows)

    @property
    def held_out(self) -> TextDataset:
        return self.dataset.take(self.test_rows)

    def held_out_groups(self) -> np.ndarray:
        """The question of each held-out pair, in `ab_prompts(held_out)` order (one per pair)."""
        rows = self.test_rows[self.dataset.labels[self.test_rows] == 1]
        qids = self.question_ids if self.question_ids is not None else self.dataset.pair_ids
        return np.asarray(qids)[rows]

    def norm(self, layer: int) -> float | None:
        return None if not self.residual_norms else self.residual_norms.get(int(layer))

    def spread(self, layer: int) -> float | None:
        return None if not self.residual_spreads else self.residual_spreads.get(int(layer))

    def scales(self, layer: int) -> dict:
        """What `scale_factor` needs for this layer: `residual_norm` and `residual_spread`."""
        return {"residual_norm": self.norm(layer), "residual_spread": self.spread(layer)}


def residual_scales(X: np.ndarray) -> tuple[float, float]:
    """(mean residual norm, residual spread) of activations `X` (n, d): the mean of the rows' norms,
    and the root-mean-square distance of the rows from their mean. The first is mostly the mean
    vector (SmolLM2 block 14: 138.6 against a spread of 53); the second is how far residuals lie
    from each other's centre, the scale a steering multiplier is read in."""
    X = np.asarray(X, np.float64)
    norm = float(np.linalg.norm(X, axis=1).mean())
    spread = float(np.sqrt(((X - X.mean(0)) ** 2).sum(1).mean()))
    return norm, spread


def prepared(resolved, dataset: TextDataset, *, balance: bool = True, use_chat_template: bool = True,
             trust_remote_code: bool = False):
    """The A/B rows as the model reads them: (the balanced set, its rows in the chat template when the
    model has one). `compute_vectors` extracts these rows; `vectors_cached` asks the cache for them."""
    from repmap_core.capture.models import load_tokenizer

    ab = letter_balanced(dataset, swap=balance)
    ds = ab.dataset
    if use_chat_template:
        ds = apply_chat_template(ds, load_tokenizer(resolved, trust_remote_code))
    return ab, ds


def vectors_cached(model: str, dataset: TextDataset, layers="all", *, balance: bool = True,
                   use_chat_template: bool = True) -> bool:
    """True when `compute_vectors` with these arguments would read every activation from the cache."""
    from repmap_core.capture.activations import cached_activations
    from repmap_core.capture.models import needs_conversion, resolve_model

    if needs_conversion(model):
        return False
    resolved = resolve_model(model)
    _, ds = prepared(resolved, dataset, balance=balance, use_chat_template=use_chat_template)
    return cached_activations(resolved, ds, layers, "answer") is not None


def compute_vectors(model: str, dataset: TextDataset, layers="all", *, method: str = "mean_diff", test_frac: float = 0.3,
                    seed: int = 0, use_chat_template: bool = True, balance: bool = True, loader=None,
                    progress: Progress | None = None, trust_remote_code: bool = False) -> VectorSet:
    """CAA vectors per layer from `dataset`'s A/B pairs; a held-out share of questions is kept aside.

    With `balance` (the default) every two-choice question is also asked with its options swapped,
    and questions that cannot be swapped are sampled to as many per matching letter; the result's
    `balance` says which. The activations come from the cache (position `answer`).
    """
    from repmap_core.capture.activations import get_activations
    from repmap_core.capture.models import resolve_model

    resolved = resolve_model(model, progress=progress)
    ab, ds = prepared(resolved, dataset, balance=balance, use_chat_template=use_chat_template,
                      trust_remote_code=trust_remote_code)
    aset = get_activations(resolved, ds, layers, "answer", loader=loader, progress=progress,
                           trust_remote_code=trust_remote_code)
    train, test = split_pairs(ab.question_ids, test_frac, seed)
    if balance:
        train, letters = balanced_rows(ab, train, seed)
    else:
        letters = LetterBalance(_letter_counts(ab, train), False, len(np.unique(ab.question_ids[train])))
    scales = {L: residual_scales(aset[L][train]) for L in aset.layer_list}
    return VectorSet(vectors_from_activations(aset, train, method), ds, train, test, aset.manifest, letters,
                     {L: s[0] for L, s in scales.items()}, ab.question_ids, {L: s[1] for L, s in scales.items()})


def _letter_counts(ab, rows: np.ndarray) -> dict:
    match = rows[ab.dataset.labels[rows] == 1]
    letters, counts = np.unique(ab.letters[match].astype(str), return_counts=True)
    return {str(k): int(v) for k, v in zip(letters, counts)}


def transfer_vector(v: SteeringVector, fitted, *, with_bias: bool = False, target_model: str = "",
                    target_layer: int | None = None) -> SteeringVector:
    """Carry a steering vector across a map `t ≈ A s + b`: `A v`, a displacement's image (the default),
    or `A v + b` with `with_bias` (the vector treated as an activation)."""
    if not hasattr(fitted, "A_"):
        raise RepmapError("That map has no matrix to carry a vector through; use least squares, ridge, GD, Procrustes or low rank.")
    if fitted.A_.shape[1] != v.vector.shape[0]:
        raise RepmapError(
            f"The map takes width {fitted.A_.shape[1]} and the vector has width {v.vector.shape[0]}; fit the map from this vector's model and layer."
        )
    w = fitted.A_ @ v.vector + (fitted.b_ if with_bias else 0.0)
    return SteeringVector(w, v.layer if target_layer is None else target_layer, target_model, "", "transferred", v.position,
                          v.dataset_fingerprint, v.count, {"from_model": v.model, "from_layer": v.layer, "with_bias": with_bias})


def compare_curves(native: PropensityCurve, transferred: PropensityCurve, seed: int = 0) -> dict:
    """LRT Table 1 form: Pearson r (with a bootstrap interval over held-out questions when the
    curves keep their per-question propensities) and MSE between native and transferred curves."""
    a, b = np.asarray(native.mean), np.asarray(transferred.mean)
    if len(a) != len(b) or len(a) < 2:
        raise RepmapError("Compare curves over the same multipliers (at least two).")
    r = _pearson(a, b)
    out = {"pearson_r": r, "mse": float(((a - b) ** 2).mean())}
    ga, gb = np.asarray(native.gaps), np.asarray(transferred.gaps)
    if ga.size and ga.shape == gb.shape:
        low, high = bootstrap(lambda idx: _pearson(ga[:, idx].mean(1), gb[:, idx].mean(1)), ga.shape[1],
                              groups=native.groups if len(native.groups) == ga.shape[1] else None, seed=seed)
        out["pearson_r_interval"] = [low, high]
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 0 and np.std(b) > 0 else float("nan")


@dataclass(frozen=True, eq=False)
class TransferResult:
    """A target steered with its own vector, a source vector carried across, and a random direction."""

    native: PropensityCurve
    transferred: PropensityCurve
    comparison: dict  # `lrt_comparison`: r (None where the native vector does not steer), slope ratio, ...
    cosine: float  # native vs carried vector
    carried: SteeringVector
    map_r2_test: float | None  # the map on held-out rows (None: no map, the vector carried as is)
    random: PropensityCurve | None = None
    native_sweep: SweepResult | None = None  # slopes and verdict of the native vector


def transfer_and_compare(source: VectorSet, target: VectorSet, target_lm: LoadedModel, source_layer: int,
                         target_layer: int, multipliers: Sequence[float], *, map_method: str | None = "ridge",
                         map_params: dict | None = None, with_bias: bool = False, scale: str = "spread",
                         normalize: bool = False, loader=None, seed: int = 0) -> TransferResult:
    """LRT's protocol: fit a map source -> target on the two models' answer-token activations of the
    training questions, carry the source vector across, and sweep
    the target's held-out questions with both vectors and a random direction. With `scale="spread"`
    (or "relative") each vector is applied at α × the target layer's residual spread (mean norm), so r
    compares directions, not norms. `map_method=None` carries the vector as it is.

    A steering vector is a displacement (a difference of mean activations), so the map carries it by
    its linear part, `A v`: the bias cancels in any difference, `A(s₊) + b − (A(s₋) + b)`. `with_bias`
    adds `b` anyway (the map applied to the vector as if it were an activation); on real models that
    swamps the vector (SmolLM2 block 14 → Gemma-3 block 9: cosine with the native vector 0.997 as
    `A v`, −0.40 as `A v + b`)."""
    from repmap_core.analysis.maps import make_map, r2_score
    from repmap_core.capture.activations import get_activations

    if not np.array_equal(source.train_rows, target.train_rows):
        raise RepmapError("The two models' vectors were made from different questions; compute both on the same data with one seed.")
    carried, r2 = source.vectors[source_layer], None
    if map_method:
        S = np.asarray(get_activations(source.manifest["model"], source.dataset, [source_layer], "answer", loader=loader)[source_layer])
        T = np.asarray(get_activations(target.manifest["model"], target.dataset, [target_layer], "answer", loader=loader)[target_layer])
        fitted = make_map(map_method, **(map_params or {})).fit(S[source.train_rows], T[source.train_rows])
        r2 = r2_score(T[source.test_rows], fitted.transform(S[source.test_rows]))
        carried = transfer_vector(carried, fitted, with_bias=with_bias, target_model=target.manifest["model"],
                                  target_layer=target_layer)
    prompts = ab_prompts(target.held_out, target_lm.tokenizer)
    groups = target.held_out_groups()
    if normalize:
        scale = "unit"
    kw = dict(scale=scale, groups=groups, seed=seed, **target.scales(target_layer))
    native = propensity_sweep(target_lm, prompts, target_layer, target.vectors[target_layer], multipliers, baseline=True, **kw)
    moved = propensity_sweep(target_lm, prompts, target_layer, carried, multipliers, **kw)  # width checked here
    return TransferResult(native.curve, moved, lrt_comparison(native, moved, seed), target.vectors[target_layer].cosine(carried),
                          carried, r2, native.random, native)


def lrt_comparison(native: SweepResult, transferred: PropensityCurve, seed: int = 0) -> dict:
    """LRT's numbers where they can mean something. Pearson r between the native and the transferred
    curve (their Table 1) says the carried vector steers like the target's own only if the target's own
    vector steers at all: over two flat curves r is a correlation of noise. So r, its interval and its
    null (r of the native curve with the random direction's) are given only when the native vector
    steers beyond a random direction of the same norm (paired by question); otherwise `pearson_r` is
    None and `r_undefined` says why. Beside r, what the paper's figure shows: the carried vector's slope
    as a share of the native one's (per question, bootstrap over questions), and the carried vector's
    own slope beyond the random direction."""
    alphas, curve, rand = native.curve.alphas, native.curve, native.random
    out = compare_curves(curve, transferred, seed)
    out["null_pearson_r"] = compare_curves(curve, rand, seed)["pearson_r"] if rand is not None else None
    per_native = slopes(alphas, curve.gaps)
    per_moved = slopes(alphas, transferred.gaps)
    moved_slope, _, moved_beyond = slope_estimates(alphas, transferred.gaps, None if rand is None else rand.gaps,
                                                   curve.groups, seed)
    out.update(native_effect=native.effect, native_verdict=native.verdict, native_slope=native.slope.as_dict(),
               transferred_slope=moved_slope.as_dict(),
               transferred_minus_random=None if moved_beyond is None else moved_beyond.as_dict())
    if native.effect == 0:
        out.update(pearson_r=None, pearson_r_interval=None, null_pearson_r=None, slope_ratio=None,
                   r_undefined="r is undefined here: the target's own vector does not steer beyond a random direction "
                               f"of the same norm ({native.slope.value:+.2f} [{native.slope.low:+.2f}, "
                               f"{native.slope.high:+.2f}] per unit α, the random direction's subtracted: "
                               f"{native.difference.value:+.2f} [{native.difference.low:+.2f}, "
                               f"{native.difference.high:+.2f}]), so there is no steering for the carried vector to match.")
        return out
    ratio = lambda idx: float(per_moved[idx].mean() / per_native[idx].mean())  # noqa: E731
    low, high = bootstrap(ratio, len(per_native), groups=curve.groups, seed=seed)
    out["slope_ratio"] = Estimate(ratio(np.arange(len(per_native))), low, high, len(per_native),
                                  "bootstrap (questions)").as_dict()
    return out
