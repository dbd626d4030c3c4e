"""Views rebuilt from a remembered request and the cache alone (nothing extracted): after a refresh,
in a new session, or for Share. Each returns the same result its page computes (a dataclass of
`repmap_core.results.view_results`), or None when some activations are not in the cache."""
from __future__ import annotations

from repmap_core.errors import RepmapError
from repmap_core.results.recent import recall
from repmap_core.results.view_results import (
    AcrossResult,
    ExplorerResult,
    ShiftResult,
    across_result,
    explorer_result,
    shift_result,
)

STATE_KEYS = {"explorer": "explorer.result", "shift": "shift.result", "across": "across.result"}


def explorer(req: dict) -> ExplorerResult | None:
    return explorer_result(req, cached_only=True)  # its per-layer scores are kept in the cache too (results.scores)


def shift(req: dict) -> ShiftResult | None:
    return shift_result(req, cached_only=True)


def across(req: dict) -> AcrossResult | None:
    return across_result(req, cached_only=True)


REBUILD = {"explorer": explorer, "shift": shift, "across": across}


def rebuild_missing(session) -> list[str]:
    """Put every remembered view this session lacks back into it, from the cache; return those rebuilt."""
    done = []
    for view, req in recall().items():
        if session.get(STATE_KEYS[view]) is not None:
            continue
        try:
            state = REBUILD[view](req)
        except (RepmapError, KeyError, TypeError, ValueError):
            continue  # a request from another version, or data that has gone: nothing to rebuild
        if state is not None:
            session[STATE_KEYS[view]] = state
            done.append(view)
    return done
