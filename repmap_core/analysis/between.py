"""Across models (Gao et al. §2, LRT, stitching): a map source -> target and the probe it carries.

`between_models` fits a map on training rows, scores it on held-out rows, and carries the source
probe to the target every way `transfer` knows: the readout (`functional`, the headline), a
reverse map, `pinv(A)ᵀ w`, `A w` (the paper's) and through a PCA subspace; each scored uncentred,
centred and with its intercept against the held-out labels, beside the target's own probe. Every
accuracy, R² and cosine comes with a 95% interval over held-out rows (pairs kept whole) and a null:
random directions of the target space for the transfers, shuffled labels for the probes, shuffled
rows for the debiased CKA.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from repmap_core.analysis.affine import AffineMap, check_pair, r2_score, rows_note, solve_affine
from repmap_core.analysis.gd_maps import still_improving
from repmap_core.analysis.maps import RidgeMap, make_map, map_metrics
from repmap_core.analysis.probe_null import NULL_PERMUTATIONS, shuffled_label_accuracy
from repmap_core.analysis.probes import LinearProbe, held_out_probe
from repmap_core.analysis.splits import train_test_split_groups
from repmap_core.analysis.stats import (
    Estimate,
    accuracy_estimate,
    r2_estimate,
    random_direction_accuracy,
    row_mean_estimate,
    with_null,
)
from repmap_core.analysis.transfer import ProbeReadout, transfer_direction, transfer_intercept
from repmap_core.analysis.within import _cos, aligned_pair_ids, labels01
from repmap_core.pairs import groups_of

TRANSFER_EXPLAINED = {
    "functional": "Ridge readout: the source probe's scores w·s + c regressed on the target rows (alpha chosen on "
                  "held-out rows). What 'carry the functional' means in practice, and stable however A is conditioned.",
    "functional_reverse": "Bᵀ w, B a ridge map fitted target → source: the readout of every source direction at once "
                          "(the same numbers as the readout when both choose the same alpha: ridge is linear in what it "
                          "predicts).",
    "pinv": "pinv(A)ᵀ w with intercept c − ŵᵀb: the algebraic inverse. Inverts the noise directions of a shrunk or noisy "
            "A, so it can fall far below the probes (a comparison, not the answer).",
    "vector": "A w: the probe's image under the map (Gao et al.). Right for a displacement such as a steering vector; "
              "a probe is a functional, so this is only right when A is orthogonal.",
    "pca_subspace_vector": "A w through the top principal subspaces only (the paper's proposed next step).",
    "pca_subspace_pinv": "pinv(A)ᵀ w through the top principal subspaces only.",
    "random_direction": "Null: random directions of the target space, the 95th percentile of 200 (the bar a carried "
                        "probe has to clear).",
}


class PCASubspaceMap(AffineMap):
    """Least squares between the top `n_components` principal subspaces of each side, then back
    (Gao et al.'s proposed next step); an affine map of rank <= n_components."""

    def __init__(self, n_components: int = 50):
        self.n_components = n_components

    def fit(self, S: np.ndarray, T: np.ndarray) -> PCASubspaceMap:
        from repmap_core.analysis.maps import _pca_basis

        S, T = check_pair(S, T)
        k = min(self.n_components, S.shape[1], T.shape[1], len(S) - 1)
        Ps, Pt = _pca_basis(S, k), _pca_basis(T, k)  # (d_s, k), (d_t, k)
        W, c = solve_affine(S @ Ps, T @ Pt)  # (k, k) in the subspaces
        full = Ps @ W @ Pt.T  # (d_s, d_t)
        self.n_components_ = k
        self._set(full.astype(np.float32), (T.mean(0) - S.mean(0) @ full).astype(np.float32), 0.0)
        return self


@dataclass(frozen=True)
class BetweenResult:
    """A map source -> target and what it carries across."""

    map: dict  # method, r2_train, r2_test, mean_cosine, retrieval_top1, seconds, rows, width, n_le_d, note, ...
    probe: dict  # source/target -> {"train", "test"}
    transfer: dict  # "vector", "functional" accuracies (the headline), "details": per mode
    similarity: dict  # linear_cka and cka_debiased (with its shuffled-row null) on the training rows
    n_train: int
    n_test: int
    per_dim_mse: list = field(default_factory=list)  # held-out squared error per target dimension
    # name -> Estimate: "map.r2_train", "map.r2_test", "map.mean_cosine", "map.retrieval_top1", "probe.source",
    # "probe.target", "transfer.vector", "transfer.functional", "similarity.cka_debiased"
    intervals: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["intervals"] = {k: e.as_dict() for k, e in self.intervals.items()}  # NaN bounds as None (strict JSON)
        return out


def _scores(w_t: np.ndarray, c_t: float, T_te: np.ndarray, y_te: np.ndarray, mu_t: np.ndarray) -> dict[str, np.ndarray]:
    """Per held-out row, whether each scoring of a carried direction gets its label right."""
    hit = lambda s: s == (y_te == 1)  # noqa: E731
    return {"uncentered": hit(T_te @ w_t > 0),  # the paper's sign(t·ŵ)
            "centered": hit((T_te - mu_t) @ w_t > 0), "with_intercept": hit(T_te @ w_t + c_t > 0)}


def carried_probes(source: np.ndarray, target: np.ndarray, y: np.ndarray, tr: np.ndarray, fitted, probe_s,
                   groups: np.ndarray | None = None, seed: int = 0, pca_components: int = 50) -> dict:
    """The source probe (`coef_` (d_s,), `intercept_`) carried to the target every way:
    {mode: (w_t (d_t,), c_t)}. Reverse map and readout are ridge fits with alpha chosen on
    held-out training rows; an up/down pair's own down map serves as the reverse map."""
    w, c = probe_s.coef_, probe_s.intercept_
    g_tr = None if groups is None else groups[tr]
    readout = ProbeReadout(seed=seed).fit(target[tr], probe_s.decision_function(source[tr]), groups=g_tr)
    reverse = getattr(fitted, "down_", None) or RidgeMap(seed=seed).fit(target[tr], source[tr])
    pca = PCASubspaceMap(pca_components).fit(source[tr], target[tr])
    ways = {"functional": (fitted, "functional"), "functional_reverse": (fitted, "functional_reverse"),
            "pinv": (fitted, "pinv"), "vector": (fitted, "vector"),
            "pca_subspace_vector": (pca, "vector"), "pca_subspace_pinv": (pca, "pinv")}
    out = {}
    for name, (m, mode) in ways.items():
        w_t = transfer_direction(w, m, mode, reverse=reverse, readout=readout)
        out[name] = (w_t, transfer_intercept(w, c, w_t, m, mode, reverse=reverse, readout=readout))
    return out


def between_models(source: np.ndarray, target: np.ndarray, labels: np.ndarray, *, pair_ids: np.ndarray | None = None,
                   method: str = "ridge", test_frac: float = 0.2, seed: int = 0, pca_components: int = 50,
                   map_params: dict | None = None, null_permutations: int = NULL_PERMUTATIONS) -> tuple[BetweenResult, object]:
    """Fit a map source -> target on a training split; score it and the probe transfers on held-out rows.

    source (n, d_s), target (n, d_t): the same rows' activations in two models (or layers).
    labels (n,) 0/1 or ±1. `method`: a `maps.MAP_METHODS` name (default ridge, alpha chosen on
    held-out rows). Returns the result and the fitted map.
    """
    from repmap_core.analysis.similarity import linear_cka, linear_cka_debiased
    from repmap_core.analysis.similarity_null import cka_null

    source, target = check_pair(source, target)
    y = labels01(labels, len(source))
    pair_ids = aligned_pair_ids(pair_ids, len(y))
    groups = groups_of(pair_ids) if (pair_ids >= 0).any() else None
    g = (lambda rows: None if groups is None else groups[rows])  # noqa: E731
    tr, te = train_test_split_groups(y, pair_ids, test_frac, seed)
    fitted = make_map(method, **(map_params or {})).fit(source[tr], target[tr])
    metrics = map_metrics(target[te], fitted.transform(source[te]))
    est = {"map.r2_train": r2_estimate(target[tr], fitted.transform(source[tr]), g(tr), seed=seed),
           "map.r2_test": r2_estimate(target[te], fitted.transform(source[te]), g(te), seed=seed),
           "map.mean_cosine": row_mean_estimate(metrics.row_cosine, g(te), seed=seed),
           "map.retrieval_top1": accuracy_estimate(metrics.row_retrieved, g(te[metrics.retrieval_rows]), seed=seed)}
    probe_s_scores, probe_s, est["probe.source"] = held_out_probe(source, y, tr, te, groups)
    probe_t_scores, probe_t, est["probe.target"] = held_out_probe(target, y, tr, te, groups)
    for side, X in (("source", source), ("target", target)):
        est[f"probe.{side}"] = with_null(est[f"probe.{side}"], *shuffled_label_accuracy(
            X, y, pair_ids, n_permutations=null_permutations, test_frac=test_frac, seed=seed))

    details, headline = {}, {"vector": None, "functional": None}
    if hasattr(fitted, "A_"):  # a non-linear map has no matrix to carry a direction through
        mu_t = target[tr].mean(0)
        for name, (w_t, c_t) in carried_probes(source, target, y, tr, fitted, probe_s, groups, seed,
                                               pca_components).items():
            hits = _scores(w_t, c_t, target[te], y[te], mu_t)
            details[name] = {k: float(v.mean()) for k, v in hits.items()}
            with_c = accuracy_estimate(hits["with_intercept"], g(te), seed=seed)
            details[name].update(with_intercept_low=with_c.low, with_intercept_high=with_c.high,
                                 cosine_with_target_probe=_cos(w_t, probe_t.coef_))
            if name == "functional":
                est["transfer.functional"] = with_c
            if name == "vector":  # the paper's scoring: uncentred, no intercept; centred beside it (it holds still)
                est["transfer.vector"] = accuracy_estimate(hits["uncentered"], g(te), seed=seed)
                est["transfer.vector_centered"] = accuracy_estimate(hits["centered"], g(te), seed=seed)
        # the null: random directions of the target space, scored as each headline is
        null_unc = random_direction_accuracy(target[te], y[te], seed=seed)
        null_cen = random_direction_accuracy(target[te], y[te], seed=seed, center=mu_t)
        rand = np.random.default_rng(seed).normal(size=(200, target.shape[1]))
        cos_null = np.abs(rand @ probe_t.coef_) / (np.linalg.norm(rand, axis=1) * np.linalg.norm(probe_t.coef_))
        details["random_direction"] = {"uncentered": null_unc[1], "centered": null_cen[1], "with_intercept": null_cen[1],
                                       "cosine_with_target_probe": float(np.percentile(cos_null, 95))}
        est["transfer.vector"] = with_null(est["transfer.vector"], *null_unc)
        est["transfer.vector_centered"] = with_null(est["transfer.vector_centered"], *null_cen)
        est["transfer.functional"] = with_null(est["transfer.functional"], *null_cen)
        headline = {"vector": details["vector"]["uncentered"], "functional": details["functional"]["with_intercept"]}

    cka_value = linear_cka_debiased(source[tr], target[tr])
    null_mean, null_high = cka_null(source[tr], target[tr], seed=seed)
    est["similarity.cka_debiased"] = Estimate(cka_value, float("nan"), float("nan"), len(tr), "permutation null",
                                              null=null_mean, null_high=null_high)
    n_tr, width = len(tr), source.shape[1]
    map_info = {"method": method, "r2_train": est["map.r2_train"].value, "r2_test": metrics.r2,
                "mean_cosine": metrics.mean_cosine, "retrieval_top1": metrics.retrieval_top1,
                "seconds": float(getattr(fitted, "seconds_", 0.0)), "rows": n_tr, "width": width,
                "n_le_d": bool(n_tr <= width), "note": rows_note(n_tr, width, "map") if n_tr <= width else ""}
    if hasattr(fitted, "alpha_"):
        map_info["alpha"] = float(fitted.alpha_)
    if hasattr(fitted, "best_step_"):  # GD: which step's parameters are reported, and whether it was still improving
        map_info.update(steps=int(fitted.n_steps_), step_reported=int(fitted.best_step_), converged=not still_improving(
            fitted.best_step_, fitted.n_steps_, fitted.max_steps, fitted.callback_every))
    if hasattr(fitted, "round_trip_error"):
        map_info.update(round_trip_error_test=fitted.round_trip_error(source[te]),
                        down_r2_test=r2_score(source[te], fitted.inverse_transform(target[te])))
    result = BetweenResult(
        map=map_info, probe={"source": probe_s_scores, "target": probe_t_scores},
        transfer=dict(headline, details=details),
        similarity={"linear_cka": linear_cka(source[tr], target[tr]), "cka_debiased": cka_value,
                    "cka_debiased_null_high": null_high},
        n_train=n_tr, n_test=len(te), per_dim_mse=metrics.per_dim_mse.tolist(), intervals=est,
    )
    return result, fitted


def transferred_probe(source: np.ndarray, labels: np.ndarray, fitted, *, target: np.ndarray | None = None,
                      pair_ids: np.ndarray | None = None, test_frac: float = 0.2, seed: int = 0) -> dict[str, np.ndarray]:
    """The source probe `between_models` trained (same split, same probe) and its carried forms, for export.

    source (n, d_s); fitted: an affine map with `A_` (d_t, d_s) and `b_` (d_t,). Returns
    `probe_source_w` (d_s,), `probe_source_c` (1,), `probe_vector_w` = A w (d_t,), `probe_pinv_w` =
    pinv(A)ᵀ w with `probe_pinv_c`, and, given `target` (n, d_t), the readout `probe_functional_w`
    (d_t,) with `probe_functional_c` (1,) (the page's headline functional), all float32.
    """
    source = np.asarray(source, dtype=np.float32)
    y = labels01(labels, len(source))
    pair_ids = aligned_pair_ids(pair_ids, len(y))
    groups = groups_of(pair_ids) if (pair_ids >= 0).any() else None
    tr, _ = train_test_split_groups(y, pair_ids, test_frac, seed)
    probe = LinearProbe().fit(source[tr], y[tr])  # as between_models' held_out_probe fits it
    w, c = np.asarray(probe.coef_, dtype=np.float64), float(probe.intercept_)
    w_pinv = transfer_direction(w, fitted, "pinv")
    out = {"probe_source_w": w, "probe_source_c": np.array([c]), "probe_vector_w": transfer_direction(w, fitted, "vector"),
           "probe_pinv_w": w_pinv, "probe_pinv_c": np.array([transfer_intercept(w, c, w_pinv, fitted, "pinv")])}
    if target is not None:
        readout = ProbeReadout(seed=seed).fit(np.asarray(target)[tr], probe.decision_function(source[tr]),
                                              groups=None if groups is None else groups[tr])
        out.update(probe_functional_w=readout.coef_, probe_functional_c=np.array([readout.intercept_]))
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
