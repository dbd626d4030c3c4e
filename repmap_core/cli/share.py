"""`report` and `bundle`: a session bundle (exported from the app's Share page) turned into one
self-contained HTML page, or described and cut down (fewer views, fewer rows)."""
from __future__ import annotations

import argparse
from pathlib import Path

from repmap_core.capture import store
from repmap_core.errors import RepmapError
from repmap_core.progress import Progress

COMMANDS = ("report", "bundle")


def add_parser(sub) -> None:
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


def run(args: argparse.Namespace, progress: Progress) -> dict:
    return (write_report if args.command == "report" else describe_bundle)(args, progress)


def _views_arg(value: str | None) -> list[str] | None:
    return None if not value else [v.strip() for v in value.split(",") if v.strip()]


def write_report(args: argparse.Namespace, progress: Progress) -> dict:
    from repmap_core.papers.published import BESIDE_A_RUN
    from repmap_core.share.bundle import load_bundle
    from repmap_core.share.report import report_from_bundle

    bundle = load_bundle(args.bundle)
    views = _views_arg(args.views)
    missing = [v for v in views or [] if v not in bundle.views]
    if missing:
        raise RepmapError(f"The bundle holds no '{missing[0]}' view; it holds {', '.join(bundle.views) or 'none'}.")
    page = report_from_bundle(bundle, views, title=args.title, beside=BESIDE_A_RUN)
    out = store.write_text_atomic(Path(args.out), page)  # never a half-written report
    return {"report": str(out), "views": views or bundle.views, "figures": page.count('class="figure plot"'),
            "bytes": out.stat().st_size}


def describe_bundle(args: argparse.Namespace, progress: Progress) -> dict:
    from repmap_core.share.bundle import VIEWS, collect, load_bundle, save_bundle

    bundle = load_bundle(args.bundle)
    views = _views_arg(args.views) or bundle.views
    missing = [v for v in views if v not in bundle.views]
    if missing:
        raise RepmapError(f"The bundle holds no '{missing[0]}' view; it holds {', '.join(bundle.views) or 'none'}.")
    out = {"bundle": str(args.bundle), "views": views, "meta": bundle.meta,
           "states": sorted(bundle.states), "settings": bundle.settings}
    for name in views:
        for key in VIEWS[name].states:
            dataset = getattr(bundle.states.get(key), "dataset", None)
            if dataset is not None:
                out.setdefault("rows", {})[key] = len(dataset)
    if args.out:
        states, settings = collect(dict(bundle.states, **bundle.settings), views)
        written = save_bundle(args.out, states, settings, views=views, max_rows=args.max_rows, seed=args.seed)
        out["written"] = {"path": str(written), "bytes": written.stat().st_size}
    return out
