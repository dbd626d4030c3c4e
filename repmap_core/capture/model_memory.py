"""Whether a model's weights fit: their size from the safetensors headers alone (`safetensors_header`,
checked without reading the data), the memory free where they can go (every GPU; the CPU's RAM when
offloading: `available_memory_bytes`), and a refusal in one sentence when they do not."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from repmap_core.capture.model_config import ResolvedModel
from repmap_core.errors import RepmapError

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
SAFETENSORS_MAX_HEADER = 100_000_000  # the format's own limit on the JSON header


def weights_bytes(resolved: ResolvedModel, dtype: str) -> int:
    """Size of the model's weights in `dtype`, from the safetensors headers alone (no weights read)."""
    total = 0
    for path in Path(resolved.path).glob("*.safetensors"):
        header, _ = safetensors_header(path)
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
        free["cpu"] = available_memory_bytes() or 0
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


def available_memory_bytes() -> int | None:
    """RAM that can be allocated now without swapping (Linux MemAvailable), or None if unknown."""
    import os

    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def safetensors_header(path: str | Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, data_offsets; without
    `__metadata__`) and the size of its data section, checked without reading the data: the header
    length fits in the file, the header is a JSON object, and every tensor lies inside the file.
    Raises `ValueError(reason)` with a short reason otherwise."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"it is {size} bytes, shorter than the 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, SAFETENSORS_MAX_HEADER):
            raise ValueError(f"its header claims {n:,} bytes but the file holds {size:,}")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            raise ValueError("its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    header.pop("__metadata__", None)
    data = size - 8 - n
    for key, info in header.items():
        try:
            start, end = (int(x) for x in info["data_offsets"])
            count = int(np.prod([int(d) for d in info["shape"]], dtype=object))
            str(info["dtype"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"the entry of tensor '{key}' in its header is malformed") from None
        if not 0 <= start <= end:
            raise ValueError(f"tensor '{key}' has impossible data offsets {start}..{end}")
        if end > data:
            raise ValueError(f"tensor '{key}' ends at byte {end:,} of the data but only {data:,} bytes follow the "
                             "header, so the file was cut short")
        if count and end - start < count:
            raise ValueError(f"tensor '{key}' of shape {info['shape']} has only {end - start} bytes of data")
    return header, data
