"""The progress callback every long computation takes, instead of drawing a bar itself.

`progress(fraction, message)`: `fraction` in [0, 1] of the whole task, `message` one short line for
a person. The app turns it into `st.progress`, the CLI into lines on stderr, tests into lists.
"""
from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[float, str], None]


def silent(fraction: float, message: str) -> None:
    """A `Progress` that reports nothing: what a long computation calls when it was given none."""

