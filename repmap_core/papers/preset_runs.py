"""Running a preset: its recipe from `experiments.py` on the full or the scaled-down setup, and a table
of the paper's numbers beside this run's (with a note when the data is too small to show the
paper's direction).

    >>> run(PRESETS["gao-between"], scaled=True).table    # doctest: +SKIP
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from repmap_core.capture.models import model_info, resolve_model
from repmap_core.errors import RepmapError
from repmap_core.finetune.train import FinetuneConfig
from repmap_core.jsonable import to_json_values
from repmap_core.papers.experiments import between_recipe, lrt_recipe, rimsky_recipe, within_recipe
from repmap_core.papers.preset_needs import check
from repmap_core.papers.preset_table import SCALED_LABEL, SMOLLM2, Preset, Setup, get_preset
from repmap_core.papers.published import LRT_PUBLISHED
from repmap_core.progress import Progress, silent
from repmap_core.share.figures_steering import lrt_numbers


@dataclass(frozen=True)
class PresetRun:
    """A finished run: the table (published vs this run), the recipe's own output, and what ran."""

    preset: str
    scaled: bool
    label: str  # SCALED_LABEL, or the full setup's description
    table: list  # rows {"quantity", "published", "this run"}
    published: dict
    raw: dict
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def run(preset: Preset | str, scaled: bool = True, progress: Progress | None = None,
        stand_in: str | None = None) -> PresetRun:
    """Run the preset (full, or scaled down to SmolLM2 on built-in real data) through the existing
    recipes; return its numbers beside the published ones. The full version is refused in one
    sentence when `check` finds a problem. `stand_in` replaces SmolLM2 in a scaled run (another
    model id or folder: a quicker model, for tests or a first look)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    problems = check(preset, scaled)
    if problems:
        more = "" if len(problems) == 1 else f"; and {len(problems) - 1} more problem(s), listed by `preset list`"
        raise RepmapError(problems[0].rstrip(".") + more + ".")
    report = progress or silent
    setup = preset.setup(scaled)
    if scaled and stand_in:
        setup = replace(setup, models=tuple(replace(m, name=stand_in) if m.name == SMOLLM2 else m for m in setup.models))
    started = time.perf_counter()
    raw, table = RUNNERS[preset.recipe](preset, setup, report)
    report(1.0, "Done")
    label = SCALED_LABEL if scaled else f"full: {', '.join(m.name for m in setup.models)} on {setup.data}"
    return PresetRun(preset.name, scaled, label, table, preset.published, to_json_values(raw),
                     round(time.perf_counter() - started, 2))


def _row(quantity: str, published, this_run) -> dict:
    return {"quantity": quantity, "published": published, "this run": this_run}


def _finetune_config(setup: Setup):
    return FinetuneConfig(seed=0, **setup.params["finetune"])


def _within(preset: Preset, setup: Setup, report: Progress, weak: bool = False) -> tuple[dict, list]:
    p = setup.params
    kwargs = dict(layer=p["layer"], position=p["position"], limit=p.get("limit"), finetune_frac=p["finetune_frac"],
                  finetune_config=_finetune_config(setup))
    model = setup.models[0].name
    out = within_recipe(model, setup.data, progress=(lambda f, m: report(0.5 * f, m)) if weak else report, **kwargs)
    key = "table1"
    if weak:  # Table 2: δ fitted on the labels the finetuned model gives the analysed rows
        out = within_recipe(model, setup.data, weak_model=out["finetune"]["path"],
                            progress=lambda f, m: report(0.5 + 0.5 * f, m), **kwargs)
        key = "table2"
    probe, pub = out["within"]["probe"], preset.published[key]
    table = []
    for name, label in (("base", "base λ"), ("finetuned", "finetuned λ̃"), ("modeled", "modelled λ̂ = Aλ+b+yδ")):
        for i, split in enumerate(("train", "test")):
            table.append(_row(f"probe accuracy, {label}, {split}", pub[name][i], probe[name][split]))
    table.append(_row("sign(λ̃·δ) accuracy", preset.published.get("delta_accuracy"),
                      out["within"]["delta_projection_accuracy"]))
    table.append(_row("fit R² (held out)", None, out["within"]["fit"]["r2_test"]))
    fit = out["within"]["fit"]
    if probe["finetuned"]["test"] < probe["base"]["test"] or probe["modeled"]["test"] <= probe["base"]["test"] \
            or fit.get("n_le_d"):
        width = f"; {fit['rows']} fitting rows for {fit['width']} features, so ridge with a held-out alpha" if fit.get("n_le_d") else ""
        table.append(_row("note", None, f"too small to show the paper's direction reliably: {out['rows']['finetune']} rows "
                                        f"finetuned, {out['rows']['analysed']} analysed (the paper: thousands){width}"))
    return out, table


def _between(preset: Preset, setup: Setup, report: Progress) -> tuple[dict, list]:
    p = setup.params
    out = between_recipe(setup.models[0].name, setup.models[1].name, setup.data, limit=p.get("limit"), source_layer=p["source_layer"],
                         target_layer=p["target_layer"], position=p["position"], method=p["method"], progress=report)
    b = out["between"]
    table = [_row("probe carried as A w: sign(t·Aw) accuracy", preset.published["vector_transfer_accuracy"],
                  b["transfer"]["vector"]),
             _row("probe carried as a readout (ridge of its scores on target activations), accuracy", None,
                  b["transfer"]["functional"]),
             _row("map R² (held out)", None, b["map"]["r2_test"]),
             _row("source probe accuracy (test)", None, b["probe"]["source"]["test"]),
             _row("target probe accuracy (test)", None, b["probe"]["target"]["test"]),
             _row("linear CKA source vs target", None, b["similarity"]["linear_cka"])]
    return out, table


def _pca_turn_layer(layers: list[int], xy: np.ndarray) -> int:
    """The layer where a 2-D trace is furthest from the chord joining its ends (the top of an arch)."""
    xy = np.asarray(xy, np.float64)
    a, b = xy[0], xy[-1]
    chord = b - a
    n = np.array([-chord[1], chord[0]]) / max(np.linalg.norm(chord), 1e-30)
    return int(layers[int(np.argmax(np.abs((xy - a) @ n)))])


def _rimsky(preset: Preset, setup: Setup, report: Progress) -> tuple[dict, list]:
    p = setup.params
    base, chat = setup.models[0].name, setup.models[1].name
    out = rimsky_recipe(base, chat, setup.data, layers=p["layers"], limit=p.get("limit"),
                        chat_template=p.get("chat_template", (True, True)), progress=report)
    cos = {int(k): v for k, v in out["cosine_per_layer"].items()}
    layers = sorted(cos)
    after_turn = [L for L in layers if L > layers[len(layers) // 2]]
    neighbours = np.asarray(out["base"]["layer_cosine"])
    pub = preset.published
    table = [_row("base vs chat cosine, first layer", pub["base_vs_chat_cosine_early_layers"], cos[layers[0]]),
             _row("base vs chat cosine, lowest (layer)", None, f"{min(cos.values()):.3f} (layer {min(cos, key=cos.get)})"),
             _row(f"base vs chat cosine, around layer {pub['rebound_layer']} (here: deepest layers, mean)",
                  pub["base_vs_chat_cosine_rebound"], float(np.mean([cos[L] for L in after_turn])) if after_turn else None),
             _row("layer where the PCA trace of base vectors turns", "11–12",
                  _pca_turn_layer(out["base"]["layers"], out["base"]["pca"])),
             _row("neighbouring-layer cosine, base (mean)", None, float(np.mean(np.diag(neighbours, 1))))]
    return out, table


def _lrt(preset: Preset, setup: Setup, report: Progress) -> tuple[dict, list]:
    p = setup.params
    target = setup.models[1].name
    # the target block was measured on SmolLM2; a stand-in (or no block given) takes its own middle block
    measured_here = p["target_layer"] is not None and target == SMOLLM2
    layer = p["target_layer"] if measured_here else model_info(resolve_model(target)).n_layers // 2
    out = lrt_recipe(setup.models[0].name, target, setup.data, source_layer=p["source_layer"], target_layer=layer,
                     multipliers=p["multipliers"], limit=p.get("limit"), progress=report)
    lo, hi = LRT_PUBLISHED["lrt_pearson_r_range"]
    mlo, mhi = LRT_PUBLISHED["lrt_mse_range"]
    cmp = out["comparison"]
    numbers = lrt_numbers(cmp)
    published = {"Pearson r, native vs carried": f"{lo}–{hi}", "MSE, native vs carried": f"{mlo}–{mhi}"}
    table = [_row(name, published.get(name), value) for name, value in numbers.items()]
    table += [_row("cosine native vs carried vector", None, out["cosine_native_vs_carried"]),
              _row("map R² (held out)", None, out["map"]["r2_test"])]
    return out, table


RUNNERS = {"within": _within, "within_weak": lambda p, s, r: _within(p, s, r, weak=True), "between": _between,
           "rimsky": _rimsky, "lrt": _lrt}
