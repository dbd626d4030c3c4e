"""How fast this machine computes, measured now, so every time promised to a user is computed here
(the matmul rate of the precision a model runs in, at its own shapes, from `precision.py`; a forward over
small batches of short texts reaches about half of it), estimates of extraction time from a model's size
and the text to read, and what each kind
of long job measured the last time it ran here (`record_run`), which calibrates the next estimate of that
kind (`calibrated`): the finetune, weak-to-strong and the steering sweep came in at 0.6-0.77× of their
actual times from their models of the work alone."""
from __future__ import annotations

import time
from functools import lru_cache

__all__ = ["EFFICIENCY", "GPU_FLOPS", "calibrated", "forward_rate", "forward_seconds", "last_run", "measured_cpu_flops",
           "predicted", "record_run", "timed"]

GPU_FLOPS = 50e12  # an assumed effective bf16 rate for small batches on an H100-class GPU (said so wherever used)


@lru_cache(maxsize=1)
def measured_cpu_flops() -> float:
    """This CPU's fp32 matrix-multiply rate, measured now (~0.2 s, once per process)."""
    import torch

    a, b = torch.randn(768, 768), torch.randn(768, 3072)
    a @ b  # warm up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.2:
        a @ b
        n += 1
    return 2 * 768 * 768 * 3072 * n / (time.perf_counter() - t0)


# The share of its matrix-multiply rate (at the model's own shapes, in the precision it runs in) that a
# forward over small batches of short texts reaches on a CPU: `bench.bench_precision` measured 0.58 (fp32)
# and 0.50 (bf16) for SmolLM2, 0.73 and 0.44 for MiniLM on a quiet machine; a little under the lowest, since
# a loaded machine does worse. Without the rates of the precision chosen (a precision forced, not measured),
# the fp32 share of `measured_cpu_flops`.
EFFICIENCY = {"float32": 0.5, "bfloat16": 0.45}


def forward_rate(device: str = "cpu", precision: dict | None = None) -> tuple[float, str]:
    """(FLOP/s a forward reaches, the basis in words) on `device` in `precision` (`Precision.as_json()`: the
    float type chosen and the matmul rates measured for it at the model's shapes)."""
    if device.startswith("cuda"):
        return GPU_FLOPS, "a GPU at ~50 TFLOP/s effective (bf16, assumed)"
    dtype = (precision or {}).get("dtype")
    measured = (precision or {}).get({"float32": "fp32_gflops", "bfloat16": "bf16_gflops"}.get(dtype, ""))
    if isinstance(measured, (int, float)) and measured > 0:
        share = EFFICIENCY[dtype]
        short = "bf16" if dtype == "bfloat16" else "fp32"
        return measured * 1e9 * share, (f"this CPU: {measured:.0f} GFLOP/s {short} matmul at the model's shapes, "
                                        f"measured here; a forward reaches about {share:.2g} of it")
    rate, share = measured_cpu_flops(), EFFICIENCY["float32"]
    return rate * share, f"this CPU: {rate / 1e9:.0f} GFLOP/s fp32 matmul measured now; a forward reaches about {share:.2g} of it"


def forward_seconds(params: float, tokens: float, device: str = "cpu", precision: dict | None = None) -> float:
    """Seconds for a forward pass of a `params`-parameter model over `tokens` tokens (2·P FLOPs a token) in
    the precision chosen for it (`forward_rate`)."""
    return 2.0 * params * tokens / forward_rate(device, precision)[0]


# ------------------------------------------------------------------------- what jobs measured here
# Each estimate rests on a model of the work (steps measured now, FLOPs, tokens); what the model leaves out
# (evaluation, saving, a page redrawing beside a job, a loaded machine) is the same from one run of a kind of
# job to the next on one machine. So the last run of each kind is kept in the cache, as seconds per unit of
# its estimate's own measure, and the next estimate of that kind is scaled by it.
SPEED_FILE = ("speed", "measured.json")  # under the cache root
KINDS = {"finetune": "finetune", "w2s": "weak-to-strong run", "sweep": "steering sweep", "tsne": "t-SNE",
         "umap": "UMAP", "gd": "gradient-descent fit", "extract": "extraction"}


def _speed_path():
    from repmap_core.locations import cache_root

    return cache_root().joinpath(*SPEED_FILE)


def last_run(kind: str) -> dict | None:
    """What the last measured job of `kind` took here: {"units", "seconds", "rate" (seconds a unit), "load",
    "when"}, or None when none was measured (or the file is unreadable)."""
    from repmap_core.capture.store import read_json

    got = (read_json(_speed_path()) or {}).get(kind)
    ok = isinstance(got, dict) and all(isinstance(got.get(k), (int, float)) and got[k] > 0 for k in ("units", "seconds", "rate"))
    return got if ok else None


def record_run(kind: str, units: float, seconds: float) -> None:
    """Keep that a job of `kind` took `seconds` for `units` of its measure (for an estimate calibrated here,
    the units are the seconds it was estimated at before the start). Runs too short to tell (under 2 s: a
    cached result) are not kept; a cache that cannot be written keeps nothing, with its one notice."""
    import json
    import os

    from repmap_core.capture.store import now_iso, read_json, skipped_write, write_text_atomic

    if not (units > 0 and seconds >= 2.0):
        return
    path = _speed_path()
    kept = read_json(path) or {}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    kept[kind] = {"units": float(units), "seconds": float(seconds), "rate": float(seconds) / float(units),
                  "load": None if load is None else round(load, 2), "when": now_iso()}
    try:
        write_text_atomic(path, json.dumps(kept, indent=1, sort_keys=True))
    except OSError as e:
        skipped_write(e, "the measured job speeds")


def calibrated(kind: str, estimate: float) -> tuple[float, str]:
    """`estimate` (seconds, from the work's own model) scaled by what the last job of `kind` took against its
    estimate here, and a clause saying so ('' when no job of that kind was measured here yet)."""
    got = last_run(kind)
    if got is None:
        return float(estimate), ""
    factor = got["rate"]
    load = f", load average {got['load']:.1f}" if isinstance(got.get("load"), (int, float)) else ""
    return float(estimate) * factor, (f"× {factor:.2f}: the last {KINDS.get(kind, kind)} here took {factor:.2f}× its "
                                      f"estimate ({got['seconds']:.0f} s{load})")


def predicted(kind: str, units: float) -> float | None:
    """Seconds for `units` of a job of `kind` at the rate its last run measured here; None when none was."""
    got = last_run(kind)
    return None if got is None else float(units) * got["rate"]


def timed(kind: str, estimate: float | None, work, measured=lambda result: True):
    """Run `work()`; when it was estimated (`estimate` seconds, uncalibrated) and `measured(result)` (not a
    cached result), keep how long it took against that estimate. Returns what `work()` returns."""
    t0 = time.perf_counter()
    result = work()
    if estimate and measured(result):
        record_run(kind, estimate, time.perf_counter() - t0)
    return result
