"""Reproduce the papers: one `Preset` per published experiment, checked before it starts.

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

import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from repmap_core.errors import RepmapError
from repmap_core.jsonable import to_json_values
from repmap_core.experiments import (GAO_BETWEEN_VECTOR_ACCURACY, GAO_DELTA_ACCURACY, GAO_TABLE1, GAO_TABLE2_HH_WEAK,
                                     LRT_PUBLISHED)
from repmap_core.gguf import SMOLLM2_ID
from repmap_core.models import EMBEDDED_MODEL_ID
from repmap_core.progress import Progress, silent


SCALED_LABEL = "scaled-down: SmolLM2-135M (and MiniLM) on built-in real data, not comparable in value"
SMOLLM2 = SMOLLM2_ID

# Rimsky, "Comparing representation vectors between llama 2 base and chat" (LessWrong, 2023),
# figures "cosine similarity between base and chat vectors per layer" and "PCA of per-layer vectors"
RIMSKY_PUBLISHED = {
    "base_vs_chat_cosine_early_layers": 1.0,  # ~1 in the first layers, then falls
    "base_vs_chat_cosine_rebound": 0.9,  # for some behaviours it climbs back to ~0.9 around layer 11
    "rebound_layer": 11,
    "pca_turn_layers": [11, 12],  # the 2-D PCA of normalised per-layer vectors traces an inverted U peaking here
}

# Parameter counts (model cards / configs), so memory can be estimated before anything is downloaded
PARAMS = {
    "gpt2": 124_439_808,
    "gpt2-xl": 1_557_611_200,
    "meta-llama/Llama-2-7b-hf": 6_738_415_616,
    "meta-llama/Llama-2-7b-chat-hf": 6_738_415_616,
    "google/gemma-2-2b": 2_614_341_888,
    "google/gemma-2-9b": 9_241_705_984,
    EMBEDDED_MODEL_ID: 22_713_216,
    SMOLLM2_ID: 134_515_008,
}
# bytes per parameter while finetuning in fp32 with AdamW: weights, gradients, two moments
FINETUNE_BYTES_PER_PARAM = 16
# throughputs the time estimates assume (DESIGN.md: fp32 GEMM ~100 GFLOP/s on these 2-core CPUs);
# a GPU at ~5% of an H100-class bf16 peak, for small batches of short padded texts
CPU_FLOPS = 100e9
GPU_FLOPS = 50e12


@dataclass(frozen=True)
class ModelNeed:
    """One model a preset uses and how: `finetune` (fp32 weights + AdamW), `extract` or `steer` (inference)."""

    name: str
    role: str
    layer: int | None = None


@dataclass(frozen=True)
class Setup:
    """What one version of a preset runs: the recipe's models, data and keyword arguments."""

    models: tuple[ModelNeed, ...]
    data: str
    rows: int  # rows each model reads (after the recipe's split, the analysed ones)
    tokens_per_row: int  # typical length of a row of this data, for the time estimate
    finetune_rows: int = 0
    epochs: int = 0
    params: dict = field(default_factory=dict)  # recipe keyword arguments


@dataclass(frozen=True)
class Preset:
    """A paper's experiment: what it reproduces, the full setup, the scaled-down one, its numbers."""

    name: str  # CLI name
    title: str
    reproduces: str  # paper and section / table
    recipe: str  # within | within_weak | between | rimsky | lrt
    full: Setup
    scaled: Setup
    published: dict  # the paper's numbers, as printed there
    scaled_note: str = ""  # what the scaled version stands in with, in one sentence


@dataclass(frozen=True)
class PresetRun:
    """A finished run: the table (published vs this run), the recipe's own output, and what ran."""

    preset: str
    scaled: bool
    label: str  # SCALED_LABEL, or the full setup's description
    table: list  # rows {"quantity", "published", "this run"}
    published: dict
    raw: dict
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# the presets

_EMB = EMBEDDED_MODEL_ID
# finetuning SmolLM2 on a CPU: its last 4 of 30 blocks and the head (at a higher rate: it starts random),
# 3 epochs (about a minute for 400 short rows here)
_SCALED_FT = {"epochs": 3, "max_length": 128, "batch_size": 16, "train_last": 4, "lr": 1e-4, "head_lr": 1e-3}
_FULL_FT = {"epochs": 3, "max_length": 128, "batch_size": 16}


