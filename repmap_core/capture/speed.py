"""How fast this machine computes, measured now, so every time promised to a user is computed here
(DESIGN.md: fp32 GEMM ~100 GFLOP/s on these 2-core CPUs; small batches of short texts reach about a
third of it), and estimates of extraction time from a model's size and the text to read."""
from __future__ import annotations

import time
from functools import lru_cache

__all__ = ["measured_cpu_flops", "forward_seconds", "GPU_FLOPS"]

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


def forward_seconds(params: float, tokens: float, device: str = "cpu") -> float:
    """Seconds for a forward pass of a `params`-parameter model over `tokens` tokens (2·P FLOPs a token)."""
    rate = GPU_FLOPS if device.startswith("cuda") else measured_cpu_flops() / 3
    return 2.0 * params * tokens / rate
