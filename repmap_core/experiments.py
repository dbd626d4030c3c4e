"""The papers' protocols as functions returning result dataclasses (shared by the CLI and pages).

`within_model` (Gao, Sun, Jiao §3): fit `λ̃ ≈ A λ + b + y δ` on training rows and score, on held-out
rows, classifying by δ (the paper's uncentred `sign(λ̃·δ)` and the centred one), linear probes on
base, finetuned and modelled activations (Table 1; with weak `fit_labels`, Table 2).

The paper's modelled activations `λ̂ = A λ + b + y δ` contain the true label by construction, so a
probe on them reads the label back through δ: a leak. Next to it we report `λ̂` with the label
term removed (`A λ + b`) and with the label a base-model probe predicts (`A λ + b + ŷ δ`); those are
what a model could produce without being told the answer.

`between_models` (Gao et al. §2, LRT, stitching): fit a map source -> target on training rows;
score it on held-out rows; carry the source probe across as a vector (`A w`, the paper), as a
functional (`pinv(A)ᵀ w` with its intercept), through a reverse map (`Bᵀ w`) and through a PCA
subspace, each scored uncentred and centred against the target's own probe.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from repmap_core.errors import RepmapError
from repmap_core.maps import (LeastSquaresMap, StepCallback, WithinModelFit, check_pair, make_map, map_metrics, r2_score,
                              signed_labels, transfer_direction, transfer_intercept)
from repmap_core.probes import LinearProbe, train_test_split_groups

# ---------------------------------------------------------------------------------------------
# published numbers, shown beside a run (DESIGN.md)

GAO_TABLE1 = {  # data set -> (base, finetuned, modelled) as (train, test)
    "SciQ": ((0.64, 0.53), (0.69, 0.58), (0.85, 0.79)),
    "Amazon Polarity": ((0.92, 0.88), (0.96, 0.91), (1.00, 1.00)),
    "Anthropic HH": ((0.65, 0.54), (0.65, 0.55), (0.78, 0.69)),
}
GAO_TABLE2_HH_WEAK = ((0.66, 0.53), (0.68, 0.55), (0.69, 0.55))
GAO_DELTA_ACCURACY = {"gpt2": 0.8994, "gpt2-xl": 0.4904, "gpt2 probe direction": 0.8790}
GAO_BETWEEN_VECTOR_ACCURACY = 0.5025  # GPT-2 -> GPT-2-XL, probe carried as A w
# LRT (Bello et al. 2025), gemma-2-2b L20 -> gemma-2-9b L20, across 13 behaviours
LRT_PUBLISHED = {"lrt_pearson_r_range": [0.73, 0.98], "lrt_mse_range": [5e-3, 9.6e-2]}


def _acc(pred: np.ndarray, y01: np.ndarray) -> float:
    return float((np.asarray(pred).astype(np.int64) == np.asarray(y01).astype(np.int64)).mean())


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def _labels01(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if len(y) != n:
        raise RepmapError(f"There are {len(y)} labels for {n} rows; labels must align with the activations.")
    return ((signed_labels(y) + 1) / 2).astype(np.int64)


def _probe_scores(X: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray) -> tuple[dict, LinearProbe]:
    probe = LinearProbe().fit(X[tr], y[tr])
    return {"train": float(probe.score(X[tr], y[tr])), "test": float(probe.score(X[te], y[te]))}, probe


# ---------------------------------------------------------------------------------------------
# within a model


@dataclass(frozen=True)
class WithinResult:
    """Table 1 (or 2) of Gao et al. for one layer, plus what the paper's setup hides."""

    delta_projection_accuracy: float  # sign(λ̃·δ) on held-out rows (the paper's)
    delta_projection_accuracy_centered: float  # sign((λ̃ − μ_train)·δ)
    probe: dict  # name -> {"train", "test"}: base, finetuned, modeled, modeled_without_label, modeled_predicted_label
    fit: dict  # method, r2_train, r2_test, loss_train, seconds, steps
    delta_cosine: dict  # cosine of δ with the probe directions and with λ̃'s class-mean difference
    n_train: int
    n_test: int
    fit_labels: str  # "ground truth" or "weak"
    history: list = field(default_factory=list)  # GD: [(step, loss)]

    def as_dict(self) -> dict:
        return asdict(self)


