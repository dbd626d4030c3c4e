"""Pair ids, the one convention data and analysis share: rows with the same non-negative `pair_id` are
one item (chosen/rejected, a correct answer and a distractor, an A/B question in both letter orders) and
stay on one side of every split, subsample and bootstrap; -1 marks a row without a pair.

Data gives rows their pair ids (`data/schemas.py`) and subsamples whole groups (`TextDataset.subsample`);
analysis splits and resamples them (`analysis/splits.py`, `analysis/stats.py`). Both group rows here,
below them, so neither imports the other for it.
"""
from __future__ import annotations

import numpy as np


def groups_of(pair_ids: np.ndarray) -> np.ndarray:
    """Group id per row (n,): the pair id, or a unique negative id for an unpaired row (-1, -2, ... by row)."""
    pair_ids = np.asarray(pair_ids)
    return np.where(pair_ids >= 0, pair_ids, -1 - np.arange(len(pair_ids)))
