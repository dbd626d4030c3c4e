"""Weak to strong: PGR, the three-way split, and the protocol end to end on tiny models."""
from __future__ import annotations

import math

import numpy as np
import pytest

from repmap_core.data.load import load_dataset
from repmap_core.errors import RepmapError
from repmap_core.finetune.train import FinetuneConfig
from repmap_core.finetune.weak_to_strong import pgr, split_three, weak_to_strong


def test_pgr_is_the_share_of_the_gap_recovered():
    assert abs(pgr(0.6, 0.7, 0.8) - 0.5) < 1e-12
    assert pgr(0.6, 0.8, 0.8) == 1.0 and pgr(0.6, 0.6, 0.8) == 0.0
    assert math.isnan(pgr(0.8, 0.7, 0.75))  # the ceiling does not beat the teacher: undefined, never a number


def test_split_three_is_disjoint_covers_every_row_and_keeps_pairs_whole():
    ds = load_dataset("builtin:survival_instinct", limit=200)
    a, b, c = split_three(ds, seed=1)
    assert not (set(a) & set(b) or set(a) & set(c) or set(b) & set(c))
    assert sorted([*a, *b, *c]) == list(range(len(ds)))
    for rows in (a, b, c):
        pairs, counts = np.unique(ds.pair_ids[rows], return_counts=True)
        assert (counts == 2).all()  # no pair is split between roles
    assert abs(len(a) / len(ds) - 0.3) < 0.05 and abs(len(b) / len(ds) - 0.4) < 0.05


@pytest.mark.slow
def test_the_protocol_on_tiny_models(tiny_models):
    data = load_dataset("builtin:sentiment", limit=120)
    cfg = FinetuneConfig(epochs=1, batch_size=8, max_length=32)
    with pytest.raises(RepmapError, match="labels all 48 of the student's rows 0, so there is nothing to learn"):  # an untrained random teacher
        weak_to_strong(data, weak_model=str(tiny_models["bert"]), strong_model=str(tiny_models["gpt2"]),
                       weak_config=cfg, strong_config=cfg, within_layer=None)
    teacher = FinetuneConfig(epochs=3, batch_size=8, max_length=32, lr=3e-3, val_frac=0.25)
    r = weak_to_strong(data, weak_model=str(tiny_models["gpt2"]), strong_model=str(tiny_models["llama"]),
                       weak_config=teacher, strong_config=cfg, within_layer=-1)
    for est in (r.weak, r.strong_on_weak, r.ceiling):
        assert 0 <= est.low <= est.value <= est.high <= 1 and est.n == r.rows["test"]
    expected = pgr(r.weak.value, r.strong_on_weak.value, r.ceiling.value)
    assert (math.isnan(expected) and math.isnan(r.pgr.value)) or abs(r.pgr.value - expected) < 1e-12
    assert sum(r.rows.values()) == 120 and set(r.models) == {"weak", "strong_on_weak", "ceiling"}
    assert r.models["strong_on_weak"] != r.models["ceiling"]  # trained on different labels: two models
    assert r.within_weak is not None and len(r.within_weak["table"]) == 5
    d = r.as_dict()
    assert all(v is None or isinstance(v, float) for v in d["pgr"].values() if not isinstance(v, (int, str)))


def test_each_finetunes_steps_say_which_of_the_three_it_is_and_the_bar_never_runs_back(monkeypatch):
    """The step counter restarts with each finetune: every message names the run (teacher, student, ceiling), and
    the bar is shared by the estimated times, so it rises once through all three."""
    from types import SimpleNamespace

    from repmap_core.finetune import weak_to_strong as w2s

    def fake_finetune(model, dataset, config, progress=None, cancel=None):
        for k in (1, 5, 10):
            progress(k / 10, f"step {k}/10")
        return SimpleNamespace(path=f"{model}:{dataset.name}", manifest={"metrics": {"seconds": 1.0}})

    def fake_predict(path, rows):
        return np.where(np.arange(len(rows)) % 3 == 0, 0.2, 0.8) if "(weak" not in path else rows.labels.astype(float)

    monkeypatch.setattr(w2s, "finetune", fake_finetune)
    monkeypatch.setattr(w2s, "predict", fake_predict)
    seen = []
    w2s.weak_to_strong(load_dataset("builtin:sentiment", limit=120), weak_model="small", strong_model="big",
                       within_layer=None, progress=lambda f, m: seen.append((f, m)),
                       estimate={"weak": 10.0, "strong_on_weak": 60.0, "ceiling": 30.0})
    steps = [m for _, m in seen if "step " in m]
    assert len(steps) == 9 and all(m.startswith(("Teacher (finetune 1 of 3): ", "Student (finetune 2 of 3): ",
                                                 "Ceiling (finetune 3 of 3): ")) for m in steps)
    assert [m.split(":")[0] for m in steps[::3]] == ["Teacher (finetune 1 of 3)", "Student (finetune 2 of 3)",
                                                     "Ceiling (finetune 3 of 3)"]
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    at = {m.split(":")[0]: f for f, m in seen if m.endswith("step 10/10")}
    # shares by estimated time: the student (60 s) gets twice the ceiling's (30 s) part of the bar, six times the teacher's
    assert at["Teacher (finetune 1 of 3)"] == pytest.approx(0.9 * 0.1)
    parts = w2s._parts({"weak": 10.0, "strong_on_weak": 60.0, "ceiling": 30.0})
    assert parts["strong_on_weak"][1] == pytest.approx(2 * parts["ceiling"][1]) == pytest.approx(6 * parts["weak"][1])
    assert w2s._parts(None)["weak"] == (0.0, 0.25)


def test_the_pgr_sentence_says_what_its_intervals_say():
    """Issue 25: the page reads the PGR beside the ceilings; each case from planted estimates, never a sentence
    that its own numbers contradict."""
    from dataclasses import replace

    from repmap_core.analysis.stats import Estimate
    from repmap_core.finetune.weak_to_strong import W2SResult, pgr_reading

    est = lambda v, lo, hi: Estimate(v, lo, hi, 240, "wilson")  # noqa: E731
    base = W2SResult(est(0.771, 0.714, 0.819), est(0.775, 0.718, 0.823), est(0.883, 0.837, 0.918),
                     est(0.04, -1.12, 0.46), 0.769, {}, {}, {}, None)
    imitates = pgr_reading(base)
    assert "clearly beats the teacher (teacher 0.771 [0.714, 0.819], ceiling 0.883 [0.837, 0.918])" in imitates
    assert "no better than imitating its teacher: PGR 0.04" in imitates and "[-1.12, 0.46] holds 0" in imitates
    part = pgr_reading(replace(base, pgr=est(0.55, 0.2, 0.8)))
    assert "recovers part of the gap, PGR 0.55 [0.20, 0.80]" in part
    assert "does worse than its teacher" in pgr_reading(replace(base, pgr=est(-0.4, -0.7, -0.1)))
    overlapping = pgr_reading(replace(base, ceiling=est(0.80, 0.75, 0.85), pgr=est(0.1, -2, 1.5)))
    assert "The ceiling beats the teacher" in overlapping and "clearly" not in overlapping
    none = pgr_reading(replace(base, ceiling=est(0.771, 0.714, 0.819), pgr=est(float("nan"), -9, 1)))
    assert none.startswith("**No gap to recover:**") and "PGR is undefined" in none
    assert "reading" in replace(base).as_dict() and base.as_dict()["reading"] == imitates
