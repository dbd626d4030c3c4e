"""Headless CLI: `python -m repmap_core <command> ... [--json]`.

With `--json`, stdout carries exactly one JSON object and nothing else (library chatter and
progress go to stderr). Exit 0 on success; otherwise a one-line reason on stderr and exit 2 for
bad input (1 for an internal error). Each command group is a module of `repmap_core.cli` with
`add_parser(sub)`, `run(args, progress)` and the `COMMANDS` it registers.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys

from repmap_core.capture.precision import forcing
from repmap_core.cli import activations, contract, finetune, fits, preset, recipe, share, steer, vectors
from repmap_core.errors import RepmapError

GROUPS = (activations, fits, vectors, finetune, recipe, share, preset, steer)
RUNS = {name: group.run for group in GROUPS for name in group.COMMANDS}


def build_parser() -> contract.OneLineParser:
    parser = contract.OneLineParser(prog="python -m repmap_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parser(sub)
    return parser


def _print_human(result: dict) -> None:
    if isinstance(result.get("layers"), list) and result["layers"] and isinstance(result["layers"][0], dict):
        print(f"{result['model']} on {result['dataset']['spec']} ({result['dataset']['rows']} rows, {result['position']})")
        print(f"{'layer':>5}  {'cv acc':>7}  {'test acc':>8}  {'silhouette':>10}  {'fisher':>7}")
        for r in result["layers"]:
            star = " *" if r["layer"] == result["best_layer"] else ""
            ci = f"[{r['probe_cv_low']:.3f}, {r['probe_cv_high']:.3f}]" if r["probe_cv_low"] is not None else ""
            null = f"null {r['null_acc']:.3f} (95% ≤ {r['null_high']:.3f})" if r["null_acc"] is not None else ""
            print(f"{r['layer']:>5}  {r['probe_cv_acc']:7.3f}  {r['probe_test_acc']:8.3f}  {r['silhouette']:10.4f}  {r['fisher']:7.3f}{star}"
                  f"  {ci} {null}")
    else:
        print(json.dumps(result, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        # libraries sometimes print; stdout is reserved for the result
        with contextlib.redirect_stdout(sys.stderr), forcing(getattr(args, "dtype", None)):  # --dtype: every model run
            contract.check_args(args)  # every option, before anything is loaded, read or written
            result = RUNS[args.command](args, contract.stderr_progress())
            if result is not None:  # a NaN or inf in the result is a refusal too, not a traceback
                result = contract.finite_result(result)
                text = json.dumps(result, allow_nan=False)
    except RepmapError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing half-written was kept.", file=sys.stderr)
        return 130
    except Exception as e:  # an internal error: one line, and the traceback only when asked
        if os.environ.get("REPMAP_DEBUG"):
            raise
        print(f"internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (set REPMAP_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
    if result is None:  # a worker other than rank 0 of a distributed run: rank 0 reports
        return 0
    if args.json:
        print(text)
    else:
        _print_human(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
