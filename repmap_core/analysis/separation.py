"""Per-layer separation: how readable the labels are at each layer, with intervals and a null.

`layer_separation` scores each layer three ways: held-out and cross-validated probe accuracy (each
with a 95% interval), silhouette, and a Fisher ratio along the class-mean difference. Beside the
cross-validated accuracy stands its shuffled-label null, computed the same way (the same probe, the
same folds, out-of-fold verdicts pooled) on `NULL_PERMUTATIONS` shuffles (`probe_null`), so its
95th percentile is one a reader can hold the accuracy against. Splits keep the two rows of a pair
on the same side, so a probe never sees half a pair in test.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from repmap_core.analysis.probe_null import NULL_MAX_ROWS, NULL_PERMUTATIONS, null_summary, permutation_accuracies
from repmap_core.analysis.probes import LinearProbe, check_two_classes, feature_scale, streamed_probe_scores
from repmap_core.analysis.splits import train_test_split_groups
from repmap_core.analysis.stats import Estimate, accuracy_estimate, wilson
from repmap_core.errors import RepmapError
from repmap_core.pairs import groups_of
from repmap_core.progress import Progress

__all__ = ["LayerSeparation", "fisher_ratio", "fisher_ratio_streamed", "silhouette", "separation_at", "layer_separation",
           "best_layer", "spread_layers", "check_separable", "split_plan", "SplitPlan", "MAX_EXACT_ROWS", "scoring_settings"]


@dataclass(frozen=True)
class LayerSeparation:
    """How separable the two classes are at one layer."""

    layer: int
    probe_train_acc: float
    probe_test_acc: float  # held-out split
    probe_cv_acc: float  # mean over grouped stratified folds
    probe_cv_std: float
    silhouette: float  # labels as clusters, standardised features, [-1, 1]
    fisher: float  # (m1 - m0)^2 / (s0^2 + s1^2) along the class-mean difference
    scored_on: str = "all rows"  # or how a large set was scored (streamed SGD probe, a seeded sample)
    probe_cv_low: float = float("nan")  # 95% interval of the cv accuracy (pooled out-of-fold rows)
    probe_cv_high: float = float("nan")
    probe_test_low: float = float("nan")  # 95% interval of the held-out accuracy
    probe_test_high: float = float("nan")
    null_acc: float = float("nan")  # cross-validated accuracy of the probe on shuffled labels (mean over shuffles)
    null_high: float = float("nan")  # ... its 95th percentile over the shuffles
    null_permutations: int = 0
    null_rows: int = 0  # rows the null was computed on (all rows, or a seeded sample above NULL_MAX_ROWS)

    def as_dict(self) -> dict:
        """Plain values; a NaN (no null computed, no interval) becomes None, so strict JSON holds."""
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}

    def cv_estimate(self) -> Estimate:
        """The cross-validated accuracy with its interval and the shuffled-label null."""
        return Estimate(self.probe_cv_acc, self.probe_cv_low, self.probe_cv_high, 0, "cv (pooled rows)",
                        null=_finite_or_none(self.null_acc), null_high=_finite_or_none(self.null_high))

    def test_estimate(self) -> Estimate:
        """The held-out accuracy with its interval (the null beside the cross-validated accuracy is not its null)."""
        return Estimate(self.probe_test_acc, self.probe_test_low, self.probe_test_high, 0, "held-out")


def _finite_or_none(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def fisher_ratio(X: np.ndarray, y: np.ndarray) -> float:
    """Fisher's criterion of the 1-D projection onto the class-mean difference."""
    X = np.asarray(X, dtype=np.float64)
    diff = X[y == 1].mean(0) - X[y == 0].mean(0)
    norm = np.linalg.norm(diff)
    if norm == 0:
        return 0.0
    p = X @ (diff / norm)
    p1, p0 = p[y == 1], p[y == 0]
    return float((p1.mean() - p0.mean()) ** 2 / max(p1.var() + p0.var(), 1e-30))


def silhouette(X: np.ndarray, y: np.ndarray, max_rows: int = 2000, seed: int = 0) -> float:
    """Silhouette of the label partition on standardised features (seeded subsample above max_rows)."""
    from sklearn.metrics import silhouette_score

    X = np.asarray(X, dtype=np.float64)
    Z = (X - X.mean(0)) / feature_scale(X)
    return float(silhouette_score(Z, y, sample_size=min(max_rows, len(y)), random_state=seed))


