"""speed.py: the run-time estimates' arithmetic (2·P FLOPs a token at a share of the matmul rate measured
for the precision the model runs in on a CPU, an assumed rate on a GPU) and the measurement they rest on."""
from __future__ import annotations

import pytest

from repmap_core.capture import speed


def test_measured_rate_is_a_plausible_cpu_rate_and_measured_once():
    rate = speed.measured_cpu_flops()
    assert 1e8 < rate < 1e14  # between a slow laptop core and far beyond any CPU
    assert speed.measured_cpu_flops() == rate  # cached: one 0.2 s measurement a process


def test_forward_seconds_is_two_flops_per_parameter_and_token_at_a_share_of_the_matmul_rate():
    rate = speed.measured_cpu_flops()  # no precision measured for the model (one forced): the fp32 rate at a generic shape
    assert speed.forward_seconds(1e6, 1000) == pytest.approx(2e9 / (rate * speed.EFFICIENCY["float32"]))
    assert speed.forward_seconds(2e6, 1000) == pytest.approx(2 * speed.forward_seconds(1e6, 1000))
    assert speed.forward_seconds(1e6, 3000) == pytest.approx(3 * speed.forward_seconds(1e6, 1000))
    assert speed.forward_seconds(1e9, 1e4, "cuda:0") == pytest.approx(2e13 / speed.GPU_FLOPS)


def test_the_estimate_uses_the_rate_of_the_precision_chosen():
    """bf16 chosen where its matmul measured 2.5x fp32: the estimate is at the bf16 rate, and its basis says so
    (issue 22: the estimates used the fp32 rate whatever the model ran in)."""
    measured = {"fp32_gflops": 160.0, "bf16_gflops": 400.0}
    bf16 = speed.forward_seconds(1e8, 1e4, "cpu", {"dtype": "bfloat16", **measured})
    fp32 = speed.forward_seconds(1e8, 1e4, "cpu", {"dtype": "float32", **measured})
    assert bf16 == pytest.approx(2e12 / (400e9 * speed.EFFICIENCY["bfloat16"]))
    assert fp32 == pytest.approx(2e12 / (160e9 * speed.EFFICIENCY["float32"]))
    assert fp32 / bf16 == pytest.approx(2.5 * speed.EFFICIENCY["bfloat16"] / speed.EFFICIENCY["float32"])
    assert "400 GFLOP/s bf16 matmul" in speed.forward_rate("cpu", {"dtype": "bfloat16", **measured})[1]
    assert "160 GFLOP/s fp32 matmul" in speed.forward_rate("cpu", {"dtype": "float32", **measured})[1]
    # a precision forced (no rates measured): the fp32 rate measured now
    assert speed.forward_rate("cpu", {"dtype": "float32", "reason": "forced by REPMAP_DTYPE"})[1].endswith(
        f"a forward reaches about {speed.EFFICIENCY['float32']:.2g} of it")


def test_the_extraction_estimate_is_at_the_rate_of_the_plans_precision(tiny_gpt2, monkeypatch):
    from repmap_core.capture import precision
    from repmap_core.capture.activations import estimate_seconds, plan_activations

    monkeypatch.delenv("REPMAP_DTYPE", raising=False)
    rates = {"fast": precision.GemmRates((512, 32, 128), 100e9, 300e9), "slow": precision.GemmRates((512, 32, 128), 100e9, 120e9)}
    plans = {}
    for name, r in rates.items():
        monkeypatch.setattr(precision, "native_bf16", lambda: True)
        monkeypatch.setattr(precision, "gemm_rates", lambda *a, r=r, **k: r)
        plans[name] = plan_activations(str(tiny_gpt2), "builtin:sentiment", layers=[0], limit=20)
    assert plans["fast"].dtype == "bfloat16" and plans["slow"].dtype == "float32"  # 3x chosen; 1.2x is not
    ratio = estimate_seconds(plans["slow"]) / estimate_seconds(plans["fast"])
    assert ratio == pytest.approx(3.0 * speed.EFFICIENCY["bfloat16"] / speed.EFFICIENCY["float32"])


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
