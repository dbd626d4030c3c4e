"""The three pair-keeping splits: whole groups on one side, the sizes and balance each promises, the
same rows for the same seed, and the rows pinned for seed 0 (the reason they stay three functions)."""
from __future__ import annotations

import numpy as np
import pytest

from repmap_core.analysis.splits import split_pairs, train_test_split_groups, validation_split
from repmap_core.data.load import TextDataset
from repmap_core.errors import RepmapError


def paired(n_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and pair ids of `n_pairs` pairs, each a 1 row and a 0 row, pairs interleaved."""
    return np.tile([1, 0], n_pairs), np.repeat(np.arange(n_pairs), 2)


def dataset(labels: np.ndarray, pair_ids: np.ndarray) -> TextDataset:
    n = len(labels)
    return TextDataset("planted", [f"row {i}" for i in range(n)], np.asarray(labels, np.int8),
                       np.asarray(pair_ids, np.int64), np.full((n, 2), -1, np.int64))


def sides_share_a_group(groups: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    return bool(set(groups[a]) & set(groups[b]))


@pytest.mark.parametrize("split", ["probe", "validation", "steering"])
def test_every_split_keeps_pairs_whole_covers_every_row_once_and_follows_its_seed(split):
    y, pairs = paired(40)

    def run(seed):
        if split == "probe":
            return train_test_split_groups(y, pairs, 0.25, seed)
        if split == "validation":
            return validation_split(dataset(y, pairs), 0.25, seed)
        return split_pairs(pairs, 0.25, seed)

    train, test = run(0)
    assert not sides_share_a_group(pairs, train, test)
    assert sorted(np.concatenate([train, test])) == list(range(80))
    again, other = run(0), run(1)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train, test)))
    assert not np.array_equal(np.sort(other[1]), np.sort(test))


def test_probe_split_holds_out_the_ceiling_of_the_fraction_in_groups_and_stratifies_unpaired_rows():
    y, pairs = paired(10)
    _, test = train_test_split_groups(y, pairs, 0.25, 0)
    assert len(test) == 2 * 3  # ceil(0.25 * 10) pairs
    y = np.array([1] * 12 + [0] * 8)
    for seed in range(5):  # stratified: 5 test rows hold the classes in proportion (2 of the 8 zeros)
        train, test = train_test_split_groups(y, np.full(20, -1), 0.25, seed)
        assert len(test) == 5 and int((y[test] == 0).sum()) == 2
    with pytest.raises(RepmapError, match="between 0 and 1"):
        train_test_split_groups(y, np.full(20, -1), 1.0, 0)


def test_validation_split_counts_rows_balances_labels_and_can_be_empty():
    y = np.array([1] * 50 + [0] * 50)
    ds = dataset(y, np.full(100, -1))
    train, val = validation_split(ds, 0.2, 0)
    assert len(val) == 20 and abs(int(y[val].sum()) - 10) <= 1  # stratified: about half of each class
    assert np.array_equal(train, np.sort(train)) and np.array_equal(val, np.sort(val))
    train, val = validation_split(ds, 0.0, 0)
    assert len(val) == 0 and np.array_equal(train, np.arange(100))
    with pytest.raises(RepmapError, match="single pair"):
        validation_split(dataset(np.array([1, 0]), np.array([0, 0])), 0.5, 0)


def test_steering_split_rounds_the_fraction_and_always_leaves_one_question_each_side():
    _, pairs = paired(10)
    train, test = split_pairs(pairs, 0.3, 0)
    assert len(set(pairs[test])) == 3 and len(set(pairs[train])) == 7
    questions = np.array([0, 0, 1, 1])
    train, test = split_pairs(questions, 0.9, 0)
    assert len(set(questions[test])) == 1 and len(train) == 2  # never every question held out
    with pytest.raises(RepmapError, match="At least two"):
        split_pairs(np.array([5, 5]), 0.5, 0)


def test_the_three_draws_differ_on_the_same_rows_which_is_why_they_stay_three():
    """Seed 0 on 12 pairs at a quarter held out: the rows each split gives today. Merging them into
    one draw would change these, and with them every cached result made with a seed."""
    y, pairs = paired(12)
    probe = train_test_split_groups(y, pairs, 0.25, 0)[1]
    validation = validation_split(dataset(y, pairs), 0.25, 0)[1]
    steering = split_pairs(pairs, 0.25, 0)[1]
    held = [tuple(sorted(set(pairs[rows]))) for rows in (probe, validation, steering)]
    assert held == [(4, 6, 11), (2, 7, 9), (6, 7, 8)]
    assert len(set(held)) == 3
