"""Linear probes and per-layer separation.

`LinearProbe` is logistic regression on standardised features (raw GPT-2 activations have outlier
dimensions that make lbfgs take hundreds of iterations; standardised, it takes about ten), with
its weights mapped back to activation space so the direction can be reused or transferred.

`layer_separation` scores how separable the labels are at each layer three ways: held-out and
cross-validated probe accuracy (each with a 95% interval), silhouette, and a Fisher ratio along the
class-mean difference; beside the probe, the same probe trained on shuffled labels (the null: what
the held-out accuracy reads when there is nothing to find). Splits keep the two rows of a pair on
the same side, so a probe never sees half a pair in test.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from threadpoolctl import threadpool_limits

from repmap_core.analysis.splits import train_test_split_groups
from repmap_core.analysis.stats import Estimate, accuracy_estimate, wilson
from repmap_core.errors import RepmapError
from repmap_core.pairs import groups_of
from repmap_core.progress import Progress

ONE_THREAD_ELEMENTS = 4_000_000  # rows x width up to which a probe fits on one BLAS thread


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Logistic-regression probe on standardised activations.

    After `fit(X (n, d), y (n,))`: `coef_` (d,) and `intercept_` score raw activations
    (`X @ coef_ + intercept_`), `direction_` is `coef_` normalised, `mean_`/`scale_` the standardiser.
    """

    def __init__(self, C: float = 0.1, max_iter: int = 1000):
        self.C = C  # inverse L2 strength on standardised features; 0.1 holds up when d ~ n
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearProbe:
        from sklearn.linear_model import LogisticRegression

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        check_two_classes(y)
        self.mean_ = X.mean(0)
        self.scale_ = feature_scale(X)
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter)
        # one BLAS thread for the small matrices probes see (threads cost more than they give at this
        # size: an 800 x 576 SmolLM2 layer fits several times faster; bench_fits measures it)
        with threadpool_limits(1 if X.size <= ONE_THREAD_ELEMENTS else None):
            clf.fit((X - self.mean_) / self.scale_, y)
        self.classes_ = clf.classes_
        self.coef_ = clf.coef_[0] / self.scale_  # (d,) raw-space weights
        self.intercept_ = float(clf.intercept_[0] - self.mean_ @ self.coef_)
        norm = float(np.linalg.norm(self.coef_))
        # constant features give an all-zero probe: its direction is undefined, kept as zeros
        self.direction_ = self.coef_ / norm if norm > 0 else np.zeros_like(self.coef_)
        self.n_iter_ = int(clf.n_iter_[0])
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[(self.decision_function(X) > 0).astype(np.int64)]


def feature_scale(X: np.ndarray) -> np.ndarray:
    """Per-feature std for standardising, with noise-level features set to inf so they standardise
    to 0 and get no weight.

    A feature is noise when its std is below 1e-6 of the median feature's (float32 rounding in the
    residual sums is ~1e-7 of the vector's scale) or below 1e-5 of its own mean (a constant plus
    rounding). MiniLM's last layer has one at std 2e-9 beside a median of 0.23: scaled to unit
    variance it took all of a probe's weight. Genuinely small features (1e-3 beside 1) stay.
    """
    X = np.asarray(X, dtype=np.float64)
    scale = X.std(0)
    floor = np.maximum(1e-5 * np.abs(X.mean(0)), 1e-6 * float(np.median(scale)) if scale.size else 0.0)
    return np.where(scale <= np.maximum(floor, 1e-30), np.inf, scale)


def check_two_classes(y: np.ndarray) -> None:
    values = np.unique(y)
    if len(values) < 2:
        raise RepmapError(
            f"All rows have label {values[0] if len(values) else '?'}; separation needs both classes, so pick data with 0 and 1 labels."
        )
    if len(values) > 2:
        raise RepmapError(f"A probe here separates two classes, and the labels have {len(values)}; map them to two first.")


