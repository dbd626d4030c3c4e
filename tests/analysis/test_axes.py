"""Custom axes: planted directions are recovered, and the coordinates are the projections they claim."""
from __future__ import annotations

import numpy as np
import pytest

from repmap_core.analysis.axes import custom_axes, direction
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
    from repmap_core.data.class_names import class_names
    from repmap_core.data.load import load_dataset

    assert class_names(load_dataset("builtin:sentiment", limit=10)) == {0: "negative", 1: "positive"}
    assert class_names(load_dataset("builtin:hh_harmless", limit=10)) == {0: "rejected", 1: "chosen"}
    assert class_names(load_dataset("builtin:corrigible", limit=10)) == {0: "not matching", 1: "matching behaviour"}


def test_shift_axes_find_the_planted_finetuning_direction_and_show_the_move():
    """Finetuning that pushes each class along a planted task direction: the 'after' class-mean axis
    recovers it, the mean-move axis finds a planted common drift, and the coordinates show the move."""
    from repmap_core.analysis.axes import shift_axes, shift_direction

    rng = np.random.default_rng(1)
    n, d = 400, 24
    task, drift = np.linalg.qr(rng.normal(size=(d, 2)))[0].T
    y = rng.permutation(np.arange(n) % 2)  # balanced: the mean move holds no task part
    before = rng.normal(size=(n, d))
    after = before + np.outer(2.0 * y - 1, task) * 3.0 + drift * 1.5
    assert abs(shift_direction(before, after, y, "after_mean_diff") @ task) > 0.99
    assert abs(shift_direction(before, after, y, "mean_move") @ drift) > 0.99
    b_xy, a_xy, cos = shift_axes(before, after, y, "after_mean_diff", "mean_move")
    assert abs(cos) < 0.1  # the two planted directions are orthogonal
    sign = np.sign(shift_direction(before, after, y, "after_mean_diff") @ task)
    gap_before = sign * (b_xy[y == 1, 0].mean() - b_xy[y == 0, 0].mean())
    gap_after = sign * (a_xy[y == 1, 0].mean() - a_xy[y == 0, 0].mean())
    assert gap_before == pytest.approx(0, abs=0.5) and gap_after == pytest.approx(6.0, rel=0.1)
    drift_sign = np.sign(shift_direction(before, after, y, "mean_move") @ drift)
    assert drift_sign * (a_xy[:, 1].mean() - b_xy[:, 1].mean()) == pytest.approx(1.5, rel=0.1)
    _, _, cos_rest = shift_axes(before, after, y, "after_mean_diff", "pc1_rest")
    assert abs(cos_rest) < 1e-6
    with pytest.raises(RepmapError, match="did not move"):
        shift_direction(before, before, y, "mean_move")
    with pytest.raises(RepmapError, match="same rows"):
        shift_axes(before, after[:10], y)