def within_model(before: np.ndarray, after: np.ndarray, labels: np.ndarray, *, pair_ids: np.ndarray | None = None,
                 fit_labels: np.ndarray | None = None, method: str = "lstsq", alpha: float = 0.0, test_frac: float = 0.2,
                 seed: int = 0, lr: float = 1e-2, max_steps: int = 2000, callback: StepCallback | None = None,
                 live: Callable[[dict], None] | None = None, live_probe_every: int = 10
                 ) -> tuple[WithinResult, WithinModelFit]:
    """Fit `after ≈ A before + b + y δ` on a training split and score it on the held-out rows.

    before, after: (n, d) activations of the same rows before and after finetuning. labels: (n,)
    ground truth (0/1 or ±1), used for every probe and accuracy. fit_labels: labels used to fit δ
    and build λ̂ (weak labels for Table 2); defaults to `labels`. With `method="gd"`, `live(metrics)`
    receives, every few steps, the step, loss, held-out R² and δ accuracies, and (every
    `live_probe_every` updates) the modelled probe's accuracies: Table 1 filling itself in.
    """
    if not (np.isfinite(alpha) and alpha >= 0):  # a negative or NaN penalty silently acted like none
        raise RepmapError(f"The ridge penalty alpha must be a finite number of at least 0, not {alpha}.")
    before, after = check_pair(before, after, ("base", "finetuned"))
    y = _labels01(labels, len(before))
    y_fit = y if fit_labels is None else _labels01(fit_labels, len(before))
    pair_ids = np.full(len(y), -1) if pair_ids is None else np.asarray(pair_ids)
    tr, te = train_test_split_groups(y, pair_ids, test_frac, seed)
    probe = {}
    probe["base"], base_probe = _probe_scores(before, y, tr, te)
    probe["finetuned"], ft_probe = _probe_scores(after, y, tr, te)
    monitor: Callable | None = None
    if live is not None:
        mu_tr = after[tr].mean(0)
        updates = [0]

        def live_metrics(step: int, loss: float, W: np.ndarray, c: np.ndarray) -> None:
            A, delta_now = W[:-1], W[-1]  # (d, d'), (d',)
            modeled_te = before[te] @ A + c + (2.0 * y_fit[te] - 1)[:, None] * delta_now
            metrics = {"step": step, "loss": loss, "r2_test": r2_score(after[te], modeled_te),
                       "delta_accuracy": _acc(after[te] @ delta_now > 0, y[te]),
                       "delta_accuracy_centered": _acc((after[te] - mu_tr) @ delta_now > 0, y[te]),
                       "base": probe["base"], "finetuned": probe["finetuned"]}
            if updates[0] % live_probe_every == 0:
                modeled = before @ A + c + (2.0 * y_fit - 1)[:, None] * delta_now
                metrics["modeled"], _ = _probe_scores(modeled, y, tr, te)
            updates[0] += 1
            live(metrics)

        monitor = live_metrics

    fit = WithinModelFit(method=method, alpha=alpha, lr=lr, max_steps=max_steps, callback=callback, seed=seed,
                         monitor=monitor)
    fit.fit(before[tr], after[tr], y_fit[tr])
    delta = fit.delta_.astype(np.float64)
    mu = after[tr].mean(0)
    acc_uncentered = _acc(after[te] @ delta > 0, y[te])
    acc_centered = _acc((after[te] - mu) @ delta > 0, y[te])

    modeled = fit.transform(before, y_fit)  # built from the fit on train rows, applied to all
    probe["modeled"], _ = _probe_scores(modeled, y, tr, te)
    probe["modeled_without_label"], _ = _probe_scores(fit.transform_without_label(before), y, tr, te)
    predicted = base_probe.predict(before)  # no true labels on the held-out rows
    probe["modeled_predicted_label"], _ = _probe_scores(fit.transform(before, predicted), y, tr, te)

    result = WithinResult(
        delta_projection_accuracy=acc_uncentered,
        delta_projection_accuracy_centered=acc_centered,
        probe=probe,
        fit={"method": method, "r2_train": r2_score(after[tr], fit.transform(before[tr], y_fit[tr])),
             "r2_test": r2_score(after[te], fit.transform(before[te], y_fit[te])),
             "loss_train": fit.loss(before[tr], after[tr], y_fit[tr]), "seconds": fit.seconds_,
             "steps": fit.history_[-1][0] if fit.history_ else 0},
        # δ is a displacement; a probe's weights are a functional (scaled by inverse feature variance),
        # so the class-mean difference of λ̃, also a displacement, is the like-for-like comparison
        delta_cosine={"base_probe": _cos(delta, base_probe.coef_), "finetuned_probe": _cos(delta, ft_probe.coef_),
                      "finetuned_mean_difference": _cos(delta, after[tr][y[tr] == 1].mean(0) - after[tr][y[tr] == 0].mean(0))},
        n_train=len(tr), n_test=len(te), fit_labels="ground truth" if fit_labels is None else "weak",
        history=[(int(s), float(v)) for s, v in fit.history_],
    )
    return result, fit


