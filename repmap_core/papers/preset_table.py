"""The presets themselves: one `Preset` per published experiment, with what the paper ran (models,
data, layer, map), its numbers, and the scaled-down setup that runs on any machine (what a preset
is, and the other parts, are in `presets.py`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from repmap_core.capture.gguf import SMOLLM2_ID
from repmap_core.errors import RepmapError
from repmap_core.locations import EMBEDDED_MODEL_ID
from repmap_core.papers.published import (
    GAO_BETWEEN_VECTOR_ACCURACY,
    GAO_DELTA_ACCURACY,
    GAO_TABLE1,
    GAO_TABLE2_HH_WEAK,
    LRT_PUBLISHED,
)

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

    def setup(self, scaled: bool) -> Setup:
        """The scaled-down setup, or the full one."""
        return self.scaled if scaled else self.full


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
        reproduces="Bello et al. 2025 (LRT), Table 1: an affine map gemma-2-2b L20 → gemma-2-9b L20 carries CAA vectors "
                   "(here by its linear part, A v: the bias cancels in a difference of activations); native vs "
                   "transferred steering propensity, Pearson r 0.73–0.98 over 13 behaviours.",
        recipe="lrt",
        full=Setup((ModelNeed("google/gemma-2-2b", "steer", 20), ModelNeed("google/gemma-2-9b", "steer", 20)),
                   "file:datasets/caa/corrigible-neutral-HHH.jsonl", 1000, 150,
                   params={"source_layer": 20, "target_layer": 20, "multipliers": (-2.0, -1.0, 0.0, 1.0, 2.0)}),
        # a small model's vector carried to a larger one, as 2b -> 9b: MiniLM block 4 -> SmolLM2 block 14, on the
        # behaviour and block where SmolLM2's own vector was measured to steer (steering/measured.py), so r is defined
        scaled=Setup((ModelNeed(_EMB, "extract", 4), ModelNeed(SMOLLM2, "steer", 14)), "builtin:myopic_reward", 420, 110,
                     params={"source_layer": 4, "target_layer": 14, "limit": None,
                             "multipliers": (-1.0, -0.5, 0.0, 0.5, 1.0)}),
        published=LRT_PUBLISHED,
        scaled_note="MiniLM (22M) block 4 → SmolLM2 (135M) block 14 for Gemma-2-2b → 9b, 90 held-out myopic-reward "
                    "questions (each in both letter orders) for 13 behaviours; block 14 is where SmolLM2's own vector "
                    "was measured to steer beyond a random direction, so r compares curves that move. The paper asks both "
                    "native vectors to steer: MiniLM is an encoder with no next-token head, so its own vector cannot be "
                    "steered, and no second causal model ships offline (with Gemma-3 installed, SmolLM2 → Gemma-3 can be "
                    "run on the Steering page, where r is given only if the target's own vector steers)."),
):
    PRESETS[_p.name] = _p


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise RepmapError(f"There is no preset '{name}'; choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]
