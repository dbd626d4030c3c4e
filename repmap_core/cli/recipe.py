"""`recipe`: a paper's protocol end to end (within, between, rimsky, lrt, w2s), one JSON object out."""
from __future__ import annotations

import argparse

from repmap_core.capture.gguf import SMOLLM2_ID
from repmap_core.cli import contract
from repmap_core.errors import RepmapError
from repmap_core.locations import EMBEDDED_MODEL_ID
from repmap_core.progress import Progress
from repmap_core.steering.apply import SCALES
from repmap_core.steering.run import DEFAULT_ALPHAS

COMMANDS = ("recipe",)


def add_parser(sub) -> None:
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
    p.add_argument("--multipliers", default=DEFAULT_ALPHAS,
                   help="lrt: steering multipliers, written with = (--multipliers=-1,0,1); in units of the target layer's "
                        "residual spread unless --scale says otherwise")
    p.add_argument("--scale", default=SCALES[0], choices=SCALES, help="lrt: what one unit of a multiplier adds")
    p.add_argument("--with-bias", action="store_true",
                   help="lrt: carry the vector as A v + b (the map applied to it as if it were an activation) instead "
                        "of A v, a displacement's image (the default)")
    p.add_argument("--no-bias", action="store_true", help=argparse.SUPPRESS)  # the default since A v became it
    p.add_argument("--weak", default=EMBEDDED_MODEL_ID, help="w2s: the weak teacher")
    p.add_argument("--strong", default=SMOLLM2_ID, help="w2s: the strong student")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, progress: Progress) -> dict:
    from repmap_core.finetune.train import FinetuneConfig
    from repmap_core.papers.experiments import between_recipe, lrt_recipe, rimsky_recipe, within_recipe

    if args.name == "rimsky":
        if not (args.model and args.chat):
            raise RepmapError("recipe rimsky needs --model (the base model) and --chat (its chat version).")
        return rimsky_recipe(args.model, args.chat, args.data, limit=args.limit, seed=args.seed,
                             progress=progress)
    if args.name == "lrt":
        if not (args.source and args.target):
            raise RepmapError("recipe lrt needs --source (the small model) and --target (the large one).")
        multipliers = contract.parse_multipliers(args.multipliers, "--multipliers")
        return lrt_recipe(args.source, args.target, args.data, source_layer=args.source_layer,
                          target_layer=args.target_layer, limit=args.limit, seed=args.seed, multipliers=multipliers,
                          with_bias=args.with_bias and not args.no_bias, scale=args.scale, progress=progress)

    if args.name == "w2s":
        from repmap_core.finetune.weak_to_strong import weak_to_strong

        return weak_to_strong(args.data, weak_model=args.weak, strong_model=args.strong, seed=args.seed, limit=args.limit,
                              progress=progress).as_dict()
    if args.name == "within":
        if not args.model:
            raise RepmapError("recipe within needs --model (the model to finetune).")
        return within_recipe(args.model, args.data, layer=args.layer, position=args.position, limit=args.limit,
                             seed=args.seed, finetune_config=FinetuneConfig(epochs=args.epochs, seed=args.seed),
                             finetune_data=args.finetune_data, method=args.method or "lstsq",
                             weak_model=args.weak_model, progress=progress)
    if not (args.source and args.target):
        raise RepmapError("recipe between needs --source (the weak model) and --target (the strong model).")
    return between_recipe(args.source, args.target, args.data, source_layer=args.source_layer,
                          target_layer=args.target_layer, position=args.position, limit=args.limit, seed=args.seed,
                          method=args.method or "gd", progress=progress)
