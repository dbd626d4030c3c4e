"""Benchmark: fp32 against bf16 on this CPU, at the real models' shapes, in one run (issue 22).

    python -m bench.bench_precision                  # SmolLM2 and MiniLM, 256 real reviews, best of 3 rounds
    python -m bench.bench_precision --quick          # 64 reviews, 1 round
    python -m bench.bench_precision --models smollm2 --rows 512

For each model (the embedded SmolLM2-135M-Instruct, from its GGUF wheel, and MiniLM-L6):
- **the two limits**: the fp32 and bf16 rate of `linear((512, d), (d_ff, d))` and of `linear((512, d_ff),
  (d, d_ff))` (the MLP's up and down multiplies at the model's widths), timed in alternating rounds, the
  best round of each kept (`capture/precision.py`'s `measure_gemm`), and the tokens/s each allows: the rate
  over the FLOPs per token of every block (2 per weight, plus 4·T·d for attention's two products);
- **extraction**: `extract_activations` over the built-in real reviews, every block, the app's default
  position, the model loaded in fp32 and in bf16 (`load_model(dtype=...)`), after a 16-review warm-up of
  each, rounds interleaved;
  tokens/s (real, unpadded), bf16 over fp32, and each against its own limit and against the bf16 limit;
- **agreement**: per block, the cosine of each row's bf16 and fp32 activations (mean and min over rows).

And what `choose_precision` picks here for each model. The 1-minute load average is printed before and
after each model: on a shared machine only the ratios (measured in one run) mean anything. Results also go
to bench/results/precision.json (git-ignored). SmolLM2 is converted from its GGUF file on first use (about
a minute; set REPMAP_CACHE to a cache that holds the conversion). Nothing is asserted: this reports.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import time
from pathlib import Path

import numpy as np

from bench.measure import RESULTS, load1, row, timed, write_json

MODELS = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct", "minilm": "sentence-transformers/all-MiniLM-L6-v2"}
GEMM_TOKENS = 512
TARGETS = {"smollm2": 2.0, "minilm": 1.5}  # issue 22: extraction tokens/s in bf16 over fp32, on a quiet machine
TARGET_VS_BF16_LIMIT = 0.5


def gemm_limits(d: int, d_ff: int, seconds: float) -> dict:
    """fp32 and bf16 FLOP/s of the MLP's two multiplies at these widths (total FLOPs over total time)."""
    from repmap_core.capture.precision import measure_gemm

    up = measure_gemm(GEMM_TOKENS, d, d_ff, seconds=seconds)
    down = measure_gemm(GEMM_TOKENS, d_ff, d, seconds=seconds)
    both = lambda a, b: 2.0 / (1.0 / a + 1.0 / b)  # noqa: E731  equal FLOPs each: the harmonic mean
    return {"float32": both(up.fp32, down.fp32), "bfloat16": both(up.bf16, down.bf16)}


def flops_per_token(lm, mean_len: float) -> float:
    """2 FLOPs per block weight (embeddings and norms aside) plus attention's QKᵀ and AV (4·T·d a block)."""
    blocks = lm.blocks
    weights = sum(p.numel() for p in blocks.parameters() if p.dim() == 2)
    return 2.0 * weights + 4.0 * mean_len * lm.info.d_model * len(blocks)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def bench_model(key: str, rows: int, repeats: int, gemm_seconds: float) -> dict:
    import torch

    from repmap_core.capture.extract import extract_activations, resolve_position
    from repmap_core.capture.models import load_model, model_precision, model_widths, resolve_model
    from repmap_core.data.load import load_dataset

    name = MODELS[key]
    resolved = resolve_model(name)
    d, d_ff = model_widths(resolved)
    dataset = load_dataset("builtin:sentiment", limit=rows, seed=0)
    chosen = model_precision("cpu", resolved)
    lms = {dt: load_model(resolved, device="cpu", dtype=dt) for dt in ("float32", "bfloat16")}
    layers = list(range(lms["float32"].info.n_layers))
    position = resolve_position("auto", lms["float32"].info.is_encoder)
    warm = dataset.take(np.arange(min(16, len(dataset))))
    for lm in lms.values():  # first calls pick and pack kernels (oneDNN's bf16 ones above all): not timed
        extract_activations(lm, warm, layers, position)
    load_before = load1()
    limits = gemm_limits(d, d_ff, gemm_seconds)
    best: dict[str, float] = {}
    rounds: dict[str, list] = {dt: [] for dt in lms}
    cpu: dict[str, float] = {}  # process CPU seconds of the best round: less bent by other work than wall time
    out: dict[str, dict] = {}
    tokens = 0
    for _ in range(repeats):  # interleaved, so a busy moment weighs on both
        for dt, lm in lms.items():
            _, cpu_s, result = timed(lambda lm=lm: extract_activations(lm, dataset, layers, position))
            tokens = result.n_tokens
            if result.seconds < best.get(dt, float("inf")):
                best[dt], cpu[dt] = result.seconds, cpu_s
            rounds[dt].append(round(result.seconds, 2))
            out[dt] = result.activations
    limits_after = gemm_limits(d, d_ff, gemm_seconds)
    limits = {dt: max(limits[dt], limits_after[dt]) for dt in limits}
    load_after = load1()
    mean_len = tokens / len(dataset)
    per_token = flops_per_token(lms["float32"], mean_len)
    rate = {dt: tokens / s for dt, s in best.items()}
    limit_tps = {dt: limits[dt] / per_token for dt in limits}
    cos = {layer: cosine_rows(out["float32"][layer], out["bfloat16"][layer]) for layer in layers}
    return {"model": name, "d_model": d, "d_ff": d_ff, "rows": len(dataset), "tokens": tokens, "position": position,
            "threads": torch.get_num_threads(), "load_before": load_before, "load_after": load_after,
            "gemm_gflops": {dt: v / 1e9 for dt, v in limits.items()}, "gemm_ratio": limits["bfloat16"] / limits["float32"],
            "limit_tokens_per_s": limit_tps, "seconds": best, "rounds_seconds": rounds, "tokens_per_s": rate,
            "extract_ratio": rate["bfloat16"] / rate["float32"], "cpu_seconds": cpu,
            "extract_ratio_cpu": cpu["float32"] / cpu["bfloat16"],
            "extract_ratio_median": float(np.median(rounds["float32"]) / np.median(rounds["bfloat16"])),
            "vs_own_limit": {dt: rate[dt] / limit_tps[dt] for dt in rate},
            "bf16_vs_bf16_limit": rate["bfloat16"] / limit_tps["bfloat16"],
            "cosine_mean_min_layer": min(float(c.mean()) for c in cos.values()),
            "cosine_min": min(float(c.min()) for c in cos.values()),
            "chosen": chosen.as_json()}