def _table1_preset(key: str, name: str, title_data: str, hf: str, rows: int, tokens: int, builtin: str, limit: int,
                   tokens_scaled: int) -> Preset:
    published = {"table1": {"base": GAO_TABLE1[name][0], "finetuned": GAO_TABLE1[name][1], "modeled": GAO_TABLE1[name][2]}}
    if name == "Amazon Polarity":  # §3: sign(λ̃·δ) on the amazon_polarity rows
        published["delta_accuracy"] = GAO_DELTA_ACCURACY["gpt2"]
    return Preset(
        name=f"gao-table1-{key}", title=f"Gao et al. Table 1: GPT-2 on {title_data}",
        reproduces=f"Gao, Sun, Jiao, Table 1 ({name} row): a linear probe on base λ, finetuned λ̃ and modelled "
                   "λ̂ = Aλ + yδ, last layer of GPT-2, ground-truth labels (§3).",
        recipe="within",
        full=Setup((ModelNeed("gpt2", "finetune", -1),), hf, rows // 2, tokens, rows // 2, 3,
                   {"layer": -1, "position": "last", "finetune_frac": 0.5, "finetune": _FULL_FT}),
        scaled=Setup((ModelNeed(SMOLLM2, "finetune", -1),), f"builtin:{builtin}", limit // 2, tokens_scaled, limit // 2, 3,
                     {"layer": -1, "position": "auto", "limit": limit, "finetune_frac": 0.5, "finetune": _SCALED_FT}),
        published=published, scaled_note=f"SmolLM2 for GPT-2, {limit} built-in rows ({builtin}) for {rows:,}.")


