"""The progress callback every long computation takes, instead of drawing a bar itself, and the time
left that goes with it.

`progress(fraction, message)`: `fraction` in [0, 1] of the whole task, `message` one short line for
a person. The app turns it into `st.progress`, the CLI into lines on stderr, tests into lists.

`Clock` turns the fractions reported so far into the time left: from an estimate made before the start
until the work gives a pace (5% more done and 5 s of work), then from that pace. A part that finishes at
once (read from the cache) says nothing about the pace of the rest, so the pace is measured from the last
such jump. `Pace` is a `Progress` that adds that time to each message before passing it on.
"""
from __future__ import annotations

import time
from collections.abc import Callable

Progress = Callable[[float, str], None]

PACE_AFTER_FRACTION = 0.05  # the pace is trusted once 5% more is done...
PACE_AFTER_SECONDS = 5.0  # ...over 5 s of work: before that the estimate made before the start says it
JUMP_SECONDS = 0.5  # a part done within half a second (a cached result)...
JUMP_FRACTION = 0.05  # ...of at least 5% of the whole restarts the pace's measurement


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


def seconds_left(elapsed: float, fraction: float, estimate: float | None = None,
                 since: tuple[float, float] = (0.0, 0.0)) -> float | None:
    """Time left at the pace since `since` (elapsed, fraction) once 5% more is done over 5 s (the time since ×
    the fraction still to do / the fraction done since); before that, the estimate made before the start less
    the time spent (None without one)."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    if fraction >= 1.0:
        return 0.0
    done, spent = fraction - since[1], elapsed - since[0]
    if done >= PACE_AFTER_FRACTION and spent >= PACE_AFTER_SECONDS:
        return spent * (1 - fraction) / done
    if estimate is not None:
        return max(float(estimate) - elapsed, 0.0)
    return None


class Clock:
    """Elapsed time, the fraction done and the time left of one piece of work (see the module's docstring)."""

    def __init__(self, estimate: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.estimate, self.clock = estimate, clock
        self.started = clock()
        self.fraction = 0.0
        self.since = (0.0, 0.0)  # (elapsed, fraction) the pace is measured from
        self._last = (0.0, 0.0)

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def update(self, fraction: float) -> float:
        """Record `fraction` done (clipped to [0, 1]) and return it."""
        now, fraction = self.elapsed, min(max(float(fraction), 0.0), 1.0)
        if is_jump(self._last, (now, fraction)):
            self.since = (now, fraction)  # done at once: the pace of the rest is measured from here
        self._last, self.fraction = (now, fraction), fraction
        return fraction

    def seconds_left(self) -> float | None:
        return seconds_left(self.elapsed, self.fraction, self.estimate, self.since)

    def text(self) -> str:
        return time_text(self.elapsed, self.fraction, self.estimate, self.since)


def is_jump(before: tuple[float, float], after: tuple[float, float]) -> bool:
    """Whether going from `before` to `after` ((elapsed, fraction) each) was a part done at once (read from the
    cache): the pace of the rest is then measured from `after`."""
    return after[1] - before[1] >= JUMP_FRACTION and after[0] - before[0] <= JUMP_SECONDS


def time_text(elapsed: float, fraction: float, estimate: float | None = None,
              since: tuple[float, float] = (0.0, 0.0)) -> str:
    """'12 s, about 40 s left' (at the pace so far), '3 s, about 50 s left (estimated)' (before there is a
    pace), '4 s, longer than estimated (3 s)', or '3 s' when neither says or the work is done."""
    left = seconds_left(elapsed, fraction, estimate, since)
    if left is None or fraction >= 1.0:
        return duration(elapsed)
    paced = fraction - since[1] >= PACE_AFTER_FRACTION and elapsed - since[0] >= PACE_AFTER_SECONDS
    if not paced and left <= 0:
        if not estimate or duration(elapsed) == duration(estimate):  # "0 s, longer than estimated (0 s)" says nothing
            return duration(elapsed)
        return f"{duration(elapsed)}, longer than estimated ({duration(estimate)})"
    return f"{duration(elapsed)}, about {duration(left)} left" + ("" if paced else " (estimated)")


class Pace:
    """A `Progress` that adds the time so far and left to each message before passing it on to `report`:
    `Pace(bar, estimate=40)(0.5, "layer 3 of 6")` reports (0.5, "layer 3 of 6 · 21 s, about 21 s left")."""

    def __init__(self, report: Progress, estimate: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.report, self.clock = report, Clock(estimate, clock)

    def __call__(self, fraction: float, message: str) -> None:
        fraction = self.clock.update(fraction)
        self.report(fraction, f"{message} · {self.clock.text()}")
