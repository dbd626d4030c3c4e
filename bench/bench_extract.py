"""Benchmark: pooled layer-6 last-token activations of GPT-2 small over 1,000 real sentences.

Run from the repository root:

    python -m bench.bench_extract            # full run (best of 2 per method)
    python -m bench.bench_extract --quick    # 200 sentences, 1 run per method

Every method does the same work: gpt2-small architecture (GPT2Config() defaults, random weights,
which cost exactly what real ones do), saved as safetensors together with a byte-level BPE
tokenizer trained offline on the sentences, then the output of block 6 (`hidden_states[7]` in
Hugging Face terms, `blocks.6.hook_resid_post` in repmap's) at each text's last real token.

Methods:
  HF loop      GPT2LMHeadModel, one text at a time, output_hidden_states=True (what users write)
  HF batched   GPT2Model, batches of 32 in data order, right padding, output_hidden_states=True
  repmap       repmap_core.models.load_model + repmap_core.extract.extract_activations
  matmul limit tokens/s this CPU's fp32 GEMM rate allows for the 7 blocks computed (no real run)

Throughput counts real (unpadded) tokens. Model loading is outside the timings; tokenization is
inside them (every method starts from raw strings). This is a benchmark, not a test: it asserts
nothing about speed, it reports. Results also go to bench/results/extract.json (git-ignored).
"""
from __future__ import annotations

import os

# no network here: keep transformers / huggingface_hub from trying the hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import inspect
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # /work/main
DATA = ROOT.parent / "shared" / "data" / "uci-sentiment" / "amazon_cells_labelled.txt"
RESULTS = ROOT / "bench" / "results" / "extract.json"

LAYER = 6  # block index; Hugging Face hidden_states[LAYER + 1] is that block's output
HF_BATCH = 32
VOCAB = 8000
AGREE_TOL = 1e-3
TARGET_VS_LOOP = 3.0  # repmap >= 3x HF loop
TARGET_VS_LIMIT = 0.7  # repmap >= 0.7x the matmul limit


# --------------------------------------------------------------------------- data and model


def read_sentences(path: Path) -> tuple[list[str], list[int]]:
    """`sentence<TAB>label` lines, no header. Split on the last tab: a few sentences hold quotes,
    which a CSV reader would try to interpret."""
    if not path.is_file():
        raise SystemExit(
            f"Benchmark data not found: {path}\n"
            "It expects the UCI 'Sentiment Labelled Sentences' file amazon_cells_labelled.txt "
            "under ../shared/data/uci-sentiment/ (relative to the repository root); pass --data PATH "
            "to use another copy."
        )
    texts, labels = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        text, sep, label = line.rpartition("\t")
        if not sep or label.strip() not in ("0", "1"):
            raise SystemExit(f"{path}:{n} is not 'sentence<TAB>0|1': {line[:80]!r}")
        texts.append(text.strip())
        labels.append(int(label))
    return texts, labels


def build_model(folder: Path, texts: list[str], vocab_size: int = VOCAB, seed: int = 0) -> Path:
    """Save a random gpt2-small (GPT2LMHeadModel) plus a byte-level BPE tokenizer trained on `texts`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>")

    torch.manual_seed(seed)
    eos = tok.eos_token_id
    # GPT2Config() defaults (12 layers, width 768, 12 heads, 1024 positions); only the vocabulary
    # follows the tokenizer. The real 50,257-word vocab would only make the HF loop's LM head dearer.
    cfg = GPT2Config(vocab_size=len(tok), bos_token_id=eos, eos_token_id=eos)
    model = GPT2LMHeadModel(cfg).eval()
    # transformers 4 needs safe_serialization=True; transformers 5 always writes safetensors
    save_kwargs = {"safe_serialization": True} if "safe_serialization" in inspect.signature(model.save_pretrained).parameters else {}
    model.save_pretrained(folder, **save_kwargs)
    tok.save_pretrained(folder)
    if not (folder / "model.safetensors").exists():
        raise SystemExit(f"save_pretrained wrote no model.safetensors in {folder}")
    return folder


# --------------------------------------------------------------------------- methods
# Each method maps texts -> (n, d) float32 activations of block LAYER at the last real token.


def hf_loop(model, tok, texts: list[str]) -> np.ndarray:
    """One text at a time through the full LM, as a typical user writes it."""
    import torch

    out = np.empty((len(texts), model.config.n_embd), np.float32)
    with torch.inference_mode():
        for i, text in enumerate(texts):
            enc = tok(text, return_tensors="pt")
            hidden = model(**enc, output_hidden_states=True).hidden_states
            out[i] = hidden[LAYER + 1][0, -1].numpy()
    return out


def hf_batched(model, tok, texts: list[str]) -> np.ndarray:
    """Batches of HF_BATCH in data order, right padding; gather each row's last real token."""
    import torch

    out = np.empty((len(texts), model.config.n_embd), np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), HF_BATCH):
            chunk = texts[start:start + HF_BATCH]
            enc = tok(chunk, return_tensors="pt", padding=True)
            hidden = model(**enc, output_hidden_states=True).hidden_states[LAYER + 1]  # (B, T, d)
            last = enc["attention_mask"].sum(1) - 1  # right padding: last real token index
            out[start:start + len(chunk)] = hidden[torch.arange(len(chunk)), last].numpy()
    return out


