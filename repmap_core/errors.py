"""The one exception type users see: a single clear sentence saying what was wrong and what to do."""
from __future__ import annotations


class RepmapError(Exception):
    """A problem with the user's input or environment, phrased for the user.

    The message is one sentence: what was wrong and what to do about it. The CLI prints it on
    stderr and exits non-zero; the app shows it with `st.error` and keeps running.
    """
