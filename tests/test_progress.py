"""progress.py: the time left shown beside every bar, from an estimate made before the start until the
work gives a pace, then from that pace (measured after any part that was done at once)."""
from __future__ import annotations

import pytest

from repmap_core.progress import Clock, Pace, duration, seconds_left


def test_durations_read_in_seconds_minutes_and_hours():
    assert duration(40.4) == "40 s"
    assert duration(150) == "2 min"
    assert duration(19 * 60) == "19 min"
    assert duration(3 * 3600 + 5 * 60) == "3 h 05 min"
    assert duration(-1) == "0 s"


def test_time_left_follows_the_estimate_until_there_is_a_pace_then_the_pace():
    assert seconds_left(2.0, 0.01, estimate=60) == pytest.approx(58)  # 1% done: the estimate less the time spent
    assert seconds_left(2.0, 0.01) is None  # no estimate and no pace yet: nothing to say
    assert seconds_left(4.0, 0.5, estimate=60) == pytest.approx(56)  # half done but under 5 s in: still the estimate
    assert seconds_left(10.0, 0.25, estimate=60) == pytest.approx(30)  # 25% in 10 s: 30 s to go at that pace
    assert seconds_left(10.0, 1.0) == 0.0
    assert seconds_left(20.0, 0.6, since=(10.0, 0.5)) == pytest.approx(40)  # 10% in the 10 s since: 40 s for 40%


class FakeTime:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_sentence_says_whether_the_time_left_is_estimated_or_paced():
    t = FakeTime()
    c = Clock(50, t)
    t.now += 3
    c.update(0.01)
    assert c.text() == "3 s, about 47 s left (estimated)"
    t.now += 17
    c.update(0.5)
    assert c.text() == "20 s, about 20 s left"
    assert Clock(None, t).text() == "0 s"
    late = Clock(3, t)
    t.now += 4
    late.update(0.01)
    assert late.text() == "4 s, longer than estimated (3 s)"  # never "0 s left" while it still runs


def test_a_part_read_from_the_cache_does_not_make_the_rest_look_fast():
    """Two models' activations read at once (half the bar in a moment), then the scoring: the pace is the
    scoring's, not 50% in a second."""
    t = FakeTime()
    c = Clock(None, t)
    t.now += 0.3
    c.update(0.5)  # cached: done at once
    t.now += 10
    c.update(0.6)  # 10% of the whole in 10 s of real work
    assert c.seconds_left() == pytest.approx(40)  # not 10.3 s × 0.4 / 0.6 ≈ 7 s


def test_pace_adds_the_time_to_each_message():
    t = FakeTime()
    seen = []
    pace = Pace(lambda f, m: seen.append((f, m)), estimate=40, clock=t)
    pace(0.0, "starting")
    t.now += 20
    pace(0.5, "layer 3 of 6")
    t.now += 10
    pace(1.5, "done")  # clipped to 1
    assert seen == [(0.0, "starting · 0 s, about 40 s left (estimated)"), (0.5, "layer 3 of 6 · 20 s, about 20 s left"),
                    (1.0, "done · 30 s")]