def repmap_extract(lm, dataset) -> np.ndarray:
    from repmap_core.extract import extract_activations

    return extract_activations(lm, dataset, [LAYER], "last").activations[LAYER]


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, float, np.ndarray]:
    """Wall seconds (perf_counter), process CPU seconds (all threads) and the result of one call.

    CPU time is reported next to wall time because this machine may be shared: when another
    process takes a core, wall time balloons (torch's 2 threads wait on each other) while CPU
    time moves much less, so a wall/CPU ratio far from the thread count flags a disturbed run.
    """
    c0, t0 = os.times(), time.perf_counter()
    result = fn()
    wall, c1 = time.perf_counter() - t0, os.times()
    return wall, (c1.user - c0.user) + (c1.system - c0.system), result


# --------------------------------------------------------------------------- matmul limit


GEMM_SHAPES = [(4096, 768, 3072), (4096, 3072, 768)]  # (m, k, n): (m x k) @ (k x n), gpt2-small's MLP


def gemm_best_times(repeats: int, best: dict | None = None) -> dict:
    """Best seconds per GEMM shape over `repeats` timed calls (after one untimed call), merged
    with `best` from earlier calls. Called once per round, so the limit gets the same chances of
    an undisturbed moment as the methods do."""
    import torch

    best = dict(best or {})
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for m, k, n in GEMM_SHAPES:
            a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
            torch.mm(a, b)  # warm-up (allocation, thread pool)
            for _ in range(repeats):
                t0 = time.perf_counter()
                torch.mm(a, b)
                best[(m, k, n)] = min(best.get((m, k, n), float("inf")), time.perf_counter() - t0)
    return best


def gemm_summary(best: dict) -> dict:
    """Per-shape GFLOP/s and the combined rate: total FLOPs over total best time, i.e. the rate of
    one MLP up- plus one down-projection."""
    shapes, flops_sum, secs_sum = [], 0.0, 0.0
    for (m, k, n), secs in best.items():
        flops = 2.0 * m * k * n  # one multiply and one add per (i, j, l)
        shapes.append({"m": m, "k": k, "n": n, "best_s": secs, "gflops": flops / secs / 1e9})
        flops_sum += flops
        secs_sum += secs
    return {"shapes": shapes, "flops_per_s": flops_sum / secs_sum}


