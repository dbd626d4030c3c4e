"""`within` and `between`: the papers' fits on saved activation arrays (.npy, .npz, .safetensors), with
no model loaded: finetuned ≈ A·base + b + y·δ (Gao et al. §3), and a map source -> target that
carries the source probe across (Gao et al. §2, LRT).

The fitting functions are imported when a command runs, not with this module: a test replaces
`analysis.within.within_model` to check how a NaN in its result is refused.
"""
from __future__ import annotations

import argparse

from repmap_core.cli import contract
from repmap_core.errors import RepmapError
from repmap_core.progress import Progress

COMMANDS = ("within", "between")


def add_parser(sub) -> None:
    p = sub.add_parser("within", help="fit finetuned ≈ A·base + b + y·δ (Gao et al. §3) on saved activations")
    p.add_argument("--before", required=True, help="base activations (.npy/.npz/.safetensors), (n, d)")
    p.add_argument("--after", required=True, help="finetuned activations of the same rows, (n, d)")
    p.add_argument("--labels", required=True, help="labels (n,), 0/1 or -1/+1")
    p.add_argument("--fit-labels", default=None, help="labels to fit δ with, e.g. weak labels (Table 2); default --labels")
    p.add_argument("--pair-ids", default=None, help="pair ids (n,): pairs are kept on one side of the split")
    p.add_argument("--method", default="lstsq", choices=["lstsq", "gd"])
    p.add_argument("--alpha", default="auto",
                   help="ridge penalty on A and δ (closed form): a number (0 = plain least squares) or auto "
                        "(default: chosen on held-out training rows; plain least squares interpolates when rows <= width)")
    p.add_argument("--test-frac", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, metavar="FIT.npz", help="write arrays A, b, delta")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("between", help="fit a map source -> target and carry the source probe across")
    p.add_argument("--source", required=True, help="source activations (n, d_s)")
    p.add_argument("--target", required=True, help="target activations of the same rows (n, d_t)")
    p.add_argument("--labels", required=True, help="labels (n,), 0/1 or -1/+1")
    p.add_argument("--pair-ids", default=None)
    p.add_argument("--method", default="ridge", choices=["lstsq", "ridge", "gd", "procrustes", "lowrank", "updown", "mlp"],
                   help="default ridge, alpha chosen on held-out rows (lstsq interpolates when rows <= width)")
    p.add_argument("--rank", type=int, default=32, help="rank for --method lowrank")
    p.add_argument("--test-frac", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, metavar="MAP.npz", help="write arrays A, b")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, progress: Progress) -> dict:
    return (within if args.command == "within" else between)(args, progress)


def _alpha_arg(text: str) -> float | None:
    """--alpha: 'auto' (chosen on held-out rows: None) or a finite number of at least 0."""
    if str(text).strip().lower() in ("auto", ""):
        return None
    try:
        value = float(text)
    except ValueError:
        raise RepmapError(f"--alpha must be 'auto' or a finite number of at least 0 (0 means no penalty), not '{text}'.") from None
    return contract.check_alpha(value)


def within(args: argparse.Namespace, progress: Progress) -> dict:
    from repmap_core.analysis.within import within_model
    from repmap_core.share.arrays import check_same_data, load_activations, load_array, load_labels, save_arrays

    alpha = _alpha_arg(args.alpha)
    if args.save:
        contract.check_output_file(args.save, "--save")
    check_same_data(args.before, args.after, ("base", "finetuned"))
    before, after = load_activations(args.before, "the base activations"), load_activations(args.after, "the finetuned activations")
    if before.ndim == 2 and after.ndim == 2 and before.shape[1] != after.shape[1]:
        raise RepmapError(
            f"The base and finetuned activations have widths {before.shape[1]} and {after.shape[1]}; "
            "a within-model fit needs the same model (and layer) before and after finetuning."
        )
    result, fit = within_model(
        before, after, load_labels(args.labels), pair_ids=load_array(args.pair_ids) if args.pair_ids else None,
        fit_labels=load_labels(args.fit_labels) if args.fit_labels else None, method=args.method, alpha=alpha,
        test_frac=args.test_frac, seed=args.seed)
    out = contract.finite_result(result.as_dict())  # refused before anything is saved
    out.pop("history")
    if args.save:
        out["saved"] = str(save_arrays(args.save, A=fit.A_, b=fit.b_, delta=fit.delta_))
    return out


def between(args: argparse.Namespace, progress: Progress) -> dict:
    from repmap_core.analysis.between import between_models
    from repmap_core.share.arrays import check_same_data, load_activations, load_array, load_labels, save_arrays

    if args.save:
        contract.check_output_file(args.save, "--save")
    check_same_data(args.source, args.target, ("source", "target"))
    params = {"rank": args.rank} if args.method == "lowrank" else {}
    result, fitted = between_models(
        load_activations(args.source, "the source activations"), load_activations(args.target, "the target activations"),
        load_labels(args.labels),
        pair_ids=load_array(args.pair_ids) if args.pair_ids else None, method=args.method, test_frac=args.test_frac,
        seed=args.seed, map_params=params)
    out = contract.finite_result(result.as_dict())  # refused before anything is saved
    out.pop("per_dim_mse")
    if args.save:
        if not hasattr(fitted, "A_"):
            raise RepmapError(f"A {args.method} map has no matrix to save; use lstsq, ridge, gd, procrustes, lowrank or updown.")
        down = {"D": fitted.down_.A_, "d": fitted.down_.b_} if hasattr(fitted, "down_") else {}  # the up/down pair's down map
        out["saved"] = str(save_arrays(args.save, A=fitted.A_, b=fitted.b_, **down))
    return out
