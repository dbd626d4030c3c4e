"""Where a built-in behaviour's own CAA vector was measured to steer an embedded model beyond a random
direction of the same norm (docs/steering_behaviours.md: the table, its date and machine, and how to
rerun it). The Steering page opens its sweep there and the LRT preset targets it, so a default demo
shows steering where there is some, and says where the layer came from; elsewhere the middle layer."""
from __future__ import annotations

from repmap_core.capture.gguf import SMOLLM2_ID

__all__ = ["MEASURED", "STEERS_AT", "steers_at", "measured_note"]

MEASURED = "2026-12-07, 2-core AMD EPYC CPU, fp32; docs/steering_behaviours.md"
# (model, data) -> block where the vector minus a random direction, paired by question, excludes 0 on the side
# of the vector's own slope, at α ±1 × the residual spread on 90 held-out questions (both letter orders)
STEERS_AT: dict[tuple[str, str], int] = {
    (SMOLLM2_ID, "builtin:myopic_reward"): 14,
    (SMOLLM2_ID, "builtin:corrigible"): 14,
}


def steers_at(model: str, data: str) -> int | None:
    """The block where `data`'s vector was measured to steer `model`, or None where it was not measured or does not."""
    return STEERS_AT.get((model, data))


def measured_note(model: str, data: str, layer: int) -> str | None:
    """One sentence saying the sweep opens at `layer` because it was measured to steer there; None otherwise."""
    if steers_at(model, data) != layer:
        return None
    return (f"Opens at layer {layer}: there {data}'s own vector was measured to steer this model beyond a random "
            f"direction of the same norm ({MEASURED}). Your sweep's verdict below is this run's.")
