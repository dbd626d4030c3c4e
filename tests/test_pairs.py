"""Pair ids: a pair is one group, each unpaired row a group of its own (apart from every pair)."""
from __future__ import annotations

import numpy as np

from repmap_core.pairs import groups_of


def test_groups_are_pairs_and_each_unpaired_row_its_own():
    g = groups_of(np.array([3, 3, -1, -1, 7, 7]))
    assert g[0] == g[1] == 3 and g[4] == g[5] == 7
    assert len({g[2], g[3], 3, 7}) == 4  # the two unpaired rows are groups of one, apart from the pairs


def test_groups_of_gives_unpaired_rows_their_own_negative_group():
    g = groups_of(np.array([0, 0, -1, 1, 1, -1]))
    assert g[0] == g[1] and g[3] == g[4]
    assert len(set(g.tolist())) == 4
    assert g[2] != g[5] and g[2] < 0 and g[5] < 0
