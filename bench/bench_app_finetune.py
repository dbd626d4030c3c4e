"""Benchmark: a finetune started in the app (browser, live page) against the same job from the CLI.

    python -m bench.bench_app_finetune              # MiniLM on builtin:sentiment, the page's defaults
    python -m bench.bench_app_finetune --model HuggingFaceTB/SmolLM2-135M-Instruct --train-last 4

The same request runs twice, each with a fresh private cache: once through `python -m repmap_core
finetune` (a process of its own) and once through the Finetune page of a real `streamlit run app.py`
server driven by Debian's Chromium (Playwright): "Estimate time" first, then "Start finetuning",
with the page's live panel refreshing (repmap_ui.jobs.LIVE_REFRESH_S) while it trains, as a user would see it. The
training time both report is the core's own measurement (`metrics.seconds` in the manifest), so
the ratio compares like with like; the page's estimate is read before the start and compared with
the time that followed. Targets (issue 15): in-app / CLI <= 1.5, estimate within 2x.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.measure import RESULTS, ROOT, load1, row, seconds, write_json

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DATA = "builtin:sentiment"


def cli_finetune(model: str, data: str, train_last: int, cache: Path) -> dict:
    # the page's defaults (FinetuneConfig()): max length 128, not the CLI's 512
    cmd = [sys.executable, "-m", "repmap_core", "finetune", "--model", model, "--data", data, "--max-length", "128", "--json"]
    if train_last:
        cmd += ["--train-last", str(train_last)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, REPMAP_CACHE=str(cache)), capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout)
    return {"train_seconds": result["metrics"]["seconds"], "wall": time.perf_counter() - t0,
            "val_acc": result["metrics"]["val_acc"]}


def start_server(cache: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, REPMAP_CACHE=str(cache), REPMAP_NO_WARMUP="0")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return proc
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("streamlit did not start")


def app_finetune(model: str, data: str, train_last: int, cache: Path, timeout_s: float) -> dict:
    from playwright.sync_api import sync_playwright

    from repmap_core.share.exports import find_chromium
    from tests.browser import CHROMIUM_ARGS, free_port, stop_server

    port = free_port()
    proc = start_server(cache, port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/finetune", wait_until="networkidle")
            page.get_by_role("button", name="Start finetuning").wait_for(timeout=120_000)
            if model != MODEL:
                page.get_by_label("…or any Hugging Face id or local folder").fill(model)
            if data != DATA:
                page.get_by_label("…or a data spec").fill(data)
            if train_last:
                page.get_by_role("spinbutton", name="Train last blocks").fill(str(train_last))
            page.get_by_role("button", name="Estimate time").click()
            estimate_text = page.get_by_text(re.compile(r"^About \d+ s here")).inner_text(timeout=300_000)
            estimate = float(re.search(r"About (\d+) s", estimate_text).group(1))
            t0 = time.perf_counter()
            page.get_by_role("button", name="Start finetuning").click()
            page.get_by_text(re.compile(r"Saved: ")).wait_for(timeout=timeout_s * 1000)
            wall = time.perf_counter() - t0
            metric = page.locator('[data-testid="stMetric"]', has_text="Seconds").inner_text()
            train = float(re.search(r"([\d.]+)\s*$", metric.strip()).group(1))
            browser.close()
    finally:
        stop_server(proc)
    return {"train_seconds": train, "wall": wall, "estimate": estimate}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--train-last", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", type=Path, default=RESULTS / "app_finetune.json")
    args = ap.parse_args(argv)
    load_before = load1()
    with tempfile.TemporaryDirectory(prefix="repmap-bench-ft-") as tmp:
        cli = cli_finetune(args.model, args.data, args.train_last, Path(tmp) / "cli")
        app = app_finetune(args.model, args.data, args.train_last, Path(tmp) / "app", args.timeout)
    ratio = app["train_seconds"] / cli["train_seconds"]
    est = app["estimate"] / app["train_seconds"]
    rows = [row("app", "finetune: CLI (core's own timing)", seconds(cli["train_seconds"]), "", "", None,
                f"{args.model} on {args.data}"),
            row("app", "finetune: in the app, live page open", seconds(app["train_seconds"]), f"{ratio:.2f}× the CLI",
                "≤ 1.5×", ratio <= 1.5),
            row("app", "finetune: the page's estimate before start", seconds(app["estimate"]),
                f"{est:.2f}× the time that followed", "within 2×", 0.5 <= est <= 2.0)]
    result = {"model": args.model, "data": args.data, "train_last": args.train_last, "cli": cli, "app": app,
              "ratio": ratio, "estimate_ratio": est, "load1_before": load_before, "load1_after": load1(), "rows": rows}
    for r in rows:
        print(f"{r['measure']:<50} {r['value']:>10}  {r['ratio']}")
    print(f"load average: {load_before:.2f} before, {result['load1_after']:.2f} after")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