PROBE_C = 0.1  # the probe's inverse L2 strength on standardised features
MAX_EXACT_ROWS = 20_000  # above this, a streamed SGD probe and a seeded sample keep time and memory bounded


def fisher_ratio_streamed(X: np.ndarray, y: np.ndarray, chunk: int = 10_000) -> float:
    """`fisher_ratio` computed chunk by chunk (X may be a memory-mapped array larger than RAM)."""
    y = np.asarray(y)
    sums = {c: np.zeros(X.shape[1]) for c in (0, 1)}
    for s in range(0, len(X), chunk):
        block = np.asarray(X[s:s + chunk], dtype=np.float64)
        for c in (0, 1):
            sums[c] += block[y[s:s + chunk] == c].sum(0)
    counts = {c: max(int((y == c).sum()), 1) for c in (0, 1)}
    diff = sums[1] / counts[1] - sums[0] / counts[0]
    norm = np.linalg.norm(diff)
    if norm == 0:
        return 0.0
    proj = np.concatenate([np.asarray(X[s:s + chunk], dtype=np.float64) @ (diff / norm) for s in range(0, len(X), chunk)])
    p1, p0 = proj[y == 1], proj[y == 0]
    return float((p1.mean() - p0.mean()) ** 2 / max(p1.var() + p0.var(), 1e-30))


def separation_at(X: np.ndarray, y: np.ndarray, pair_ids: np.ndarray, layer: int, *, folds: int = 5,
                  test_frac: float = 0.2, seed: int = 0, C: float = PROBE_C,
                  null_permutations: int = NULL_PERMUTATIONS, plan: SplitPlan | None = None) -> LayerSeparation:
    """All separation scores for one layer's activations `X (n, d)` and labels `y (n,)`.

    The cross-validated accuracy is the share of rows classified right when held out (pooled over
    folds) with a 95% interval (Wilson, or a bootstrap over pairs); the held-out accuracy likewise.
    The null is the cross-validated accuracy on `null_permutations` label shuffles (0 skips it), on
    the same folds; above `NULL_MAX_ROWS` rows, on a seeded sample of that many rows (its own folds).
    Above `MAX_EXACT_ROWS` rows, the held-out probe is an SGD probe trained over streamed chunks,
    the Fisher ratio uses every row (chunk by chunk), and the cross-validation, silhouette and null
    use a seeded sample of `MAX_EXACT_ROWS` rows; `scored_on` says so. `plan` (from `split_plan`, the
    same for every layer of one data set) saves making the splits again."""
    if folds < 2:  # once silently raised to 2
        raise RepmapError(f"Cross-validation needs at least 2 folds, not {folds}.")
    y = np.asarray(y).astype(np.int64)
    if len(y) > MAX_EXACT_ROWS:
        check_two_classes(y)
        tr, te = train_test_split_groups(y, pair_ids, test_frac, seed)
        train_acc, test_acc = streamed_probe_scores(X, y, tr, te, seed=seed)
        sample = np.sort(np.random.default_rng(seed).choice(len(y), MAX_EXACT_ROWS, replace=False))
        small = separation_at(np.asarray(X[sample]), y[sample], np.asarray(pair_ids)[sample], layer, folds=folds,
                              test_frac=test_frac, seed=seed, C=C, null_permutations=null_permutations)
        low, high = wilson(round(test_acc * len(te)), len(te))  # streamed: the hits are counted, not kept
        return LayerSeparation(layer=int(layer), probe_train_acc=train_acc, probe_test_acc=test_acc,
                               probe_cv_acc=small.probe_cv_acc, probe_cv_std=small.probe_cv_std,
                               probe_cv_low=small.probe_cv_low, probe_cv_high=small.probe_cv_high,
                               probe_test_low=float(low), probe_test_high=float(high), null_acc=small.null_acc,
                               null_high=small.null_high, null_permutations=small.null_permutations,
                               null_rows=small.null_rows,
                               silhouette=small.silhouette, fisher=fisher_ratio_streamed(X, y),
                               scored_on=f"{len(y)} rows: streamed SGD probe, Fisher on all rows; "
                                         f"cross-validation and silhouette on a seeded sample of {MAX_EXACT_ROWS}")
    plan = plan or split_plan(y, pair_ids, folds=folds, test_frac=test_frac, seed=seed)
    accs = []
    correct = np.full(len(y), np.nan)  # each row's out-of-fold verdict
    for tr, te in plan.folds:
        hit = LinearProbe(C=C).fit(X[tr], y[tr]).predict(X[te]) == y[te]
        correct[te] = hit
        accs.append(float(hit.mean()))
    seen = ~np.isnan(correct)
    paired = (np.asarray(pair_ids) >= 0).any()
    cv_est = accuracy_estimate(correct[seen], plan.groups[seen] if paired else None, seed=seed)
    tr, te = plan.held_out
    probe = LinearProbe(C=C).fit(X[tr], y[tr])
    test_est = accuracy_estimate(probe.predict(X[te]) == y[te], plan.groups[te] if paired else None, seed=seed)
    null, null_high = float("nan"), float("nan")
    if null_permutations > 0:
        rows = plan.null_rows
        null, null_high = null_summary(permutation_accuracies(
            np.asarray(X)[rows], y[rows], np.asarray(pair_ids)[rows], plan.null_folds, n_permutations=null_permutations,
            C=C, seed=seed))
    return LayerSeparation(
        layer=int(layer),
        probe_train_acc=float(probe.score(X[tr], y[tr])),
        probe_test_acc=test_est.value,
        probe_cv_acc=cv_est.value,
        probe_cv_std=float(np.std(accs)),
        silhouette=silhouette(X, y, seed=seed),
        fisher=fisher_ratio(X, y),
        probe_cv_low=cv_est.low, probe_cv_high=cv_est.high,  # plain floats: Estimate makes them so
        probe_test_low=test_est.low, probe_test_high=test_est.high,
        null_acc=float(null), null_high=float(null_high), null_permutations=int(null_permutations),
        null_rows=len(plan.null_rows) if null_permutations > 0 else 0,
    )


