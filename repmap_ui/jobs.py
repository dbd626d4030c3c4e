"""Background jobs for long work started from a page (finetuning): a daemon thread per job.

The job outlives the script run that started it, so a page can rerun, or the user can visit
another page and come back, while it keeps going. Jobs live in a process-level registry keyed by
job id; a session remembers its own ids in `st.session_state["jobs.<key>"]`. The thread never
calls streamlit: it only updates its `Job` under a lock, and pages read snapshots of it.

The registry is a `st.cache_resource`, not a module global: when any source file of the app
changes, Streamlit re-imports every module of the app on the next run, and a global would then
forget the jobs still running.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import streamlit as st

from repmap_core.errors import RepmapError
from repmap_core.finetune.train import Cancelled
from repmap_core.progress import is_jump, seconds_left, time_text

# how often a page redraws a running job's panel: on a 2-core CPU each redraw (the rerun and the browser
# re-rendering the loss chart) takes cores from the training itself; measured with bench_app_finetune
# (MiniLM, 84 steps): every 1 s made training 2.2x slower than the CLI, every 2 s 1.5x, every 5 s 1.14x
LIVE_REFRESH_S = 5.0
MAX_FINISHED = 50  # finished jobs kept in the registry; older ones are dropped (with their results)
_log = logging.getLogger(__name__)


@st.cache_resource(show_spinner=False)
def _registry() -> tuple[dict[str, Job], threading.Lock]:
    return {}, threading.Lock()


@dataclass
class Job:
    """One piece of background work and what it has reported so far; read it through `snapshot()`."""

    id: str
    key: str
    title: str = ""
    state: str = "running"  # running, done, failed or cancelled
    fraction: float = 0.0
    message: str = "Starting"
    points: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) as reported
    result: object = None
    error: str | None = None  # one sentence for the user when failed or cancelled
    reason: str | None = None  # why the server cancelled it (its session ended, its time ran out)
    estimate: float | None = None  # seconds, as estimated before the start: the time left until there is a pace
    since: tuple[float, float] = (0.0, 0.0)  # (seconds, fraction) the pace is measured from (after a cached part)
    reported: tuple[float, float] = (0.0, 0.0)  # (seconds, fraction) of the last report
    started: float = field(default_factory=time.time)
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update(self, **changes) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)

    def snapshot(self) -> Job:
        """A consistent copy (points copied too) that the thread no longer changes."""
        with self._lock:
            return replace(self, points=list(self.points))

    @property
    def seconds(self) -> float:
        return (self.finished or time.time()) - self.started

    @property
    def seconds_left(self) -> float | None:
        """Time left: at the pace so far once 5% is done and 5 s have passed, before that from the estimate made
        before the start (`progress.seconds_left`); None without either, or once the job has ended."""
        if self.state != "running":
            return None
        return seconds_left(self.seconds, self.fraction, self.estimate, self.since)

    def progress_text(self) -> str:
        """One line for a progress bar: what runs, its current step, time so far and left."""
        return f"{self.title} · {self.message} · {time_text(self.seconds, self.fraction, self.estimate, self.since)}"


@dataclass(frozen=True)
class JobContext:
    """What the work function gets: pass `progress`, `on_step` and `cancel` straight to `finetune()`."""

    job: Job

    def progress(self, fraction: float, message: str) -> None:
        fraction, now = min(max(float(fraction), 0.0), 1.0), self.job.seconds
        changes = {"fraction": fraction, "message": str(message), "reported": (now, fraction)}
        if is_jump(self.job.reported, (now, fraction)):  # a part read from the cache: the pace is the rest's
            changes["since"] = (now, fraction)
        self.job.update(**changes)

    def on_step(self, step: int, loss: float) -> None:
        with self.job._lock:
            self.job.points.append((int(step), float(loss)))

    @property
    def cancel(self) -> threading.Event:
        return self.job.cancel


def _run(job: Job, fn: Callable[[JobContext], object]) -> None:
    try:
        result = fn(JobContext(job))
        job.update(state="done", result=result, fraction=1.0, finished=time.time())
    except Cancelled:
        why = f" by the server: {job.reason}" if job.reason else ""
        job.update(state="cancelled", error=f"Cancelled{why}; nothing was saved.", finished=time.time())
    except RepmapError as e:
        job.update(state="failed", error=str(e), finished=time.time())
    except Exception as e:  # noqa: BLE001 - the page shows one sentence; the traceback goes to the log
        _log.exception("background job %s (%s) failed", job.id, job.title)
        # the type only: the message may hold paths or data; the traceback is in the server log
        job.update(state="failed", error=f"internal error ({type(e).__name__}); the details are in the server log.",
                   finished=time.time())


def watch(job: Job, session_alive: Callable[[], bool], grace_s: float | None, max_seconds: float | None,
          poll_s: float = 2.0) -> None:
    """Cancel `job` once its session has been gone for `grace_s` seconds (a visitor who closed the tab;
    a reconnect within the grace keeps it) or once it has run `max_seconds`; returns when it ends."""
    gone_since = None
    while job.state == "running" and not job.cancel.is_set():  # one attribute read, not a snapshot's copy
        if max_seconds is not None and job.seconds > max_seconds:
            job.update(reason=f"it ran past this server's limit of {max_seconds / 60:.0f} min per job")
            job.cancel.set()
            return
        if grace_s is not None:
            if session_alive():
                gone_since = None
            else:
                gone_since = gone_since if gone_since is not None else time.monotonic()
                if time.monotonic() - gone_since >= grace_s:
                    job.update(reason="its session ended (the tab was closed)")
                    job.cancel.set()
                    return
        time.sleep(poll_s)


def _session_alive_check() -> Callable[[], bool]:
    """A check that the session running this script is still connected (always True outside a server)."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None or not Runtime.exists():
        return lambda: True
    runtime, session_id = Runtime.instance(), ctx.session_id
    return lambda: runtime.is_active_session(session_id)


def start_job(key: str, fn: Callable[[JobContext], object], title: str = "", estimate: float | None = None) -> Job:
    """Run `fn(context)` in a daemon thread as a job of kind `key`; remember it in this session. `estimate`:
    the seconds it was estimated to take before the start (the time left until it has a pace). On a
    shared server (access policy), a watcher cancels it when its visitor leaves or it runs too long."""
    from repmap_core import access

    job = Job(id=uuid.uuid4().hex[:12], key=key, title=title, estimate=estimate)
    jobs, lock = _registry()
    with lock:
        finished = [j for j in jobs.values() if j.state != "running"]
        for old in sorted(finished, key=lambda j: j.started)[:max(0, len(finished) - MAX_FINISHED)]:
            del jobs[old.id]
        jobs[job.id] = job
    st.session_state.setdefault(f"jobs.{key}", []).append(job.id)  # bare mode (no session): a no-op store
    threading.Thread(target=_run, args=(job, fn), name=f"repmap-job-{key}-{job.id}", daemon=True).start()
    policy = access.active()
    if policy is not None and (policy.leave_grace_s is not None or policy.max_job_seconds is not None):
        threading.Thread(target=watch, args=(job, _session_alive_check(), policy.leave_grace_s, policy.max_job_seconds),
                         name=f"repmap-watch-{job.id}", daemon=True).start()
    return job


def get_job(job_id: str) -> Job | None:
    jobs, lock = _registry()
    with lock:
        return jobs.get(job_id)


def latest_job(key: str) -> Job | None:
    """This session's most recent job of kind `key` still in the registry, or None."""
    for job_id in reversed(st.session_state.get(f"jobs.{key}", [])):
        if (job := get_job(job_id)) is not None:
            return job
    return None
