"""Benchmark: the app's time from a widget change to a redrawn figure on cached data.

    python -m bench.bench_app                 # the layer explorer's default view (490 rows x 6 layers)
    python -m bench.bench_app --rows 1000     # a bigger view: the 1,000 UCI amazon sentences

Streamlit's AppTest runs the real app (app.py, layer explorer page) headless, in this process,
with a private cache: the first run computes the view (the embedded MiniLM on the built-in
sentiment data), then PCA -> t-SNE -> PCA once so every projection is cached. Then, timed, five
rounds of: PCA -> t-SNE (cached), t-SNE -> PCA, "Layers shown" minus one layer, and back. Each
time is one `AppTest.run()`: the whole script rerun, every figure rebuilt and serialised, as
the server does before the browser draws; the browser's own drawing (WebGL) is not in it.
The UMAP warm-up thread is off (REPMAP_NO_WARMUP=1), as it would compete for the 2 cores.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["REPMAP_NO_WARMUP"] = "1"

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.measure import RESULTS, ROOT, load1, peak_rss_bytes, row, write_json

TARGET_S = 1.0
ROUNDS = 5


def sentences_csv(path: Path, rows: int) -> str:
    """A text,label CSV of the first `rows` (<= 1,000) UCI amazon sentences; returns its data spec."""
    import pandas as pd

    from bench.bench_extract import DATA, read_sentences

    texts, labels = read_sentences(DATA)
    pd.DataFrame({"text": texts[:rows], "label": labels[:rows]}).to_csv(path, index=False)
    return f"file:{path}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=None, help="a bigger view of this many UCI sentences (default: the app's default view)")
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--json", type=Path, default=RESULTS / "app.json")
    args = ap.parse_args(argv)

    from streamlit.testing.v1 import AppTest

    load_before = load1()
    with tempfile.TemporaryDirectory(prefix="repmap-bench-app-") as tmp:
        os.environ["REPMAP_CACHE"] = str(Path(tmp) / "cache")
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=900)
        at.switch_page("views/layer_explorer.py")  # not the home page, whichever page is the default

        def run(element=None) -> float:
            t0 = time.perf_counter()
            (element or at).run()
            took = time.perf_counter() - t0
            if at.exception:
                raise SystemExit(f"the app raised: {[e.value for e in at.exception]}")
            return took

        setup = {"first view": run()}
        view = "default view (embedded MiniLM, builtin:sentiment)"
        if args.rows:
            spec = sentences_csv(Path(tmp) / "sentences.csv", args.rows)
            at.text_input(key="explorer.data_other").set_value(spec)
            at.number_input(key="explorer.limit").set_value(0)
            setup["bigger view"] = run(at.button(key="FormSubmitter:explorer.form-Compute").click())
            view = f"{min(args.rows, 1000):,} UCI amazon sentences (embedded MiniLM)"
        setup["t-SNE, computed"] = run(at.segmented_control(key="explorer.method").set_value("tsne"))
        setup["back to PCA"] = run(at.segmented_control(key="explorer.method").set_value("pca"))
        layers = list(at.multiselect(key="explorer.shown").value)
        rows_shown = next((m.value for m in at.metric if m.label == "Rows"), "?")
        print(f"app benchmark: {view}, {rows_shown} rows x {len(layers)} layers shown; setup "
              + ", ".join(f"{k} {v:.1f}s" for k, v in setup.items()), flush=True)

        changes = {"PCA -> t-SNE (cached)": [], "t-SNE -> PCA": [], "Layers shown: one fewer": [], "Layers shown: back": []}
        for _ in range(args.rounds):
            changes["PCA -> t-SNE (cached)"].append(run(at.segmented_control(key="explorer.method").set_value("tsne")))
            changes["t-SNE -> PCA"].append(run(at.segmented_control(key="explorer.method").set_value("pca")))
            changes["Layers shown: one fewer"].append(run(at.multiselect(key="explorer.shown").set_value(layers[:-1])))
            changes["Layers shown: back"].append(run(at.multiselect(key="explorer.shown").set_value(layers)))
        charts = len(at.get("plotly_chart"))

    print()
    print(f"{'widget change':<28}{'median ms':>11}{'max ms':>9}")
    for name, ts in changes.items():
        print(f"{name:<28}{statistics.median(ts) * 1000:>11.0f}{max(ts) * 1000:>9.0f}")
    worst = max(statistics.median(ts) for ts in changes.values())
    met = worst <= TARGET_S
    print(f"target: a widget change on cached data <= {TARGET_S:g} s: {'MET' if met else 'NOT MET'} "
          f"(slowest median {worst * 1000:.0f} ms; {charts} figures redrawn each time)")

    section = f"app: layer explorer, {rows_shown} rows x {len(layers)} layers"
    table = [row(section, f"widget change: {name}", f"{statistics.median(ts) * 1000:.0f} ms",
                 f"first t-SNE {setup['t-SNE, computed'] / statistics.median(ts):.0f}x" if "t-SNE (cached)" in name else "",
                 f"<= {TARGET_S:g} s", statistics.median(ts) <= TARGET_S, note=f"max {max(ts) * 1000:.0f} ms of {len(ts)}")
             for name, ts in changes.items()]
    result = {"view": view, "rows_shown": rows_shown, "layers": layers, "setup_s": setup, "changes_s": changes,
              "target_s": TARGET_S, "met": met, "rows": table, "peak_rss_mb": peak_rss_bytes() / 2**20,
              "load_average_1min": {"before": load_before, "after": load1()}}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
