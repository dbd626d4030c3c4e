"""`extract` and `layers`: activations of a model on a data set, cached (and exported), and per-layer
probe accuracy and separation read from them."""
from __future__ import annotations

import argparse
import sys

from repmap_core.cli import contract
from repmap_core.errors import RepmapError
from repmap_core.progress import Progress

COMMANDS = ("extract", "layers")


def add_data_args(p: argparse.ArgumentParser) -> None:
    """The options of every command that runs a model on a data set."""
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
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto (default): bfloat16 on GPU; on CPU bfloat16 where this CPU has bf16 units and a bf16 "
                        "matmul measured >= 1.5x fp32 here, else float32 (REPMAP_DTYPE sets the default)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a model's own code to run")
    p.add_argument("--device-map", default=None, choices=["auto", "balanced", "sequential"],
                   help="spread a model too big for one GPU over the node's GPUs (accelerate)")
    p.add_argument("--offload", action="store_true", help="with --device-map: also use CPU memory")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_parser(sub) -> None:
    p = sub.add_parser("extract", help="compute (or reuse) activations and cache them")
    add_data_args(p)
    p.add_argument("--layers", default="all", help="comma-separated block indices (negative from the end) or all")
    p.add_argument("--export", default=None, metavar="DIR", help="also write layer_<L>.npy, labels.npy, pair_ids.npy, manifest.json")
    p.add_argument("--stream", action="store_true",
                   help="read the data and write activations in chunks (data larger than memory; --limit takes the first rows)")
    p.add_argument("--chunk-rows", type=int, default=10_000, help="rows per chunk with --stream")
    p = sub.add_parser("layers", help="per-layer probe accuracy and separation")
    add_data_args(p)
    p.add_argument("--layers", default="all", help="comma-separated block indices or all")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    p.add_argument("--null-permutations", type=int, default=None,
                   help="label shuffles per layer for the null of the cross-validated accuracy, fitted together on the "
                        "same folds (default 100; 0 skips it; a 95th percentile needs ~100 or more)")
    p.add_argument("--test-frac", type=float, default=0.2)


def run(args: argparse.Namespace, progress: Progress) -> dict | None:
    return (extract if args.command == "extract" else layers)(args, progress)


def load_activations(args: argparse.Namespace, progress: Progress):
    """The data set `--data` names and the model's activations on it (from the cache, or computed)."""
    from repmap_core.capture.activations import get_activations
    from repmap_core.data.load import load_dataset, require_both_classes

    dataset = load_dataset(args.data, text_col=args.text_col, label_col=args.label_col, limit=args.limit, seed=args.seed)
    if args.command == "layers":  # refused before anything is extracted or cached: too few rows, one class
        from repmap_core.analysis.separation import check_separable

        require_both_classes(dataset)
        check_separable(dataset.labels, dataset.pair_ids, test_frac=args.test_frac, seed=args.seed)
    aset = get_activations(args.model, dataset, args.layers, args.position, max_length=args.max_length,
                           device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                           progress=progress, device_map=args.device_map, offload=args.offload)
    return dataset, aset


def _describe(aset) -> dict:
    m = aset.manifest
    return {"model": m["model"], "revision": m["revision"], "model_source": m["model_source"],
            "dataset": {"spec": m["dataset_spec"], "fingerprint": m["dataset_fingerprint"], "rows": m["n_rows"],
                        "positives": int(aset.labels.sum()), "pairs": int((aset.pair_ids >= 0).sum() // 2)},
            "position": m["position"], "max_length": m["max_length"], "dtype": m["dtype"], "d_model": m["d_model"],
            "n_layers": m["n_layers"], "cache_key": m["key"], "fp32_recomputed_rows": int(m.get("fp32_recomputed_rows", 0)),
            "precision": m.get("precision") or {"dtype": m["dtype"]}}


def _report_recomputed(aset) -> None:
    rows = int(aset.manifest.get("fp32_recomputed_rows", 0))
    if rows:
        print(f"note: {rows} of {aset.n} rows overflowed in {aset.manifest['dtype']} and were recomputed in float32.",
              file=sys.stderr)


def extract(args: argparse.Namespace, progress: Progress) -> dict | None:
    from repmap_core.capture.distributed import distributed_extract, worker_info
    from repmap_core.capture.models import site_name
    from repmap_core.capture.store import cache_root

    if args.export:
        contract.check_output_folder(args.export, "--export")  # before anything is computed
    if worker_info().world > 1:  # under torchrun: this rank's share, rank 0 commits and reports
        from repmap_core.data.load import load_dataset

        if args.stream:  # refused rather than silently loading every row into each rank
            raise RepmapError("--stream runs in one process and is not combined with torchrun yet; drop --stream "
                              "(each rank then loads the rows) or run the streamed extraction without torchrun.")

        dataset = load_dataset(args.data, text_col=args.text_col, label_col=args.label_col, limit=args.limit, seed=args.seed)
        aset = distributed_extract(args.model, dataset, args.layers, args.position, max_length=args.max_length,
                                   device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                                   progress=progress)
        if aset is None:
            return None
    elif args.stream:
        from repmap_core.capture.activations import stream_activations
        from repmap_core.data.load import open_stream

        stream = open_stream(args.data, chunk_rows=args.chunk_rows, text_col=args.text_col, label_col=args.label_col,
                             limit=args.limit)
        aset = stream_activations(args.model, stream, args.layers, args.position, max_length=args.max_length,
                                  device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                                  progress=progress)
    else:
        _, aset = load_activations(args, progress)
    _report_recomputed(aset)
    out = _describe(aset)
    out.update(layers=aset.layer_list, sites=[site_name(x) for x in aset.layer_list], cache_dir=str(cache_root()))
    if args.export:
        out["exported"] = [str(p) for p in aset.export(args.export)]
    return out


def layers(args: argparse.Namespace, progress: Progress) -> dict:
    from repmap_core.analysis.probe_null import NULL_PERMUTATIONS
    from repmap_core.analysis.separation import best_layer
    from repmap_core.capture.models import site_name
    from repmap_core.results.scores import layer_scores

    contract.check_folds(args.folds)  # before anything is extracted or cached
    _, aset = load_activations(args, progress)
    shuffles = NULL_PERMUTATIONS if args.null_permutations is None else args.null_permutations
    # kept in the cache by the activations' key and these settings: the app's views read the same scores
    rows = layer_scores(aset, folds=args.folds, test_frac=args.test_frac, seed=args.seed, null_permutations=shuffles,
                        progress=progress)
    out = _describe(aset)
    out["layers"] = [dict(r.as_dict(), site=site_name(r.layer)) for r in rows]
    out["best_layer"] = best_layer(rows)
    return out