@dataclass(frozen=True, eq=False)
class SplitPlan:
    """Which rows each score uses, from the labels and pairs alone (the same at every layer, so made once)."""

    groups: np.ndarray  # (n,) each row's pair (or its own group)
    folds: list  # [(train, test)] the cross-validation folds, pairs whole, stratified
    held_out: tuple  # (train, test) the held-out split
    null_rows: np.ndarray  # rows the null is computed on (all, or a seeded sample above NULL_MAX_ROWS)
    null_folds: list  # the folds on those rows (the cross-validation folds when they are all rows)


def split_plan(y: np.ndarray, pair_ids: np.ndarray, *, folds: int = 5, test_frac: float = 0.2, seed: int = 0) -> SplitPlan:
    """The folds, held-out split and null rows `separation_at` uses for labels `y` (n,) and `pair_ids` (n,)."""
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(y).astype(np.int64)
    check_two_classes(y)
    groups = groups_of(pair_ids)
    n_groups_min = min(len(np.unique(groups[y == c])) for c in (0, 1))
    if n_groups_min < 2:
        counts = ", ".join(f"{int((y == c).sum())} of class {c}" for c in (1, 0))
        raise RepmapError(f"{len(y)} rows ({counts}) are too few for a cross-validated probe: each class needs at least "
                          "two rows (or pairs); add more data.")
    k = max(2, min(folds, n_groups_min))

    def cv_folds(rows: np.ndarray) -> list:
        cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return [(rows[tr], rows[te]) for tr, te in cv.split(rows, y[rows], groups[rows]) if len(np.unique(y[rows][tr])) == 2]

    everything = np.arange(len(y))
    cv = cv_folds(everything)
    null_rows = everything
    if len(y) > NULL_MAX_ROWS:
        null_rows = np.sort(np.random.default_rng(seed + 7919).choice(len(y), NULL_MAX_ROWS, replace=False))
    # the null's folds index its own rows (0..len(null_rows)-1), as permutation_accuracies reads them
    null_folds = cv if len(null_rows) == len(y) else [
        (np.searchsorted(null_rows, tr), np.searchsorted(null_rows, te)) for tr, te in cv_folds(null_rows)]
    return SplitPlan(groups, cv, train_test_split_groups(y, pair_ids, test_frac, seed), null_rows, null_folds)


