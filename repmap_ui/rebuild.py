"""Views rebuilt from a remembered request and the cache alone (nothing extracted): after a refresh,
in a new session, or for Share. Each returns the same result its page computes (a dataclass of
`repmap_core.results.view_results` or `view_fits`), or None when some activations are not in the cache
(or, for the within fit, when refitting would take more than a moment)."""
from __future__ import annotations

import json

from repmap_core.errors import RepmapError
from repmap_core.results.recent import recall, remember
from repmap_core.results.view_fits import GROUND_TRUTH, WithinFitResult, within_fit
from repmap_core.results.view_results import (
    AcrossResult,
    ExplorerResult,
    ShiftResult,
    SteeringResult,
    across_result,
    explorer_result,
    shift_result,
    steering_result,
)

STATE_KEYS = {"explorer": "explorer.result", "shift": "shift.result", "within": "within.result",
              "across": "across.result", "steering": "steer.result"}
FIT_OPTIONS = ("layer", "method", "alpha", "steps", "test", "labels")


def explorer(req: dict, session) -> ExplorerResult | None:
    return explorer_result(req, cached_only=True)  # its per-layer scores are kept in the cache too (results.scores)


def shift(req: dict, session) -> ShiftResult | None:
    return shift_result(req, cached_only=True)


def _shift_signature(request: dict) -> str:
    # a rebuilt shift's request is the remembered one, which says trust: False where the page's said nothing
    return json.dumps({k: v for k, v in request.items() if k != "trust"}, sort_keys=True, default=str)


def remember_within(shown: ShiftResult, options: dict) -> None:
    """Remember the within fit made on `shown` with the fit form's `options`, for a rebuild after a refresh."""
    remember("within", {**{k: options[k] for k in FIT_OPTIONS}, "shift": _shift_signature(shown.request)})


def within(req: dict, session) -> WithinFitResult | None:
    """The fit again on the session's shift, when it is the one the fit was made on and the fit is the closed form on
    the true labels (a fraction of a second; gradient descent or a weak model's labels take minutes)."""
    shown = session.get(STATE_KEYS["shift"])
    if shown is None or req.get("shift") != _shift_signature(shown.request):
        return None
    if req.get("method") != "lstsq" or req.get("labels") != GROUND_TRUTH:
        return None
    return within_fit(shown, {k: req[k] for k in FIT_OPTIONS})


def across(req: dict, session) -> AcrossResult | None:
    return across_result(req, cached_only=True)


def steering(req: dict, session) -> SteeringResult | None:
    return steering_result(req, cached_only=True)  # the vectors from cached activations; sweeps ran the model: not kept


REBUILD = {"explorer": explorer, "shift": shift, "within": within, "across": across, "steering": steering}


def rebuild_missing(session) -> list[str]:
    """Put every remembered view this session lacks back into it, from the cache; return those rebuilt (in the
    order of `recent.VIEWS`: the shift before the within fit made on it)."""
    done = []
    for view, req in recall().items():
        if session.get(STATE_KEYS[view]) is not None:
            continue
        try:
            state = REBUILD[view](req, session)
        except (RepmapError, KeyError, TypeError, ValueError):
            continue  # a request from another version, or data that has gone: nothing to rebuild
        if state is not None:
            session[STATE_KEYS[view]] = state
            done.append(view)
    return done