def flops_per_token(n_blocks: int, d: int, mean_len: float) -> float:
    """Forward FLOPs per token for `n_blocks` GPT-2 blocks of width d (GEMMs only).

    Per block, counting 2 FLOPs per multiply-add:
      QKV projection  d -> 3d   2 * d * 3d  =  6 d^2
      output proj     d -> d    2 * d * d   =  2 d^2
      MLP up          d -> 4d   2 * d * 4d  =  8 d^2
      MLP down        4d -> d   2 * 4d * d  =  8 d^2      -> 24 d^2
      attention       Q K^T and A V, each 2 * T * d for one token against T keys -> 4 T d
    with T the mean real sequence length (full T x T, as SDPA with a mask computes it; causal
    masking would halve this term, which is small next to 24 d^2 for short texts).
    LayerNorms, GELU, softmax and the embedding are left out: the limit is a GEMM-only bound.
    """
    return n_blocks * (24 * d * d + 4 * mean_len * d)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 sentences, 1 run per method")
    ap.add_argument("--texts", type=int, default=None, help="number of sentences (default 1000, 200 with --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per method, best kept (default 2, 1 with --quick)")
    ap.add_argument("--data", type=Path, default=DATA, help="sentence<TAB>label file")
    ap.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = ap.parse_args(argv)
    n_texts = args.texts or (200 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 2)

    import pandas as pd
    import torch
    import transformers
    from transformers import GPT2LMHeadModel, GPT2Model, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    from repmap_core.data import adapt_frame
    from repmap_core.models import load_model

    hf_logging.set_verbosity_error()  # GPT2Model from an LM checkpoint lists the unused head
    hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars
    all_texts, all_labels = read_sentences(args.data)
    texts, labels = all_texts[:n_texts], all_labels[:n_texts]
    threads = torch.get_num_threads()
    load_before = os.getloadavg()
    print(f"repmap extraction benchmark: {len(texts)} sentences from {args.data.name}, block {LAYER}, last token, "
          f"best of {repeats} run(s), torch {torch.__version__} ({threads} threads), transformers {transformers.__version__}")

    with tempfile.TemporaryDirectory(prefix="repmap-bench-") as tmp:
        folder = Path(tmp) / "gpt2-small-random"
        t0 = time.perf_counter()
        build_model(folder, all_texts)  # tokenizer trained on all sentences, whatever --texts says
        print(f"built gpt2-small (random weights) + BPE tokenizer in {time.perf_counter() - t0:.1f}s")

        tok = PreTrainedTokenizerFast.from_pretrained(folder)
        tok.pad_token = tok.eos_token  # GPT-2 style tokenizers have no pad token
        tok.padding_side = "right"
        lengths = np.array([len(x) for x in tok(texts)["input_ids"]])
        n_tokens, mean_len = int(lengths.sum()), float(lengths.mean())
        print(f"vocab {len(tok)}, {n_tokens} real tokens, mean length {mean_len:.1f}, max {int(lengths.max())}")

        lm_head = GPT2LMHeadModel.from_pretrained(folder).eval()
        base = GPT2Model.from_pretrained(folder).eval()
        t0 = time.perf_counter()
        lm = load_model(str(folder))
        repmap_load_s = time.perf_counter() - t0
        dataset = adapt_frame(pd.DataFrame({"text": texts, "label": labels}), name="amazon_cells")
        d = lm.info.d_model

        methods = {
            "HF loop": lambda ts, ds: hf_loop(lm_head, tok, ts),
            "HF batched": lambda ts, ds: hf_batched(base, tok, ts),
            "repmap": lambda ts, ds: repmap_extract(lm, ds),
        }
        warm_texts, warm_ds = texts[:8], dataset.take(np.arange(min(8, len(texts))))
        for fn in methods.values():
            fn(warm_texts, warm_ds)  # warm-up: first-call allocations, thread pool, lazy imports
        # Rounds interleave the methods (and the GEMM timing), so a burst of load from another
        # process hurts one round of every method rather than every run of one method.
        runs = {name: [] for name in methods}  # (wall s, cpu s) per round
        acts, gemm_best = {}, {}
        for r in range(repeats):
            gemm_best = gemm_best_times(3 if args.quick else 5, gemm_best)
            for name, fn in methods.items():
                wall, cpu, acts[name] = timed(lambda: fn(texts, dataset))
                runs[name].append((wall, cpu))
                print(f"  round {r + 1}/{repeats}  {name:<11} {wall:7.2f}s  (cpu {cpu:6.2f}s)", flush=True)
    load_after = os.getloadavg()

    rows = {}
    for name, rs in runs.items():
        wall, cpu = min(rs)  # best wall time, with that run's CPU time
        rows[name] = {"seconds": wall, "cpu_seconds": cpu, "runs_s": [w for w, _ in rs], "tokens_per_s": n_tokens / wall}
    gemm = gemm_summary(gemm_best)
    fpt = flops_per_token(LAYER + 1, d, mean_len)
    limit_tps = gemm["flops_per_s"] / fpt
    rows["matmul limit"] = {"seconds": n_tokens / limit_tps, "cpu_seconds": None, "runs_s": [], "tokens_per_s": limit_tps}
    loop_tps = rows["HF loop"]["tokens_per_s"]
    for r in rows.values():
        r["vs_hf_loop"] = r["tokens_per_s"] / loop_tps
        r["vs_matmul_limit"] = r["tokens_per_s"] / limit_tps

    # ---- report
    print()
    print("GEMM fp32: " + ", ".join(f"({s['m']}x{s['k']})@({s['k']}x{s['n']}) {s['gflops']:.1f} GFLOP/s" for s in gemm["shapes"])
          + f"; combined {gemm['flops_per_s'] / 1e9:.1f} GFLOP/s")
    print(f"FLOPs/token = {LAYER + 1} blocks x (24*d^2 + 4*T*d), d={d}, T={mean_len:.1f} (mean length) "
          f"= {fpt / 1e6:.1f} MFLOP; limit = GEMM FLOP/s / FLOPs per token")
    print()
    header = f"{'method':<14}{'seconds':>9}{'tokens/s':>11}{'vs HF loop':>12}{'vs limit':>10}{'cpu s':>9}"
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        cpu = "" if r["cpu_seconds"] is None else f"{r['cpu_seconds']:.2f}"
        print(f"{name:<14}{r['seconds']:>9.2f}{r['tokens_per_s']:>11.0f}{r['vs_hf_loop']:>11.2f}x{r['vs_matmul_limit']:>9.2f}x{cpu:>9}")
    print()

    diffs = {
        "HF loop vs repmap": float(np.abs(acts["HF loop"] - acts["repmap"]).max()),
        "HF batched vs repmap": float(np.abs(acts["HF batched"] - acts["repmap"]).max()),
        "HF loop vs HF batched": float(np.abs(acts["HF loop"] - acts["HF batched"]).max()),
    }
    agree = all(v < AGREE_TOL for v in diffs.values())
    scale = float(np.abs(acts["repmap"]).max())
    print(f"agreement (max |diff| of the ({len(texts)}, {d}) block-{LAYER} last-token activations, tolerance {AGREE_TOL:g}; "
          f"max |activation| {scale:.2f}):")
    for k, v in diffs.items():
        print(f"  {k:<22} {v:.2e}  {'ok' if v < AGREE_TOL else 'MISMATCH'}")
    print()

    rep = rows["repmap"]
    targets = {
        "repmap >= 3x HF loop": {"value": rep["vs_hf_loop"], "target": TARGET_VS_LOOP, "met": rep["vs_hf_loop"] >= TARGET_VS_LOOP},
        "repmap >= 0.7x matmul limit": {"value": rep["vs_matmul_limit"], "target": TARGET_VS_LIMIT,
                                        "met": rep["vs_matmul_limit"] >= TARGET_VS_LIMIT},
    }
    print("targets:")
    for k, t in targets.items():
        print(f"  {k:<28} {t['value']:.2f}x  {'MET' if t['met'] else 'NOT MET'}")
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print()
    print(f"peak RSS {peak_rss_mb:.0f} MiB (whole process: three copies of the model are loaded); "
          f"torch.get_num_threads() = {threads}; repmap load_model {repmap_load_s:.2f}s (not timed above)")
    # this process alone keeps the 1-minute load near `threads`; much more means others ran too
    print(f"1-min load average: {load_before[0]:.1f} before, {load_after[0]:.1f} after ({os.cpu_count()} CPUs)"
          + ("  -- another process was using the CPU: timings are pessimistic, rerun on a quiet machine"
             if max(load_before[0], load_after[0]) > threads + 0.75 else ""))

    result = {
        "config": {
            "texts": len(texts), "tokens": n_tokens, "mean_length": mean_len, "max_length": int(lengths.max()),
            "layer": LAYER, "position": "last", "d_model": d, "vocab": len(tok), "hf_batch": HF_BATCH,
            "repeats": repeats, "quick": bool(args.quick), "data": str(args.data),
        },
        "machine": {
            "torch": torch.__version__, "transformers": transformers.__version__, "threads": threads,
            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": sys.version.split()[0],
        },
        "gemm": gemm,
        "flops_per_token": {"formula": f"{LAYER + 1} * (24*d^2 + 4*T*d)", "value": fpt},
        "methods": rows,
        "agreement": {"max_abs_diff": diffs, "tolerance": AGREE_TOL, "ok": agree},
        "targets": targets,
        "peak_rss_mb": peak_rss_mb,
        "repmap_load_s": repmap_load_s,
        "load_average_1min": {"before": load_before[0], "after": load_after[0]},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"results written to {args.json.relative_to(ROOT) if args.json.is_relative_to(ROOT) else args.json}")
    return result


if __name__ == "__main__":
    main()
