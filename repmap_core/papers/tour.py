"""The demo tour: repmap's story in six steps on the embedded models and built-in real data.

layer curve -> finetune -> shift -> within fit -> across models -> steering. Each step computes
(or reads from the cache) its result, draws its figure, and writes two sentences of narrative from
the numbers it found, intervals included. Every step's work is cached (activations, finetuned
model, projections), so a second showing takes seconds. `tour_report` renders the steps as one
self-contained HTML report.

    >>> steps = run_tour(progress=print)   # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np

from repmap_core.analysis.stats import Estimate, format_estimate, wilson
from repmap_core.capture import store
from repmap_core.capture.gguf import SMOLLM2_ID
from repmap_core.locations import EMBEDDED_MODEL_ID, cache_root
from repmap_core.progress import Progress, silent

__all__ = ["TourStep", "STEPS", "TOUR_SOURCE", "kept_step", "run_step", "run_tour", "tour_report"]

SMOLLM2 = SMOLLM2_ID
MINILM = EMBEDDED_MODEL_ID
DATA = "builtin:sentiment"
TOUR_SOURCE = f"{SMOLLM2.split('/')[-1]} and {MINILM.split('/')[-1]} · {DATA}"  # what every step's figure is made from


@dataclass(frozen=True, eq=False)
class TourStep:
    """One step of the tour: its narrative (two sentences), figure, headline numbers and how long it took."""

    key: str
    title: str
    narrative: str
    figure: object  # plotly Figure
    numbers: dict = field(default_factory=dict)
    seconds: float = 0.0  # the time its computation took here
    reused: bool = False  # read back from the cache now


STEPS = {  # key -> title, in the order of the story
    "layers": "1. Where does sentiment become readable?",
    "finetune": "2. Finetune the model on the task",
    "shift": "3. How finetuning moved the representations",
    "within": "4. Does one affine map plus one direction explain the move?",
    "across": "5. Does a linear map carry a small model's space into a larger one?",
    "steering": "6. Steer the model with what it represents",
}


def _finetune_config():
    from repmap_core.finetune.train import FinetuneConfig

    # the last 4 of SmolLM2's 30 blocks and the head: about a minute on a 2-core CPU
    return FinetuneConfig(epochs=3, max_length=128, batch_size=16, train_last=4, lr=1e-4, head_lr=1e-3, seed=0)


def _split():
    from repmap_core.data.load import load_dataset
    from repmap_core.finetune.train import validation_split

    data = load_dataset(DATA)
    analyse, tune = validation_split(data, 0.5, 0)  # finetune on half, study the other half (never the same rows)
    return data.take(tune), data.take(analyse)


def _layers(report: Progress) -> tuple[str, object, dict]:
    from repmap_core.analysis.separation import best_layer
    from repmap_core.capture.activations import get_activations
    from repmap_core.results.scores import layer_scores
    from repmap_core.share.figures import separation_curve

    aset = get_activations(SMOLLM2, DATA, "all", "last", progress=report)
    rows = layer_scores(aset, progress=report)  # the same kept scores the Layer explorer shows for this set
    best = best_layer(rows)
    at = {r.layer: r for r in rows}
    n = aset.n
    first, top = at[0], at[best]
    est0, est = (Estimate(r.probe_cv_acc, *wilson(r.probe_cv_acc * n, n), n, "wilson") for r in (first, top))
    text = (f"SmolLM2-135M reads the sentiment of {n} real reviews best at block {best} of 30: a linear probe reaches "
            f"{format_estimate(est)} there (cross-validated, 95% interval), against {format_estimate(est0)} at block 0. "
            "So sentiment is not in the words' embeddings alone: it becomes linearly readable in the middle of the network.")
    return text, separation_curve(rows), {"best_layer": best, "probe_best": top.probe_cv_acc, "probe_block0": first.probe_cv_acc}


def _finetune(report: Progress) -> tuple[str, object, dict]:
    import plotly.graph_objects as go

    from repmap_core.finetune.train import finetune

    tune, _ = _split()
    result = finetune(SMOLLM2, tune, _finetune_config(), progress=report)
    m = result.manifest
    history = m["history"]
    fig = go.Figure(go.Scatter(x=[h["step"] for h in history], y=[h["loss"] for h in history], mode="lines",
                               name="training loss", line=dict(color="#00798c")))
    fig.update_layout(height=300, title="Training loss (cross-entropy) per optimiser step", margin=dict(l=10, r=10, t=50, b=10))
    fig.update_xaxes(title_text="optimiser step")
    fig.update_yaxes(title_text="loss (nats)")
    val = m["metrics"]["val_acc"]
    n_val = m["dataset"]["val_rows"]
    est = Estimate(val, *wilson(val * n_val, n_val), n_val, "wilson")
    text = (f"SmolLM2's last 4 blocks and a linear head were finetuned on {len(tune)} reviews "
            f"({m['metrics']['steps']} steps, {m['metrics']['seconds']:.0f} s here); it classifies held-out validation "
            f"reviews at {format_estimate(est)}. The other {len(_split()[1])} reviews were never trained on: the next "
            "steps study the representations on them.")
    return text, fig, {"val_acc": val, "path": result.path, "seconds": m["metrics"]["seconds"]}


def _activations_before_after(report: Progress):
    from repmap_core.capture.activations import get_activations
    from repmap_core.finetune.train import finetune

    tune, analyse = _split()
    tuned = finetune(SMOLLM2, tune, _finetune_config(), progress=report)  # cached by the previous step
    before = get_activations(SMOLLM2, analyse, [-1], "last", progress=report)
    after = get_activations(tuned.path, analyse, [-1], "last", progress=report)
    return analyse, before, after


def _shift(report: Progress) -> tuple[str, object, dict]:
    from repmap_core.analysis.projection import joint_project
    from repmap_core.analysis.separation import separation_at
    from repmap_core.share.figures_shift import shift_scatter

    analyse, before, after = _activations_before_after(report)
    L = before.layer_list[0]
    b, a = np.asarray(before[L]), np.asarray(after[L])
    bx, ax = joint_project([b, a], "pca", 0)
    fig = shift_scatter(bx, ax, before.labels, analyse.texts, title=f"Block {L}, before (open) and after (filled) "
                                                                     "finetuning, PCA on shared axes")
    sb = separation_at(b, before.labels, before.pair_ids, L)
    sa = separation_at(a, after.labels, after.pair_ids, L)
    moved = float(np.linalg.norm(a - b, axis=1).mean() / np.linalg.norm(b, axis=1).mean())
    delta = sa.probe_cv_acc - sb.probe_cv_acc
    if abs(delta) < 0.02:
        change = (f"the classes were already about as separable before as after (probe {sb.probe_cv_acc:.3f} → "
                  f"{sa.probe_cv_acc:.3f}, Fisher ratio {sb.fisher:.2f} → {sa.fisher:.2f}): finetuning moved the space "
                  "more than it changed what a linear probe can read")
    else:
        change = (f"the classes became {'more' if delta > 0 else 'less'} separable (probe {sb.probe_cv_acc:.3f} → "
                  f"{sa.probe_cv_acc:.3f}, Fisher ratio {sb.fisher:.2f} → {sa.fisher:.2f})")
    text = (f"On the {len(analyse)} reviews the model never saw in training, finetuning moved each last-block "
            f"representation by {moved:.0%} of its length on average, and {change}. Each line joins a review's place "
            "before to its place after.")
    return text, fig, {"moved": moved, "probe_before": sb.probe_cv_acc, "probe_after": sa.probe_cv_acc}


def _within(report: Progress) -> tuple[str, object, dict]:
    import pandas as pd

    from repmap_core.analysis.within import within_model, within_table
    from repmap_core.share.figures import table_figure

    analyse, before, after = _activations_before_after(report)
    tuned = len(_split()[0])
    L = before.layer_list[0]
    result, _ = within_model(before[L], after[L], before.labels, pair_ids=before.pair_ids)
    rows = within_table(result)
    frame = pd.DataFrame([{"representation": r["representation"], "probe train": r["train"], "probe test": r["test"],
                           "test 95% interval": r["test 95% interval"], "null (shuffled labels)": r["null (shuffled labels)"]}
                          for r in rows])
    fig = table_figure(frame, f"Gao et al.'s Table 1, this run: block {L}, {result.n_test} held-out reviews")
    fit = result.fit
    text = (f"At block {L}, λ̃ ≈ Aλ + b + yδ, fitted on {result.n_train} of the {len(analyse)} reviews the model never "
            f"saw in training, explains {fit['r2_test']:.2f} of the finetuned representations' variance on the other "
            f"{result.n_test} (held-out R²), and the task direction δ alone sorts them at "
            f"{result.delta_projection_accuracy_centered:.3f} (centred). The modelled λ̂ contains the true label by "
            "construction, so the table also shows it without the label and with a predicted one. (The Within-model fit "
            f"page fits the rows it is given, by default all {tuned + len(analyse)} reviews, the {tuned} the model was "
            "finetuned on included, so its numbers differ.)")
    return text, fig, {"r2_test": fit["r2_test"], "delta_accuracy": result.delta_projection_accuracy_centered}


def _across(report: Progress) -> tuple[str, object, dict]:
    from repmap_core.analysis.between import between_models
    from repmap_core.capture.activations import get_activations
    from repmap_core.share.figures import table_figure
    from repmap_core.share.figures_across import transfer_table

    src = get_activations(MINILM, DATA, [-1], "auto", progress=report)
    tgt = get_activations(SMOLLM2, DATA, [-1], "last", progress=report)
    result, _ = between_models(src[src.layer_list[0]], tgt[tgt.layer_list[0]], src.labels, method="ridge")
    fig = table_figure(transfer_table(result), "MiniLM's probe carried into SmolLM2 through a ridge map (held-out accuracy)")
    t = result.transfer
    text = (f"A ridge map from MiniLM (22M, width 384) to SmolLM2 (135M, width 576), fitted on the same reviews, explains "
            f"{result.map['r2_test']:.2f} of SmolLM2's last-block variance on held-out rows. MiniLM's sentiment probe "
            f"carried across classifies SmolLM2's rows at {t['functional']:.3f} as a readout (the vector image A w: "
            f"{t['vector']:.3f}), beside SmolLM2's own probe at {result.probe['target']['test']:.3f}.")
    return text, fig, {"r2_test": result.map["r2_test"], "functional": t["functional"], "vector": t["vector"]}


SENTIMENT_ALPHAS = (-1.0, -0.5, 0.0, 0.5, 1.0)  # × the residual spread (measured: docs/steering_scale.md)


def _steering(report: Progress) -> tuple[str, object, dict]:
    from repmap_core.capture.models import load_model
    from repmap_core.share.figures_steering import sentiment_plot
    from repmap_core.steering.run import sentiment_layer

    lm = load_model(SMOLLM2, head=True)
    layer = min(8, lm.info.n_layers // 2)  # block 8 of SmolLM2's 30: where the sentiment vector steers (measured)
    sweep = sentiment_layer(SMOLLM2, lm, layer, SENTIMENT_ALPHAS, loader=lambda r, d, t: lm, progress=report)
    mean = sweep.positive.mean(1)
    lo, hi = SENTIMENT_ALPHAS[0], SENTIMENT_ALPHAS[-1]
    text = (f"Adding the positive-minus-negative review direction at block {layer} (α in units of the block's residual "
            f"spread): SmolLM2's continuations are judged positive {mean[0]:.0%} of the time at α = {lo:+g} and "
            f"{mean[-1]:.0%} at α = {hi:+g} (a MiniLM probe judges; {sweep.judge_accuracy:.2f} on held-out reviews). "
            f"{sweep.verdict}")
    return text, sentiment_plot(sweep), {"positive_low": float(mean[0]), "positive_high": float(mean[-1]),
                                          "steers": sweep.steers}


RUNNERS = {"layers": _layers, "finetune": _finetune, "shift": _shift, "within": _within, "across": _across,
           "steering": _steering}


MEMO_FORMAT = 4  # raised when a step's narrative or figure changes, so kept steps are made again


def _memo_path(key: str):
    """Where a finished step is kept: named by the step, repmap's version and the models' revisions (a
    new model file or a new repmap recomputes it)."""
    from repmap_core import __version__
    from repmap_core.capture.models import resolve_model

    identity = {"tour": key, "format": MEMO_FORMAT, "repmap": __version__, "data": DATA,
                "models": [resolve_model(m).revision for m in (SMOLLM2, MINILM)]}
    return cache_root() / "results" / f"tour-{store.entry_key(identity)}.json"


def kept_step(key: str) -> TourStep | None:
    """The step as computed here before (read from the cache, nothing computed), or None: so a refreshed page
    or a new session shows every step already run."""
    import plotly.io as pio

    from repmap_core.capture.models import needs_conversion

    if any(needs_conversion(m) for m in (SMOLLM2, MINILM)):
        return None  # never run here (its model was never converted), and looking must not convert it
    path = _memo_path(key)
    if not path.exists():
        return None
    kept = store.read_json(path) or {}
    try:
        if not (isinstance(kept.get("narrative"), str) and isinstance(kept.get("numbers"), dict)
                and isinstance(kept.get("seconds"), (int, float))):
            raise ValueError("not a tour step")
        return TourStep(key, STEPS[key], kept["narrative"], pio.from_json(kept["figure"]), kept["numbers"],
                        kept["seconds"], True)
    except (OSError, ValueError, KeyError, TypeError):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)  # unreadable or of another shape: counts as not run, and is made again
        return None


def run_step(key: str, progress: Progress | None = None, *, reuse: bool = True) -> TourStep:
    """Compute one step, or read it back when this exact step has been computed here before."""
    import json

    report = progress or silent
    if reuse and (kept := kept_step(key)) is not None:
        return kept
    path = _memo_path(key)
    t0 = time.perf_counter()
    text, fig, numbers = RUNNERS[key](report)
    step = TourStep(key, STEPS[key], text, fig, numbers, time.perf_counter() - t0)
    try:
        store.write_text_atomic(path, json.dumps({"narrative": text, "figure": fig.to_json(), "numbers": numbers,
                                                  "seconds": step.seconds, "title": STEPS[key]}))  # title: the Cache page's name
    except OSError as e:  # a cache that cannot be written: the step is shown, not kept
        store.skipped_write(e, f"the tour's step {key}")
    return step


def run_tour(progress: Progress | None = None) -> list[TourStep]:
    """Every step in order."""
    report = progress or silent
    out = []
    for i, key in enumerate(STEPS):
        out.append(run_step(key, lambda f, m, i=i: report((i + min(max(f, 0.0), 1.0)) / len(STEPS), m)))
    return out


NUMBER_NAMES = {  # a step's headline numbers as the report names them
    "best_layer": "Best block", "probe_best": "Probe accuracy there (cv)", "probe_block0": "Probe accuracy at block 0 (cv)",
    "val_acc": "Validation accuracy", "seconds": "Finetuning (s)", "moved": "Mean move (share of the norm)",
    "probe_before": "Probe accuracy before (cv)", "probe_after": "Probe accuracy after (cv)", "r2_test": "Held-out R²",
    "delta_accuracy": "δ accuracy, centred (held out)", "functional": "Transfer as a readout (held out)",
    "vector": "Transfer as A w (held out)", "positive_low": f"Judged positive at α = {SENTIMENT_ALPHAS[0]:+g}",
    "positive_high": f"Judged positive at α = {SENTIMENT_ALPHAS[-1]:+g}", "steers": "Steers beyond a random direction"}


def _number_text(key: str, value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key in ("moved", "positive_low", "positive_high"):
        return f"{value:.0%}"
    if key == "seconds":
        return f"{value:.0f}"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def tour_report(steps: list[TourStep]) -> str:
    """The tour as one self-contained HTML report (figures drawn offline)."""
    from repmap_core.share.report import Section, render_html

    sections = []
    for s in steps:
        sec = Section(s.key, s.title)
        sec.text(s.narrative)
        sec.figure(s.figure, s.key)
        sec.metrics({NUMBER_NAMES.get(k, k.replace("_", " ")): _number_text(k, v) for k, v in s.numbers.items() if k != "path"})
        sec.text(f"Computing this step took {s.seconds:.1f} s here.")
        sections.append(sec)
    return render_html(sections, {"views": [s.key for s in steps]}, title="repmap demo tour")
