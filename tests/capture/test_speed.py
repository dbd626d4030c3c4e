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
