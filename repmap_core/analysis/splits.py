"""Row splits that keep pairs whole: held-out rows for probes, a validation split for finetuning, and
held-out questions for steering vectors.

A group is a pair (rows sharing a `pair_id`, or an A/B question with its letter-swapped twin) or a
single unpaired row (`pairs.groups_of`). All three splits put whole groups on one side and are seeded,
but they are three functions on purpose: each draws differently, and changing any of them would
change the rows of every existing seed (the tests pin exact rows, and a cached finetune is keyed by
its seed and fraction, not by its rows, so a new draw would silently give an old key new rows).

- `train_test_split_groups` (probes, maps, the papers' fits): scikit-learn's `GroupShuffleSplit`
  for paired rows (`ceil(test_frac * groups)` groups held out), `StratifiedShuffleSplit` for
  unpaired ones (at least one row of each class on each side).
- `validation_split` (finetuning): its own stratified draw of groups by label, counted in rows (at
  least `round(val_frac * n)`), so a validation set is class-balanced whatever the pairing;
  `val_frac = 0` gives an empty validation set (train on everything, no early stopping).
- `split_pairs` (steering vectors): a plain draw of `round(test_frac * groups)` questions; every
  question holds both labels, so there is nothing to stratify.

`TextDataset.subsample` (a row limit) is a fourth draw of whole groups, with the same grouping.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from repmap_core.errors import RepmapError
from repmap_core.pairs import groups_of


class Rows(Protocol):
    """What `validation_split` reads of a `TextDataset` (data/ sits beside analysis, never under it)."""

    name: str
    labels: np.ndarray  # (n,)
    pair_ids: np.ndarray  # (n,)

    def __len__(self) -> int: ...


def train_test_split_groups(y: np.ndarray, pair_ids: np.ndarray, test_frac: float = 0.2, seed: int = 0
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test), stratified by label where possible and never splitting a pair."""
    from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit

    if not 0 < test_frac < 1:
        raise RepmapError(f"The test fraction must be between 0 and 1, not {test_frac}.")
    pair_ids = np.asarray(pair_ids)
    idx = np.arange(len(y))
    if (pair_ids >= 0).any():
        groups = groups_of(pair_ids)
        n_groups = len(np.unique(groups))
        n_test = max(1, int(np.ceil(test_frac * n_groups)))
        if n_groups - n_test < 1:
            raise RepmapError(f"{n_groups} pair(s) are too few for a held-out split; add more data.")
        split = GroupShuffleSplit(n_splits=1, test_size=n_test, random_state=seed)
        return next(split.split(idx, y, groups))
    classes, counts = np.unique(y, return_counts=True)
    n_classes = len(classes)
    # at least one row of each class on each side
    n_test = max(n_classes, int(np.ceil(test_frac * len(y))))
    if len(y) - n_test < n_classes or counts.min() < 2:  # a class of one row cannot sit on both sides
        raise RepmapError(f"{len(y)} rows are too few for a held-out split with both classes on each side; add more data.")
    split = StratifiedShuffleSplit(n_splits=1, test_size=n_test, random_state=seed)
    return next(split.split(idx, y))


def validation_split(dataset: Rows, val_frac: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices `(train, validation)`, each sorted, from a seeded split that keeps pairs whole.

    Groups are pairs (rows sharing a `pair_id`) or single unpaired rows. Groups are drawn in a
    seeded order stratified by label (each class's groups are spread evenly through the order),
    and validation takes groups until it holds at least `round(val_frac * n)` rows, but never all
    of them. `val_frac = 0` gives an empty validation set.
    """
    n = len(dataset)
    if val_frac <= 0:
        return np.arange(n), np.empty(0, np.int64)
    groups = groups_of(dataset.pair_ids)
    unique, inverse = np.unique(groups, return_inverse=True)
    if len(unique) < 2:
        raise RepmapError(f"{dataset.name} is a single pair, so nothing is left to validate on; add rows or set the validation fraction to 0.")
    rng = np.random.default_rng(seed)
    group_label = np.bincount(inverse, weights=dataset.labels.astype(np.float64)) / np.bincount(inverse)
    strata = np.unique(group_label, return_inverse=True)[1]
    spread = np.empty(len(unique))  # where each group falls within its class, in (0, 1)
    for s in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == s))
        spread[members] = (np.arange(len(members)) + rng.random()) / len(members)
    order = np.lexsort((rng.permutation(len(unique)), spread))
    sizes = np.bincount(inverse)[order]
    target = max(1, round(val_frac * n))
    n_val_groups = min(int(np.searchsorted(np.cumsum(sizes), target)) + 1, len(unique) - 1)
    in_val = np.isin(inverse, order[:n_val_groups])
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


def split_pairs(groups: np.ndarray, test_frac: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test), whole groups (pairs, or questions with their twins) on each side, seeded."""
    groups = np.asarray(groups)
    ids = np.unique(groups)
    if len(ids) < 2:
        raise RepmapError("At least two A/B questions are needed: one to make the vector, one to score it.")
    rng = np.random.default_rng(seed)
    test_ids = rng.choice(ids, size=min(len(ids) - 1, max(1, int(round(test_frac * len(ids))))), replace=False)
    test = np.isin(groups, test_ids)
    return np.flatnonzero(~test), np.flatnonzero(test)
