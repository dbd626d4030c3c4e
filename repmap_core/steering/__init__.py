"""Steering vectors: CAA per layer (letter-balanced), steering with baselines, comparisons and transfer.

- `vectors`: the `SteeringVector` type, its safetensors format, CAA from paired activations.
- `choices`: A/B questions as the model sees them (both letter orders, chat template, prompts).
- `letters`: the A/B letters' logit gap at a prompt's last position, in fp32.
- `apply`: the steering hook, propensity sweeps with a random baseline and side effect, generation
  (`sweep_prefix`: a sweep's shared first blocks run once per batch of prompts).
- `compare`: vectors for a model (`compute_vectors`), Rimsky's comparisons, LRT transfer.
"""
from __future__ import annotations

from repmap_core.steering.apply import (
                                        SCALES,
                                        PropensityCurve,
                                        SweepResult,
                                        generate,
                                        next_token_loss,
                                        propensity_curve,
                                        propensity_sweep,
                                        scale_factor,
                                        steer,
)
from repmap_core.steering.choices import (
                                        ABPrompt,
                                        BalancedAB,
                                        LetterBalance,
                                        ab_prompts,
                                        answer_letter,
                                        apply_chat_template,
                                        balanced_rows,
                                        letter_balanced,
                                        swap_choices,
)
from repmap_core.steering.compare import (
                                        TransferResult,
                                        VectorSet,
                                        compare_curves,
                                        compute_vectors,
                                        split_pairs,
                                        transfer_and_compare,
                                        transfer_vector,
)
from repmap_core.steering.letters import context_room, letter_logit_gaps, prompts_over_context
from repmap_core.steering.vectors import (
                                        SteeringVector,
                                        caa_vector,
                                        cosine_per_layer,
                                        layer_cosines,
                                        load_vectors,
                                        pair_differences,
                                        save_vectors,
                                        vector_pca,
                                        vectors_from_activations,
                                        vectors_metadata,
)

__all__ = ["SCALES", "ABPrompt", "BalancedAB", "LetterBalance", "PropensityCurve", "SteeringVector", "SweepResult",
           "TransferResult", "VectorSet", "ab_prompts", "answer_letter", "apply_chat_template", "balanced_rows",
           "caa_vector", "compare_curves", "compute_vectors", "context_room", "cosine_per_layer", "generate",
           "layer_cosines", "letter_balanced", "letter_logit_gaps", "load_vectors", "next_token_loss", "pair_differences",
           "prompts_over_context", "propensity_curve", "propensity_sweep", "save_vectors", "scale_factor", "split_pairs",
           "steer", "swap_choices", "transfer_and_compare", "transfer_vector", "vector_pca", "vectors_from_activations",
           "vectors_metadata"]
