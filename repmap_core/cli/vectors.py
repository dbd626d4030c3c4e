"""`steering-vectors`: CAA vectors per layer from A/B pairs, their layer x layer cosines, and (with
--export) one safetensors file per layer."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from repmap_core.cli import contract
from repmap_core.progress import Progress

COMMANDS = ("steering-vectors",)


def add_parser(sub) -> None:
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


def run(args: argparse.Namespace, progress: Progress) -> dict:
    from repmap_core.data.load import load_dataset
    from repmap_core.steering import compute_vectors, layer_cosines, save_vectors

    if args.export:
        contract.check_output_folder(args.export, "--export")
    dataset = load_dataset(args.data, limit=args.limit, seed=args.seed)
    vs = compute_vectors(args.model, dataset, args.layers, method=args.method, test_frac=args.test_frac, seed=args.seed,
                         use_chat_template=not args.no_chat_template, progress=progress)
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
        (folder / "manifest.json").write_text(json.dumps({str(L): vs.vectors[L].manifest() for L in layers}, indent=2))
        out["exported"].append(str(folder / "manifest.json"))
    return out
