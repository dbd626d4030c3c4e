"""Reproduce the papers: one `Preset` per published experiment, checked before it starts.

The table is `preset_table.py`, what a preset needs `preset_needs.py`, running one `preset_runs.py`;
this module is their public face.

A preset names what the paper ran (models, data, layer, map), what that needs (memory from
parameter counts × dtype bytes, time from FLOPs over an assumed throughput, both with their
basis), the paper's numbers, and a scaled-down version that runs on any machine: the embedded
SmolLM2-135M-Instruct (a causal LM, as the papers' models are; the embedded MiniLM where the paper
has a smaller model beside a larger one) on built-in real data, in a minute or two on a CPU. The
scaled-down numbers follow the paper's protocol but are not comparable in value; every result says
so, and says when the data is too small to show the paper's direction.

    >>> problems = check(PRESETS["gao-between"])          # doctest: +SKIP
    >>> run(PRESETS["gao-between"], scaled=True).table    # doctest: +SKIP
"""
from __future__ import annotations

from repmap_core.papers.preset_needs import (
                                      FINETUNE_BYTES_PER_PARAM,
                                      check,
                                      estimate_seconds,
                                      format_seconds,
                                      memory_bytes,
                                      needs,
)
from repmap_core.papers.preset_runs import RUNNERS, PresetRun, run
from repmap_core.papers.preset_table import (
                                      PARAMS,
                                      PRESETS,
                                      RIMSKY_PUBLISHED,
                                      SCALED_LABEL,
                                      SMOLLM2,
                                      ModelNeed,
                                      Preset,
                                      Setup,
                                      get_preset,
)

__all__ = ["FINETUNE_BYTES_PER_PARAM", "PARAMS", "PRESETS", "RIMSKY_PUBLISHED", "RUNNERS",
           "SCALED_LABEL", "SMOLLM2", "ModelNeed", "Preset", "PresetRun", "Setup", "check", "estimate_seconds",
           "format_seconds", "get_preset", "memory_bytes", "needs", "run"]
