"""Whether a model's weights fit: their size from the safetensors headers alone, the memory free where
they can go (every GPU; the CPU's RAM when offloading), and a refusal in one sentence when they do not."""
from __future__ import annotations

from pathlib import Path

from repmap_core.capture.model_config import ResolvedModel
from repmap_core.errors import RepmapError
from repmap_core.share import arrays

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def weights_bytes(resolved: ResolvedModel, dtype: str) -> int:
    """Size of the model's weights in `dtype`, from the safetensors headers alone (no weights read)."""
    total = 0
    for path in Path(resolved.path).glob("*.safetensors"):
        header, _ = arrays.safetensors_header(path)
        for info in header.values():
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            total += count * DTYPE_BYTES.get(dtype, 4)
    return total


def free_memory_bytes(offload: bool) -> dict[str, int]:
    """Free memory where weights can go: every GPU, plus the CPU's available RAM when offloading
    (or when there is no GPU)."""
    import torch

    free = {}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free[f"cuda:{i}"] = int(torch.cuda.mem_get_info(i)[0])
    if offload or not free:
        free["cpu"] = arrays.available_memory_bytes() or 0
    return free


def check_fits(resolved: ResolvedModel, dtype: str, offload: bool = False, headroom: float = 1.15) -> int:
    """Refuse (one sentence) when the weights, plus ~15% for activations, exceed the free memory."""
    need = int(weights_bytes(resolved, dtype) * headroom)
    free = free_memory_bytes(offload)
    if need > sum(free.values()):
        where = " and ".join(f"{v / 1e9:.1f} GB on {k}" for k, v in free.items())
        raise RepmapError(
            f"Model '{resolved.name}' needs about {need / 1e9:.1f} GB in {dtype} and only {where} is free; "
            "use more GPUs, CPU offload (--offload), or a smaller dtype."
        )
    return need