def held_out_probe(X: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray, groups: np.ndarray | None = None,
                   C: float = 0.1) -> tuple[dict, LinearProbe, Estimate]:
    """A probe fitted on rows `tr` of `X` (n, d), scored on `tr` and `te`: ({"train", "test"},
    the probe, the test accuracy with its 95% interval (Wilson, or a bootstrap over `groups[te]`))."""
    probe = LinearProbe(C=C).fit(X[tr], y[tr])
    est = accuracy_estimate(probe.predict(X[te]) == y[te], None if groups is None else groups[te])
    return {"train": float(probe.score(X[tr], y[tr])), "test": est.value}, probe, est


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
    null_acc: float = float("nan")  # held-out accuracy of the probe trained on shuffled labels (mean)
    null_high: float = float("nan")  # ... its 95th percentile over the shuffles
    null_permutations: int = 0

    def as_dict(self) -> dict:
        """Plain values; a NaN (no null computed, no interval) becomes None, so strict JSON holds."""
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}

    def cv_estimate(self) -> Estimate:
        """The cross-validated accuracy with its interval and the shuffled-label null."""
        return Estimate(self.probe_cv_acc, self.probe_cv_low, self.probe_cv_high, 0, "cv (pooled rows)",
                        null=_finite_or_none(self.null_acc), null_high=_finite_or_none(self.null_high))

    def test_estimate(self) -> Estimate:
        """The held-out accuracy with its interval and the shuffled-label null (same split)."""
        return Estimate(self.probe_test_acc, self.probe_test_low, self.probe_test_high, 0, "held-out",
                        null=_finite_or_none(self.null_acc), null_high=_finite_or_none(self.null_high))


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


def streamed_probe_scores(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, *, chunk: int = 10_000,
                          epochs: int = 3, seed: int = 0) -> tuple[float, float]:
    """(train, test) accuracy of a logistic probe fitted by SGD over chunks of standardised rows:
    memory stays flat however many rows there are."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    for s in range(0, len(train), chunk):
        scaler.partial_fit(np.asarray(X[np.sort(train[s:s + chunk])], dtype=np.float64))
    # averaging takes SGD from 0.80 to 0.84 (the Bayes limit) on a planted case; plain SGD stays noisy
    clf = SGDClassifier(loss="log_loss", alpha=1e-4, average=True, random_state=seed)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(train)
        for s in range(0, len(order), chunk):
            rows = np.sort(order[s:s + chunk])
            clf.partial_fit(scaler.transform(np.asarray(X[rows], dtype=np.float64)), y[rows], classes=np.array([0, 1]))

    def acc(rows: np.ndarray) -> float:
        hits = sum(int((clf.predict(scaler.transform(np.asarray(X[np.sort(rows[s:s + chunk])], dtype=np.float64)))
                        == y[np.sort(rows[s:s + chunk])]).sum()) for s in range(0, len(rows), chunk))
        return hits / max(len(rows), 1)

    return acc(train), acc(test)


def shuffled_labels(y: np.ndarray, pair_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels with their link to the rows broken: whole pairs flip at random (so each pair keeps one
    row of each label), unpaired rows are permuted among themselves."""
    y = np.asarray(y).copy()
    pair_ids = np.asarray(pair_ids)
    paired = pair_ids >= 0
    if paired.any():
        uniq, inverse = np.unique(pair_ids[paired], return_inverse=True)
        flip = rng.random(len(uniq)) < 0.5
        rows = np.flatnonzero(paired)
        y[rows] = np.where(flip[inverse], 1 - y[rows], y[rows])
    free = np.flatnonzero(~paired)
    y[free] = y[free][rng.permutation(len(free))]
    return y


NULL_PERMUTATIONS = 5  # shuffled-label probes per layer: all 5 take ~0.1 s at 800 x 384 here (measured)
NULL_MAX_ROWS = 2000  # the null is fitted on a seeded sample of at most this many rows


def shuffled_label_accuracy(X: np.ndarray, y: np.ndarray, pair_ids: np.ndarray, *, n_permutations: int = NULL_PERMUTATIONS,
                            test_frac: float = 0.2, seed: int = 0, C: float = 0.1,
                            max_rows: int = NULL_MAX_ROWS) -> tuple[float, float]:
    """The null of a probe's held-out accuracy: the same probe and split, trained and scored on
    shuffled labels (`shuffled_labels`), `n_permutations` times, on a seeded sample of at most
    `max_rows` rows of `X` (n, d). Returns (mean, 95th percentile) of the held-out accuracies;
    (nan, nan) with `n_permutations=0`."""
    if n_permutations <= 0:
        return float("nan"), float("nan")
    y, pair_ids = np.asarray(y).astype(np.int64), np.asarray(pair_ids)
    rng = np.random.default_rng(seed + 7919)
    rows = np.arange(len(y))
    if len(rows) > max_rows:
        rows = np.sort(rng.choice(rows, max_rows, replace=False))
    Xs, ys, ps = np.asarray(X[rows]), y[rows], pair_ids[rows]
    accs = []
    for _ in range(n_permutations):
        yy = shuffled_labels(ys, ps, rng)
        tr, te = train_test_split_groups(yy, ps, test_frac, seed)
        if len(np.unique(yy[tr])) < 2:
            continue
        accs.append(LinearProbe(C=C).fit(Xs[tr], yy[tr]).score(Xs[te], yy[te]))
    if not accs:
        return float("nan"), float("nan")
    return float(np.mean(accs)), float(np.percentile(accs, 95))


