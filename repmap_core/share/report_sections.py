"""The report's sections, one per view: what each page shows, drawn again from its saved state (the
view's result dataclass, `view_results` and `view_fits`: figures, tables, metrics with their
intervals and nulls, and the manifests behind them).

`SECTIONS[view](states, settings, beside) -> Section`; `report.render_html` turns sections into the page.
`beside` maps a view to the sentence of a paper's published number the caller wants printed beside this
run's (the CLI and the Share page hand `papers.published.BESIDE_A_RUN`); share/ holds no paper's numbers.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from repmap_core.analysis.projection import joint_project, project, sample_rows
from repmap_core.analysis.separation import best_layer
from repmap_core.analysis.similarity import layer_similarity
from repmap_core.analysis.similarity_null import NULL_PERMUTATIONS
from repmap_core.analysis.stats import format_estimate, format_null
from repmap_core.analysis.within import within_table
from repmap_core.capture.model_config import short_name
from repmap_core.capture.model_layout import site_name
from repmap_core.data.class_names import class_names
from repmap_core.share.bundle import VIEWS
from repmap_core.share.figures import layer_grid, separation_curve
from repmap_core.share.figures_across import (
    METRIC_NAMES,
    best_matches,
    fit_curve,
    per_dim_error,
    side_by_side,
    similarity_heatmap,
    transfer_table,
)
from repmap_core.share.figures_shift import live_fit, separation_compare, shift_scatter
from repmap_core.share.figures_steering import (
    agreement_table,
    lrt_numbers,
    preview_table,
    propensity_plot,
    rimsky_figures,
    sentiment_examples,
    sentiment_plot,
    side_effect_plot,
    vector_norms,
    vector_table,
)
from repmap_core.steering.sentiment import OPENINGS

REPORT_POINTS = 1000  # rows per scatter in the report: SVG, not WebGL, so it stays light and prints
REPORT_GRID_LAYERS = 12
MANIFEST_KEYS = ("model", "revision", "model_source", "dataset_spec", "dataset_fingerprint", "n_rows", "layers",
                 "position", "max_length", "dtype", "device", "key", "created", "versions", "bundle_rows")


@dataclass
class Section:
    """One view's part of the report, in the order drawn: ("metrics", dict), ("figure", fig),
    ("table", frame), ("text", str), ("settings", dict)."""

    view: str
    title: str
    blocks: list = field(default_factory=list)

    def metrics(self, values: dict) -> None:
        self.blocks.append(("metrics", values))

    def figure(self, fig: go.Figure, name: str) -> None:
        self.blocks.append(("figure", (fig, name)))

    def table(self, frame: pd.DataFrame, caption: str = "") -> None:
        self.blocks.append(("table", (frame, caption)))

    def text(self, value: str) -> None:
        self.blocks.append(("text", value))

    def settings(self, name: str, values: dict) -> None:
        self.blocks.append(("settings", (name, values)))


def activation_manifest(manifest: dict, layers: list[int] | None = None) -> dict:
    """The parts of an `ActivationSet.manifest` a reader needs to reproduce it, plus its layers."""
    out = {k: manifest[k] for k in MANIFEST_KEYS if k in manifest}
    if layers is not None:
        out["layers"] = list(layers)
    return out


def _fmt(x: Any) -> str:
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.3f}"
    return str(x)


# ------------------------------------------------------------------------------- one section per view

def _explorer(states: dict, settings: dict, beside: dict[str, str]) -> Section:
    res = states["explorer.result"]
    aset, rows, dataset = res.aset, res.rows, res.dataset
    s = Section("explorer", VIEWS["explorer"].title)
    best = best_layer(rows)
    best_row = next(r for r in rows if r.layer == best)
    cv = best_row.cv_estimate()
    s.metrics({"Best layer": best, "Probe accuracy there (cv)": format_estimate(cv),
               "Shuffled-label null there": format_null(cv, 3) or "–", "Rows": f"{aset.n:,}", "Width": aset.d})
    s.figure(separation_curve(rows), "separation by layer")
    s.text("Band: the cross-validated accuracy's 95% interval. Grey: the same probe trained and scored on shuffled "
           "labels, its mean up to its 95th percentile.")
    seed = int(settings.get("explorer.seed", 0))
    chosen = [L for L in settings.get("explorer.shown", ()) if L in aset.layers][:REPORT_GRID_LAYERS]
    shown = chosen or spread_layers(aset.layer_list, best)
    idx = sample_rows(aset.labels, min(int(settings.get("explorer.max_points", REPORT_POINTS)), REPORT_POINTS), seed)
    coords = {L: project(np.asarray(aset[L])[idx], "pca", seed) for L in shown}
    s.figure(layer_grid(coords, aset.labels[idx], [dataset.texts[i] for i in idx], method="pca",
                        label_names=class_names(dataset)), "PCA of each layer")
    if len(idx) < aset.n:
        s.text(f"The projections show a seeded sample of {len(idx):,} of {aset.n:,} rows (both classes in proportion).")
    if not chosen:
        s.text(f"Layers {', '.join(map(str, shown))}: the first, a quarter, half way, the best and the last (no layers "
               "were chosen on the page).")
    s.table(separation_table(rows), "Separation of the label at each layer")
    s.settings("Request", res.request)
    s.settings("Activations", activation_manifest(aset.manifest, aset.layer_list))
    return s


def spread_layers(layers: list[int], best: int) -> list[int]:
    """A spread of `layers` that includes the best one: the first, a quarter, half way, the best and the last."""
    picks = {layers[0], layers[len(layers) // 4], layers[len(layers) // 2], best, layers[-1]}
    return sorted(L for L in picks if L in layers)


def separation_table(rows) -> pd.DataFrame:
    """The per-layer separation as a reader wants it (seven columns, intervals written out), not the 17 fields of
    `LayerSeparation` (its table was 1,959 px wide in the report; the page's CSV keeps every field)."""
    def iv(value, low, high) -> str:
        return f"{value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if np.isfinite(low) and np.isfinite(high) else "")

    return pd.DataFrame([{"layer": r.layer, "site": site_name(r.layer),
                          "probe accuracy, cross-validated [95%]": iv(r.probe_cv_acc, r.probe_cv_low, r.probe_cv_high),
                          "held-out 20% [95%]": iv(r.probe_test_acc, r.probe_test_low, r.probe_test_high),
                          "shuffled-label null (95th percentile)": iv(r.null_acc, float("nan"), float("nan"))
                          + (f" ({r.null_high:.3f})" if np.isfinite(r.null_high) else "") if np.isfinite(r.null_acc) else "–",
                          "silhouette": r.silhouette, "Fisher ratio": r.fisher} for r in rows]).set_index("layer")


def _shift_manifests(s: Section, res) -> None:
    s.settings("Request", res.request)
    s.settings("Base activations", activation_manifest(res.base.manifest, res.base.layer_list))
    s.settings("Finetuned activations", activation_manifest(res.finetuned.manifest, res.finetuned.layer_list))


def _shift(states: dict, settings: dict, beside: dict[str, str]) -> Section:
    res = states["shift.result"]
    base, ft, ds = res.base, res.finetuned, res.dataset
    before, after = res.rows["base"], res.rows["finetuned"]
    s = Section("shift", VIEWS["shift"].title)
    gain = {r.layer: f.probe_cv_acc - r.probe_cv_acc for r, f in zip(before, after)}
    top = max(gain, key=gain.get)
    s.metrics({"Rows": f"{base.n:,}", "Largest probe gain at layer": top, "Gain there": f"{gain[top]:+.3f}",
               "Gain at the last layer": f"{gain[base.layer_list[-1]]:+.3f}"})
    s.figure(separation_compare(before, after), "separation before and after")
    layer = settings.get("shift.layer", base.layer_list[-1])
    layer = layer if layer in base.layers else base.layer_list[-1]
    idx = sample_rows(base.labels, REPORT_POINTS, 0)
    before_xy, after_xy = joint_project([np.asarray(base[layer])[idx], np.asarray(ft[layer])[idx]], "pca", 0)
    s.figure(shift_scatter(before_xy, after_xy, base.labels[idx], [ds.texts[i] for i in idx],
                           arrows=int(settings.get("shift.arrows", 300)),
                           title=f"Layer {layer}: open = before, filled = after (PCA of both)"), f"shift at layer {layer}")
    s.table(pd.DataFrame([{"layer": r.layer, "probe cv acc before": r.probe_cv_acc, "after": f.probe_cv_acc,
                           "gain": f.probe_cv_acc - r.probe_cv_acc}
                          for r, f in zip(before, after)]).set_index("layer"),
            "Probe accuracy (cross-validated) before and after finetuning")
    if note := res.in_sample_note():
        s.text(note)
    _shift_manifests(s, res)
    return s


def _within(states: dict, settings: dict, beside: dict[str, str]) -> Section:
    done = states["within.result"]
    res = done.result
    s = Section("within", VIEWS["within"].title)
    iv = res.intervals
    if iv:
        s.metrics({"sign(λ̃·δ) accuracy": format_estimate(iv["delta_projection_accuracy"]),
                   "sign((λ̃−μ)·δ) accuracy": format_estimate(iv["delta_projection_accuracy_centered"]),
                   "Held-out R²": format_estimate(iv["r2_test"]),
                   "cos(δ, class-mean difference)": format_estimate(iv["delta_cosine"])})
        s.text("Nulls (random directions): sign(λ̃·δ) " + format_null(iv["delta_projection_accuracy"]) + "; centred "
               + format_null(iv["delta_projection_accuracy_centered"]) + "; cosine " + format_null(iv["delta_cosine"]) + ".")
    else:  # a result saved before intervals existed
        s.metrics({"sign(λ̃·δ) accuracy": f"{res.delta_projection_accuracy:.3f}",
                   "sign((λ̃−μ)·δ) accuracy": f"{res.delta_projection_accuracy_centered:.3f}",
                   "Held-out R²": f"{res.fit['r2_test']:.3f}",
                   "cos(δ, class-mean difference)": f"{res.delta_cosine['finetuned_mean_difference']:.3f}"})
    if res.fit.get("note"):
        s.text(res.fit["note"])
    if done.points:
        s.figure(live_fit(done.points), "gradient-descent fit")
    table_no = "2" if res.fit_labels == "weak" else "1"
    s.table(pd.DataFrame(within_table(res)).set_index("representation"),
            f"Table {table_no}: linear probe accuracy, layer {done.layer}")
    s.settings("Fit", dict(res.fit, layer=done.layer, labels=res.fit_labels, n_train=res.n_train, n_test=res.n_test,
                           delta_cosine=res.delta_cosine))
    if "shift.result" in states:
        _shift_manifests(s, states["shift.result"])
    return s


def _across(states: dict, settings: dict, beside: dict[str, str]) -> Section:
    res = states["across.result"]
    src, tgt, dataset = res.source, res.target, res.dataset
    s = Section("across", VIEWS["across"].title)
    same = res.same_model
    names = (short_name(src.manifest["model"]), short_name(tgt.manifest["model"]))
    metric = settings.get("across.metric", "cka_debiased")
    sims = res.sims or {}
    sim = sims.get(metric) or sims.get("cka_debiased") or sims.get("linear_cka") or layer_similarity(
        src.layers, tgt.layers, "cka_debiased", null_permutations=NULL_PERMUTATIONS)
    best = best_matches(sim, exclude_same_layer=same)
    s.metrics({"Rows": f"{src.n:,}", "Source": f"{names[0]} ({src.d} wide)", "Target": f"{names[1]} ({tgt.d} wide)",
               "Similarity": METRIC_NAMES.get(sim.metric, sim.metric)})
    s.figure(similarity_heatmap(sim, names[0], names[1], exclude_same_layer=same), "layer similarity")
    s.text("Best match per source layer: " + ", ".join(f"{a}→{b}" for a, b in best.items()))
    ls = states.get("across.layer_s", src.layer_list[-1])
    lt = states.get("across.layer_t", tgt.layer_list[-1])
    ls = ls if ls in src.layers else src.layer_list[-1]
    lt = lt if lt in tgt.layers else tgt.layer_list[-1]
    idx = sample_rows(src.labels, REPORT_POINTS, 0)
    coords = [project(np.asarray(a[L])[idx], "pca", 0) for a, L in ((src, ls), (tgt, lt))]
    s.figure(side_by_side(coords[0], coords[1], src.labels[idx], [dataset.texts[i] for i in idx],
                          titles=(f"{names[0]} layer {ls} (PCA)", f"{names[1]} layer {lt} (PCA)")), "side by side")
    s.settings("Request", res.request)
    s.settings("Source activations", activation_manifest(src.manifest, src.layer_list))
    s.settings("Target activations", activation_manifest(tgt.manifest, tgt.layer_list))
    fit = states.get("across.fit")
    if fit is not None:
        r, m = fit.result, fit.result.map
        fs, ft_ = fit.layers
        iv = getattr(r, "intervals", {}) or {}
        show = lambda key, value: format_estimate(iv[key]) if key in iv else f"{value:.3f}"  # noqa: E731
        metrics = {"Map": f"{m['method']}: layer {fs} → layer {ft_}", "R² train": show("map.r2_train", m["r2_train"]),
                   "R² test": show("map.r2_test", m["r2_test"]), "Mean cosine (test)": show("map.mean_cosine", m["mean_cosine"]),
                   "Retrieval top-1 (test)": show("map.retrieval_top1", m["retrieval_top1"]),
                   "Probe on source (test)": show("probe.source", r.probe["source"]["test"]),
                   "Probe on target (test)": show("probe.target", r.probe["target"]["test"])}
        if r.transfer.get("vector") is not None:
            metrics.update({"Transfer: functional (readout)": show("transfer.functional", r.transfer["functional"]),
                            "Transfer: vector A w": show("transfer.vector", r.transfer["vector"])})
            if "transfer.vector_centered" in iv:
                metrics["Transfer: vector A w, centred"] = format_estimate(iv["transfer.vector_centered"])
        s.metrics(metrics)
        if "transfer.functional" in iv:
            s.text(f"Nulls: random directions of the target space {format_null(iv['transfer.functional'])} (with intercept), "
                   f"{format_null(iv['transfer.vector'])} (uncentred, as A w is scored); shuffled labels for the probes "
                   f"{format_null(iv['probe.target'])}." + (f" {beside['across']}" if "across" in beside else ""))
        if m.get("note"):
            s.text(m["note"])
        if fit.history:
            s.figure(fit_curve(fit.history, m.get("step_reported")), "map fit curve")
        s.figure(per_dim_error(r.per_dim_mse), "per-dimension error")
        if r.transfer.get("details"):
            s.table(transfer_table(r), "The source probe carried to the target, held-out accuracy")
        s.settings("Map (fit settings and manifest)", dict(fit.manifest, request=fit.request))
    return s


def _steering(states: dict, settings: dict, beside: dict[str, str]) -> Section:
    res = states["steer.result"]
    sets, labels, models = res.sets, res.labels, res.models
    s = Section("steering", VIEWS["steering"].title)
    vecs = {labels[k]: vs.vectors for k, vs in sets.items()}
    figs = rimsky_figures(vecs, {labels[k]: (models[k][1].d_model, models[k][1].n_layers) for k in sets})
    s.metrics({"Models": ", ".join(labels[k] for k in sets),
               "Questions": len(set(next(iter(sets.values())).question_ids.tolist()))
               if next(iter(sets.values())).question_ids is not None else len(next(iter(sets.values())).dataset) // 2,
               "Held out": len(set(next(iter(sets.values())).held_out_groups().tolist()))})
    if getattr(res, "relation", ""):
        s.text(res.relation)
    if figs.cosine_by_layer is not None:
        s.figure(figs.cosine_by_layer, "cosine per layer")
    elif figs.cosine_note:
        s.text(figs.cosine_note)
    s.figure(figs.heatmaps, "layer x layer cosines")
    if figs.pca is not None:
        s.figure(figs.pca, "PCA of the vectors")
    if figs.pca_note:
        s.text(figs.pca_note)
    s.figure(vector_norms(vecs), "vector norms")
    s.table(vector_table({k: vs.vectors for k, vs in sets.items()}), "The vectors per layer")
    got = states.get("steer.sweep")
    if got is not None:
        out = got.out
        sweep, curve = out.sweep, out.sweep.curve
        curves = {"vector": curve} | ({"random direction": sweep.random} if sweep.random is not None else {})
        s.text(sweep.verdict)
        s.figure(propensity_plot(curves, f"{got.label}, layer {curve.layer}: propensity on {curve.n_questions} "
                                 "held-out prompts (both letter orders)"), "propensity sweep")
        s.figure(side_effect_plot(sweep.side_effect), "side effect")
        s.table(agreement_table(curve, sweep.random), "Propensity and agreement per multiplier")
        s.table(preview_table(out.preview_prompts, out.plain, out.steered, out.preview_alpha),
                "Generations, plain and steered")
    if (sw := states.get("steer.sentiment")) is not None:

        s.text(sw.verdict)
        s.figure(sentiment_plot(sw), "sentiment steering")
        s.table(sentiment_examples(sw, OPENINGS), "Continuations, steered")
    tr = states.get("steer.transfer")
    if tr is not None:
        req, cmp = tr.request, tr.comparison
        s.figure(propensity_plot(tr.curves, f"B layer {req['target']}: native vs A layer {req['source']}'s vector, "
                                               f"carried ({req['method']})"), "transferred vector")
        numbers = lrt_numbers(cmp)
        if "why r is undefined" in numbers:
            s.text(numbers.pop("why r is undefined"))
        s.metrics({**{k.strip(): v for k, v in numbers.items()}, "Cosine native vs carried": f"{tr.cosine:.2f}",
                   "Map R² (held-out rows)": "–" if tr.r2 is None else f"{tr.r2:.2f}"})
        if "steering" in beside:
            s.text(beside["steering"])
        s.settings("Transfer", {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in req.items()})
    s.settings("Request", res.request)
    for k, vs in sets.items():
        s.settings(f"Vectors {labels[k]}", dict(activation_manifest(vs.manifest), vector_layers=sorted(vs.vectors),
                                                revision=models[k][0].revision))
    return s


def _finetune(states: dict, settings: dict, beside: dict[str, str]) -> Section:
    made = states["finetune.weak"]
    s = Section("finetune", VIEWS["finetune"].title)
    s.metrics({"Agreement with the true labels": format_estimate(made.agreement), "Rows": f"{made.rows:,}",
               "Labelled 1 by the weak model": f"{made.ones:,}"})
    s.settings("Weak-label data set", {"spec": made.spec, "model": made.model, "source": made.source,
                                        "in_sample": made.in_sample})
    return s


SECTIONS: dict[str, Callable[[dict, dict, dict[str, str]], Section]] = {
    "explorer": _explorer, "shift": _shift, "within": _within, "across": _across, "steering": _steering,
    "finetune": _finetune}


# ------------------------------------------------------------------------------- HTML
