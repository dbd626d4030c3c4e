"""The progress callback every long computation takes, instead of drawing a bar itself, and the time
left that goes with it.

`progress(fraction, message)`: `fraction` in [0, 1] of the whole task, `message` one short line for
a person. The app turns it into `st.progress`, the CLI into lines on stderr, tests into lists.
`Pace` turns the fractions reported so far into the time left: from an estimate made before the start
until the work itself gives a pace (5% done and 5 s in), then from that pace.
"""
from __future__ import annotations

import time
from collections.abc import Callable

Progress = Callable[[float, str], None]

PACE_AFTER_FRACTION = 0.05  # the pace so far is trusted from 5% done...
PACE_AFTER_SECONDS = 5.0  # ...and 5 s in: before that the estimate made before the start says it


def silent(fraction: float, message: str) -> None:
    """A `Progress` that reports nothing: what a long computation calls when it was given none."""


def duration(seconds: float) -> str:
    """'40 s', '3 min', '1 h 05 min': how a time reads on screen."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def seconds_left(elapsed: float, fraction: float, estimate: float | None = None) -> float | None:
    """Time left at the pace so far (elapsed × the fraction still to do / the fraction done) once 5% is done
    and 5 s have passed; before that, the estimate made before the start less the time spent (None without one)."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    if fraction >= 1.0:
        return 0.0
    if fraction >= PACE_AFTER_FRACTION and elapsed >= PACE_AFTER_SECONDS:
        return elapsed * (1 - fraction) / fraction
    if estimate is not None:
        return max(float(estimate) - elapsed, 0.0)
    return None


def time_text(elapsed: float, fraction: float, estimate: float | None = None) -> str:
    """'12 s, about 40 s left' (at the pace so far), '3 s, about 50 s left (estimated)' (before there is
    a pace), or '3 s' when neither says or the work is done."""
    left = seconds_left(elapsed, fraction, estimate)
    if left is None or fraction >= 1.0:
        return duration(elapsed)
    paced = fraction >= PACE_AFTER_FRACTION and elapsed >= PACE_AFTER_SECONDS
    if not paced and left <= 0:
        return f"{duration(elapsed)}, longer than estimated ({duration(estimate)})"
    return f"{duration(elapsed)}, about {duration(left)} left" + ("" if paced else " (estimated)")


class Pace:
    """A `Progress` that adds the time so far and left to each message before passing it on to `report`:
    `Pace(bar, estimate=40)(0.5, "layer 3 of 6")` reports (0.5, "layer 3 of 6 · 21 s, about 21 s left")."""

    def __init__(self, report: Progress, estimate: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.report, self.estimate, self.clock = report, estimate, clock
        self.started = clock()
        self.fraction = 0.0

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def __call__(self, fraction: float, message: str) -> None:
        self.fraction = min(max(float(fraction), 0.0), 1.0)
        self.report(self.fraction, f"{message} · {time_text(self.elapsed, self.fraction, self.estimate)}")