def separation_at(X: np.ndarray, y: np.ndarray, pair_ids: np.ndarray, layer: int, *, folds: int = 5,
                  test_frac: float = 0.2, seed: int = 0, C: float = 0.1,
                  null_permutations: int = NULL_PERMUTATIONS) -> LayerSeparation:
    """All separation scores for one layer's activations `X (n, d)` and labels `y (n,)`.

    The cross-validated accuracy is the share of rows classified right when held out (pooled over
    folds) with a 95% interval (Wilson, or a bootstrap over pairs); the held-out accuracy likewise;
    the null is `shuffled_label_accuracy` with `null_permutations` shuffles (0 skips it).
    Above `MAX_EXACT_ROWS` rows, the held-out probe is an SGD probe trained over streamed chunks,
    the Fisher ratio uses every row (chunk by chunk), and the cross-validation, silhouette and null
    use a seeded sample of `MAX_EXACT_ROWS` rows; `scored_on` says so."""
    from sklearn.model_selection import StratifiedGroupKFold

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
                               silhouette=small.silhouette, fisher=fisher_ratio_streamed(X, y),
                               scored_on=f"{len(y)} rows: streamed SGD probe, Fisher on all rows; "
                                         f"cross-validation and silhouette on a seeded sample of {MAX_EXACT_ROWS}")
    check_two_classes(y)
    groups = groups_of(pair_ids)
    n_groups_min = min(len(np.unique(groups[y == c])) for c in (0, 1))
    folds = max(2, min(folds, n_groups_min))
    if n_groups_min < 2:
        raise RepmapError("Each class needs at least two rows (or pairs) for a cross-validated probe; add more data.")
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    accs = []
    correct = np.full(len(y), np.nan)  # each row's out-of-fold verdict
    for tr, te in cv.split(X, y, groups):
        if len(np.unique(y[tr])) < 2:
            continue
        hit = LinearProbe(C=C).fit(X[tr], y[tr]).predict(X[te]) == y[te]
        correct[te] = hit
        accs.append(float(hit.mean()))
    seen = ~np.isnan(correct)
    cv_est = accuracy_estimate(correct[seen], groups[seen] if (np.asarray(pair_ids) >= 0).any() else None, seed=seed)
    tr, te = train_test_split_groups(y, pair_ids, test_frac, seed)
    probe = LinearProbe(C=C).fit(X[tr], y[tr])
    test_est = accuracy_estimate(probe.predict(X[te]) == y[te], groups[te] if (np.asarray(pair_ids) >= 0).any() else None,
                                 seed=seed)
    null, null_high = shuffled_label_accuracy(X, y, pair_ids, n_permutations=null_permutations, test_frac=test_frac,
                                              seed=seed, C=C)
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
    )


def layer_separation(layers: dict[int, np.ndarray], labels: np.ndarray, pair_ids: np.ndarray, *,
                     folds: int = 5, test_frac: float = 0.2, seed: int = 0, null_permutations: int = NULL_PERMUTATIONS,
                     progress: Progress | None = None) -> list[LayerSeparation]:
    """`separation_at` for every layer in `layers` (layer -> (n, d)), in layer order."""
    out = []
    for i, layer in enumerate(sorted(layers)):
        out.append(separation_at(layers[layer], labels, pair_ids, layer, folds=folds, test_frac=test_frac, seed=seed,
                                 null_permutations=null_permutations))
        if progress:
            progress((i + 1) / len(layers), f"Scored layer {layer}")
    return out


def check_separable(labels: np.ndarray, pair_ids: np.ndarray, *, test_frac: float = 0.2, seed: int = 0) -> None:
    """Refuse, from the labels and pair ids alone, rows too few for `layer_separation`: both classes, a held-out
    split with each class on each side, two rows (or pairs) of each class to cross-validate. Call it before
    anything is extracted for those rows, so a refused request computes and caches nothing."""
    y = np.asarray(labels).astype(np.int64)
    check_two_classes(y)
    train_test_split_groups(y, pair_ids, test_frac, seed)
    groups = groups_of(np.asarray(pair_ids))
    if min(len(np.unique(groups[y == c])) for c in (0, 1)) < 2:
        raise RepmapError("Each class needs at least two rows (or pairs) for a cross-validated probe; add more data.")


def best_layer(rows: list[LayerSeparation]) -> int:
    """Layer with the highest cross-validated probe accuracy (the shallowest on ties)."""
    return max(rows, key=lambda r: (round(r.probe_cv_acc, 6), -r.layer)).layer
