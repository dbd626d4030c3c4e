"""Tests for repmap_core.analysis.within on planted truth: the within-model fit λ̃ ≈ Aλ + b + yδ, its
Table 1 (and the label leak of the modelled row), weak labels, gradient descent, intervals and nulls."""
from __future__ import annotations

import numpy as np
import pytest

from repmap_core.analysis.within import within_model, within_table


def planted_finetune(n=2000, d=32, seed=0, shift=3.0):
    """Base activations carry no label; finetuning adds y·δ (plus an affine change)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    before = rng.normal(size=(n, d)).astype(np.float32)
    A = (np.eye(d) + 0.2 * rng.normal(size=(d, d)) / np.sqrt(d)).astype(np.float32)
    delta = (shift * rng.normal(size=d) / np.sqrt(d)).astype(np.float32)
    after = before @ A.T + 0.5 + np.outer(2 * y - 1, delta) + 0.1 * rng.normal(size=(n, d)).astype(np.float32)
    return before, after, y, delta


def test_within_model_table_and_the_label_leak():
    before, after, y, delta = planted_finetune()
    result, fit = within_model(before, after, y)
    assert result.n_train == 1600 and result.n_test == 400
    assert result.delta_projection_accuracy_centered > 0.95
    p = result.probe
    assert p["base"]["test"] < 0.6  # the label is not in the base activations
    assert p["finetuned"]["test"] > 0.95
    # the paper's modelled λ̂ is handed the label, so a probe reads it back: high by construction
    assert p["modeled"]["test"] > 0.95
    # without the label (or with a base probe's guess) the modelled rows know no more than the base
    assert p["modeled_without_label"]["test"] < 0.6 and p["modeled_predicted_label"]["test"] < 0.65
    assert result.fit["r2_test"] > 0.9 and result.delta_cosine["finetuned_mean_difference"] > 0.9
    rows = within_table(result)
    assert [r["representation"].split()[0] for r in rows] == ["base", "finetuned", "modelled", "modelled", "modelled"]


def test_within_model_uncentred_accuracy_can_hide_the_direction():
    """With a large common offset along δ, the paper's sign(λ̃·δ) is near chance while the centred one is not."""
    before, after, y, delta = planted_finetune()
    after = after + 50 * delta  # every row moves the same way along δ
    result, _ = within_model(before, after, y)
    assert result.delta_projection_accuracy < 0.6
    assert result.delta_projection_accuracy_centered > 0.95


def test_within_model_weak_labels_and_gd():
    before, after, y, _ = planted_finetune(n=1200, d=16)
    rng = np.random.default_rng(1)
    weak = np.where(rng.random(len(y)) < 0.3, 1 - y, y)  # a weak model wrong 30% of the time
    strong, _ = within_model(before, after, y)
    weak_result, _ = within_model(before, after, y, fit_labels=weak)
    assert weak_result.fit_labels == "weak" and strong.fit_labels == "ground truth"
    assert weak_result.probe["modeled"]["test"] < strong.probe["modeled"]["test"] - 0.1
    steps = []
    gd, _ = within_model(before, after, y, method="gd", lr=3e-2, max_steps=4000, callback=lambda s, loss: steps.append(s))
    assert gd.fit["steps"] > 0 and steps and gd.history
    assert gd.fit["loss_train"] <= strong.fit["loss_train"] * 1.01


def test_within_model_keeps_pairs_on_one_side():
    before, after, y, _ = planted_finetune(n=400, d=8)
    pair_ids = np.arange(400) // 2
    y = np.tile([1, 0], 200)
    result, _ = within_model(before, after, y, pair_ids=pair_ids)
    assert result.n_train % 2 == 0 and result.n_test % 2 == 0


def test_within_model_live_metrics_fill_table_one_in():
    before, after, y, _ = planted_finetune(n=1000, d=12)
    seen = []
    result, _ = within_model(before, after, y, method="gd", lr=3e-2, max_steps=1500, live=seen.append, live_probe_every=5)
    assert len(seen) > 5 and [m["step"] for m in seen] == sorted(m["step"] for m in seen)
    assert seen[-1]["r2_test"] > seen[0]["r2_test"] and seen[-1]["loss"] < seen[0]["loss"]
    assert seen[-1]["delta_accuracy_centered"] > 0.95
    with_probe = [m for m in seen if "modeled" in m]
    assert with_probe and len(with_probe) < len(seen)  # the modelled probe is refitted every few updates
    assert seen[0]["base"] == result.probe["base"] and seen[0]["finetuned"] == result.probe["finetuned"]


