"""How finetuning moved a model's representation space (Gao, Sun, Jiao §3): `λ̃ ≈ A λ + b + y δ`.

`WithinModelFit` is the estimator; `within_model` the protocol: fit on training rows and score, on
held-out rows, classifying by δ (the paper's uncentred `sign(λ̃·δ)` and the centred one), linear
probes on base, finetuned and modelled activations (Table 1; with weak `fit_labels`, Table 2).
Every number comes with a 95% interval over held-out rows (pairs kept whole) and, where one
exists, a null: random directions for δ, shuffled labels for the probes, the training mean for R².

The default fit is ridge with alpha chosen on held-out training rows: plain least squares on
n <= d rows interpolates (R² train 1.000, held-out -0.6 to -8.5 on real MiniLM activations).

The paper's modelled activations `λ̂ = A λ + b + y δ` contain the true label by construction, so a
probe on them reads the label back through δ: a leak. Next to it we report `λ̂` with the label
term removed (`A λ + b`) and with the label a base-model probe predicts (`A λ + b + ŷ δ`).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.base import BaseEstimator

from repmap_core.analysis.affine import check_pair, choose_ridge_alpha, r2_score, rows_note, solve_affine
from repmap_core.analysis.gd_maps import GDMap, ParamsMonitor, StepCallback, _gd_affine, still_improving
from repmap_core.analysis.probe_null import NULL_PERMUTATIONS, shuffled_label_accuracy
from repmap_core.analysis.probes import held_out_probe
from repmap_core.analysis.splits import train_test_split_groups
from repmap_core.analysis.stats import (
    Estimate,
    accuracy_estimate,
    bootstrap,
    r2_estimate,
    random_direction_accuracy,
    with_null,
)
from repmap_core.errors import RepmapError
from repmap_core.pairs import groups_of


def signed_labels(y: np.ndarray) -> np.ndarray:
    """Labels as ±1 floats (accepts 0/1 or -1/+1)."""
    y = np.asarray(y)
    values = set(np.unique(y).tolist())
    if values <= {0, 1}:
        return (2.0 * y - 1.0).astype(np.float32)
    if values <= {-1, 1}:
        return y.astype(np.float32)
    raise RepmapError(f"Labels must be 0/1 or -1/+1, and these have values {sorted(values)[:5]}.")


def labels01(y: np.ndarray, n: int) -> np.ndarray:
    """Labels (n,) as 0/1 ints after checking they align with n rows."""
    y = np.asarray(y).reshape(-1)
    if len(y) != n:
        raise RepmapError(f"There are {len(y)} labels for {n} rows; labels must align with the activations.")
    return ((signed_labels(y) + 1) / 2).astype(np.int64)


def aligned_pair_ids(pair_ids: np.ndarray | None, n: int) -> np.ndarray:
    """Pair ids (n,) as ints (-1: no pair) after checking they align with n rows; all -1 when None."""
    if pair_ids is None:
        return np.full(n, -1)
    ids = np.asarray(pair_ids)
    if ids.ndim == 2 and 1 in ids.shape:  # a column or row vector
        ids = ids.reshape(-1)
    if ids.ndim != 1 or len(ids) != n:
        raise RepmapError(f"There are {ids.size} pair ids (shape {ids.shape}) for {n} rows; pair ids must give one "
                          "whole number per row of the activations (-1 for a row without a pair).")
    if ids.dtype.kind not in "iu" and not (ids.dtype.kind == "f" and np.isfinite(ids).all() and (ids == np.round(ids)).all()):
        raise RepmapError(f"The pair ids are {ids.dtype} values, not whole numbers; give one whole number per row.")
    return ids.astype(np.int64)


class WithinModelFit(BaseEstimator):
    """`λ̃ ≈ A λ + b + y δ`: an affine map plus one task direction.

    `fit(λ (n, d), λ̃ (n, d'), y (n,))` with y in 0/1 or ±1 solves one penalised least-squares
    problem on `[λ, y±, 1]` (`method="lstsq"`; `alpha=None` chooses the ridge penalty on A and δ
    on a seeded held-out `val_frac` of the rows, as `RidgeMap` does; `alpha=0` is plain least
    squares) or runs the paper's gradient descent (`method="gd"`, keeping the step with the lowest
    loss on a held-out `val_frac` and stopping `patience` checks after it; `val_frac=0` reports the
    end state, as the paper). Learned:
    `A_` (d', d), `b_` (d',), `delta_` (d',), `alpha_`, `best_step_` and `n_steps_` (GD).
    """

    def __init__(self, method: str = "lstsq", alpha: float | None = None, lr: float = 1e-2, max_steps: int = 2000,
                 target_loss: float | None = None, callback: StepCallback | None = None, callback_every: int = 10,
                 seed: int = 0, monitor: ParamsMonitor | None = None, val_frac: float | None = None,
                 patience: int = 50):
        self.method = method
        self.alpha = alpha
        self.lr = lr
        self.max_steps = max_steps
        self.target_loss = target_loss
        self.callback = callback
        self.callback_every = callback_every
        self.seed = seed
        self.monitor = monitor
        self.val_frac = val_frac  # None: 0.2 for choosing alpha, 0.1 for GD's stopping
        # GD stops 50 checks (500 steps) after its best held-out loss: the live curve shows the overfitting it avoided
        self.patience = patience

    def fit(self, before: np.ndarray, after: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> WithinModelFit:
        before, after = check_pair(before, after, ("base", "finetuned"))
        y = signed_labels(y)
        if len(y) != len(before):
            raise RepmapError(f"There are {len(y)} labels for {len(before)} rows; labels must align with the activations.")
        X = np.concatenate([before, y[:, None]], axis=1)  # (n, d + 1): the label is one more feature
        t0 = time.perf_counter()
        self.history_, self.alpha_, self.best_step_ = [], 0.0, 0
        if self.method == "lstsq":
            self.alpha_ = self.alpha
            if self.alpha is None:
                self.alpha_, _ = choose_ridge_alpha(X, after, val_frac=self.val_frac or 0.2, seed=self.seed, groups=groups)
            W, c = solve_affine(X, after, alpha=float(self.alpha_))
        elif self.method == "gd":
            p = GDMap(lr=self.lr, max_steps=self.max_steps, target_loss=self.target_loss, callback=self.callback,
                      callback_every=self.callback_every, seed=self.seed, monitor=self.monitor,
                      val_frac=0.1 if self.val_frac is None else self.val_frac, patience=self.patience)
            W, c, self.history_, self.best_step_ = _gd_affine(X, after, p)
        else:
            raise RepmapError(f"Fit method '{self.method}' is not one of lstsq, gd.")
        self.seconds_ = time.perf_counter() - t0
        self.n_steps_ = self.history_[-1][0] if self.history_ else 0
        self.A_ = np.ascontiguousarray(W[:-1].T)  # (d', d)
        self.delta_ = W[-1].copy()  # (d',)
        self.b_ = c
        return self

    def transform(self, before: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Modelled finetuned activations `λ̂ = A λ + b + y δ` (n, d')."""
        return self.transform_without_label(before) + signed_labels(y)[:, None] * self.delta_

    def transform_without_label(self, before: np.ndarray) -> np.ndarray:
        """`A λ + b`: the modelled activations with the label term removed (what a model could
        produce without being told the answer)."""
        return np.asarray(before, dtype=np.float32) @ self.A_.T + self.b_

    def loss(self, before: np.ndarray, after: np.ndarray, y: np.ndarray) -> float:
        """Mean squared error per element (the GD objective)."""
        return float(((self.transform(before, y) - np.asarray(after, np.float32)) ** 2).mean())

    def score(self, before: np.ndarray, after: np.ndarray, y: np.ndarray) -> float:
        return r2_score(after, self.transform(before, y))


# ---------------------------------------------------------------------------------------------
# the protocol


@dataclass(frozen=True)
class WithinResult:
    """Table 1 (or 2) of Gao et al. for one layer, plus what the paper's setup hides."""

    delta_projection_accuracy: float  # sign(λ̃·δ) on held-out rows (the paper's)
    delta_projection_accuracy_centered: float  # sign((λ̃ − μ_train)·δ)
    probe: dict  # name -> {"train", "test"}: base, finetuned, modeled, modeled_without_label, modeled_predicted_label
    fit: dict  # method, alpha, r2_train, r2_test, loss_train, seconds, steps, step_reported, rows, width, n_le_d, note
    delta_cosine: dict  # cosine of δ with the probe directions and with λ̃'s held-out class-mean difference
    n_train: int
    n_test: int
    fit_labels: str  # "ground truth" or "weak"
    history: list = field(default_factory=list)  # GD: [(step, loss)]
    # name -> Estimate: each headline number with its 95% interval and null ("r2_test", "delta_projection_accuracy",
    # "delta_projection_accuracy_centered", "delta_cosine", "probe.<name>")
    intervals: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["intervals"] = {k: e.as_dict() for k, e in self.intervals.items()}  # NaN bounds as None (strict JSON)
        return out


def _acc(pred: np.ndarray, y01: np.ndarray) -> float:
    return float((np.asarray(pred).astype(np.int64) == np.asarray(y01).astype(np.int64)).mean())


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def _mean_difference(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return X[y == 1].mean(0) - X[y == 0].mean(0) if 0 < y.sum() < len(y) else np.full(X.shape[1], np.nan)


def within_model(before: np.ndarray, after: np.ndarray, labels: np.ndarray, *, pair_ids: np.ndarray | None = None,
                 fit_labels: np.ndarray | None = None, method: str = "lstsq", alpha: float | None = None,
                 test_frac: float = 0.2, seed: int = 0, lr: float = 1e-2, max_steps: int = 2000,
                 callback: StepCallback | None = None, live: Callable[[dict], None] | None = None,
                 live_probe_every: int = 10, null_permutations: int = NULL_PERMUTATIONS) -> tuple[WithinResult, WithinModelFit]:
    """Fit `after ≈ A before + b + y δ` on a training split and score it on the held-out rows.

    before, after: (n, d) activations of the same rows before and after finetuning. labels: (n,)
    ground truth (0/1 or ±1), used for every probe and accuracy. fit_labels: labels used to fit δ
    and build λ̂ (weak labels for Table 2); defaults to `labels`. `alpha=None` (default) chooses the
    ridge penalty on held-out training rows; a number fixes it (0: plain least squares). With
    `method="gd"`, `live(metrics)` receives, every few steps, the step, loss, held-out R², δ
    accuracies and the step the fit would report (`best_step`), and (every `live_probe_every`
    updates) the modelled probe's accuracies: Table 1 filling itself in.
    `null_permutations` label shuffles, fitted together on the same split, give the probes' null.
    """
    if alpha is not None and not (np.isfinite(alpha) and alpha >= 0):  # a negative or NaN penalty acted like none
        raise RepmapError(f"The ridge penalty alpha must be a finite number of at least 0, not {alpha}.")
    before, after = check_pair(before, after, ("base", "finetuned"))
    y = labels01(labels, len(before))
    y_fit = y if fit_labels is None else labels01(fit_labels, len(before))
    pair_ids = aligned_pair_ids(pair_ids, len(y))
    groups = groups_of(pair_ids) if (pair_ids >= 0).any() else None
    tr, te = train_test_split_groups(y, pair_ids, test_frac, seed)
    g_te = None if groups is None else groups[te]
    probe, est = {}, {}
    probe["base"], base_probe, est["probe.base"] = held_out_probe(before, y, tr, te, groups)
    probe["finetuned"], ft_probe, est["probe.finetuned"] = held_out_probe(after, y, tr, te, groups)
    monitor: Callable | None = None
    if live is not None:
        mu_tr = after[tr].mean(0)
        updates = [0]

        def live_metrics(step: int, loss: float, W: np.ndarray, c: np.ndarray, best_step: int) -> None:
            A, delta_now = W[:-1], W[-1]  # (d, d'), (d',)
            modeled_te = before[te] @ A + c + (2.0 * y_fit[te] - 1)[:, None] * delta_now
            metrics = {"step": step, "loss": loss, "r2_test": r2_score(after[te], modeled_te), "best_step": best_step,
                       "delta_accuracy": _acc(after[te] @ delta_now > 0, y[te]),
                       "delta_accuracy_centered": _acc((after[te] - mu_tr) @ delta_now > 0, y[te]),
                       "base": probe["base"], "finetuned": probe["finetuned"]}
            if updates[0] % live_probe_every == 0:
                modeled = before @ A + c + (2.0 * y_fit - 1)[:, None] * delta_now
                metrics["modeled"] = held_out_probe(modeled, y, tr, te)[0]
            updates[0] += 1
            live(metrics)

        monitor = live_metrics

    fit = WithinModelFit(method=method, alpha=alpha, lr=lr, max_steps=max_steps, callback=callback, seed=seed,
                         monitor=monitor)
    fit.fit(before[tr], after[tr], y_fit[tr], groups=None if groups is None else groups[tr])
    delta = fit.delta_.astype(np.float64)
    mu = after[tr].mean(0)
    for key, center in (("delta_projection_accuracy", None), ("delta_projection_accuracy_centered", mu)):
        scored = after[te] if center is None else after[te] - center
        e = accuracy_estimate((scored @ delta > 0) == (y[te] == 1), g_te, seed=seed)
        est[key] = with_null(e, *random_direction_accuracy(after[te], y[te], seed=seed, center=center))

    modeled = fit.transform(before, y_fit)  # built from the fit on train rows, applied to all
    probe["modeled"], _, est["probe.modeled"] = held_out_probe(modeled, y, tr, te, groups)
    probe["modeled_without_label"], _, est["probe.modeled_without_label"] = held_out_probe(
        fit.transform_without_label(before), y, tr, te, groups)
    predicted = base_probe.predict(before)  # no true labels on the held-out rows
    probe["modeled_predicted_label"], _, est["probe.modeled_predicted_label"] = held_out_probe(
        fit.transform(before, predicted), y, tr, te, groups)
    # one shuffled-label null serves every probe row: with the link to the rows broken, a held-out
    # accuracy depends on the split's size and balance, not on which representation was probed
    null = shuffled_label_accuracy(before, y, pair_ids, n_permutations=null_permutations, test_frac=test_frac, seed=seed)
    for name in probe:
        est[f"probe.{name}"] = with_null(est[f"probe.{name}"], *null)

    modeled_te = fit.transform(before[te], y_fit[te])
    est["r2_test"] = r2_estimate(after[te], modeled_te, g_te, seed=seed)
    # δ against the held-out rows' class-mean difference of λ̃ (both displacements); null: random directions
    md_te = _mean_difference(after[te], y[te])
    low, high = bootstrap(lambda idx: _cos(delta, _mean_difference(after[te][idx], y[te][idx])), len(te), groups=g_te,
                          n_boot=500, seed=seed, bias_corrected=True)
    rand = np.random.default_rng(seed).normal(size=(200, len(delta)))  # (200, d'): isotropic directions
    null_cos = rand @ md_te / np.maximum(np.linalg.norm(rand, axis=1) * np.linalg.norm(md_te), 1e-30)
    est["delta_cosine"] = Estimate(_cos(delta, md_te), max(low, -1.0), min(high, 1.0), len(te), "bootstrap (held-out pairs)" if g_te is not None
                                   else "bootstrap (held-out rows)", null=0.0, null_high=float(np.percentile(null_cos, 95)))

    n_tr, width = len(tr), before.shape[1] + 1
    fit_info = {"method": method, "alpha": float(fit.alpha_), "alpha_chosen": method == "lstsq" and alpha is None,
                "r2_train": r2_score(after[tr], fit.transform(before[tr], y_fit[tr])), "r2_test": est["r2_test"].value,
                "loss_train": fit.loss(before[tr], after[tr], y_fit[tr]), "seconds": fit.seconds_,
                "steps": fit.n_steps_, "step_reported": int(fit.best_step_) if method == "gd" else 0,
                "rows": n_tr, "width": width, "n_le_d": bool(n_tr <= width)}
    notes = [rows_note(n_tr, width)] if n_tr <= width else []
    if method == "gd":
        notes.append(f"Gradient descent ran {fit.n_steps_} steps; the parameters reported are those of step "
                     f"{fit.best_step_}, the lowest loss on a held-out tenth of the training rows.")
        fit_info["converged"] = not still_improving(fit.best_step_, fit.n_steps_, max_steps, fit.callback_every)
        if not fit_info["converged"]:
            closed = WithinModelFit(method="lstsq", seed=seed).fit(before[tr], after[tr], y_fit[tr])
            fit_info["r2_test_closed_form"] = r2_score(after[te], closed.transform(before[te], y_fit[te]))
            notes.append(f"It had not converged: it was still improving when it reached its limit of {max_steps} steps, "
                         f"so its R² and δ understate the map (the closed form on the same rows reaches held-out R² "
                         f"{fit_info['r2_test_closed_form']:.3f}); raise the step limit, or use the closed form.")
    fit_info["note"] = " ".join(notes)
    result = WithinResult(
        delta_projection_accuracy=est["delta_projection_accuracy"].value,
        delta_projection_accuracy_centered=est["delta_projection_accuracy_centered"].value,
        probe=probe, fit=fit_info,
        # δ is a displacement; a probe's weights are a functional (scaled by inverse feature variance),
        # so the class-mean difference of λ̃, also a displacement, is the like-for-like comparison
        delta_cosine={"base_probe": _cos(delta, base_probe.coef_), "finetuned_probe": _cos(delta, ft_probe.coef_),
                      "finetuned_mean_difference": est["delta_cosine"].value},
        n_train=n_tr, n_test=len(te), fit_labels="ground truth" if fit_labels is None else "weak",
        history=[(int(s), float(v)) for s, v in fit.history_], intervals=est,
    )
    return result, fit


WITHIN_NAMES = {"base": "base λ", "finetuned": "finetuned λ̃", "modeled": "modelled λ̂ = Aλ+b+yδ (uses the true label)",
                "modeled_without_label": "modelled without label, Aλ+b",
                "modeled_predicted_label": "modelled with predicted label, Aλ+b+ŷδ"}


def within_table(result: WithinResult) -> list[dict]:
    """Rows of the Table 1-style table: representation, train and test accuracy, the test
    accuracy's 95% interval and the shuffled-label null (as text)."""
    from repmap_core.analysis.stats import format_null

    rows = []
    for k, v in result.probe.items():
        e: Estimate | None = result.intervals.get(f"probe.{k}")
        rows.append({"representation": WITHIN_NAMES[k], "train": v["train"], "test": v["test"],
                     "test 95% interval": "–" if e is None else f"[{e.low:.3f}, {e.high:.3f}]",
                     "null (shuffled labels)": "–" if e is None else format_null(e) or "–"})
    return rows