def within_table(result: WithinResult) -> list[dict]:
    """Rows of the Table 1-style table: representation, train accuracy, test accuracy."""
    names = {"base": "base λ", "finetuned": "finetuned λ̃", "modeled": "modelled λ̂ = Aλ+b+yδ (uses the true label)",
             "modeled_without_label": "modelled without label, Aλ+b", "modeled_predicted_label": "modelled with predicted label, Aλ+b+ŷδ"}
    return [{"representation": names[k], "train": v["train"], "test": v["test"]} for k, v in result.probe.items()]


# ---------------------------------------------------------------------------------------------
# across models


class PCASubspaceMap(LeastSquaresMap):
    """Least squares between the top `n_components` principal subspaces of each side, then back
    (Gao et al.'s proposed next step); an affine map of rank <= n_components."""

    def __init__(self, n_components: int = 50):
        self.n_components = n_components

    def fit(self, S: np.ndarray, T: np.ndarray) -> PCASubspaceMap:
        from repmap_core.maps import _pca_basis, solve_affine

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

    map: dict  # method, r2_train, r2_test, mean_cosine, retrieval_top1, seconds
    probe: dict  # source/target -> {"train", "test"}
    transfer: dict  # "vector", "functional" accuracies (the headline), "details": per mode
    similarity: dict  # linear_cka on the training rows
    n_train: int
    n_test: int
    per_dim_mse: list = field(default_factory=list)  # held-out squared error per target dimension

    def as_dict(self) -> dict:
        return asdict(self)


def between_models(source: np.ndarray, target: np.ndarray, labels: np.ndarray, *, pair_ids: np.ndarray | None = None,
                   method: str = "lstsq", test_frac: float = 0.2, seed: int = 0, pca_components: int = 50,
                   map_params: dict | None = None) -> tuple[BetweenResult, object]:
    """Fit a map source -> target on a training split; score it and the probe transfers on held-out rows.

    source (n, d_s), target (n, d_t): the same rows' activations in two models (or layers).
    labels (n,) 0/1 or ±1. Returns the result and the fitted map.
    """
    from repmap_core.similarity import linear_cka

    source, target = check_pair(source, target)
    y = _labels01(labels, len(source))
    pair_ids = np.full(len(y), -1) if pair_ids is None else np.asarray(pair_ids)
    tr, te = train_test_split_groups(y, pair_ids, test_frac, seed)
    fitted = make_map(method, **(map_params or {})).fit(source[tr], target[tr])
    pred_te = fitted.transform(source[te])
    metrics = map_metrics(target[te], pred_te)
    probe_s_scores, probe_s = _probe_scores(source, y, tr, te)
    probe_t_scores, probe_t = _probe_scores(target, y, tr, te)

    details = {}
    mu_t = target[tr].mean(0)
    if hasattr(fitted, "A_"):
        # an up/down pair brings its own down map; otherwise one is fitted target -> source
        reverse = getattr(fitted, "down_", None) or LeastSquaresMap().fit(target[tr], source[tr])
        pca = PCASubspaceMap(pca_components).fit(source[tr], target[tr])
        ways = {"vector": (fitted, "vector", None), "functional": (fitted, "functional", None),
                "functional_reverse": (fitted, "functional_reverse", reverse),
                "pca_subspace_vector": (pca, "vector", None), "pca_subspace_functional": (pca, "functional", None)}
        for name, (m, mode, rev) in ways.items():
            w_t = transfer_direction(probe_s.coef_, m, mode, reverse=rev)
            c_t = transfer_intercept(probe_s.coef_, probe_s.intercept_, w_t, m, mode, reverse=rev)
            details[name] = {
                "uncentered": _acc(target[te] @ w_t > 0, y[te]),  # the paper's sign(t·ŵ)
                "centered": _acc((target[te] - mu_t) @ w_t > 0, y[te]),
                "with_intercept": _acc(target[te] @ w_t + c_t > 0, y[te]),
                "cosine_with_target_probe": _cos(w_t, probe_t.coef_),
            }
        headline = {"vector": details["vector"]["uncentered"], "functional": details["functional"]["with_intercept"]}
    else:  # a non-linear map has no matrix to carry a direction through
        headline = {"vector": None, "functional": None}
    result = BetweenResult(
        map={"method": method, "r2_train": r2_score(target[tr], fitted.transform(source[tr])), "r2_test": metrics.r2,
             "mean_cosine": metrics.mean_cosine, "retrieval_top1": metrics.retrieval_top1,
             "seconds": float(getattr(fitted, "seconds_", 0.0)),
             **({"round_trip_error_test": fitted.round_trip_error(source[te]),
                 "down_r2_test": r2_score(source[te], fitted.inverse_transform(target[te]))}
                if hasattr(fitted, "round_trip_error") else {})},
        probe={"source": probe_s_scores, "target": probe_t_scores},
        transfer=dict(headline, details=details),
        similarity={"linear_cka": linear_cka(source[tr], target[tr])},
        n_train=len(tr), n_test=len(te), per_dim_mse=metrics.per_dim_mse.tolist(),
    )
    return result, fitted


