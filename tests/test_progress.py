"""progress.py: the time left shown beside every bar, from an estimate made before the start until the
work gives a pace, then from that pace."""
from __future__ import annotations

import pytest

from repmap_core.progress import Pace, duration, seconds_left, time_text


def test_durations_read_in_seconds_minutes_and_hours():
    assert duration(40.4) == "40 s"
    assert duration(150) == "2 min"  # 2.5 min rounds to even: still minutes, never "150 s"
    assert duration(19 * 60) == "19 min"
    assert duration(3 * 3600 + 5 * 60) == "3 h 05 min"
    assert duration(-1) == "0 s"


def test_time_left_follows_the_estimate_until_there_is_a_pace_then_the_pace():
    assert seconds_left(2.0, 0.01, estimate=60) == pytest.approx(58)  # 1% done: the estimate less the time spent
    assert seconds_left(2.0, 0.01) is None  # no estimate and no pace yet: nothing to say
    assert seconds_left(4.0, 0.5, estimate=60) == pytest.approx(56)  # half done but under 5 s in: still the estimate
    assert seconds_left(10.0, 0.25, estimate=60) == pytest.approx(30)  # 25% in 10 s: 30 s to go at that pace
    assert seconds_left(10.0, 1.0) == 0.0


def test_the_sentence_says_whether_the_time_left_is_estimated_or_paced():
    assert time_text(3, 0.01, 50) == "3 s, about 47 s left (estimated)"
    assert time_text(20, 0.5) == "20 s, about 20 s left"
    assert time_text(3, 0.0) == "3 s"
    assert time_text(4, 0.01, 3) == "4 s, longer than estimated (3 s)"  # never "0 s left" while it still runs


def test_pace_adds_the_time_to_each_message():
    now = [100.0]
    seen = []
    pace = Pace(lambda f, m: seen.append((f, m)), estimate=40, clock=lambda: now[0])
    pace(0.0, "starting")
    now[0] = 120.0
    pace(0.5, "layer 3 of 6")
    now[0] = 130.0
    pace(1.5, "done")  # clipped to 1
    assert seen == [(0.0, "starting · 0 s, about 40 s left (estimated)"), (0.5, "layer 3 of 6 · 20 s, about 20 s left"),
                    (1.0, "done · 30 s")]
