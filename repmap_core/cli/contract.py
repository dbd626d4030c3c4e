"""What the CLI promises on bad input: one line on stderr, exit 2, nothing written.

- `OneLineParser`: argparse's own errors (an unknown flag, `--limit abc`) as one line, no usage block.
- `finite_result`: the result made ready for one JSON object. A number that is undefined by its definition is
  written as `null`: the bounds of an interval with too few points to make one, or a correlation (or
  other estimate) of a curve that does not vary, i.e. the fields of a statistic's estimate
  (`value`, `low`, `high`, `null`, `null_high`) and keys ending in `_low`, `_high`, `_interval` or
  naming a Pearson r. Any other NaN or infinity (an R², an accuracy, a norm, a loss) means the
  inputs were degenerate, and the command is refused with a sentence naming the field.
- `check_output_folder` / `check_output_file`: `--export DIR` and `--save FILE` are checked before
  any work, so a path that cannot be written never costs an extraction.
- `check_alpha` / `check_folds`: numeric options refused in the flag's own words.
- `stderr_progress`: progress as lines on stderr (at most one a second), so stdout keeps only the result.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from repmap_core.errors import RepmapError
from repmap_core.progress import Progress

ESTIMATE_FIELDS = {"value", "low", "high", "null", "null_high"}
UNDEFINED_SUFFIXES = ("_low", "_high", "_interval")


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors on one line (`prog: error: message`), exit 2, no usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _may_be_undefined(key: str, parent: dict | None) -> bool:
    key = key.lower()
    if key.endswith(UNDEFINED_SUFFIXES) or "pearson" in key or key in ("low", "high", "null", "null_high"):
        return True
    return key == "value" and parent is not None and {"low", "high"} <= set(parent)


def finite_result(result, path: str = "", key: str = "", parent: dict | None = None):
    """`result` with numpy scalars as Python numbers and undefined statistics as None; raises
    `RepmapError` naming the first other NaN or infinity (see the module docstring)."""
    if isinstance(result, dict):
        return {k: finite_result(v, f"{path}.{k}" if path else str(k), str(k), result) for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        return [finite_result(v, f"{path}[{i}]", key, parent) for i, v in enumerate(result)]
    if isinstance(result, np.ndarray):
        return finite_result(result.tolist(), path, key, parent)
    if isinstance(result, (bool, np.bool_)):
        return bool(result)
    if isinstance(result, np.integer):
        return int(result)
    if isinstance(result, (float, np.floating)):
        value = float(result)
        if math.isfinite(value):
            return value
        if _may_be_undefined(key, parent):
            return None
        what = "NaN" if math.isnan(value) else "infinite"
        raise RepmapError(
            f"The result's {path} came out {what}, which happens when the inputs are degenerate (rows that do not "
            "vary, a class without spread, or values that overflowed); check the inputs and run it again."
        )
    return result


def check_output_folder(path: str | Path, flag: str, shown: str | Path | None = None) -> Path:
    """Refuse `flag DIR` unless DIR is a folder or can be made one (no existing file on the way)."""
    folder = Path(path).expanduser()
    shown = path if shown is None else shown
    if folder.exists() and not folder.is_dir():
        raise RepmapError(f"{flag} '{shown}' is an existing file, not a folder; give a folder (it is created if missing).")
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise RepmapError(f"{flag} '{shown}' lies under '{parent}', which is a file; give a path inside a folder.")
            break
    return folder


def check_output_file(path: str | Path, flag: str) -> Path:
    """Refuse `flag FILE` when FILE is a folder or lies under a file."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise RepmapError(f"{flag} '{path}' is a folder; give a file name such as fit.npz.")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise RepmapError(f"{flag} '{path}' lies under '{parent}', which is a file; give a path inside a folder.")
    check_output_folder(parent, flag, shown=path)
    return out


def check_alpha(alpha: float, flag: str = "--alpha") -> float:
    """A ridge penalty: a finite number of at least 0 (0 is no penalty)."""
    if not (math.isfinite(alpha) and alpha >= 0):
        raise RepmapError(f"{flag} must be a finite number of at least 0 (0 means no penalty), not {alpha}.")
    return alpha


def check_folds(folds: int, flag: str = "--folds") -> int:
    """Cross-validation folds: at least 2 (one fold would test on the rows it trained on)."""
    if folds < 2:
        raise RepmapError(f"{flag} must be at least 2 (cross-validation needs a fold to hold out), not {folds}.")
    return folds


def stderr_progress(quiet: bool = False) -> Progress:
    """A `Progress` that prints `[ 42.0%] message` on stderr, at most once a second (and at 100%)."""
    last = [0.0]

    def report(fraction: float, message: str) -> None:
        now = time.monotonic()
        if not quiet and (now - last[0] > 1.0 or fraction >= 1.0):
            last[0] = now
            print(f"[{fraction:6.1%}] {message}", file=sys.stderr, flush=True)

    return report