def transferred_probe(source: np.ndarray, labels: np.ndarray, fitted, *, pair_ids: np.ndarray | None = None,
                      test_frac: float = 0.2, seed: int = 0) -> dict[str, np.ndarray]:
    """The source probe `between_models` trained (same split, same probe) and its carried forms, for export.

    source (n, d_s); fitted: an affine map with `A_` (d_t, d_s) and `b_` (d_t,). Returns
    `probe_source_w` (d_s,), `probe_source_c` (1,), `probe_vector_w` = A w (d_t,) and
    `probe_functional_w` = pinv(A)ᵀ w (d_t,) with `probe_functional_c` (1,), all float32.
    """
    source = np.asarray(source, dtype=np.float32)
    y = _labels01(labels, len(source))
    pair_ids = np.full(len(y), -1) if pair_ids is None else np.asarray(pair_ids)
    tr, _ = train_test_split_groups(y, pair_ids, test_frac, seed)
    probe = LinearProbe().fit(source[tr], y[tr])
    w, c = np.asarray(probe.coef_, dtype=np.float64), float(probe.intercept_)
    w_functional = transfer_direction(w, fitted, "functional")
    out = {"probe_source_w": w, "probe_source_c": np.array([c]), "probe_vector_w": transfer_direction(w, fitted, "vector"),
           "probe_functional_w": w_functional,
           "probe_functional_c": np.array([transfer_intercept(w, c, w_functional, fitted, "functional")])}
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


TRANSFER_EXPLAINED = {
    "vector": "A w: the probe's image under the map (Gao et al.). Right for a displacement such as a steering vector; "
              "a probe is a functional, so this is only right when A is orthogonal.",
    "functional": "pinv(A)ᵀ w with intercept c − ŵᵀb: scores a target row as w scored the source row it came from.",
    "functional_reverse": "Bᵀ w, B fitted target → source: the same idea without inverting A (stable when A is ill-conditioned).",
    "pca_subspace_vector": "A w through the top principal subspaces only (the paper's proposed next step).",
    "pca_subspace_functional": "pinv(A)ᵀ w through the top principal subspaces only.",
}


# ---------------------------------------------------------------------------------------------
# recipes: the papers' protocols end to end, for the CLI and for users' GPU machines


