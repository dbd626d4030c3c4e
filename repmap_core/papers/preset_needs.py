"""What a preset needs before it starts: memory (parameter counts x dtype bytes), time (FLOPs over a
throughput measured here or assumed for a GPU), and whether its models and data can be had offline.
Each estimate comes with its basis, so a card can say how it was reached.
"""
from __future__ import annotations

from pathlib import Path

from repmap_core.capture.model_memory import DTYPE_BYTES
from repmap_core.capture.models import (
    default_device,
    default_dtype,
    free_memory_bytes,
    is_offline,
    model_precision,
    resolve_model,
)
from repmap_core.capture.speed import calibrated, forward_rate
from repmap_core.data.load import hf_dataset_cached, parse_spec
from repmap_core.errors import RepmapError
from repmap_core.papers.preset_table import PARAMS, Preset

# bytes per parameter while finetuning in fp32 with AdamW: weights, gradients, two moments
FINETUNE_BYTES_PER_PARAM = 16


def _device() -> tuple[str, str]:
    device = default_device()
    return device, default_dtype(device)


def memory_bytes(preset: Preset, scaled: bool = False, dtype: str | None = None) -> int:
    """Peak memory the preset's largest stage needs: parameter count × dtype bytes (× 16 bytes per
    parameter when finetuning in fp32 with AdamW), plus ~15% for activations; LRT's stage holds both
    models at once."""
    dtype = dtype or _device()[1]
    setup = preset.setup(scaled)
    sizes = [PARAMS.get(m.name, 0) * (FINETUNE_BYTES_PER_PARAM if m.role == "finetune" else DTYPE_BYTES.get(dtype, 4))
             for m in setup.models]
    peak = sum(sizes) if preset.recipe == "lrt" else max(sizes)
    return int(peak * 1.15)


def estimate_seconds(preset: Preset, scaled: bool = False, device: str | None = None) -> tuple[float, str]:
    """(seconds, basis): forward passes cost 2·P FLOPs per token, training steps 6·P (less when only the
    last blocks train); steering sweeps 5 multipliers × 3 vectors over held-out questions; divided by
    this CPU's matmul rate measured for the precision chosen here (`speed.forward_rate`), or an assumed GPU
    throughput."""
    device = device or _device()[0]
    setup = preset.setup(scaled)
    flops = 0.0
    trained = setup.params.get("finetune", {}).get("train_last")
    for m in setup.models:
        p = PARAMS.get(m.name, 0)
        if m.role == "finetune":
            share = 1.0 if not trained else min(1.0, trained / 30)  # backward and update through the trained blocks only
            flops += (2 + 4 * share) * p * setup.finetune_rows * setup.epochs * setup.tokens_per_row
            flops += 2 * 2 * p * setup.rows * setup.tokens_per_row  # before and after
        else:
            flops += 2 * p * setup.rows * setup.tokens_per_row
        if m.role == "steer":
            flops += 2 * p * 0.3 * setup.rows * 5 * 3 * setup.tokens_per_row
    # in the precision models run in here (on a CPU: bf16 where it measured >= 1.5x fp32 at a generic width)
    rate, where = forward_rate(device, None if device.startswith("cuda") else model_precision(device).as_json())
    basis = (f"{flops / 1e12:,.2f} TFLOP ({setup.rows:,} rows × ~{setup.tokens_per_row} tokens; forward 2·P, "
             f"training up to 6·P FLOPs per token) on {where}; loading and converting weights add to it")
    return flops / rate, basis


def format_seconds(s: float) -> str:
    if s < 90:
        return f"~{max(s, 1):.0f} s"
    if s < 5400:
        return f"~{s / 60:.0f} min"
    if s < 3 * 86400:
        return f"~{s / 3600:.0f} h"
    return f"~{s / 86400:.0f} days"


def _model_problem(name: str) -> str | None:
    if not is_offline():
        return None  # it will be downloaded (a gated model may still ask for a login)
    try:
        resolve_model(name)
    except RepmapError:
        return (f"{name} is not available offline (it is not in the local Hugging Face cache); download it once "
                "with network access, or run the scaled-down version.")
    return None


def _data_problem(spec: str) -> str | None:
    parsed = parse_spec(spec)
    if parsed.kind == "file" and not Path(parsed.ref).expanduser().exists():
        return (f"The data file {parsed.ref} is not here; download the A/B questions (Anthropic model-written evals, "
                "as in Rimsky's CAA repository) and give their path as file:PATH.")
    if parsed.kind == "hf" and is_offline() and not hf_dataset_cached(parsed.ref):
        return (f"The data set {parsed.ref} is not available offline (not in the local Hugging Face cache); "
                "download it once with network access.")
    return None


def check(preset: Preset, scaled: bool = False) -> list[str]:
    """Problems that would stop the preset, one sentence each, found before anything starts:
    a model or data set that cannot be had (offline), not enough free GPU (or CPU) memory."""
    setup = preset.setup(scaled)
    problems = []
    for name in dict.fromkeys(m.name for m in setup.models):
        if (problem := _model_problem(name)) is not None:
            problems.append(problem)
    if (problem := _data_problem(setup.data)) is not None:
        problems.append(problem)
    device, dtype = _device()
    need = memory_bytes(preset, scaled, dtype)
    free = free_memory_bytes(offload=False)
    if need > sum(free.values()):
        where = " and ".join(f"{v / 1e9:.1f} GB on {k}" for k, v in free.items())
        how = "finetuning in fp32" if any(m.role == "finetune" for m in setup.models) else dtype
        problems.append(f"{preset.name} needs about {need / 1e9:.1f} GB ({how}) and only {where} is free; use a larger GPU "
                        "or the scaled-down version.")
    return problems


def needs(preset: Preset, scaled: bool = False) -> dict:
    """What the preset needs, for a card or `preset list`: models, data, memory, time and its basis (`seconds`:
    the estimate scaled by what the last preset run here took against its own, `raw_seconds`: before that)."""
    setup = preset.setup(scaled)
    device, dtype = _device()
    raw, basis = estimate_seconds(preset, scaled, device)
    seconds, measured = calibrated("preset", raw)
    basis += f"; {measured}" if measured else ""
    return {"models": [f"{m.name}" + (f" (layer {m.layer})" if m.layer is not None else "") + f", {m.role}"
                       for m in setup.models],
            "data": setup.data, "memory_gb": round(memory_bytes(preset, scaled, dtype) / 1e9, 2),
            "memory_basis": "parameter count × bytes per parameter "
                            f"({FINETUNE_BYTES_PER_PARAM} when finetuning with AdamW in fp32, else {dtype}), +15%",
            "time": format_seconds(seconds), "time_basis": basis, "device": device, "seconds": seconds,
            "raw_seconds": raw,
            **({"stands_in": preset.scaled_note} if scaled and preset.scaled_note else {})}

