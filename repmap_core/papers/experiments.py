"""The recipes that run a paper end to end (finetune or load, extract, fit), for the CLI, the presets
and users' GPU machines; each result carries the paper's numbers (`published.py`) beside its own.

- `within_recipe` (Gao, Sun, Jiao §3): `λ̃ ≈ A λ + b + y δ`, Table 1 / 2, by `analysis.within.within_model`.
- `between_recipe` (Gao et al. §2): a map source -> target and the source probe carried across, by
  `analysis.between.between_models`.
- `rimsky_recipe`, `lrt_recipe`: CAA vectors of two models compared; a vector carried by a map (LRT).

The protocols and their result dataclasses live beside the analyses they run (`analysis/within.py`,
`analysis/between.py`); import them from there.
"""
from __future__ import annotations

import numpy as np

from repmap_core.analysis.between import between_models
from repmap_core.analysis.within import within_model, within_table
from repmap_core.papers.published import (
    GAO_BETWEEN_VECTOR_ACCURACY,
    GAO_DELTA_ACCURACY,
    GAO_TABLE1,
    GAO_TABLE2_HH_WEAK,
    LRT_PUBLISHED,
)
from repmap_core.progress import silent

__all__ = ["between_recipe", "lrt_recipe", "rimsky_recipe", "within_recipe"]

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
    from repmap_core.capture.activations import get_activations
    from repmap_core.capture.models import model_info, resolve_layers, resolve_model, site_name
    from repmap_core.data.load import load_dataset
    from repmap_core.finetune.checkpoints import weak_labels
    from repmap_core.finetune.train import FinetuneConfig, finetune, validation_split

    report = progress or silent
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
    from repmap_core.capture.activations import get_activations
    from repmap_core.capture.models import site_name
    from repmap_core.data.load import load_dataset

    report = progress or silent
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
                  method: str = "mean_diff", chat_template: tuple[bool, bool] = (True, True), progress=None) -> dict:
    """Rimsky, "Comparing representation vectors between llama 2 base and chat": CAA vectors per
    layer for both models; their cosine per layer, each model's layer x layer cosines, and a 2-D
    PCA of the normalised vectors. `chat_template` says, per model, whether its questions go in its chat
    template (a base model has none, so it reads them as plain text either way). Example (a GPU
    machine): `rimsky_recipe("meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-chat-hf", "file:sycophancy.jsonl")`."""
    from repmap_core.data.load import load_dataset
    from repmap_core.steering import compute_vectors, cosine_per_layer, layer_cosines, vector_pca

    report = progress or silent
    dataset = data if not isinstance(data, str) else load_dataset(data, limit=limit, seed=seed)
    sets = {}
    for i, (name, model) in enumerate((("base", base), ("chat", chat))):
        sets[name] = compute_vectors(model, dataset, layers, method=method, seed=seed, use_chat_template=chat_template[i],
                                     progress=lambda f, m, i=i: report((i + f) / 2, m))
    per_layer = cosine_per_layer(sets["base"].vectors, sets["chat"].vectors)
    pca = vector_pca({k: v.vectors for k, v in sets.items()})
    out = {"base": base, "chat": chat, "data": dataset.name, "pairs": int(len(np.unique(dataset.pair_ids))),
           "method": method, "chat_template": list(chat_template), "letter_balance": sets["base"].balance.sentence(),
           "cosine_per_layer": {str(k): v for k, v in per_layer.items()}}
    for name, vs in sets.items():
        ls, C = layer_cosines(vs.vectors)
        out[name] = {"layers": ls, "layer_cosine": C.tolist(), "norms": [vs.vectors[L].norm for L in ls],
                     "pca": pca[name][1].tolist()}
    report(1.0, "Done")
    return out


def lrt_recipe(source: str, target: str, data, *, source_layer: int, target_layer: int, limit: int | None = None,
               seed: int = 0, multipliers=(-1.0, -0.5, 0.0, 0.5, 1.0), with_bias: bool = False, map_method: str = "ridge",
               scale: str = "spread", progress=None) -> dict:
    """LRT (Bello et al. 2025): steer the target with its own CAA vector and with the source's
    vector carried across a map fitted on the two models' activations (as `A v`, a displacement's
    image; `with_bias=True` adds the map's bias, see `transfer_and_compare`); compare the propensity curves on held-out questions
    (Pearson r with a bootstrap interval and MSE, their Table 1), beside a random direction's curve.
    Questions are asked in both letter orders; multipliers are in units of the target layer's
    residual spread (`scale="raw"` for the paper's raw multipliers). Example (a GPU machine):
    `lrt_recipe("google/gemma-2-2b", "google/gemma-2-9b", "file:corrigible.jsonl", source_layer=20, target_layer=20)`."""
    from repmap_core.capture.models import load_model
    from repmap_core.data.load import load_dataset
    from repmap_core.steering import compute_vectors, transfer_and_compare

    report = progress or silent
    dataset = data if not isinstance(data, str) else load_dataset(data, limit=limit, seed=seed)
    tgt_lm = load_model(target, head=True)
    loader = lambda resolved, device, dtype: tgt_lm if resolved.path == tgt_lm.resolved.path else load_model(  # noqa: E731
        resolved, device=device, dtype=dtype)
    src = compute_vectors(source, dataset, [source_layer], seed=seed, loader=loader, progress=lambda f, m: report(0.2 * f, m))
    tgt = compute_vectors(target, dataset, [target_layer], seed=seed, loader=loader,
                          progress=lambda f, m: report(0.2 + 0.2 * f, m))
    Ls, Lt = next(iter(src.vectors)), next(iter(tgt.vectors))
    report(0.5, "Fitting the map and steering the target with both vectors and a random direction")
    out = transfer_and_compare(src, tgt, tgt_lm, Ls, Lt, multipliers, map_method=map_method, with_bias=with_bias,
                               scale=scale, loader=loader, seed=seed)
    report(1.0, "Done")
    sweep = out.native_sweep
    return {"source": {"model": source, "layer": Ls}, "target": {"model": target, "layer": Lt}, "data": dataset.name,
            "held_out_questions": int(len(np.unique(tgt.held_out_groups()))), "held_out_prompts": out.native.n_questions,
            "letter_balance": tgt.balance.sentence(), "scale": scale,
            "map": {"method": map_method, "r2_test": out.map_r2_test, "with_bias": with_bias},
            "cosine_native_vs_carried": out.cosine, "native": out.native.as_dict(), "transferred": out.transferred.as_dict(),
            "random_direction": None if out.random is None else out.random.as_dict(),
            "native_slope": None if sweep is None else sweep.slope.value,
            "native_slope_interval": None if sweep is None else [sweep.slope.low, sweep.slope.high],
            "verdict": None if sweep is None else sweep.verdict,
            "comparison": out.comparison, "published": LRT_PUBLISHED}