SCORING_VERSION = 1  # raised whenever a score's computation changes, so scores kept with the old one are not read


def scoring_settings(*, folds: int = 5, test_frac: float = 0.2, seed: int = 0,
                     null_permutations: int = NULL_PERMUTATIONS) -> dict:
    """Everything besides the activations that decides `layer_separation`'s numbers (its arguments, the probe's
    penalty, the null's shuffles and row cap, the exact-rows cap, the version of the computation): what a kept
    score is named by, so a change to any of them computes it again."""
    return {"scoring": SCORING_VERSION, "folds": int(folds), "test_frac": float(test_frac), "seed": int(seed), "C": PROBE_C,
            "null_permutations": int(null_permutations), "null_max_rows": NULL_MAX_ROWS, "max_exact_rows": MAX_EXACT_ROWS}


def layer_separation(layers: dict[int, np.ndarray], labels: np.ndarray, pair_ids: np.ndarray, *,
                     folds: int = 5, test_frac: float = 0.2, seed: int = 0, null_permutations: int = NULL_PERMUTATIONS,
                     progress: Progress | None = None) -> list[LayerSeparation]:
    """`separation_at` for every layer in `layers` (layer -> (n, d)), in layer order.

    Layers are scored side by side, one per core with one BLAS thread each (`scoring_workers`): each layer's
    probes and null are small single-threaded solves, so two cores score SmolLM2's 30 blocks 1.6x faster than
    one layer at a time with BLAS on both (22.7 -> 13.9 s here), with the same numbers. `progress` is called
    from the calling thread, in layer order."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    y = np.asarray(labels).astype(np.int64)
    plan = None if len(y) > MAX_EXACT_ROWS or folds < 2 else split_plan(y, pair_ids, folds=folds, test_frac=test_frac,
                                                                       seed=seed)
    order = sorted(layers)

    def score(layer: int) -> LayerSeparation:
        return separation_at(layers[layer], labels, pair_ids, layer, folds=folds, test_frac=test_frac, seed=seed,
                             null_permutations=null_permutations, plan=plan)

    workers = min(scoring_workers(), len(order))
    out = []
    with threadpool_limits(1 if workers > 1 else None), ThreadPoolExecutor(workers) as pool:
        for i, (layer, result) in enumerate(zip(order, pool.map(score, order))):
            out.append(result)
            if progress:
                progress((i + 1) / len(order), f"Scored layer {layer}")
    return out


def scoring_workers() -> int:
    """Layers scored at once: the cores this process may run on, at most 4 (the arrays of each stay in memory)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 4))


def check_separable(labels: np.ndarray, pair_ids: np.ndarray, *, test_frac: float = 0.2, seed: int = 0) -> None:
    """Refuse, from the labels and pair ids alone, rows too few for `layer_separation`: both classes, a held-out
    split with each class on each side, two rows (or pairs) of each class to cross-validate. Call it before
    anything is extracted for those rows, so a refused request computes and caches nothing."""
    split_plan(labels, pair_ids, test_frac=test_frac, seed=seed)


def spread_layers(layers: list[int], best: int, most: int = 6) -> list[int]:
    """The layers a view shows first: all of them when there are at most `most`, else a spread over the depth
    that holds the best layer: the first, a quarter, half and three quarters of the way, the best and the last
    (SmolLM2's 30 blocks: 0, 7, 14, 22 or the best, 29), so no view opens on the shallow blocks alone."""
    layers = sorted(layers)
    if len(layers) <= most:
        return layers
    picks = {layers[round(q * (len(layers) - 1))] for q in (0, 0.25, 0.5, 0.75, 1)}
    return sorted(picks | ({best} if best in layers else set()))


def best_layer(rows: list[LayerSeparation]) -> int:
    """Layer with the highest cross-validated probe accuracy (the shallowest on ties)."""
    return max(rows, key=lambda r: (round(r.probe_cv_acc, 6), -r.layer)).layer
