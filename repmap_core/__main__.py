"""Headless CLI: `python -m repmap_core <command> ... [--json]`.

With `--json`, stdout carries exactly one JSON object and nothing else (library chatter and
progress go to stderr). Exit 0 on success; otherwise a one-line reason on stderr and exit 2 for
bad input (1 for an internal error).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

from repmap_core.cli import contract
from repmap_core.cli import steer as cli_steer
from repmap_core.errors import RepmapError


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="hub id (gpt2, EleutherAI/pythia-70m) or a local folder")
    p.add_argument("--data", required=True, help="builtin:NAME, hf:REPO[:CONFIG]:SPLIT or file:PATH")
    p.add_argument("--position", default="auto", choices=["auto", "last", "mean", "answer"],
                   help="token pooled per text (auto: mean for encoders, last for causal LMs)")
    p.add_argument("--limit", type=int, default=None, help="at most N rows (seeded subsample; pairs kept whole)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=512, help="tokens per text (longer texts keep their end)")
    p.add_argument("--text-col", default=None, help="text column, for tables of another schema")
    p.add_argument("--label-col", default=None, help="label column (0/1 or -1/+1)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a model's own code to run")
    p.add_argument("--device-map", default=None, choices=["auto", "balanced", "sequential"],
                   help="spread a model too big for one GPU over the node's GPUs (accelerate)")
    p.add_argument("--offload", action="store_true", help="with --device-map: also use CPU memory")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = contract.OneLineParser(prog="python -m repmap_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("extract", help="compute (or reuse) activations and cache them")
    _add_data_args(p)
    p.add_argument("--layers", default="all", help="comma-separated block indices (negative from the end) or all")
    p.add_argument("--export", default=None, metavar="DIR", help="also write layer_<L>.npy, labels.npy, pair_ids.npy, manifest.json")
    p.add_argument("--stream", action="store_true",
                   help="read the data and write activations in chunks (data larger than memory; --limit takes the first rows)")
    p.add_argument("--chunk-rows", type=int, default=10_000, help="rows per chunk with --stream")
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
    p = sub.add_parser("steering-vectors", help="CAA steering vectors per layer from A/B pairs, and their layer x layer cosines")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="A/B behaviour questions (model-written evals schema), e.g. builtin:survival_instinct")
    p.add_argument("--layers", default="all")
    p.add_argument("--method", default="mean_diff", choices=["mean_diff", "pca_diff"])
    p.add_argument("--test-frac", type=float, default=0.3, help="pairs held out (not used for the vectors)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-chat-template", action="store_true", help="do not wrap questions in the model's chat template")
    p.add_argument("--export", default=None, metavar="DIR", help="write layer_<L>.safetensors per layer and manifest.json")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("finetune", help="finetune a model with a linear head (the checkpoint is listed like any model)")
    _add_data_args(p)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--train-last", type=int, default=None, help="train only the last k blocks (and the head); default all")
    p.add_argument("--head-lr", type=float, default=None, help="the new head's learning rate (default: --lr)")
    p = sub.add_parser("recipe", help="a paper's protocol end to end: within (Gao §3), between (Gao §2), rimsky, lrt, "
                                      "w2s (weak-to-strong: PGR)")
    p.add_argument("name", choices=["within", "between", "rimsky", "lrt", "w2s"])
    p.add_argument("--model", help="within: the model to finetune")
    p.add_argument("--source", help="between: the weak model")
    p.add_argument("--target", help="between: the strong model")
    p.add_argument("--data", required=True)
    p.add_argument("--finetune-data", default=None, help="within: rows to finetune on (default: half of --data)")
    p.add_argument("--layer", type=int, default=-1, help="within: the layer fitted")
    p.add_argument("--source-layer", type=int, default=-1)
    p.add_argument("--target-layer", type=int, default=-1)
    p.add_argument("--position", default="auto", choices=["auto", "last", "mean", "answer"])
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=3, help="within: finetuning epochs")
    p.add_argument("--method", default=None, help="within: lstsq|gd (default lstsq); between: any map (default gd)")
    p.add_argument("--weak-model", default=None, help="within: a finetuned folder whose labels fit δ (Table 2)")
    p.add_argument("--chat", default=None, help="rimsky: the chat model (--model is the base)")
    p.add_argument("--multipliers", default="-0.5,-0.25,0,0.25,0.5",
                   help="lrt: steering multipliers, written with = (--multipliers=-1,0,1); relative to the target layer's "
                        "residual norm unless --scale raw")
    p.add_argument("--scale", default="relative", choices=["relative", "raw"], help="lrt: how multipliers apply")
    p.add_argument("--no-bias", action="store_true", help="lrt: carry the vector as A v (stitching), not A v + b (LRT)")
    p.add_argument("--weak", default="sentence-transformers/all-MiniLM-L6-v2", help="w2s: the weak teacher")
    p.add_argument("--strong", default="HuggingFaceTB/SmolLM2-135M-Instruct", help="w2s: the strong student")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("layers", help="per-layer probe accuracy and separation")
    _add_data_args(p)
    p.add_argument("--layers", default="all", help="comma-separated block indices or all")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    p.add_argument("--null-permutations", type=int, default=5,
                   help="shuffled-label probes per layer for the null (0 skips it; all 5 take ~0.1 s at 800 x 384)")
    p.add_argument("--test-frac", type=float, default=0.2)
    _add_share_parsers(sub)
    _add_preset_parsers(sub)
    cli_steer.add_parser(sub)
    return parser


def _add_preset_parsers(sub) -> None:
    p = sub.add_parser("preset", help="reproduce a paper's experiment: list the presets, or run one (full or --scaled)")
    psub = p.add_subparsers(dest="preset_command", required=True)
    q = psub.add_parser("list", help="every preset: what it reproduces, what it needs, whether it can run here")
    q.add_argument("--json", action="store_true")
    q = psub.add_parser("run", help="run a preset; the full version is refused in one sentence when its checks fail")
    q.add_argument("name", help="a preset name from `preset list`")
    q.add_argument("--scaled", action="store_true", help="the scaled-down version: embedded SmolLM2 on built-in real data")
    q.add_argument("--stand-in", default=None, help="with --scaled: another model in SmolLM2's place (a quicker first look)")
    q.add_argument("--json", action="store_true")


def cmd_preset(args: argparse.Namespace) -> dict:
    from repmap_core.presets import PRESETS, check, get_preset, needs, run

    if args.preset_command == "list":
        return {"presets": [{"name": p.name, "title": p.title, "reproduces": p.reproduces, "needs": needs(p),
                             "problems": check(p), "scaled": {"needs": needs(p, scaled=True), "problems": check(p, scaled=True)},
                             "published": p.published} for p in PRESETS.values()]}
    return run(get_preset(args.name), scaled=args.scaled, progress=_progress(False), stand_in=args.stand_in).as_dict()


def _add_share_parsers(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page (figures, tables, settings) from a session bundle")
    p.add_argument("--bundle", required=True, help="a bundle .zip exported from the app's Share page (or `bundle --out`)")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--views", default=None, help="comma-separated views (explorer,shift,within,across,steering,finetune); default: all in the bundle")
    p.add_argument("--title", default="repmap report")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p = sub.add_parser("bundle", help="describe a session bundle; with --out, write a copy with fewer views or rows")
    p.add_argument("--bundle", required=True, help="a bundle .zip")
    p.add_argument("--out", default=None, help="write a copy here (with --views and/or --max-rows)")
    p.add_argument("--views", default=None, help="comma-separated views to keep")
    p.add_argument("--max-rows", type=int, default=None, help="keep at most N rows per data set (seeded, classes in proportion)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _progress(quiet: bool) -> Callable[[float, str], None]:
    last = [0.0]

    def report(fraction: float, message: str) -> None:
        now = time.monotonic()
        if not quiet and (now - last[0] > 1.0 or fraction >= 1.0):
            last[0] = now
            print(f"[{fraction:6.1%}] {message}", file=sys.stderr, flush=True)

    return report


def _activations(args: argparse.Namespace):
    from repmap_core.activations import get_activations
    from repmap_core.data import load_dataset, require_both_classes

    dataset = load_dataset(args.data, text_col=args.text_col, label_col=args.label_col, limit=args.limit, seed=args.seed)
    if args.command == "layers":
        require_both_classes(dataset)  # refused before anything is extracted or cached
    aset = get_activations(args.model, dataset, args.layers, args.position, max_length=args.max_length,
                           device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                           progress=_progress(False), device_map=args.device_map, offload=args.offload)
    return dataset, aset


def _describe(aset) -> dict:
    m = aset.manifest
    return {"model": m["model"], "revision": m["revision"], "model_source": m["model_source"],
            "dataset": {"spec": m["dataset_spec"], "fingerprint": m["dataset_fingerprint"], "rows": m["n_rows"],
                        "positives": int(aset.labels.sum()), "pairs": int((aset.pair_ids >= 0).sum() // 2)},
            "position": m["position"], "max_length": m["max_length"], "dtype": m["dtype"], "d_model": m["d_model"],
            "n_layers": m["n_layers"], "cache_key": m["key"], "fp32_recomputed_rows": int(m.get("fp32_recomputed_rows", 0))}


def _report_recomputed(aset) -> None:
    rows = int(aset.manifest.get("fp32_recomputed_rows", 0))
    if rows:
        print(f"note: {rows} of {aset.n} rows overflowed in {aset.manifest['dtype']} and were recomputed in float32.",
              file=sys.stderr)


def cmd_extract(args: argparse.Namespace) -> dict | None:
    from repmap_core.distributed import distributed_extract, worker_info
    from repmap_core.models import site_name
    from repmap_core.store import cache_root

    if args.export:
        contract.check_output_folder(args.export, "--export")  # before anything is computed
    if worker_info().world > 1:  # under torchrun: this rank's share, rank 0 commits and reports
        from repmap_core.data import load_dataset

        if args.stream:  # refused rather than silently loading every row into each rank
            raise RepmapError("--stream runs in one process and is not combined with torchrun yet; drop --stream "
                              "(each rank then loads the rows) or run the streamed extraction without torchrun.")

        dataset = load_dataset(args.data, text_col=args.text_col, label_col=args.label_col, limit=args.limit, seed=args.seed)
        aset = distributed_extract(args.model, dataset, args.layers, args.position, max_length=args.max_length,
                                   device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                                   progress=_progress(False))
        if aset is None:
            return None
    elif args.stream:
        from repmap_core.activations import stream_activations
        from repmap_core.data import open_stream

        stream = open_stream(args.data, chunk_rows=args.chunk_rows, text_col=args.text_col, label_col=args.label_col,
                             limit=args.limit)
        aset = stream_activations(args.model, stream, args.layers, args.position, max_length=args.max_length,
                                  device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                                  progress=_progress(False))
    else:
        _, aset = _activations(args)
    _report_recomputed(aset)
    out = _describe(aset)
    out.update(layers=aset.layer_list, sites=[site_name(x) for x in aset.layer_list], cache_dir=str(cache_root()))
    if args.export:
        out["exported"] = [str(p) for p in aset.export(args.export)]
    return out


def cmd_layers(args: argparse.Namespace) -> dict:
    from repmap_core.models import site_name
    from repmap_core.probes import best_layer, layer_separation

    contract.check_folds(args.folds)  # before anything is extracted or cached
    _, aset = _activations(args)
    rows = layer_separation(aset.layers, aset.labels, aset.pair_ids, folds=args.folds, test_frac=args.test_frac,
                            seed=args.seed, null_permutations=args.null_permutations, progress=_progress(False))
    out = _describe(aset)
    out["layers"] = [dict(r.as_dict(), site=site_name(r.layer)) for r in rows]
    out["best_layer"] = best_layer(rows)
    return out


def _alpha_arg(text: str) -> float | None:
    """--alpha: 'auto' (chosen on held-out rows: None) or a finite number of at least 0."""
    if str(text).strip().lower() in ("auto", ""):
        return None
    try:
        value = float(text)
    except ValueError:
        raise RepmapError(f"--alpha must be 'auto' or a finite number of at least 0 (0 means no penalty), not '{text}'.") from None
    return contract.check_alpha(value)


def cmd_within(args: argparse.Namespace) -> dict:
    from repmap_core.arrays import check_same_data, load_activations, load_array, load_labels, save_arrays
    from repmap_core.experiments import within_model

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


def cmd_between(args: argparse.Namespace) -> dict:
    from repmap_core.arrays import check_same_data, load_activations, load_array, load_labels, save_arrays
    from repmap_core.experiments import between_models

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


def cmd_finetune(args: argparse.Namespace) -> dict:
    from repmap_core.data import load_dataset, require_both_classes
    from repmap_core.finetune import FinetuneConfig, finetune

    dataset = load_dataset(args.data, text_col=args.text_col, label_col=args.label_col, limit=args.limit, seed=args.seed)
    require_both_classes(dataset)
    config = FinetuneConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, max_length=min(args.max_length, 512),
                            seed=args.seed, train_last=args.train_last, head_lr=args.head_lr)
    result = finetune(args.model, dataset, config, trust_remote_code=args.trust_remote_code, device=args.device,
                      progress=_progress(False))
    return {"path": result.path, "reused": result.reused, "base_model": result.manifest["base_model"],
            "metrics": result.manifest["metrics"], "dataset": result.manifest["dataset"]}


def cmd_steering_vectors(args: argparse.Namespace) -> dict:
    import json as _json

    from repmap_core.data import load_dataset
    from repmap_core.steering import compute_vectors, layer_cosines, save_vectors

    if args.export:
        contract.check_output_folder(args.export, "--export")
    dataset = load_dataset(args.data, limit=args.limit, seed=args.seed)
    vs = compute_vectors(args.model, dataset, args.layers, method=args.method, test_frac=args.test_frac, seed=args.seed,
                         use_chat_template=not args.no_chat_template, progress=_progress(False))
    layers, C = layer_cosines(vs.vectors)
    out = {"model": vs.manifest["model"], "revision": vs.manifest["revision"], "method": args.method, "position": "answer",
           "data": {"spec": dataset.name, "fingerprint": vs.manifest["dataset_fingerprint"],
                    "questions_train": int(len(set(vs.question_ids[vs.train_rows]))),
                    "questions_held_out": int(len(set(vs.question_ids[vs.test_rows]))),
                    "pairs_train": int(len(set(vs.dataset.pair_ids[vs.train_rows]))),
                    "letter_balance": {"matching_letter_counts": vs.balance.counts, "both_orders": vs.balance.swapped,
                                       "sentence": vs.balance.sentence()}},
           "layers": layers, "cosine": C.tolist(), "norms": [vs.vectors[L].norm for L in layers]}
    if args.export:
        folder = Path(args.export)
        folder.mkdir(parents=True, exist_ok=True)
        out["exported"] = [str(save_vectors({L: vs.vectors[L]}, folder / f"layer_{L}.safetensors")) for L in layers]
        (folder / "manifest.json").write_text(_json.dumps({str(L): vs.vectors[L].manifest() for L in layers}, indent=2))
        out["exported"].append(str(folder / "manifest.json"))
    return out


def cmd_recipe(args: argparse.Namespace) -> dict:
    from repmap_core.experiments import between_recipe, lrt_recipe, rimsky_recipe, within_recipe
    from repmap_core.finetune import FinetuneConfig

    if args.name == "rimsky":
        if not (args.model and args.chat):
            raise RepmapError("recipe rimsky needs --model (the base model) and --chat (its chat version).")
        return rimsky_recipe(args.model, args.chat, args.data, limit=args.limit, seed=args.seed,
                             progress=_progress(False))
    if args.name == "lrt":
        if not (args.source and args.target):
            raise RepmapError("recipe lrt needs --source (the small model) and --target (the large one).")
        try:
            multipliers = [float(x) for x in args.multipliers.split(",")]
        except ValueError:
            raise RepmapError(f"Multipliers must be numbers separated by commas, not '{args.multipliers}'.") from None
        return lrt_recipe(args.source, args.target, args.data, source_layer=args.source_layer,
                          target_layer=args.target_layer, limit=args.limit, seed=args.seed, multipliers=multipliers,
                          with_bias=not args.no_bias, scale=args.scale, progress=_progress(False))

    if args.name == "w2s":
        from repmap_core.weak_to_strong import weak_to_strong

        return weak_to_strong(args.data, weak_model=args.weak, strong_model=args.strong, seed=args.seed, limit=args.limit,
                              progress=_progress(False)).as_dict()
    if args.name == "within":
        if not args.model:
            raise RepmapError("recipe within needs --model (the model to finetune).")
        return within_recipe(args.model, args.data, layer=args.layer, position=args.position, limit=args.limit,
                             seed=args.seed, finetune_config=FinetuneConfig(epochs=args.epochs, seed=args.seed),
                             finetune_data=args.finetune_data, method=args.method or "lstsq",
                             weak_model=args.weak_model, progress=_progress(False))
    if not (args.source and args.target):
        raise RepmapError("recipe between needs --source (the weak model) and --target (the strong model).")
    return between_recipe(args.source, args.target, args.data, source_layer=args.source_layer,
                          target_layer=args.target_layer, position=args.position, limit=args.limit, seed=args.seed,
                          method=args.method or "gd", progress=_progress(False))


def _views_arg(value: str | None) -> list[str] | None:
    return None if not value else [v.strip() for v in value.split(",") if v.strip()]


def cmd_report(args: argparse.Namespace) -> dict:
    from repmap_core.bundle import load_bundle
    from repmap_core.report import report_from_bundle

    bundle = load_bundle(args.bundle)
    views = _views_arg(args.views)
    missing = [v for v in views or [] if v not in bundle.views]
    if missing:
        raise RepmapError(f"The bundle holds no '{missing[0]}' view; it holds {', '.join(bundle.views) or 'none'}.")
    page = report_from_bundle(bundle, views, title=args.title)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)  # never a half-written report
    return {"report": str(out), "views": views or bundle.views, "figures": page.count('class="figure plot"'),
            "bytes": out.stat().st_size}


def cmd_bundle(args: argparse.Namespace) -> dict:
    from repmap_core.bundle import VIEWS, collect, load_bundle, save_bundle

    bundle = load_bundle(args.bundle)
    views = _views_arg(args.views) or bundle.views
    missing = [v for v in views if v not in bundle.views]
    if missing:
        raise RepmapError(f"The bundle holds no '{missing[0]}' view; it holds {', '.join(bundle.views) or 'none'}.")
    out = {"bundle": str(args.bundle), "views": views, "meta": bundle.meta,
           "states": sorted(bundle.states), "settings": bundle.settings}
    for name in views:
        for key in VIEWS[name].states:
            state = bundle.states.get(key)
            if isinstance(state, dict) and "dataset" in state:
                out.setdefault("rows", {})[key] = len(state["dataset"])
    if args.out:
        states, settings = collect(dict(bundle.states, **bundle.settings), views)
        written = save_bundle(args.out, states, settings, views=views, max_rows=args.max_rows, seed=args.seed)
        out["written"] = {"path": str(written), "bytes": written.stat().st_size}
    return out


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


COMMANDS = {"extract": cmd_extract, "layers": cmd_layers, "within": cmd_within, "between": cmd_between,
            "finetune": cmd_finetune, "recipe": cmd_recipe, "steering-vectors": cmd_steering_vectors}
COMMANDS.update({"report": cmd_report, "bundle": cmd_bundle})
COMMANDS["preset"] = cmd_preset
COMMANDS["steer"] = lambda args: cli_steer.run(args, _progress(False))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        # libraries sometimes print; stdout is reserved for the result
        with contextlib.redirect_stdout(sys.stderr):
            result = COMMANDS[args.command](args)
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
