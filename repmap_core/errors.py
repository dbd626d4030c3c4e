"""The one exception type users see: a single clear sentence saying what was wrong and what to do."""
from __future__ import annotations


class RepmapError(Exception):
    """A problem with the user's input or environment, phrased for the user.

    The message is one sentence: what was wrong and what to do about it. The CLI prints it on
    stderr and exits non-zero; the app shows it with `st.error` and keeps running.
    """


def shown_path(path: object, most: int = 80) -> str:
    """A user's path or name as a sentence quotes it: whole up to `most` characters, else its start and end."""
    text = str(path)
    return text if len(text) <= most else f"{text[:most // 2 - 2]}...{text[-(most // 2 - 1):]}"


def path_error(path: object, error: OSError, what: str = "a path") -> RepmapError:
    """One sentence for an OSError on a path the user gave (a name too long for the system, no permission,
    a special file): the path shortened, the system's reason, what to do."""
    reason = (error.strerror or type(error).__name__).rstrip(".")
    return RepmapError(f"'{shown_path(path)}' cannot be used as {what} ({reason[:1].lower() + reason[1:]}); "
                       "check the path and give another.")
