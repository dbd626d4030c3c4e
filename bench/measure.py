"""What every benchmark here needs: timing, memory, the machine's load, and the rows of the
combined table that `python -m bench` prints.

Each benchmark module returns (and writes to `bench/results/<name>.json`) a dict with a `rows`
list made by `row(...)`: one line of the combined table each, with the ratio measured in the
same run and, where the issue sets one, the target and whether it was met.
"""
from __future__ import annotations

import json
import os
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the repository root
RESULTS = ROOT / "bench" / "results"  # git-ignored
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds (perf_counter), process CPU seconds (all threads) and the result of one call.

    CPU time is reported next to wall time because this machine may be shared: when another
    process takes a core, wall time balloons (torch's threads wait on each other) while CPU
    time moves much less, so a wall/CPU ratio far from the thread count flags a disturbed run.
    """
    c0, t0 = os.times(), time.perf_counter()
    result = fn()
    wall, c1 = time.perf_counter() - t0, os.times()
    return wall, (c1.user - c0.user) + (c1.system - c0.system), result


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Best wall seconds over `repeats` calls, every call's seconds, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), times, out


def rss_bytes() -> int:
    """This process's resident memory now (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class RssPeak:
    """Samples resident memory every `interval` seconds in a thread while the block runs:
    `extra` is the highest RSS seen minus the RSS at entry (what the block held at its peak).

    `ru_maxrss` cannot tell this: it is the process's peak since start, set by model loading."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> RssPeak:
        self.start = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def extra(self) -> int:
        return self.peak - self.start


def load1() -> float:
    """The 1-minute load average (other engineers' test runs share these 2 cores)."""
    return os.getloadavg()[0]


def row(section: str, measure: str, value: str, ratio: str = "", target: str = "", met: bool | None = None,
        note: str = "") -> dict:
    """One line of the combined table: `met` is None where the issue sets no target."""
    return {"section": section, "measure": measure, "value": value, "ratio": ratio, "target": target,
            "met": met, "note": note}


def seconds(s: float) -> str:
    """0.042 s, 1.23 s, 31.4 s: three significant figures, the way the tables print times."""
    if s < 0.01:
        return f"{s * 1000:.2f} ms"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=_plain) + "\n", encoding="utf-8")
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"results written to {shown}")


def _plain(o: Any) -> Any:
    """numpy scalars and arrays, tuples as dict keys aside, as plain JSON."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)