def within_recipe(model: str, data, *, layer: int = -1, position: str = "auto", limit: int | None = None,
                  seed: int = 0, finetune_config=None, finetune_data=None, finetune_frac: float = 0.5,
                  method: str = "lstsq", weak_model: str | None = None, progress=None) -> dict:
    """Gao et al. §3 end to end: finetune `model`, extract one layer before and after, fit, table.

    The rows the model is finetuned on are not the rows analysed: unless `finetune_data` is
    given, `data` is split (seeded, pairs whole, stratified) into `finetune_frac` for finetuning
    and the rest for the fit and probes. `weak_model` (a finetuned folder) gives Table 2.
    Example (a GPU machine): `within_recipe("gpt2", "hf:amazon_polarity:train[:20000]")`.
    """
    from repmap_core.activations import get_activations
    from repmap_core.data import load_dataset
    from repmap_core.finetune import FinetuneConfig, finetune, validation_split, weak_labels
    from repmap_core.models import model_info, resolve_layers, resolve_model, site_name

    report = progress or (lambda f, m: None)
    dataset = data if not isinstance(data, str) else load_dataset(data, limit=limit, seed=seed)
    if finetune_data is None:
        analyse_rows, tune_rows = validation_split(dataset, finetune_frac, seed)
        tune_set, analyse = dataset.take(tune_rows), dataset.take(analyse_rows)
    else:
        tune_set = finetune_data if not isinstance(finetune_data, str) else load_dataset(finetune_data, seed=seed)
        analyse = dataset
    resolved = resolve_model(model)
    L = resolve_layers([layer], model_info(resolved).n_layers, f"model '{model}'")[0]
    report(0.0, f"Finetuning {model} on {len(tune_set)} rows")
    tuned = finetune(resolved, tune_set, finetune_config or FinetuneConfig(seed=seed),
                     progress=lambda f, m: report(0.7 * f, m))
    before = get_activations(resolved, analyse, [L], position, progress=lambda f, m: report(0.7 + 0.1 * f, m))
    after = get_activations(tuned.path, analyse, [L], position, progress=lambda f, m: report(0.8 + 0.1 * f, m))
    fit_labels = weak_labels(weak_model, analyse).labels if weak_model else None
    report(0.9, "Fitting λ̃ ≈ Aλ + b + yδ")
    result, _ = within_model(before[L], after[L], before.labels, pair_ids=before.pair_ids, fit_labels=fit_labels,
                             method=method, seed=seed)
    report(1.0, "Done")
    within = result.as_dict()
    within.pop("history")
    return {"model": resolved.name, "revision": resolved.revision, "data": dataset.name, "layer": L, "site": site_name(L),
            "position": before.manifest["position"], "rows": {"finetune": len(tune_set), "analysed": len(analyse)},
            "finetune": {"path": tuned.path, "reused": tuned.reused, "metrics": tuned.manifest["metrics"]},
            "within": within, "table": within_table(result),
            "published": {"table1": GAO_TABLE1, "table2_hh_weak": GAO_TABLE2_HH_WEAK, "delta_accuracy": GAO_DELTA_ACCURACY}}


def between_recipe(source: str, target: str, data, *, source_layer: int = -1, target_layer: int = -1,
                   position: str = "auto", limit: int | None = None, seed: int = 0, method: str = "gd",
                   progress=None) -> dict:
    """Gao et al. §2 end to end: activations of two models on the same rows, a map source ->
    target (GD, as the paper), the probe carried across every way.
    Example (a GPU machine): `between_recipe("gpt2", "gpt2-xl", "hf:amazon_polarity:train[:10000]")`."""
    from repmap_core.activations import get_activations
    from repmap_core.data import load_dataset
    from repmap_core.models import site_name

    report = progress or (lambda f, m: None)
    dataset = data if not isinstance(data, str) else load_dataset(data, limit=limit, seed=seed)
    src = get_activations(source, dataset, [source_layer], position, progress=lambda f, m: report(0.45 * f, m))
    tgt = get_activations(target, dataset, [target_layer], position, progress=lambda f, m: report(0.45 + 0.45 * f, m))
    Ls, Lt = src.layer_list[0], tgt.layer_list[0]
    report(0.9, f"Fitting the map ({method})")
    result, _ = between_models(src[Ls], tgt[Lt], src.labels, pair_ids=src.pair_ids, method=method, seed=seed)
    report(1.0, "Done")
    out = result.as_dict()
    out.pop("per_dim_mse")
    return {"source": {"model": source, "layer": Ls, "site": site_name(Ls), "revision": src.manifest["revision"]},
            "target": {"model": target, "layer": Lt, "site": site_name(Lt), "revision": tgt.manifest["revision"]},
            "data": dataset.name, "rows": len(dataset), "position": src.manifest["position"], "between": out,
            "published": {"vector_transfer_accuracy_gpt2_to_gpt2xl": GAO_BETWEEN_VECTOR_ACCURACY}}


