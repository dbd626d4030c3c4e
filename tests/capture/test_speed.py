"""speed.py: the run-time estimates' arithmetic (2·P FLOPs a token at a third of the measured matmul
rate on a CPU, an assumed rate on a GPU) and the measurement they rest on."""
from __future__ import annotations

import pytest

from repmap_core.capture import speed


def test_measured_rate_is_a_plausible_cpu_rate_and_measured_once():
    rate = speed.measured_cpu_flops()
    assert 1e8 < rate < 1e14  # between a slow laptop core and far beyond any CPU
    assert speed.measured_cpu_flops() == rate  # cached: one 0.2 s measurement a process


def test_forward_seconds_is_two_flops_per_parameter_and_token_at_a_third_of_the_matmul_rate():
    rate = speed.measured_cpu_flops()
    assert speed.forward_seconds(1e6, 1000) == pytest.approx(2e9 / (rate / 3))
    assert speed.forward_seconds(2e6, 1000) == pytest.approx(2 * speed.forward_seconds(1e6, 1000))
    assert speed.forward_seconds(1e6, 3000) == pytest.approx(3 * speed.forward_seconds(1e6, 1000))
    assert speed.forward_seconds(1e9, 1e4, "cuda:0") == pytest.approx(2e13 / speed.GPU_FLOPS)


def test_extraction_estimate_follows_the_plan(tiny_gpt2):
    from repmap_core.capture.activations import estimate_seconds, plan_activations

    short = plan_activations(str(tiny_gpt2), "builtin:sentiment", layers=[0], limit=20)
    deep = plan_activations(str(tiny_gpt2), "builtin:sentiment", layers="all", limit=20)
    more = plan_activations(str(tiny_gpt2), "builtin:sentiment", layers=[0], limit=80)
    s, d, m = estimate_seconds(short), estimate_seconds(deep), estimate_seconds(more)
    assert s is not None and 0 < s < d  # a deeper layer needs more of the forward
    assert m > 2 * s  # four times the rows, about four times the tokens


def test_an_estimate_is_calibrated_by_what_the_last_job_of_its_kind_took_here(tmp_path, monkeypatch):
    """The finetune's estimate came in at 0.58x of its actual time: the next one is scaled by the last ratio."""
    monkeypatch.setenv("REPMAP_CACHE", str(tmp_path))
    assert speed.calibrated("finetune", 60.0) == (60.0, "")  # nothing measured here yet: the estimate as made
    speed.record_run("finetune", 60.0, 104.8)
    seconds, basis = speed.calibrated("finetune", 30.0)
    assert seconds == pytest.approx(30.0 * 104.8 / 60.0)
    assert "1.75" in basis and "105 s" in basis and "finetune" in basis
    assert speed.calibrated("sweep", 10.0) == (10.0, "")  # each kind keeps its own
    speed.record_run("finetune", 60.0, 0.3)  # a cached result, over in a moment: tells nothing about speed
    assert speed.last_run("finetune")["seconds"] == pytest.approx(104.8)
    assert (tmp_path / "speed" / "measured.json").is_file()


def test_timed_keeps_a_run_that_worked_and_skips_a_cached_one(tmp_path, monkeypatch):
    monkeypatch.setenv("REPMAP_CACHE", str(tmp_path))
    clock = iter([0.0, 50.0, 100.0, 100.5])
    monkeypatch.setattr(speed.time, "perf_counter", lambda: next(clock))
    assert speed.timed("sweep", 25.0, lambda: "fresh") == "fresh"
    assert speed.last_run("sweep")["rate"] == pytest.approx(2.0)  # 50 s for an estimate of 25 s
    speed.timed("sweep", 25.0, lambda: "cached", measured=lambda r: r != "cached")
    assert speed.last_run("sweep")["rate"] == pytest.approx(2.0)
    assert speed.predicted("sweep", 10.0) == pytest.approx(20.0)


def test_an_unreadable_or_ill_typed_speed_file_counts_as_nothing_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("REPMAP_CACHE", str(tmp_path))
    (tmp_path / "speed").mkdir()
    (tmp_path / "speed" / "measured.json").write_text('{"finetune": {"units": "x", "seconds": -1, "rate": 2}}')
    assert speed.last_run("finetune") is None and speed.calibrated("finetune", 5.0) == (5.0, "")
    (tmp_path / "speed" / "measured.json").write_text("[1, 2]")
    speed.record_run("finetune", 10.0, 20.0)  # rewritten whole
    assert speed.last_run("finetune")["rate"] == pytest.approx(2.0)