# ---------------------------------------------------------------------------------------------
# intervals, nulls, and the fits that hold out


def _inside(e) -> bool:
    return e.low <= e.value <= e.high and e.high - e.low < 0.5


def test_within_model_reports_every_number_with_an_interval_and_a_null():
    import json

    from sklearn.metrics import r2_score as sk_r2

    from repmap_core.analysis.splits import train_test_split_groups

    before, after, y, _ = planted_finetune(n=600, d=16)
    result, fit = within_model(before, after, y)
    iv = result.intervals
    for key in ("delta_projection_accuracy", "delta_projection_accuracy_centered", "r2_test", "delta_cosine",
                "probe.base", "probe.finetuned", "probe.modeled"):
        assert _inside(iv[key]), (key, iv[key])
    # nulls: random directions score ~chance, shuffled labels too, and the real numbers clear them
    e = iv["delta_projection_accuracy_centered"]
    assert abs(e.null - 0.5) < 0.05 and e.value > e.null_high
    p = iv["probe.finetuned"]
    assert abs(p.null - 0.5) < 0.1 and p.value > p.null_high and iv["probe.base"].value < p.null_high + 0.1
    assert iv["delta_cosine"].value > iv["delta_cosine"].null_high and iv["r2_test"].null == 0.0
    # R² as scikit-learn computes it on the same held-out rows
    _, te = train_test_split_groups(y, np.full(len(y), -1), 0.2, 0)
    assert result.fit["r2_test"] == pytest.approx(sk_r2(after[te], fit.transform(before[te], y[te]),
                                                        multioutput="variance_weighted"), abs=1e-6)
    assert result.fit["alpha_chosen"] and result.fit["alpha"] > 0 and not result.fit["n_le_d"] and result.fit["note"] == ""
    json.dumps(result.as_dict(), allow_nan=False)  # strict JSON: the CLI prints this
    rows = within_table(result)
    assert rows[1]["test 95% interval"].startswith("[") and rows[1]["null (shuffled labels)"].startswith("null 0.")


def test_within_model_says_when_rows_are_not_above_the_width_and_ridge_holds_out():
    before, after, y, _ = planted_finetune(n=120, d=160, shift=6.0)
    after = after + np.random.default_rng(3).normal(size=after.shape).astype(np.float32)  # noise that interpolation fits
    plain, _ = within_model(before, after, y, alpha=0.0)
    auto, _ = within_model(before, after, y)
    assert auto.fit["n_le_d"] and auto.fit["rows"] == 96 and auto.fit["width"] == 161
    assert "Only 96 training rows for 161 features" in auto.fit["note"]
    assert plain.fit["r2_train"] > 0.999 and auto.fit["r2_test"] > plain.fit["r2_test"] + 0.1


def test_within_model_gd_reports_the_best_held_out_step():
    before, after, y, _ = planted_finetune(n=300, d=64, shift=2.0)
    seen = []
    result, fit = within_model(before, after, y, method="gd", lr=3e-2, max_steps=800, live=seen.append)
    f = result.fit
    assert 0 < f["step_reported"] <= f["steps"] and f["step_reported"] == fit.best_step_
    assert f"the parameters reported are those of step {f['step_reported']}" in f["note"]
    assert seen and seen[-1]["best_step"] == f["step_reported"]


def test_gd_that_stops_at_its_limit_while_improving_says_it_has_not_converged():
    """The app's GD fit ended at step 1990 of 2000 with R² 0.888 where the closed form reached 0.984: a run cut off
    while still improving says so, with the closed form's R² on the same rows beside it."""
    from repmap_core.analysis.gd_maps import still_improving

    assert still_improving(1990, 2000, 2000) and not still_improving(1400, 2000, 2000)
    assert not still_improving(990, 1000, 2000)  # stopped on its held-out plateau before the limit: converged
    before, after, y, _ = planted_finetune(n=400, d=32, shift=2.0)
    cut, _ = within_model(before, after, y, method="gd", lr=1e-3, max_steps=60)
    assert cut.fit["converged"] is False and "It had not converged" in cut.fit["note"]
    closed, _ = within_model(before, after, y)
    assert cut.fit["r2_test_closed_form"] == pytest.approx(closed.fit["r2_test"], abs=1e-6)  # the same split and fit
    assert f"{closed.fit['r2_test']:.3f}" in cut.fit["note"] and cut.fit["r2_test"] < closed.fit["r2_test"]
    done, _ = within_model(before, after, y, method="gd", lr=3e-2, max_steps=3000)
    assert done.fit["converged"] is True and "not converged" not in done.fit["note"]
