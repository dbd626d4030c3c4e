"""The benchmark suite, one command: every benchmark in turn, then one table of ratios.

    python -m bench              # the full suite (under 10 minutes on 2 CPU cores)
    python -m bench --quick      # smaller sizes, a smoke run (about 3 minutes)
    python -m bench --only extract,fits
    python -m bench --markdown   # also print the table as markdown (what README's Performance shows)

Each benchmark runs in its own Python process, so one's memory, thread pools and caches never
flatter or slow the next, and its peak RSS is its own. Every ratio in the table is measured
inside one benchmark's run (these machines are noisy: absolute times from different runs are
not comparable). The combined table goes to `bench/results/suite.json` and `suite.md`.
`bench_scale` (workers and streamed memory, issue 9) is separate: `python -m bench.bench_scale`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.measure import RESULTS, ROOT, load1

# name -> (module, arguments of the full suite, arguments of --quick). Sizes are chosen so the
# full suite stays under 10 minutes here while measuring what the issue asks, at its sizes.
SUITE = {
    "extract": ("bench.bench_extract", ["--repeats", "2", "--loop-repeats", "1"], ["--quick"]),
    "cache": ("bench.bench_cache", [], ["--quick"]),
    "fits": ("bench.bench_fits", [], ["--quick"]),
    "projection": ("bench.bench_projection", [], ["--quick"]),
    "app": ("bench.bench_app", ["--rounds", "3"], ["--rounds", "2"]),
}


def run_one(name: str, quick: bool, results: Path) -> dict:
    module, full, small = SUITE[name]
    out = results / f"{name}.json"
    if out.exists():
        out.unlink()  # a stale file must never stand in for a failed run
    cmd = [sys.executable, "-m", module, *(small if quick else full), "--json", str(out)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    took = time.perf_counter() - t0
    if proc.returncode != 0 or not out.exists():
        return {"name": name, "ok": False, "seconds": took, "rows": [],
                "error": f"exited with code {proc.returncode}"}
    result = json.loads(out.read_text(encoding="utf-8"))
    return {"name": name, "ok": True, "seconds": took, "rows": result.get("rows", [])}


def table_lines(runs: list[dict], markdown: bool) -> list[str]:
    cols = ["section", "measure", "value", "ratio", "target", "met"]
    body = []
    for run in runs:
        if not run["ok"]:
            body.append([run["name"], "FAILED: " + run["error"], "", "", "", ""])
        for r in run["rows"]:
            met = "" if r.get("met") is None else ("MET" if r["met"] else "NOT MET")
            body.append([r["section"], r["measure"], r["value"], r["ratio"], r["target"], met])
    if markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        return lines + ["| " + " | ".join(c.replace("|", "/") for c in b) + " |" for b in body]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
    widths[0] = min(widths[0], 44)
    fmt = lambda cells: "  ".join(c[:w].ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [fmt(cols), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run of every benchmark")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SUITE)}")
    ap.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON results")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SUITE)
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(SUITE)}")

    load_before, t0 = load1(), time.perf_counter()
    runs = [run_one(n, args.quick, args.results) for n in names]
    total = time.perf_counter() - t0
    load_after = load1()

    print("\n" + "=" * 100)
    print(f"repmap benchmark suite ({'quick' if args.quick else 'full'}): {total / 60:.1f} min; "
          f"1-min load {load_before:.1f} before, {load_after:.1f} after on {os.cpu_count()} CPUs"
          + ("  (LOADED MACHINE: ratios against a baseline are still valid, absolute times are not)"
             if max(load_before, load_after) > (os.cpu_count() or 1) else ""))
    print("\n".join(table_lines(runs, markdown=False)))
    md = table_lines(runs, markdown=True)
    if args.markdown:
        print("\n" + "\n".join(md))
    print("\n" + "  ".join(f"{r['name']} {r['seconds']:.0f}s" for r in runs))
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "suite.json").write_text(json.dumps(
        {"quick": args.quick, "minutes": total / 60, "load_average_1min": [load_before, load_after],
         "runs": runs}, indent=2) + "\n", encoding="utf-8")
    (args.results / "suite.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
