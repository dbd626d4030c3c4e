"""`preset list` and `preset run`: the papers' experiments, what each needs, and a run beside the
published numbers (full, or scaled down to the embedded models on built-in data)."""
from __future__ import annotations

import argparse

from repmap_core.progress import Progress

COMMANDS = ("preset",)


def add_parser(sub) -> None:
    p = sub.add_parser("preset", help="reproduce a paper's experiment: list the presets, or run one (full or --scaled)")
    psub = p.add_subparsers(dest="preset_command", required=True)
    q = psub.add_parser("list", help="every preset: what it reproduces, what it needs, whether it can run here")
    q.add_argument("--json", action="store_true")
    q = psub.add_parser("run", help="run a preset; the full version is refused in one sentence when its checks fail")
    q.add_argument("name", help="a preset name from `preset list`")
    q.add_argument("--scaled", action="store_true", help="the scaled-down version: embedded SmolLM2 on built-in real data")
    q.add_argument("--stand-in", default=None, help="with --scaled: another model in SmolLM2's place (a quicker first look)")
    q.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, progress: Progress) -> dict:
    from repmap_core.papers.presets import PRESETS, check, get_preset, needs, run

    if args.preset_command == "list":
        return {"presets": [{"name": p.name, "title": p.title, "reproduces": p.reproduces, "needs": needs(p),
                             "problems": check(p), "scaled": {"needs": needs(p, scaled=True), "problems": check(p, scaled=True)},
                             "published": p.published} for p in PRESETS.values()]}
    return run(get_preset(args.name), scaled=args.scaled, progress=progress, stand_in=args.stand_in).as_dict()
