"""Precision chosen by measurement (capture/precision.py): bf16 on a CPU only where it has bf16 units and a
bf16 multiply at the model's shapes measured >= 1.5x fp32; the choice is part of the cache key and the
manifest; and, on real weights, bf16 activations agree with fp32 ones (the slow fidelity guard below)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from repmap_core.capture import precision
from repmap_core.capture.precision import BF16_MIN_RATIO, GemmRates, choose_precision
from repmap_core.errors import RepmapError


@pytest.fixture
def auto(monkeypatch):
    """The measured choice (the test suite otherwise forces fp32), measurement faked: `auto(ratio, native)`."""
    monkeypatch.delenv("REPMAP_DTYPE", raising=False)
    precision._gemm_rates.cache_clear()
    calls = []

    def setup(ratio: float, native: bool | None = True):
        def fake(tokens, d_in, d_out, seconds=0.2, with_bf16=True):
            calls.append((tokens, d_in, d_out, with_bf16))
            return GemmRates((tokens, d_in, d_out), 100e9, 100e9 * ratio if with_bf16 else None)

        monkeypatch.setattr(precision, "measure_gemm", fake)
        monkeypatch.setattr(precision, "native_bf16", lambda: native)
        return calls

    yield setup
    precision._gemm_rates.cache_clear()


def test_a_measured_ratio_below_the_threshold_keeps_fp32(auto):
    auto(BF16_MIN_RATIO - 0.1)
    chosen = choose_precision("cpu", 576, 1536)
    assert chosen.dtype == "float32" and chosen.rates.ratio == pytest.approx(1.4)
    assert "under 1.5× fp32" in chosen.describe()


def test_a_clear_bf16_gain_on_a_cpu_with_bf16_units_picks_bf16(auto):
    calls = auto(2.8)
    chosen = choose_precision("cpu", 576, 1536)
    assert chosen.dtype == "bfloat16" and chosen.reason == "measured"
    assert calls == [(precision.TOKENS, 576, 1536, True)]  # at the model's own shapes
    assert chosen.describe() == "bf16 (measured; bf16 matmul 2.8× fp32 here: 280 vs 100 GFLOP/s)"
    assert chosen.as_json()["bf16_over_fp32"] == 2.8 and chosen.as_json()["fp32_gflops"] == 100.0


def test_a_cpu_without_bf16_units_keeps_fp32_and_never_times_bf16(auto):
    calls = auto(3.0, native=False)  # a measured gain is not enough: emulated bf16 is not trusted
    chosen = choose_precision("cpu", 576, 1536)
    assert chosen.dtype == "float32" and chosen.reason == "this CPU has no bf16 units"
    assert calls == [(precision.TOKENS, 576, 1536, False)] and chosen.rates.bf16 is None


def test_unknown_cpu_flags_leave_the_choice_to_the_measurement(auto):
    auto(2.0, native=None)
    assert choose_precision("cpu", 64, 256).dtype == "bfloat16"
    auto(1.1, native=None)
    assert choose_precision("cpu", 96, 256).dtype == "float32"  # another shape: measured anew


def test_rates_are_measured_once_per_machine_and_shape_and_kept_in_the_cache(auto, cache_dir, monkeypatch):
    calls = auto(2.0)
    choose_precision("cpu", 576, 1536)
    precision._gemm_rates.cache_clear()  # a new process: read back from the file, not measured again
    assert choose_precision("cpu", 576, 1536).dtype == "bfloat16" and len(calls) == 1
    kept = json.loads((cache_dir / "speed" / "precision.json").read_text())
    (machine, shapes), = kept.items()
    assert "torch" in machine and "threads" in machine and shapes[f"{precision.TOKENS}x576x1536"]["bf16"] == 200e9
    choose_precision("cpu", 384, 1536)  # another width: measured too
    monkeypatch.setattr(precision, "machine_key", lambda: "another CPU")
    choose_precision("cpu", 576, 1536)  # another machine sharing the cache folder: measured afresh
    assert [c[1] for c in calls] == [576, 384, 576]


def test_the_environment_and_the_cli_force_the_precision(auto, monkeypatch):
    calls = auto(3.0)
    monkeypatch.setenv("REPMAP_DTYPE", "float32")
    assert choose_precision("cpu", 576, 1536).describe() == "fp32 (forced by REPMAP_DTYPE)" and not calls
    monkeypatch.setenv("REPMAP_DTYPE", "auto")
    assert choose_precision("cpu", 576, 1536).dtype == "bfloat16"
    monkeypatch.setenv("REPMAP_DTYPE", "double")
    with pytest.raises(RepmapError, match=r"REPMAP_DTYPE='double' is not one of auto, float32, bfloat16, float16"):
        choose_precision("cpu", 576, 1536)
    assert precision.normalise_dtype("bf16") == "bfloat16" and precision.normalise_dtype("auto") is None


def test_native_bf16_reads_torch_then_the_cpu_flags(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx2", "avx512f"})
    assert precision.native_bf16() is False
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"fp", "asimd", "bf16"})  # an Arm CPU with BF16
    assert precision.native_bf16() is True
    monkeypatch.setattr(precision, "_cpu_flags", lambda: None)
    assert precision.native_bf16() is None
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert precision.native_bf16() is True


def test_measure_gemm_times_both_types_at_the_shape_given():
    rates = precision.measure_gemm(64, 32, 128, seconds=0.02)
    assert rates.shape == (64, 32, 128) and rates.fp32 > 1e6 and rates.bf16 > 1e5
    assert precision.measure_gemm(8, 8, 8, seconds=0.01, with_bf16=False).bf16 is None


def test_the_precision_is_in_the_cache_key_and_the_manifest(auto, tiny_gpt2):
    """fp32 and bf16 rows never share an entry; the residual rows are stored in fp32 either way."""
    from repmap_core.capture.activations import get_activations, plan_activations

    auto(2.0)
    fp32 = plan_activations(str(tiny_gpt2), "builtin:sentiment", layers=[1], limit=20, dtype="float32")
    bf16 = plan_activations(str(tiny_gpt2), "builtin:sentiment", layers=[1], limit=20, dtype="bfloat16")
    chosen = plan_activations(str(tiny_gpt2), "builtin:sentiment", layers=[1], limit=20)
    assert fp32.key != bf16.key and chosen.key == bf16.key and chosen.dtype == "bfloat16"
    assert plan_activations(str(tiny_gpt2), "builtin:sentiment", layers=[1], limit=20, dtype="auto").key == bf16.key
    a = get_activations(str(tiny_gpt2), "builtin:sentiment", layers=[1], limit=20)
    b = get_activations(str(tiny_gpt2), "builtin:sentiment", layers=[1], limit=20, dtype="float32")
    assert a.manifest["dtype"] == "bfloat16" and a.manifest["precision"]["reason"] == "measured"
    assert a.manifest["precision"]["bf16_over_fp32"] == 2.0 and b.manifest["precision"]["reason"] == "asked for"
    assert a.manifest["key"] != b.manifest["key"] and a[1].dtype == np.float32 and b[1].dtype == np.float32
    cos = (a[1] * b[1]).sum(1) / np.linalg.norm(a[1], axis=1) / np.linalg.norm(b[1], axis=1)
    assert cos.min() > 0.99 and not np.array_equal(a[1], b[1])  # bf16 really ran
