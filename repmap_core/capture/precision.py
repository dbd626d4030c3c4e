"""Precision: which float type a model runs in here, chosen by measuring this machine.

On a GPU it is bf16 (fp16 where bf16 is missing). On a CPU it is bf16 when the CPU does bf16 in hardware
(AVX512-BF16, AMX, Arm's BF16) *and* a matrix multiply at the model's own shapes runs at least
`BF16_MIN_RATIO` times faster in bf16 than in fp32, measured here; otherwise fp32 (a CPU that emulates
bf16 runs it up to ~100x slower). The measurement (~0.2 s) is kept per machine in the cache
(`speed/precision.json`, keyed by the CPU, its torch capability, the torch version and thread count), so it
runs once per model width. `REPMAP_DTYPE` (float32, bfloat16, float16 or auto) forces the choice everywhere;
the CLI's `--dtype` does the same for one command.

Residual rows leave the model in fp32 whatever it runs in (`extract.py` casts each pooled row).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from repmap_core.errors import RepmapError

__all__ = ["BF16_MIN_RATIO", "DTYPES", "GemmRates", "Precision", "choose_precision", "forced_dtype", "forcing", "gemm_rates",
           "measure_gemm", "native_bf16", "normalise_dtype"]

BF16_MIN_RATIO = 1.5  # bf16 must beat fp32 by this much at the model's shapes to be chosen on a CPU
DTYPES = ("float32", "bfloat16", "float16")
ENV = "REPMAP_DTYPE"
PRECISION_FILE = ("speed", "precision.json")  # under the cache root
TOKENS = 512  # rows of the measured multiply: about a CPU extraction batch (1,024 padded tokens) halved
DEFAULT_SHAPE = (768, 3072)  # (d_model, d_ff) measured when no model is named (GPT-2 small's MLP)
SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class GemmRates:
    """A `(tokens, d_in) @ (d_in, d_out)` multiply's rate in FLOP/s, fp32 and bf16, measured here together."""

    shape: tuple[int, int, int]  # (tokens, d_in, d_out)
    fp32: float
    bf16: float | None  # None: not measured (no native bf16, where one multiply can take seconds)

    @property
    def ratio(self) -> float | None:
        return None if self.bf16 is None or self.fp32 <= 0 else self.bf16 / self.fp32

    def as_json(self) -> dict:
        return {"shape": list(self.shape), "fp32_gflops": round(self.fp32 / 1e9, 1),
                "bf16_gflops": None if self.bf16 is None else round(self.bf16 / 1e9, 1),
                "bf16_over_fp32": None if self.ratio is None else round(self.ratio, 2)}


@dataclass(frozen=True)
class Precision:
    """The float type chosen (`dtype`), why, and the rates measured for it."""

    dtype: str  # float32 | bfloat16 | float16
    reason: str  # one clause: "measured", "forced by REPMAP_DTYPE", ...
    rates: GemmRates | None = None
    native_bf16: bool | None = None

    def describe(self) -> str:
        """One line for people: `bf16 (matmul 2.8x fp32 here: 310 vs 110 GFLOP/s)`."""
        r = self.rates
        if r is None:
            return f"{SHORT.get(self.dtype, self.dtype)} ({self.reason})"
        if r.ratio is None:
            return f"{SHORT.get(self.dtype, self.dtype)} ({self.reason}; fp32 matmul {r.fp32 / 1e9:.0f} GFLOP/s)"
        return (f"{SHORT.get(self.dtype, self.dtype)} ({self.reason}; bf16 matmul {r.ratio:.1f}× fp32 here: "
                f"{r.bf16 / 1e9:.0f} vs {r.fp32 / 1e9:.0f} GFLOP/s)")

    def as_json(self) -> dict:
        return {"dtype": self.dtype, "reason": self.reason, "native_bf16": self.native_bf16,
                **(self.rates.as_json() if self.rates else {})}


def normalise_dtype(dtype: str | None) -> str | None:
    """`dtype` checked against DTYPES; None and "auto" mean "choose here"."""
    if dtype is None or str(dtype).strip().lower() in ("", "auto"):
        return None
    name = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(str(dtype).strip().lower(), str(dtype).strip().lower())
    if name not in DTYPES:
        raise RepmapError(f"Precision '{dtype}' is not one of auto, {', '.join(DTYPES)}.")
    return name


def forced_dtype() -> str | None:
    """The float type `REPMAP_DTYPE` forces, or None (unset or auto)."""
    value = os.environ.get(ENV)
    try:
        return normalise_dtype(value)
    except RepmapError:
        raise RepmapError(f"{ENV}={value!r} is not one of auto, {', '.join(DTYPES)}.") from None