PRESETS: dict[str, Preset] = {}
for _p in (
    _table1_preset("amazon", "Amazon Polarity", "amazon_polarity", "hf:fancyzhx/amazon_polarity:train[:20000]", 20000, 100,
                   "sentiment", 800, 20),
    _table1_preset("sciq", "SciQ", "SciQ", "hf:allenai/sciq:train", 23358, 40, "science_qa", 480, 40),
    _table1_preset("hh", "Anthropic HH", "Anthropic HH-RLHF", "hf:Anthropic/hh-rlhf:train[:10000]", 20000, 250,
                   "hh_harmless", 300, 150),
    Preset(
        name="gao-table2-weak", title="Gao et al. Table 2: weak labels (Anthropic HH)",
        reproduces="Gao, Sun, Jiao, Table 2: Table 1's HH row with δ fitted on weak labels from a finetuned GPT-2 (§3).",
        recipe="within_weak",
        full=Setup((ModelNeed("gpt2", "finetune", -1),), "hf:Anthropic/hh-rlhf:train[:10000]", 10000, 250, 10000, 3,
                   {"layer": -1, "position": "last", "finetune_frac": 0.5, "finetune": _FULL_FT}),
        scaled=Setup((ModelNeed(SMOLLM2, "finetune", -1),), "builtin:hh_harmless", 150, 150, 150, 3,
                     {"layer": -1, "position": "auto", "limit": 300, "finetune_frac": 0.5, "finetune": _SCALED_FT}),
        published={"table2": {"base": GAO_TABLE2_HH_WEAK[0], "finetuned": GAO_TABLE2_HH_WEAK[1],
                              "modeled": GAO_TABLE2_HH_WEAK[2]}},
        scaled_note="SmolLM2 for GPT-2 (its finetuned model, shared with gao-table1-hh, is the weak labeller), "
                    "300 built-in HH pairs' rows for 10,000."),
    Preset(
        name="gao-between", title="Gao et al.: a map GPT-2 → GPT-2-XL carries no probe",
        reproduces="Gao, Sun, Jiao §2: an affine map GPT-2 → GPT-2-XL (last layers, GD, 10k amazon_polarity rows); "
                   "the probe carried as A w classifies at 0.5025.",
        recipe="between",
        full=Setup((ModelNeed("gpt2", "extract", -1), ModelNeed("gpt2-xl", "extract", -1)),
                   "hf:fancyzhx/amazon_polarity:train[:10000]", 10000, 100,
                   params={"source_layer": -1, "target_layer": -1, "position": "last", "method": "gd"}),
        # ridge, not GD: on a few hundred rows GD does not converge in tens of seconds
        scaled=Setup((ModelNeed(_EMB, "extract", -1), ModelNeed(SMOLLM2, "extract", -1)), "builtin:sentiment", 800, 20,
                     params={"source_layer": -1, "target_layer": -1, "position": "auto", "method": "ridge", "limit": 800}),
        published={"vector_transfer_accuracy": GAO_BETWEEN_VECTOR_ACCURACY},
        scaled_note="MiniLM (22M) → SmolLM2 (135M) for GPT-2 → GPT-2-XL, 800 built-in reviews for 10,000."),
    Preset(
        name="rimsky-base-chat", title="Rimsky: Llama 2 base vs chat steering vectors",
        reproduces="Rimsky, 'Comparing representation vectors between llama 2 base and chat': CAA vectors per layer, "
                   "base-vs-chat cosine per layer, layer × layer cosines, 2-D PCA of the normalised vectors.",
        recipe="rimsky",
        full=Setup((ModelNeed("meta-llama/Llama-2-7b-hf", "extract"), ModelNeed("meta-llama/Llama-2-7b-chat-hf", "extract")),
                   "file:datasets/caa/sycophancy.jsonl", 1000, 150, params={"layers": "all"}),
        # no base SmolLM2 ships here: the same chat model prompted without its chat template stands in for
        # the base model (plain text, as a base model reads it), with it for the chat model
        scaled=Setup((ModelNeed(SMOLLM2, "extract"), ModelNeed(SMOLLM2, "extract")), "builtin:survival_instinct", 240, 110,
                     params={"layers": "all", "limit": 120, "chat_template": (False, True)}),
        published=RIMSKY_PUBLISHED,
        scaled_note="SmolLM2-Instruct prompted as plain text (base-style) vs in its chat template (chat-style) stands "
                    "in for Llama 2 base vs chat: the same weights, so it shows what the prompt format alone does."),
    Preset(
        name="lrt-gemma", title="LRT: steering vectors carried gemma-2-2b → gemma-2-9b",
        reproduces="Bello et al. 2025 (LRT), Table 1: a map gemma-2-2b L20 → gemma-2-9b L20 carries CAA vectors as "
                   "A v + b; native vs transferred steering propensity, Pearson r 0.73–0.98 over 13 behaviours.",
        recipe="lrt",
        full=Setup((ModelNeed("google/gemma-2-2b", "steer", 20), ModelNeed("google/gemma-2-9b", "steer", 20)),
                   "file:datasets/caa/corrigible-neutral-HHH.jsonl", 1000, 150,
                   params={"source_layer": 20, "target_layer": 20, "multipliers": (-2.0, -1.0, 0.0, 1.0, 2.0)}),
        # a small model's vector carried to a larger one, as 2b -> 9b: MiniLM block 4 -> SmolLM2 block 14
        # (target_layer None: the target's middle block, 15 of SmolLM2's 30)
        scaled=Setup((ModelNeed(_EMB, "extract", 4), ModelNeed(SMOLLM2, "steer")), "builtin:corrigible", 240, 110,
                     params={"source_layer": 4, "target_layer": None, "limit": 160,
                             "multipliers": (-0.5, -0.25, 0.0, 0.25, 0.5)}),
        published=LRT_PUBLISHED,
        scaled_note="MiniLM (22M) block 4 → SmolLM2 (135M) block 15 for Gemma-2-2b → 9b, 80 built-in corrigibility "
                    "questions (each in both letter orders) for 13 behaviours."),
):
    PRESETS[_p.name] = _p


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise RepmapError(f"There is no preset '{name}'; choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]


# ---------------------------------------------------------------------------------------------
# what a preset needs, checked before it starts


def _setup(preset: Preset, scaled: bool) -> Setup:
    return preset.scaled if scaled else preset.full


def _device() -> tuple[str, str]:
    from repmap_core.models import default_device, default_dtype

    device = default_device()
    return device, default_dtype(device)


def memory_bytes(preset: Preset, scaled: bool = False, dtype: str | None = None) -> int:
    """Peak memory the preset's largest stage needs: parameter count × dtype bytes (× 16 bytes per
    parameter when finetuning in fp32 with AdamW), plus ~15% for activations; LRT's stage holds both
    models at once."""
    from repmap_core.models import DTYPE_BYTES

    dtype = dtype or _device()[1]
    setup = _setup(preset, scaled)
    sizes = [PARAMS.get(m.name, 0) * (FINETUNE_BYTES_PER_PARAM if m.role == "finetune" else DTYPE_BYTES.get(dtype, 4))
             for m in setup.models]
    peak = sum(sizes) if preset.recipe == "lrt" else max(sizes)
    return int(peak * 1.15)


def measured_cpu_flops() -> float:
    """This CPU's fp32 matrix-multiply rate, measured now (~0.2 s, once per process)."""
    return _measured_cpu_flops()


@lru_cache(maxsize=1)
def _measured_cpu_flops() -> float:
    import torch

    a, b = torch.randn(768, 768), torch.randn(768, 3072)
    a @ b  # warm up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.2:
        a @ b
        n += 1
    return 2 * 768 * 768 * 3072 * n / (time.perf_counter() - t0)


def estimate_seconds(preset: Preset, scaled: bool = False, device: str | None = None) -> tuple[float, str]:
    """(seconds, basis): forward passes cost 2·P FLOPs per token, training steps 6·P (less when only the
    last blocks train); steering sweeps 5 multipliers × 3 vectors over held-out questions; divided by
    this CPU's fp32 rate measured now, or an assumed GPU throughput."""
    device = device or _device()[0]
    setup = _setup(preset, scaled)
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
    if device.startswith("cuda"):
        rate, where = GPU_FLOPS, "a GPU at ~50 TFLOP/s effective (bf16, assumed)"
    else:
        # small batches of short texts reach about a third of the plain matmul rate (measured: SmolLM2 extraction)
        rate = measured_cpu_flops() / 3
        where = f"this CPU: {rate * 3 / 1e9:.0f} GFLOP/s fp32 matmul measured now, a third of it for small batches"
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
    from repmap_core.models import is_offline, resolve_model

    if not is_offline():
        return None  # it will be downloaded (a gated model may still ask for a login)
    try:
        resolve_model(name)
    except RepmapError:
        return (f"{name} is not available offline (it is not in the local Hugging Face cache); download it once "
                "with network access, or run the scaled-down version.")
    return None


def _data_problem(spec: str) -> str | None:
    from repmap_core.data import parse_spec
    from repmap_core.models import is_offline

    parsed = parse_spec(spec)
    if parsed.kind == "file" and not Path(parsed.ref).expanduser().exists():
        return (f"The data file {parsed.ref} is not here; download the A/B questions (Anthropic model-written evals, "
                "as in Rimsky's CAA repository) and give their path as file:PATH.")
    if parsed.kind == "hf" and is_offline() and not _hf_dataset_cached(parsed.ref):
        return (f"The data set {parsed.ref} is not available offline (not in the local Hugging Face cache); "
                "download it once with network access.")
    return None


def _hf_dataset_cached(repo: str) -> bool:
    import os

    from huggingface_hub import constants

    hub = Path(constants.HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}"
    processed = Path(os.environ.get("HF_DATASETS_CACHE", Path(constants.HF_HOME) / "datasets")) / repo.replace("/", "___")
    return hub.exists() or processed.exists()


def check(preset: Preset, scaled: bool = False) -> list[str]:
    """Problems that would stop the preset, one sentence each, found before anything starts:
    a model or data set that cannot be had (offline), not enough free GPU (or CPU) memory."""
    from repmap_core.models import free_memory_bytes

    setup = _setup(preset, scaled)
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
        problems.append(f"{preset.name} needs about {need / 1e9:.1f} GB ({'finetuning in fp32' if any(m.role == 'finetune' for m in setup.models) else dtype}) "
                        f"and only {where} is free; use a larger GPU or the scaled-down version.")
    return problems


def needs(preset: Preset, scaled: bool = False) -> dict:
    """What the preset needs, for a card or `preset list`: models, data, memory, time and its basis."""
    setup = _setup(preset, scaled)
    device, dtype = _device()
    seconds, basis = estimate_seconds(preset, scaled, device)
    return {"models": [f"{m.name}" + (f" (layer {m.layer})" if m.layer is not None else "") + f", {m.role}"
                       for m in setup.models],
            "data": setup.data, "memory_gb": round(memory_bytes(preset, scaled, dtype) / 1e9, 2),
            "memory_basis": "parameter count × bytes per parameter "
                            f"({FINETUNE_BYTES_PER_PARAM} when finetuning with AdamW in fp32, else {dtype}), +15%",
            "time": format_seconds(seconds), "time_basis": basis, "device": device,
            **({"stands_in": preset.scaled_note} if scaled and preset.scaled_note else {})}


# ---------------------------------------------------------------------------------------------
# running


def run(preset: Preset | str, scaled: bool = True, progress: Progress | None = None,
        stand_in: str | None = None) -> PresetRun:
    """Run the preset (full, or scaled down to SmolLM2 on built-in real data) through the existing
    recipes; return its numbers beside the published ones. The full version is refused in one
    sentence when `check` finds a problem. `stand_in` replaces SmolLM2 in a scaled run (another
    model id or folder: a quicker model, for tests or a first look)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    problems = check(preset, scaled)
    if problems:
        more = "" if len(problems) == 1 else f"; and {len(problems) - 1} more problem(s), listed by `preset list`"
        raise RepmapError(problems[0].rstrip(".") + more + ".")
    report = progress or silent
    setup = _setup(preset, scaled)
    if scaled and stand_in:
        setup = replace(setup, models=tuple(replace(m, name=stand_in) if m.name == SMOLLM2 else m for m in setup.models))
    started = time.perf_counter()
    raw, table = RUNNERS[preset.recipe](preset, setup, report)
    report(1.0, "Done")
    label = SCALED_LABEL if scaled else f"full: {', '.join(m.name for m in setup.models)} on {setup.data}"
    return PresetRun(preset.name, scaled, label, table, preset.published, to_json_values(raw),
                     round(time.perf_counter() - started, 2))


def _row(quantity: str, published, this_run) -> dict:
    return {"quantity": quantity, "published": published, "this run": this_run}


def _finetune_config(setup: Setup):
    from repmap_core.finetune import FinetuneConfig

    return FinetuneConfig(seed=0, **setup.params["finetune"])


def _within(preset: Preset, setup: Setup, report: Progress, weak: bool = False) -> tuple[dict, list]:
    from repmap_core.experiments import within_recipe

    p = setup.params
    kwargs = dict(layer=p["layer"], position=p["position"], limit=p.get("limit"), finetune_frac=p["finetune_frac"],
                  finetune_config=_finetune_config(setup))
    model = setup.models[0].name
    out = within_recipe(model, setup.data, progress=(lambda f, m: report(0.5 * f, m)) if weak else report, **kwargs)
    key = "table1"
    if weak:  # Table 2: δ fitted on the labels the finetuned model gives the analysed rows
        out = within_recipe(model, setup.data, weak_model=out["finetune"]["path"],
                            progress=lambda f, m: report(0.5 + 0.5 * f, m), **kwargs)
        key = "table2"
    probe, pub = out["within"]["probe"], preset.published[key]
    table = []
    for name, label in (("base", "base λ"), ("finetuned", "finetuned λ̃"), ("modeled", "modelled λ̂ = Aλ+b+yδ")):
        for i, split in enumerate(("train", "test")):
            table.append(_row(f"probe accuracy, {label}, {split}", pub[name][i], probe[name][split]))
    table.append(_row("sign(λ̃·δ) accuracy", preset.published.get("delta_accuracy"),
                      out["within"]["delta_projection_accuracy"]))
    table.append(_row("fit R² (held out)", None, out["within"]["fit"]["r2_test"]))
    fit = out["within"]["fit"]
    if probe["finetuned"]["test"] < probe["base"]["test"] or probe["modeled"]["test"] <= probe["base"]["test"] \
            or fit.get("n_le_d"):
        width = f"; {fit['rows']} fitting rows for {fit['width']} features, so ridge with a held-out alpha" if fit.get("n_le_d") else ""
        table.append(_row("note", None, f"too small to show the paper's direction reliably: {out['rows']['finetune']} rows "
                                        f"finetuned, {out['rows']['analysed']} analysed (the paper: thousands){width}"))
    return out, table


def _between(preset: Preset, setup: Setup, report: Progress) -> tuple[dict, list]:
    from repmap_core.experiments import between_recipe

    p = setup.params
    out = between_recipe(setup.models[0].name, setup.models[1].name, setup.data, limit=p.get("limit"), source_layer=p["source_layer"],
                         target_layer=p["target_layer"], position=p["position"], method=p["method"], progress=report)
    b = out["between"]
    table = [_row("probe carried as A w: sign(t·Aw) accuracy", preset.published["vector_transfer_accuracy"],
                  b["transfer"]["vector"]),
             _row("probe carried as a readout (ridge of its scores on target activations), accuracy", None,
                  b["transfer"]["functional"]),
             _row("map R² (held out)", None, b["map"]["r2_test"]),
             _row("source probe accuracy (test)", None, b["probe"]["source"]["test"]),
             _row("target probe accuracy (test)", None, b["probe"]["target"]["test"]),
             _row("linear CKA source vs target", None, b["similarity"]["linear_cka"])]
    return out, table


def _pca_turn_layer(layers: list[int], xy: np.ndarray) -> int:
    """The layer where a 2-D trace is furthest from the chord joining its ends (the top of an arch)."""
    xy = np.asarray(xy, np.float64)
    a, b = xy[0], xy[-1]
    chord = b - a
    n = np.array([-chord[1], chord[0]]) / max(np.linalg.norm(chord), 1e-30)
    return int(layers[int(np.argmax(np.abs((xy - a) @ n)))])


def _rimsky(preset: Preset, setup: Setup, report: Progress) -> tuple[dict, list]:
    from repmap_core.experiments import rimsky_recipe

    p = setup.params
    base, chat = setup.models[0].name, setup.models[1].name
    out = rimsky_recipe(base, chat, setup.data, layers=p["layers"], limit=p.get("limit"),
                        chat_template=p.get("chat_template", (True, True)), progress=report)
    cos = {int(k): v for k, v in out["cosine_per_layer"].items()}
    layers = sorted(cos)
    after_turn = [L for L in layers if L > layers[len(layers) // 2]]
    neighbours = np.asarray(out["base"]["layer_cosine"])
    pub = preset.published
    table = [_row("base vs chat cosine, first layer", pub["base_vs_chat_cosine_early_layers"], cos[layers[0]]),
             _row("base vs chat cosine, lowest (layer)", None, f"{min(cos.values()):.3f} (layer {min(cos, key=cos.get)})"),
             _row(f"base vs chat cosine, around layer {pub['rebound_layer']} (here: deepest layers, mean)",
                  pub["base_vs_chat_cosine_rebound"], float(np.mean([cos[L] for L in after_turn])) if after_turn else None),
             _row("layer where the PCA trace of base vectors turns", "11–12",
                  _pca_turn_layer(out["base"]["layers"], out["base"]["pca"])),
             _row("neighbouring-layer cosine, base (mean)", None, float(np.mean(np.diag(neighbours, 1))))]
    return out, table


def _lrt(preset: Preset, setup: Setup, report: Progress) -> tuple[dict, list]:
    from repmap_core.experiments import lrt_recipe
    from repmap_core.models import model_info, resolve_model

    p = setup.params
    target = setup.models[1].name
    layer = p["target_layer"] if p["target_layer"] is not None else model_info(resolve_model(target)).n_layers // 2
    out = lrt_recipe(setup.models[0].name, target, setup.data, source_layer=p["source_layer"], target_layer=layer,
                     multipliers=p["multipliers"], limit=p.get("limit"), progress=report)
    lo, hi = LRT_PUBLISHED["lrt_pearson_r_range"]
    mlo, mhi = LRT_PUBLISHED["lrt_mse_range"]
    cmp = out["comparison"]
    interval = cmp.get("pearson_r_interval") or [None, None]
    table = [_row("Pearson r native vs transferred propensity", f"{lo}–{hi}", cmp["pearson_r"]),
             _row("  its 95% interval (bootstrap over held-out questions)", None,
                  None if interval[0] is None else f"[{interval[0]:.2f}, {interval[1]:.2f}]"),
             _row("  null: r of native vs a random direction", None, cmp.get("null_pearson_r")),
             _row("MSE native vs transferred propensity", f"{mlo}–{mhi}", cmp["mse"]),
             _row("native vector's slope (propensity per unit α)", None, out.get("native_slope")),
             _row("cosine native vs carried vector", None, out["cosine_native_vs_carried"]),
             _row("map R² (held out)", None, out["map"]["r2_test"])]
    return out, table


RUNNERS = {"within": _within, "within_weak": lambda p, s, r: _within(p, s, r, weak=True), "between": _between,
           "rimsky": _rimsky, "lrt": _lrt}