def rimsky_recipe(base: str, chat: str, data, *, layers="all", limit: int | None = None, seed: int = 0,
                  method: str = "mean_diff", progress=None) -> dict:
    """Rimsky, "Comparing representation vectors between llama 2 base and chat": CAA vectors per
    layer for both models; their cosine per layer, each model's layer x layer cosines, and a 2-D
    PCA of the normalised vectors. Example (a GPU machine): `rimsky_recipe("meta-llama/Llama-2-7b-hf",
    "meta-llama/Llama-2-7b-chat-hf", "file:sycophancy.jsonl")`."""
    from repmap_core.data import load_dataset
    from repmap_core.steering import compute_vectors, cosine_per_layer, layer_cosines, vector_pca

    report = progress or (lambda f, m: None)
    dataset = data if not isinstance(data, str) else load_dataset(data, limit=limit, seed=seed)
    sets = {}
    for i, (name, model) in enumerate((("base", base), ("chat", chat))):
        sets[name] = compute_vectors(model, dataset, layers, method=method, seed=seed,
                                     progress=lambda f, m, i=i: report((i + f) / 2, m))
    per_layer = cosine_per_layer(sets["base"].vectors, sets["chat"].vectors)
    pca = vector_pca({k: v.vectors for k, v in sets.items()})
    out = {"base": base, "chat": chat, "data": dataset.name, "pairs": int(len(np.unique(dataset.pair_ids))),
           "method": method, "cosine_per_layer": {str(k): v for k, v in per_layer.items()}}
    for name, vs in sets.items():
        ls, C = layer_cosines(vs.vectors)
        out[name] = {"layers": ls, "layer_cosine": C.tolist(), "norms": [vs.vectors[L].norm for L in ls],
                     "pca": pca[name][1].tolist()}
    report(1.0, "Done")
    return out


def lrt_recipe(source: str, target: str, data, *, source_layer: int, target_layer: int, limit: int | None = None,
               seed: int = 0, multipliers=(-2.0, -1.0, 0.0, 1.0, 2.0), with_bias: bool = True, map_method: str = "ridge",
               normalize: bool = False, progress=None) -> dict:
    """LRT (Bello et al. 2025): steer the target with its own CAA vector and with the source's
    vector carried across a map fitted on the two models' activations (`A v + b` as LRT, or `A v`
    as stitching with `with_bias=False`); compare the propensity curves on held-out questions
    (Pearson r and MSE, their Table 1). Example (a GPU machine): `lrt_recipe("google/gemma-2-2b",
    "google/gemma-2-9b", "file:corrigible.jsonl", source_layer=20, target_layer=20)`."""
    from repmap_core.data import load_dataset
    from repmap_core.models import load_model
    from repmap_core.steering import compute_vectors, transfer_and_compare

    report = progress or (lambda f, m: None)
    dataset = data if not isinstance(data, str) else load_dataset(data, limit=limit, seed=seed)
    tgt_lm = load_model(target, head=True)
    loader = lambda resolved, device, dtype: tgt_lm if resolved.path == tgt_lm.resolved.path else load_model(  # noqa: E731
        resolved, device=device, dtype=dtype)
    src = compute_vectors(source, dataset, [source_layer], seed=seed, loader=loader, progress=lambda f, m: report(0.2 * f, m))
    tgt = compute_vectors(target, dataset, [target_layer], seed=seed, loader=loader,
                          progress=lambda f, m: report(0.2 + 0.2 * f, m))
    Ls, Lt = next(iter(src.vectors)), next(iter(tgt.vectors))
    report(0.5, "Fitting the map and steering the target with both vectors")
    out = transfer_and_compare(src, tgt, tgt_lm, Ls, Lt, multipliers, map_method=map_method, with_bias=with_bias,
                               normalize=normalize, loader=loader)
    report(1.0, "Done")
    return {"source": {"model": source, "layer": Ls}, "target": {"model": target, "layer": Lt}, "data": dataset.name,
            "held_out_questions": out.native.n_questions,
            "map": {"method": map_method, "r2_test": out.map_r2_test, "with_bias": with_bias},
            "cosine_native_vs_carried": out.cosine, "native": out.native.as_dict(), "transferred": out.transferred.as_dict(),
            "comparison": out.comparison, "published": LRT_PUBLISHED}