@contextlib.contextmanager
def forcing(dtype: str | None):
    """Within this block `REPMAP_DTYPE` is `dtype` (the CLI's `--dtype`, for one command: every model it
    runs, finetunes' autocast included); a no-op for None or auto. The variable is as it was afterwards."""
    name = normalise_dtype(dtype)
    if name is None:
        yield
        return
    before = os.environ.get(ENV)
    os.environ[ENV] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def choose_precision(device: str, d_model: int | None = None, d_ff: int | None = None) -> Precision:
    """The float type a model of width `d_model` (MLP width `d_ff`) runs in on `device` here.

    Example: `choose_precision("cpu", 576, 1536).dtype` is "bfloat16" on a CPU with AVX512-BF16 where a
    bf16 multiply at SmolLM2's shapes measured >= 1.5x fp32, else "float32"."""
    forced = forced_dtype()
    if forced is not None:
        return Precision(forced, f"forced by {ENV}")
    if device.startswith("cuda"):
        import torch

        return Precision("bfloat16" if torch.cuda.is_bf16_supported() else "float16", "GPU")
    if device != "cpu":
        return Precision("float32", f"{device}: fp32")
    d_in, d_out = (int(d_model), int(d_ff or 4 * d_model)) if d_model else DEFAULT_SHAPE
    native = native_bf16()
    rates = gemm_rates(TOKENS, d_in, d_out, with_bf16=native is not False)
    if native is False:
        return Precision("float32", "this CPU has no bf16 units", rates, native)
    if rates.ratio is not None and rates.ratio >= BF16_MIN_RATIO:
        return Precision("bfloat16", "measured", rates, native)
    return Precision("float32", f"bf16 under {BF16_MIN_RATIO}× fp32 here", rates, native)


# ------------------------------------------------------------------------------ the CPU and its rates
def native_bf16() -> bool | None:
    """Whether this CPU does bf16 arithmetic in hardware: True (AVX512-BF16, AMX, Arm BF16), False (an x86
    or Arm CPU whose flags lack it), None (its flags cannot be read: the measured ratio decides)."""
    import torch

    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, probe, None)
        if check is not None:
            try:
                if check():
                    return True
            except (RuntimeError, AttributeError):
                pass
    flags = _cpu_flags()
    if flags is None:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (x86 `flags`, Arm `Features`), or None where unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key() -> str:
    """What the measured rates depend on: the CPU, torch's kernels for it, torch's version, its threads."""
    import torch

    return (f"{_cpu_name()} | {torch.backends.cpu.get_cpu_capability()} | torch {torch.__version__} | "
            f"{torch.get_num_threads()} threads")


def measure_gemm(tokens: int, d_in: int, d_out: int, seconds: float = 0.2, with_bf16: bool = True) -> GemmRates:
    """fp32 and bf16 rates (FLOP/s) of `linear((tokens, d_in), (d_out, d_in))`, the op a model's layers run,
    timed in alternating rounds over about `seconds`; the best round of each counts, so a moment when
    other work held the cores weighs on neither more than on the other."""
    import torch

    x, w = torch.randn(tokens, d_in), torch.randn(d_out, d_in) / d_in ** 0.5
    pairs = {"fp32": (x, w)}
    if with_bf16:
        pairs["bf16"] = (x.bfloat16(), w.bfloat16())
    best = dict.fromkeys(pairs, 0.0)
    flops = 2.0 * tokens * d_in * d_out
    rounds = 4
    with torch.inference_mode():
        for a, b in pairs.values():
            torch.nn.functional.linear(a, b)  # warm up: the first call picks and packs kernels
        for _ in range(rounds):
            for name, (a, b) in pairs.items():
                n, t0 = 0, time.perf_counter()
                while True:
                    torch.nn.functional.linear(a, b)
                    n += 1
                    elapsed = time.perf_counter() - t0
                    if elapsed >= seconds / (rounds * len(pairs)):
                        break
                best[name] = max(best[name], flops * n / elapsed)
    return GemmRates((tokens, d_in, d_out), best["fp32"], best.get("bf16"))


def gemm_rates(tokens: int, d_in: int, d_out: int, with_bf16: bool = True) -> GemmRates:
    """`measure_gemm` at this shape, measured once per machine and kept in the cache (and in this process)."""
    return _gemm_rates(machine_key(), str(_precision_path()), int(tokens), int(d_in), int(d_out), bool(with_bf16))


@lru_cache(maxsize=64)
def _gemm_rates(machine: str, path: str, tokens: int, d_in: int, d_out: int, with_bf16: bool) -> GemmRates:
    from repmap_core.capture.store import now_iso, read_json, skipped_write, write_text_atomic

    shape = f"{tokens}x{d_in}x{d_out}"
    kept = read_json(Path(path)) or {}
    got = (kept.get(machine) or {}).get(shape) if isinstance(kept.get(machine), dict) else None
    if isinstance(got, dict) and isinstance(got.get("fp32"), (int, float)) and got["fp32"] > 0 and (
            not with_bf16 or isinstance(got.get("bf16"), (int, float))):
        return GemmRates((tokens, d_in, d_out), float(got["fp32"]), got.get("bf16") if with_bf16 else None)
    rates = measure_gemm(tokens, d_in, d_out, with_bf16=with_bf16)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if not isinstance(kept.get(machine), dict):
        kept[machine] = {}
    entry = kept[machine]
    entry[shape] = {"fp32": rates.fp32, "bf16": rates.bf16, "load": None if load is None else round(load, 2),
                    "when": now_iso()}
    try:
        write_text_atomic(Path(path), json.dumps(kept, indent=1, sort_keys=True))
    except OSError as e:
        skipped_write(e, "the measured precision")
    return rates


def _precision_path() -> Path:
    from repmap_core.locations import cache_root

    return cache_root().joinpath(*PRECISION_FILE)
