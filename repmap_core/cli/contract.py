"""What the CLI promises on bad input: one line on stderr, exit 2, nothing written.

- `OneLineParser`: argparse's own errors (an unknown flag, `--limit abc`) as one line, no usage block.
- `finite_result`: the result made ready for one JSON object. A number that is undefined by its definition is
  written as `null`: the bounds of an interval with too few points to make one, or a correlation (or
  other estimate) of a curve that does not vary, i.e. the fields of a statistic's estimate
  (`value`, `low`, `high`, `null`, `null_high`) and keys ending in `_low`, `_high`, `_interval` or
  naming a Pearson r. Any other NaN or infinity (an R², an accuracy, a norm, a loss) means the
  inputs were degenerate, and the command is refused with a sentence naming the field.
- `check_args`: every option of every command checked before anything is loaded or read: each count within
  its cap (`COUNTS`: `--null-permutations` at most 1,000, `--limit` at most 100,000,000, ...), fractions
  strictly between 0 and 1, rates positive and finite, `--seed` from 0 to 2**32 - 1, `--device` one this
  machine has, and every output path (`--export`, `--save`, `--out`) writable.
- `check_output_folder` / `check_output_file`: an output path is refused unless a file can be created
  there (a probe file, removed at once): /proc, /sys, a folder given for a file, a device or pipe.
- `check_alpha` / `check_folds`: numeric options refused in the flag's own words.
- `stderr_progress`: progress as lines on stderr (at most one a second), so stdout keeps only the result.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from repmap_core.errors import RepmapError, path_error, shown_path
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


def _writable(folder: Path, flag: str, shown: str | Path) -> None:
    """Refuse unless a file can be created in the existing `folder` (a probe, removed at once): /proc, /sys and a
    read-only or full file system all answer here, before any work rather than after it."""
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".repmap-probe-", dir=folder)
    except OSError as e:
        reason = (e.strerror or type(e).__name__).lower()
        raise RepmapError(f"{flag} '{shown_path(shown)}' cannot be written: no file can be created in "
                          f"'{shown_path(folder, 60)}' ({reason}); give a path in a folder you can write.") from None
    os.close(fd)
    os.unlink(probe)


def check_output_folder(path: str | Path, flag: str, shown: str | Path | None = None) -> Path:
    """Refuse `flag DIR` unless DIR is a folder or can be made one (no existing file on the way) and a file can be
    written there."""
    folder = Path(path).expanduser()
    shown = path if shown is None else shown
    try:
        if folder.exists() and not folder.is_dir():
            raise RepmapError(f"{flag} '{shown_path(shown)}' is an existing file, not a folder; give a folder (it is "
                              "created if missing).")
        for parent in [folder, *folder.parents]:
            if parent.exists():
                if not parent.is_dir():
                    raise RepmapError(f"{flag} '{shown_path(shown)}' lies under '{shown_path(parent)}', which is a file; "
                                      "give a path inside a folder.")
                _writable(parent, flag, shown)
                break
    except OSError as e:  # a name too long for the system, say
        raise path_error(shown, e, f"the path of {flag}") from None
    return folder


def check_output_file(path: str | Path, flag: str) -> Path:
    """Refuse `flag FILE` when FILE is a folder, a device, pipe or socket, lies under a file, or cannot be written."""
    out = Path(path).expanduser()
    try:
        if out.is_dir():
            raise RepmapError(f"{flag} '{shown_path(path)}' is a folder; give the name of a file to write.")
        if out.exists() and not out.is_file():
            raise RepmapError(f"{flag} '{shown_path(path)}' is not a regular file (a device, a pipe or a socket); give "
                              "the name of a file to write.")
        parent = out.parent
        if parent.exists() and not parent.is_dir():
            raise RepmapError(f"{flag} '{shown_path(path)}' lies under '{shown_path(parent)}', which is a file; give a "
                              "path inside a folder.")
    except OSError as e:
        raise path_error(path, e, f"the path of {flag}") from None
    check_output_folder(out.parent, flag, shown=path)
    return out


# every count option of every command: (least, most, what it counts). A larger count is never a result
# anybody needs from one command, and only buys unbounded work (--null-permutations 1000000000 ran forever).
COUNTS = {"limit": (1, 100_000_000, "rows"), "null_permutations": (0, 1_000, "shuffled-label probes per layer"),
          "folds": (2, 50, "cross-validation folds"), "chunk_rows": (1, 10_000_000, "rows per chunk"),
          "epochs": (1, 1_000, "passes over the data"), "batch_size": (1, 65_536, "rows per batch"),
          "train_last": (1, 100_000, "blocks"), "rank": (1, 100_000, "dimensions"),
          "max_rows": (2, 100_000_000, "rows per data set"), "max_length": (2, 1_048_576, "tokens per text"),
          "seed": (0, 2**32 - 1, "a random seed"), "layer": (-100_000, 100_000, "a layer"),
          "source_layer": (-100_000, 100_000, "a layer"), "target_layer": (-100_000, 100_000, "a layer")}
FRACTIONS = ("test_frac",)  # strictly between 0 and 1
RATES = ("lr", "head_lr")  # positive and finite


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_device(device: str) -> str:
    """A device this machine has: cpu, cuda or cuda:N (a GPU that is there), mps (where it is available)."""
    import re

    name = str(device).strip().lower()
    if name == "cpu":
        return name
    import torch  # only for a device other than the CPU: is it there?

    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count and int(m.group(1) or 0) < count:
            return name
        have = f"{count} GPU(s) (cuda:0 to cuda:{count - 1})" if count else "no GPU torch can use"
        raise RepmapError(f"--device {device} is not on this machine, which has {have}; use --device cpu, or leave "
                          "--device out to use the GPU when there is one.")
    if name == "mps" and torch.backends.mps.is_available():
        return name
    raise RepmapError(f"--device {str(device)[:40]} is not a device torch can use here; use cpu or cuda (cuda:0, ...), "
                      "or leave --device out.")


MAX_MULTIPLIERS = 101  # points of a steering sweep: each costs a pass over the held-out questions


def parse_multipliers(text: str, flag: str) -> list[float]:
    """Steering multipliers written as `-1,0,1`: from 2 to MAX_MULTIPLIERS finite numbers."""
    try:
        values = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise RepmapError(f"{flag} must be numbers separated by commas (like -1,0,1), not '{str(text)[:60]}'.") from None
    if not 2 <= len(values) <= MAX_MULTIPLIERS or not all(math.isfinite(v) for v in values):
        raise RepmapError(f"{flag} must give from 2 to {MAX_MULTIPLIERS} finite multipliers, not '{str(text)[:60]}'.")
    return values


def check_args(args: argparse.Namespace) -> None:
    """Every option of the command, checked before anything is loaded, read or written (see the module's list)."""
    for dest, (least, most, what) in COUNTS.items():
        value = getattr(args, dest, None)
        if value is not None and not least <= value <= most:
            raise RepmapError(f"{_flag(dest)} must be a whole number from {least:,} to {most:,} ({what}), not {value}.")
    for dest in FRACTIONS:
        value = getattr(args, dest, None)
        if value is not None and not (math.isfinite(value) and 0 < value < 1):
            raise RepmapError(f"{_flag(dest)} must be a number strictly between 0 and 1 (the share of rows held out), "
                              f"not {value}.")
    for dest in RATES:
        value = getattr(args, dest, None)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise RepmapError(f"{_flag(dest)} must be a positive number (a learning rate such as 5e-5), not {value}.")
    for dest in ("alphas", "multipliers"):
        if getattr(args, dest, None) is not None:
            parse_multipliers(getattr(args, dest), _flag(dest))
    if getattr(args, "device", None) is not None:
        check_device(args.device)
    if getattr(args, "export", None):
        check_output_folder(args.export, "--export")
    for dest in ("save", "out"):
        if getattr(args, dest, None):
            check_output_file(getattr(args, dest), _flag(dest))


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
