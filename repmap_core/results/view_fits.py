"""The fits two views make on a computed result, as frozen dataclasses: the within-model fit on the
finetuning shift (λ̃ ≈ Aλ + b + yδ at one layer) and the Across page's map on one layer pair. Each is
built by one function from the view's result and the fit form's options; the page only draws.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from repmap_core.errors import RepmapError
from repmap_core.results.manifests import map_export, map_manifest, within_export
from repmap_core.results.view_results import AcrossResult, ShiftResult

GROUND_TRUTH = "ground truth"  # the within fit's `labels` option when δ is fitted with the true labels


@dataclass(frozen=True, eq=False)
class WithinFitResult:
    """λ̃ ≈ Aλ + b + yδ fitted at one layer of a `ShiftResult`."""

    result: object  # a `within.WithinResult`
    layer: int
    points: list = field(default_factory=list)  # gradient descent's live metrics, one dict per reported step
    arrays: tuple | None = None  # (tensors, manifest) of `manifests.within_export`: A, b and δ
    options: dict | None = None  # layer, method, alpha, steps, test, labels (GROUND_TRUTH or a weak model's folder)


@dataclass(frozen=True, eq=False)
class AcrossFitResult:
    """A map from the source layer to the target layer of an `AcrossResult`."""

    result: object  # a `between.BetweenResult`
    layers: tuple  # (source layer, target layer)
    request: dict  # method, alpha, rank, steps, test_frac, seed
    history: list = field(default_factory=list)  # gradient descent: (step, loss, held-out R², best step)
    A: np.ndarray | None = None  # (d_t, d_s); None for a non-linear map
    b: np.ndarray | None = None  # (d_t,)
    manifest: dict = field(default_factory=dict)  # `manifests.map_manifest`
    arrays: tuple | None = None  # (tensors, manifest) of `manifests.map_export`: A, b and the carried probe


def within_fit(shift: ShiftResult, options: dict, *, live: Callable[[dict], None] | None = None) -> WithinFitResult:
    """Fit at `options["layer"]` with `options` (method lstsq|gd, alpha 'auto' or a number, steps, test
    fraction, labels: GROUND_TRUTH or a finetuned weak model whose predictions label the rows).
    `live(metrics)` is called as gradient descent goes."""
    from repmap_core.analysis.affine import parse_alpha
    from repmap_core.analysis.within import within_model

    base, ft, layer = shift.base, shift.finetuned, options["layer"]
    fit_labels = None
    if options["labels"] != GROUND_TRUTH:
        from repmap_core.finetune.checkpoints import weak_labels

        fit_labels = weak_labels(options["labels"], shift.dataset).labels
    points: list = []

    def step(m: dict) -> None:
        points.append(m)
        if live is not None:
            live(m)

    res, fitted = within_model(base[layer], ft[layer], base.labels, pair_ids=base.pair_ids, fit_labels=fit_labels,
                               method=options["method"], alpha=parse_alpha(options["alpha"]), test_frac=options["test"],
                               max_steps=int(options["steps"]), live=step if options["method"] == "gd" else None)
    arrays = within_export(fitted.A_, fitted.b_, fitted.delta_, res, base.manifest, ft.manifest, layer,
                           {"method": options["method"], "alpha": res.fit["alpha"], "alpha_chosen": res.fit["alpha_chosen"],
                            "max_steps": int(options["steps"]), "test_frac": float(options["test"]),
                            "labels_from": options["labels"]})
    return WithinFitResult(res, layer, points, arrays, dict(options))


def map_params(method: str, alpha: str, rank: int, steps: int, seed: int) -> dict:
    """The map's parameters from the fit form: ridge's alpha ('auto': chosen on held-out rows), a rank, steps."""
    if method == "ridge":
        if alpha.strip().lower() == "auto":
            return {"alpha": None, "seed": seed}
        try:
            value = float(alpha)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise RepmapError(f"Ridge alpha must be 'auto' or a positive number, not '{alpha}'.")
        return {"alpha": value}
    # GD keeps the parameters best on a held-out tenth of the training rows (n ≈ d overfits otherwise)
    return {"lowrank": {"rank": rank}, "gd": {"max_steps": steps, "seed": seed, "val_frac": 0.1},
            "updown": {"max_steps": steps, "seed": seed}, "mlp": {"seed": seed}}.get(method, {})


def _monitor(S: np.ndarray, T: np.ndarray, aset, test_frac: float, seed: int, history: list,
             on_step: Callable[[list], None] | None):
    """A GDMap monitor: held-out R² on the split `between_models` will use, appended to `history`."""
    from repmap_core.analysis.maps import r2_score
    from repmap_core.analysis.splits import train_test_split_groups

    _, te = train_test_split_groups(aset.labels, aset.pair_ids, test_frac, seed)

    def monitor(step: int, loss: float, W: np.ndarray, c: np.ndarray, best_step: int) -> None:
        history.append((int(step), float(loss), r2_score(T[te], S[te] @ W + c), int(best_step)))
        if on_step is not None:
            on_step(history)

    return monitor


def across_fit(across: AcrossResult, layers: tuple[int, int], req: dict, *,
               on_step: Callable[[list], None] | None = None) -> AcrossFitResult:
    """Fit `req["method"]` from source layer `layers[0]` to target layer `layers[1]` on a training split,
    score it and the source probe carried across on the held-out rows. Gradient descent calls
    `on_step(history)` after each recorded step (the history so far)."""
    from repmap_core.analysis.between import between_models, transferred_probe

    src, tgt = across.source, across.target
    S, T = np.asarray(src[layers[0]]), np.asarray(tgt[layers[1]])
    params = map_params(req["method"], req["alpha"], req["rank"], req["steps"], req["seed"])
    history: list = []
    extra = {"monitor": _monitor(S, T, src, req["test_frac"], req["seed"], history, on_step)} if req["method"] == "gd" else {}
    res, fitted = between_models(S, T, src.labels, pair_ids=src.pair_ids, method=req["method"],
                                 test_frac=req["test_frac"], seed=req["seed"], map_params=dict(params, **extra))
    manifest = map_manifest(src.manifest, tgt.manifest, layers, req["method"], params, res, req["test_frac"], req["seed"])
    arrays = None
    if hasattr(fitted, "A_"):  # an affine map: A, b and the source probe carried through it
        probe = transferred_probe(S, src.labels, fitted, target=T, pair_ids=src.pair_ids, test_frac=req["test_frac"],
                                  seed=req["seed"])
        arrays = map_export(fitted.A_, fitted.b_, manifest, probe)
    return AcrossFitResult(res, tuple(layers), req, history, getattr(fitted, "A_", None), getattr(fitted, "b_", None),
                           manifest, arrays)
