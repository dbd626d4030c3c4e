"""One heavy torch computation at a time per process.

Two sessions of the app extracting or finetuning at once put two torch thread pools on the same
cores; oversubscribed, their threads spin-wait on each other (a MiniLM finetune step went from
0.25 s to 5.6 s). Taking turns finishes both sooner. Re-entrant, so nested calls cannot deadlock.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from repmap_core.progress import Progress

_HEAVY = threading.RLock()


@contextmanager
def heavy_compute(progress: Progress | None = None) -> Iterator[None]:
    """Hold the process's heavy-compute turn; tell `progress` when waiting for it."""
    if not _HEAVY.acquire(blocking=False):
        if progress is not None:
            progress(0.0, "Waiting for another computation in this process to finish")
        _HEAVY.acquire()
    try:
        yield
    finally:
        _HEAVY.release()
