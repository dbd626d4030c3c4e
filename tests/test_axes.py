"""Custom axes: planted directions are recovered, and the coordinates are the projections they claim."""
from __future__ import annotations

import numpy as np
import pytest

from repmap_core.axes import custom_axes, direction
from repmap_core.errors import RepmapError


def planted(n: int = 400, d: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    task = rng.normal(size=d)
    task /= np.linalg.norm(task)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d)) * 0.3 + np.outer(2.0 * y - 1, task) * 2.0
    return X, y, task


def test_the_class_mean_axis_finds_the_planted_task_direction_and_the_probe_axis_separates():
    X, y, task = planted()
    assert abs(direction(X, y, "mean_diff") @ task) > 0.99
    # a probe's weights are a functional, scaled by the inverse feature variances: not the displacement
    # itself, but the direction along which the classes are told apart
    along = (X - X.mean(0)) @ direction(X, y, "probe")
    assert ((along > 0) == (y == 1)).mean() > 0.99


def test_coordinates_are_projections_and_the_rest_axis_is_orthogonal():
    X, y, task = planted()
    xy = custom_axes(X, y, "mean_diff", "pc1_rest")
    dx = direction(X, y, "mean_diff")
    assert np.allclose(xy[:, 0], (X - X.mean(0)) @ dx, atol=1e-4)
    dy = direction(X, y, "pc1_rest", other=dx)
    assert abs(dx @ dy) < 1e-8  # the y axis shows what the x axis does not
    sep = xy[y == 1, 0].mean() - xy[y == 0, 0].mean()
    assert sep > 3.5  # the classes sit about 4 apart along the task direction (2 each side)


def test_a_given_direction_and_bad_requests():
    X, y, task = planted()
    xy = custom_axes(X, y, task * 5.0, "pc1_rest")  # any (d,) array: e.g. δ or a steering vector
    assert np.allclose(xy[:, 0], (X - X.mean(0)) @ task, atol=1e-4)
    with pytest.raises(RepmapError, match="width 3"):
        custom_axes(X, y, np.ones(3))
    with pytest.raises(RepmapError, match="both labels"):
        custom_axes(X, np.ones(len(X)), "mean_diff")


def test_class_names_come_from_the_data():
    from repmap_core.class_names import class_names
    from repmap_core.data import load_dataset

    assert class_names(load_dataset("builtin:sentiment", limit=10)) == {0: "negative", 1: "positive"}
    assert class_names(load_dataset("builtin:hh_harmless", limit=10)) == {0: "rejected", 1: "chosen"}
    assert class_names(load_dataset("builtin:corrigible", limit=10)) == {0: "not matching", 1: "matching behaviour"}
