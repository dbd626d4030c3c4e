"""`finetune`: a model with a linear head on a data set's labels; the checkpoint is listed like any model."""
from __future__ import annotations

import argparse

from repmap_core.cli.activations import add_data_args
from repmap_core.progress import Progress

COMMANDS = ("finetune",)


def add_parser(sub) -> None:
    p = sub.add_parser("finetune", help="finetune a model with a linear head (the checkpoint is listed like any model)")
    add_data_args(p)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--train-last", type=int, default=None, help="train only the last k blocks (and the head); default all")
    p.add_argument("--head-lr", type=float, default=None, help="the new head's learning rate (default: --lr)")


def run(args: argparse.Namespace, progress: Progress) -> dict:
    from repmap_core.data.load import load_dataset, require_both_classes
    from repmap_core.finetune.train import FinetuneConfig, finetune

    dataset = load_dataset(args.data, text_col=args.text_col, label_col=args.label_col, limit=args.limit, seed=args.seed)
    require_both_classes(dataset)
    config = FinetuneConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, max_length=min(args.max_length, 512),
                            seed=args.seed, train_last=args.train_last, head_lr=args.head_lr)
    result = finetune(args.model, dataset, config, trust_remote_code=args.trust_remote_code, device=args.device,
                      progress=progress)
    return {"path": result.path, "reused": result.reused, "base_model": result.manifest["base_model"],
            "metrics": result.manifest["metrics"], "dataset": result.manifest["dataset"],
            "precision": result.manifest.get("precision")}  # bf16-autocast or float32 (--dtype float32 forces it)
