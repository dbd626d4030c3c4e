"""The papers' published numbers as DESIGN.md gives them, and the sentences shown beside a run."""
from __future__ import annotations

from repmap_core.papers.published import (
    BESIDE_A_RUN,
    GAO_BETWEEN_VECTOR_ACCURACY,
    GAO_DELTA_ACCURACY,
    GAO_TABLE1,
    GAO_TABLE2_HH_WEAK,
    LRT_PUBLISHED,
    LRT_PUBLISHED_TEXT,
)


def test_the_numbers_are_the_papers():
    assert GAO_TABLE1["Amazon Polarity"] == ((0.92, 0.88), (0.96, 0.91), (1.00, 1.00))
    assert GAO_TABLE1["SciQ"][2] == (0.85, 0.79) and GAO_TABLE1["Anthropic HH"][0] == (0.65, 0.54)
    assert GAO_TABLE2_HH_WEAK == ((0.66, 0.53), (0.68, 0.55), (0.69, 0.55))
    assert GAO_DELTA_ACCURACY == {"gpt2": 0.8994, "gpt2-xl": 0.4904, "gpt2 probe direction": 0.8790}
    assert GAO_BETWEEN_VECTOR_ACCURACY == 0.5025
    assert LRT_PUBLISHED == {"lrt_pearson_r_range": [0.73, 0.98], "lrt_mse_range": [5e-3, 9.6e-2]}


def test_the_sentences_beside_a_run_carry_those_numbers():
    assert "0.73–0.98" in LRT_PUBLISHED_TEXT and "13 behaviours" in LRT_PUBLISHED_TEXT and "0.005–0.096" in LRT_PUBLISHED_TEXT
    assert set(BESIDE_A_RUN) == {"across", "steering"}
    assert "A w: 0.5025" in BESIDE_A_RUN["across"] and LRT_PUBLISHED_TEXT in BESIDE_A_RUN["steering"]
