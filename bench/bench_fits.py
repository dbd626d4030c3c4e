"""Benchmark: closed-form fits vs gradient descent to the same loss, and the probe per layer.

    python -m bench.bench_fits            # 10k rows, as the targets are stated
    python -m bench.bench_fits --quick    # 3k rows

Cases (planted data with GPT-2-like widths; random data costs what real activations do):
- within-model: λ̃ ≈ A λ + b + y δ at 10k x 768 (closed form: one solve on [λ, y, 1]);
- between-model: T ≈ A S + b at 10k x 768 -> 1600 (GPT-2 -> GPT-2-XL widths).
For each, the closed form's time, and GD's time to reach the closed form's training loss
within 1% (capped; a capped run gives a lower bound on the ratio). Ratios are measured in the
same run: these machines are noisy. Targets: closed form < 1 s and >= 100x faster than GD.
Also: a standardised logistic probe per layer (10k x 768, 13 layers' worth) and np.linalg.lstsq.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def planted(n: int, ds: int, dt: int, seed: int = 0, within: bool = False):
    rng = np.random.default_rng(seed)
    # uneven feature scales, as real activations have (a few outlier dimensions)
    scales = np.ones(ds, np.float32)
    scales[rng.choice(ds, 8, replace=False)] = 20.0
    S = (rng.normal(size=(n, ds)) * scales).astype(np.float32)
    M = (rng.normal(size=(dt, ds)) / np.sqrt(ds)).astype(np.float32)
    T = S @ M.T + rng.normal(size=dt).astype(np.float32) + 0.5 * rng.normal(size=(n, dt)).astype(np.float32)
    y = rng.integers(0, 2, n)
    if within:
        T += np.outer(2 * y - 1, rng.normal(size=dt)).astype(np.float32)
    return S, T, y


def timed(fn, repeats: int = 2):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def gd_to_loss(fit_gd, target: float, cap_s: float) -> dict:
    """Run GD (a callable taking target_loss and a time-cap callback) and report time and loss reached."""
    t0 = time.perf_counter()
    reached = {"loss": float("inf"), "capped": False}

    class Cap(Exception):
        pass

    def watch(step: int, loss: float) -> None:
        reached["loss"], reached["step"] = loss, step
        if time.perf_counter() - t0 > cap_s:
            reached["capped"] = True
            raise Cap

    try:
        fit_gd(target, watch)
    except Cap:
        pass
    reached["seconds"] = time.perf_counter() - t0
    reached["met"] = reached["loss"] <= target
    return reached


def main() -> None:
    from repmap_core.maps import GDMap, LeastSquaresMap, WithinModelFit
    from repmap_core.probes import LinearProbe

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--gd-cap", type=float, default=None, help="seconds GD may run per case")
    args = ap.parse_args()
    n = args.rows or (3000 if args.quick else 10000)
    cap = args.gd_cap or (60.0 if args.quick else 240.0)
    load = os.getloadavg()[0]
    print(f"rows {n}; GD capped at {cap:.0f} s per case; 1-min load {load:.1f} on {os.cpu_count()} CPUs")
    results = {"rows": n, "gd_cap_s": cap, "load_before": load}

    # within-model: 10k x 768 (+ label) -> 768
    lam, lam_ft, y = planted(n, 768, 768, seed=1, within=True)
    t_cf, fit = timed(lambda: WithinModelFit().fit(lam, lam_ft, y))
    loss_cf = fit.loss(lam, lam_ft, y)
    gd = gd_to_loss(lambda tgt, cb: WithinModelFit(method="gd", lr=1e-2, max_steps=100_000, target_loss=tgt, callback=cb,
                                                   callback_every=25).fit(lam, lam_ft, y), loss_cf * 1.01, cap)
    results["within"] = {"closed_form_s": t_cf, "closed_form_loss": loss_cf, "gd": gd}

    # between-model: 10k x 768 -> 1600
    S, T, _ = planted(n, 768, 1600, seed=2)
    t_ls, m = timed(lambda: LeastSquaresMap().fit(S, T))
    loss_ls = float(((m.transform(S) - T) ** 2).mean())
    t_np, _ = timed(lambda: np.linalg.lstsq(np.c_[S, np.ones(len(S), np.float32)], T, rcond=None), repeats=1)
    gd2 = gd_to_loss(lambda tgt, cb: GDMap(lr=1e-2, max_steps=100_000, target_loss=tgt, callback=cb,
                                           callback_every=25).fit(S, T), loss_ls * 1.01, cap)
    results["between"] = {"closed_form_s": t_ls, "closed_form_loss": loss_ls, "numpy_lstsq_s": t_np, "gd": gd2}

    # a probe per layer: standardised lbfgs at 10k x 768
    t_probe, probe = timed(lambda: LinearProbe().fit(lam_ft, y), repeats=1)
    results["probe"] = {"seconds_per_layer": t_probe, "iterations": probe.n_iter_}

    print()
    print(f"{'case':<34} {'closed form':>11} {'GD to its loss':>16} {'GD / closed':>12}")
    for name, key in ((f"within: {n} x 768 (+y) -> 768", "within"), (f"between: {n} x 768 -> 1600", "between")):
        r = results[key]
        g = r["gd"]
        ratio = g["seconds"] / r["closed_form_s"]
        mark = ">=" if not g["met"] else "  "
        gd_txt = f"{g['seconds']:.1f} s" + ("" if g["met"] else f" (capped, loss {g['loss'] / r['closed_form_loss']:.3f}x)")
        print(f"{name:<34} {r['closed_form_s']:>9.3f} s {gd_txt:>16} {mark}{ratio:>9.0f}x")
    print(f"np.linalg.lstsq on the between case: {results['between']['numpy_lstsq_s']:.2f} s "
          f"({results['between']['numpy_lstsq_s'] / results['between']['closed_form_s']:.1f}x our closed form)")
    print(f"linear probe, one layer at {n} x 768: {t_probe:.2f} s ({probe.n_iter_} lbfgs iterations on standardised features)")
    print()
    print("targets:")
    for key in ("within", "between"):
        r = results[key]
        ratio = r["gd"]["seconds"] / r["closed_form_s"]
        print(f"  {key}: closed form < 1 s: {'MET' if r['closed_form_s'] < 1 else 'NOT MET'} ({r['closed_form_s']:.2f} s); "
              f">= 100x faster than GD: {'MET' if ratio >= 100 else 'NOT MET'} ({'>=' if not r['gd']['met'] else ''}{ratio:.0f}x)")
    results["load_after"] = os.getloadavg()[0]
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "fits.json").write_text(json.dumps(results, indent=2, default=float))
    print(f"1-min load {results['load_after']:.1f} after; results written to bench/results/fits.json")


if __name__ == "__main__":
    main()
