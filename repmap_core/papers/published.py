"""The papers' published numbers (DESIGN.md), shown beside a run: by the recipes and presets here, and
by the pages and the report, which are handed them (`BESIDE_A_RUN`) by their callers, the pages and
the CLI; nothing below papers/ imports this.

Gao, Sun, Jiao: GPT-2 family, last layer h.11; Table 1 with ground-truth labels, Table 2 with weak
labels on Anthropic HH, δ's projection accuracy, and the probe carried GPT-2 -> GPT-2-XL as `A w`.
LRT (Bello et al. 2025): gemma-2-2b L20 -> gemma-2-9b L20, native vs transferred steering propensity.
"""
from __future__ import annotations

GAO_TABLE1 = {  # data set -> (base, finetuned, modelled) as (train, test)
    "SciQ": ((0.64, 0.53), (0.69, 0.58), (0.85, 0.79)),
    "Amazon Polarity": ((0.92, 0.88), (0.96, 0.91), (1.00, 1.00)),
    "Anthropic HH": ((0.65, 0.54), (0.65, 0.55), (0.78, 0.69)),
}
GAO_TABLE2_HH_WEAK = ((0.66, 0.53), (0.68, 0.55), (0.69, 0.55))
GAO_DELTA_ACCURACY = {"gpt2": 0.8994, "gpt2-xl": 0.4904, "gpt2 probe direction": 0.8790}
GAO_BETWEEN_VECTOR_ACCURACY = 0.5025  # GPT-2 -> GPT-2-XL, probe carried as A w
# LRT (Bello et al. 2025), gemma-2-2b L20 -> gemma-2-9b L20, across 13 behaviours
LRT_PUBLISHED = {"lrt_pearson_r_range": [0.73, 0.98], "lrt_mse_range": [5e-3, 9.6e-2]}
LRT_PUBLISHED_TEXT = (f"LRT (Bello et al. 2025), Gemma-2-2b L20 → Gemma-2-9b L20: Pearson r "
                      f"{LRT_PUBLISHED['lrt_pearson_r_range'][0]}–{LRT_PUBLISHED['lrt_pearson_r_range'][1]}, MSE "
                      f"{LRT_PUBLISHED['lrt_mse_range'][0]:g}–{LRT_PUBLISHED['lrt_mse_range'][1]:g} across 13 behaviours")

# view -> the sentence a report prints beside this run's comparable number (`share.report.build_report(beside=...)`)
BESIDE_A_RUN = {
    "across": f"Paper, beside this run's A w: {GAO_BETWEEN_VECTOR_ACCURACY:.4f} (GPT-2 → GPT-2-XL, last layer).",
    "steering": f"Paper, beside this run (not comparable in value): {LRT_PUBLISHED_TEXT}.",
}