def print_table(results: list[dict]) -> None:
    print(f"\n{'':34}{'fp32':>12}{'bf16':>12}{'bf16/fp32':>11}")
    for r in results:
        short = r["model"].split("/")[-1]
        print(f"{short} (d {r['d_model']}, d_ff {r['d_ff']}, {r['rows']} reviews, {r['tokens']} tokens, "
              f"{r['threads']} threads; load {r['load_before']:.2f} -> {r['load_after']:.2f})")
        g = r["gemm_gflops"]
        print(f"  {'GEMM at its shapes, GFLOP/s':32}{g['float32']:12.1f}{g['bfloat16']:12.1f}{r['gemm_ratio']:10.2f}x")
        lt = r["limit_tokens_per_s"]
        print(f"  {'matmul limit, tokens/s':32}{lt['float32']:12.0f}{lt['bfloat16']:12.0f}")
        t = r["tokens_per_s"]
        print(f"  {'extraction, tokens/s':32}{t['float32']:12.0f}{t['bfloat16']:12.0f}{r['extract_ratio']:10.2f}x")
        print(f"  {'  ... by medians of the rounds':32}{'':24}{r['extract_ratio_median']:10.2f}x")
        c = r["cpu_seconds"]
        print(f"  {'CPU seconds (best round)':32}{c['float32']:12.1f}{c['bfloat16']:12.1f}{r['extract_ratio_cpu']:10.2f}x")
        v = r["vs_own_limit"]
        print(f"  {'extraction / its own limit':32}{v['float32']:12.2f}{v['bfloat16']:12.2f}")
        print(f"  {'extraction / the bf16 limit':32}{t['float32'] / lt['bfloat16']:12.2f}{r['bf16_vs_bf16_limit']:12.2f}")
        print(f"  {'rounds, seconds':32}{str(r['rounds_seconds']['float32']):>12}{str(r['rounds_seconds']['bfloat16']):>12}")
        print(f"  bf16 vs fp32 rows, per block: cosine mean >= {r['cosine_mean_min_layer']:.5f}, min {r['cosine_min']:.5f}")
        c = r["chosen"]
        print(f"  chosen here: {c['dtype']} ({c['reason']})")


def table_rows(results: list[dict]) -> list[dict]:
    rows = []
    for r in results:
        key = next(k for k, v in MODELS.items() if v == r["model"])
        short = r["model"].split("/")[-1]
        rows.append(row("precision", f"{short} GEMM bf16 vs fp32", f"{r['gemm_gflops']['bfloat16']:.0f} vs "
                        f"{r['gemm_gflops']['float32']:.0f} GFLOP/s", f"{r['gemm_ratio']:.2f}x"))
        rows.append(row("precision", f"{short} extraction bf16 vs fp32", f"{r['tokens_per_s']['bfloat16']:.0f} vs "
                        f"{r['tokens_per_s']['float32']:.0f} tok/s", f"{r['extract_ratio']:.2f}x",
                        f">= {TARGETS[key]}x", r["extract_ratio"] >= TARGETS[key],
                        f"load {r['load_before']:.1f}-{r['load_after']:.1f}"))
        rows.append(row("precision", f"{short} bf16 extraction / bf16 limit", "", f"{r['bf16_vs_bf16_limit']:.2f}x",
                        f">= {TARGET_VS_BF16_LIMIT}x", r["bf16_vs_bf16_limit"] >= TARGET_VS_BF16_LIMIT))
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="64 reviews, 1 round")
    ap.add_argument("--rows", type=int, default=None, help="reviews (default 256)")
    ap.add_argument("--repeats", type=int, default=None, help="rounds (default 3), the best of each kept")
    ap.add_argument("--models", default="smollm2,minilm", help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--json", type=Path, default=RESULTS / "precision.json")
    args = ap.parse_args(argv)
    rows = args.rows or (64 if args.quick else 256)
    repeats = args.repeats or (1 if args.quick else 3)
    t0, load0 = time.perf_counter(), load1()
    results = [bench_model(k.strip(), rows, repeats, 0.3 if args.quick else 0.6)
               for k in args.models.split(",") if k.strip()]
    print_table(results)
    print(f"\nos.getloadavg() at the end: {tuple(round(x, 2) for x in os.getloadavg())} on {os.cpu_count()} CPUs "
          f"(1-min load {load0:.2f} at the start); {time.perf_counter() - t0:.0f} s in all")
    out = {"results": results, "rows": table_rows(results), "loadavg_end": os.getloadavg()}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
