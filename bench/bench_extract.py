"""Benchmark: pooled block-6 last-token activations of GPT-2 small over 1,000 real sentences,
against the tools people use for this, and against the matmul-bound limit of this machine.

Run from the repository root:

    python -m bench.bench_extract                    # full run (best of 2 per method)
    python -m bench.bench_extract --quick            # 200 sentences, 1 run per method
    python -m bench.bench_extract --gpu              # GPU: gpt2-xl, bf16, auto batch sizes, MFU
    python -m bench.bench_extract --gpu --dry-run    # the GPU path in miniature (runs on a CPU too)

Every method does the same work: gpt2-small architecture (GPT2Config() defaults, random weights,
which cost exactly what real ones do), saved as safetensors together with a byte-level BPE
tokenizer trained offline on the sentences, then the output of block 6 (`hidden_states[7]` in
Hugging Face terms, `blocks.6.hook_resid_post` in TransformerLens's and repmap's) at each text's
last real token.

Methods (the peers are optional: `pip install -r bench/requirements.txt`):
  HF loop          GPT2LMHeadModel, one text at a time, output_hidden_states=True (what users write)
  HF batched       GPT2Model, batches of 32 in data order, right padding, output_hidden_states=True
  TransformerLens  HookedTransformer (same weights, same token ids), batches of 32,
                   run_with_cache(names_filter=..., stop_at_layer=7)
  nnsight          the same GPT2LMHeadModel object wrapped, batches of 32 strings, trace + save of
                   transformer.h[6].output[:, -1], tracer.stop() (nnsight's own left padding)
  repmap           repmap_core.capture.models.load_model + repmap_core.capture.extract.extract_activations
  matmul limit     tokens/s this machine's GEMM rate allows for the 7 blocks computed (no real run)

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
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.measure import RESULTS, ROOT, RssPeak, load1, peak_rss_bytes, row, timed, write_json

DATA = ROOT.parent / "shared" / "data" / "uci-sentiment" / "amazon_cells_labelled.txt"

LAYER = 6  # block index; Hugging Face hidden_states[LAYER + 1] is that block's output
HF_BATCH = 32
VOCAB = 8000
AGREE_TOL = 1e-3  # fp32: max |diff| between methods
AGREE_REL_TOL_HALF = 5e-2  # bf16: max |diff| / max |activation| (a 3-digit format, 24 blocks deep)
TARGET_VS_LIMIT = 0.7  # repmap >= 0.7x the matmul limit
TARGET_VS_PEER = 1.5  # repmap >= 1.5x the fastest peer
TARGET_MFU = 0.40  # GPU: repmap's model FLOP/s >= 40% of the accelerator's bf16 peak

# GPT-2 shapes by name; the vocabulary always follows the tokenizer trained here
SHAPES = {
    "gpt2-small": dict(n_layer=12, n_embd=768, n_head=12),  # GPT2Config() defaults
    "gpt2-xl": dict(n_layer=48, n_embd=1600, n_head=25),
    "tiny": dict(n_layer=4, n_embd=64, n_head=4),  # --gpu --dry-run: the GPU path in miniature
}
# dense bf16 tensor-core peaks (no sparsity), TFLOP/s, matched in order against torch.cuda.get_device_name
PEAK_BF16_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("GH200", 989.4), ("A100", 312.0),
                    ("L40S", 362.0), ("L4", 121.0))


@dataclass(frozen=True)
class Setup:
    """What one run measures: the model's shape, where and in what precision it runs."""

    shape: str
    layer: int
    device: str
    dtype: str  # "float32" or "bfloat16"
    gpu: bool  # report MFU against the accelerator's peak
    dry_run: bool


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


def build_model(folder: Path, texts: list[str], vocab_size: int = VOCAB, seed: int = 0, shape: str = "gpt2-small",
                save_dtype: str = "float32", n_layer: int | None = None) -> Path:
    """Save a random GPT-2 (GPT2LMHeadModel) of `shape` plus a byte-level BPE tokenizer trained on `texts`;
    `n_layer` keeps only the first blocks (a forward that stops at block L never runs the others)."""
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
    # GPT2Config() defaults otherwise (1024 positions); only the vocabulary follows the tokenizer.
    # The real 50,257-word vocab would only make the HF loop's LM head dearer.
    cfg = GPT2Config(vocab_size=len(tok), bos_token_id=eos, eos_token_id=eos, **dict(SHAPES[shape], **({"n_layer": n_layer} if n_layer else {})))
    model = GPT2LMHeadModel(cfg).eval().to(getattr(torch, save_dtype))
    # transformers 4 needs safe_serialization=True; transformers 5 always writes safetensors
    save_kwargs = {"safe_serialization": True} if "safe_serialization" in inspect.signature(model.save_pretrained).parameters else {}
    model.save_pretrained(folder, **save_kwargs)
    tok.save_pretrained(folder)
    if not list(folder.glob("*.safetensors")):
        raise SystemExit(f"save_pretrained wrote no safetensors in {folder}")
    return folder


# --------------------------------------------------------------------------- methods
# Each method maps texts -> (n, d) float32 activations of block `layer` at the last real token.


def hf_loop(model, tok, texts: list[str], layer: int = LAYER, device: str = "cpu") -> np.ndarray:
    """One text at a time through the full LM, as a typical user writes it."""
    import torch

    out = np.empty((len(texts), model.config.n_embd), np.float32)
    with torch.inference_mode():
        for i, text in enumerate(texts):
            enc = tok(text, return_tensors="pt").to(device)
            hidden = model(**enc, output_hidden_states=True).hidden_states
            out[i] = hidden[layer + 1][0, -1].float().cpu().numpy()
    return out


def hf_batched(model, tok, texts: list[str], layer: int = LAYER, batch: int = HF_BATCH, device: str = "cpu") -> np.ndarray:
    """Batches of `batch` in data order, right padding; gather each row's last real token."""
    import torch

    out = np.empty((len(texts), model.config.n_embd), np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            chunk = texts[start:start + batch]
            enc = tok(chunk, return_tensors="pt", padding=True, padding_side="right").to(device)
            hidden = model(**enc, output_hidden_states=True).hidden_states[layer + 1]  # (B, T, d)
            last = enc["attention_mask"].sum(1) - 1  # right padding: last real token index
            out[start:start + len(chunk)] = hidden[torch.arange(len(chunk), device=device), last].float().cpu().numpy()
    return out


def tl_model(lm_head, device: str = "cpu"):
    """A TransformerLens HookedTransformer of the same architecture with the same weights
    (converted from `lm_head` without folding or centring, so its numbers match the others')."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

    c = lm_head.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_ctx=c.n_positions, d_head=c.n_embd // c.n_head, n_heads=c.n_head,
        d_mlp=4 * c.n_embd, d_vocab=c.vocab_size, act_fn="gelu_new", normalization_type="LN", eps=c.layer_norm_epsilon,
        positional_embedding_type="standard", default_prepend_bos=False, device=device, dtype=lm_head.dtype,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no tokenizer": token ids are passed in, made by the shared tokenizer
        model = HookedTransformer(cfg)
    model.load_and_process_state_dict(convert_gpt2_weights(lm_head, cfg), fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False)
    return model.eval()


def tl_batched(model, tok, texts: list[str], layer: int = LAYER, batch: int = HF_BATCH, device: str = "cpu") -> np.ndarray:
    """TransformerLens's idiom: run_with_cache with a names filter, stopping after the block."""
    import torch

    name = f"blocks.{layer}.hook_resid_post"
    out = np.empty((len(texts), model.cfg.d_model), np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            chunk = texts[start:start + batch]
            enc = tok(chunk, return_tensors="pt", padding=True, padding_side="right").to(device)
            _, cache = model.run_with_cache(enc["input_ids"], attention_mask=enc["attention_mask"], names_filter=name,
                                            stop_at_layer=layer + 1)
            last = enc["attention_mask"].sum(1) - 1
            out[start:start + len(chunk)] = cache[name][torch.arange(len(chunk), device=device), last].float().cpu().numpy()
    return out


def nnsight_model(lm_head, folder: Path):
    """nnsight wrapping the very GPT2LMHeadModel object the HF loop uses. It gets its own copy of
    the tokenizer (same files, same ids): nnsight sets padding_side="left" on the one it is given."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # nnsight >= 0.6: LanguageModel is a deprecated alias of this
            from nnsight.modeling.transformers import TransformersModel

            return TransformersModel(lm_head, tokenizer=tok, task="text-generation")
        except ImportError:
            from nnsight import LanguageModel

            return LanguageModel(lm_head, tokenizer=tok)


def nnsight_batched(model, texts: list[str], layer: int = LAYER, batch: int = HF_BATCH) -> np.ndarray:
    """nnsight's idiom: trace a batch of strings (left-padded, so [:, -1] is each row's last
    token), save the block's output there, and stop the forward after it."""
    import torch

    out = np.empty((len(texts), model.config.n_embd), np.float32)
    for start in range(0, len(texts), batch):
        chunk = texts[start:start + batch]
        with torch.inference_mode(), model.trace(chunk) as tracer:
            hidden = model.transformer.h[layer].output[:, -1].save()  # (B, d)
            tracer.stop()
        out[start:start + len(chunk)] = hidden.float().cpu().numpy()
    return out


def repmap_extract(lm, dataset, layer: int = LAYER, max_batch_tokens: int | None = None) -> np.ndarray:
    from repmap_core.capture.extract import extract_activations

    return extract_activations(lm, dataset, [layer], "last", max_batch_tokens=max_batch_tokens).activations[layer]


def repmap_memory(folder: Path, texts: list[str], labels: list[int], layer: int, device: str, dtype: str) -> dict:
    """Peak resident memory that repmap's extraction adds above its loaded model, measured in a
    fresh process (in this one, memory freed by the other methods is reused and hides it)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_memory_child, args=(str(folder), texts, labels, layer, device, dtype, queue))
    child.start()
    out = queue.get(timeout=1800)
    child.join()
    return out


def _memory_child(folder: str, texts: list[str], labels: list[int], layer: int, device: str, dtype: str, queue) -> None:
    import gc

    import pandas as pd

    from repmap_core.capture.models import load_model
    from repmap_core.data.load import adapt_frame

    lm = load_model(folder, device=device, dtype=dtype)
    dataset = adapt_frame(pd.DataFrame({"text": texts, "label": labels}), name="amazon_cells")
    repmap_extract(lm, dataset.take(np.arange(min(8, len(texts)))), layer)  # warm-up: thread pool, lazy imports
    gc.collect()
    if device.startswith("cuda"):  # on a GPU, what counts is accelerator memory
        import torch

        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        repmap_extract(lm, dataset, layer)
        queue.put({"extra_mb": (torch.cuda.max_memory_allocated() - before) / 2**20, "loaded_mb": before / 2**20,
                   "where": "GPU"})
        return
    with RssPeak(0.002) as mem:
        repmap_extract(lm, dataset, layer)
    queue.put({"extra_mb": mem.extra / 2**20, "loaded_mb": mem.start / 2**20, "where": "RSS"})


def available_peers() -> dict[str, str]:
    """Installed optional peers: name -> version (missing ones are skipped and reported)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name, dist in (("TransformerLens", "transformer-lens"), ("nnsight", "nnsight")):
        try:
            __import__(dist.replace("-", "_"))
            found[name] = version(dist)
        except (ImportError, PackageNotFoundError):
            pass
    return found


# --------------------------------------------------------------------------- matmul limit


def gemm_shapes(d: int, m: int) -> list[tuple[int, int, int]]:
    """(m, k, n) for (m x k) @ (k x n): the MLP's up and down projections at `m` tokens."""
    return [(m, d, 4 * d), (m, 4 * d, d)]


def gemm_best_times(repeats: int, best: dict | None = None, shapes: list | None = None, device: str = "cpu",
                    dtype: str = "float32") -> dict:
    """Best seconds per GEMM shape over `repeats` timed calls (after one untimed call), merged
    with `best` from earlier calls. Called once per round, so the limit gets the same chances of
    an undisturbed moment as the methods do."""
    import torch

    best = dict(best or {})
    gen = torch.Generator().manual_seed(0)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        for m, k, n in shapes or gemm_shapes(768, 4096):
            a = torch.randn(m, k, generator=gen).to(device, getattr(torch, dtype))
            b = torch.randn(k, n, generator=gen).to(device, getattr(torch, dtype))
            torch.mm(a, b)  # warm-up (allocation, thread pool, kernel choice)
            sync()
            for _ in range(repeats):
                t0 = time.perf_counter()
                torch.mm(a, b)
                sync()
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


def peak_flops(device: str, override_tflops: float | None) -> tuple[float | None, str]:
    """The accelerator's dense bf16 peak in FLOP/s and where the number came from."""
    if override_tflops:
        return override_tflops * 1e12, f"--peak-tflops {override_tflops:g}"
    if device.startswith("cuda"):
        import torch

        name = torch.cuda.get_device_name(torch.device(device))
        for key, tflops in PEAK_BF16_TFLOPS:
            if key.lower() in name.lower():
                return tflops * 1e12, f"{name}: {tflops:g} TFLOP/s dense bf16 (table)"
        return None, f"{name} is not in the peak table; pass --peak-tflops"
    return None, "no accelerator"


def auto_token_budget(setup: Setup, d: int, n_layer: int) -> tuple[int, int]:
    """Tokens per batch for repmap and for the peers, from the free accelerator memory.

    repmap keeps one block's working set per token (QKV 3d, attention output d, MLP 4d twice,
    the residual: ~16 d values); the peers also keep every hidden state (n_layer + 1 more d).
    A quarter of the free memory goes to activations, and the budget is a power of two between
    4k and 128k tokens."""
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(setup.device))
    elem = 2 if setup.dtype != "float32" else 4

    def budget(values_per_token: int) -> int:
        tokens = int(0.25 * free / (elem * d * values_per_token))
        return 1 << int(np.clip(np.log2(max(tokens, 1)), 12, 17))

    return budget(16), budget(16 + n_layer + 1)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 sentences, 1 run per method")
    ap.add_argument("--texts", type=int, default=None, help="number of sentences (default 1000, 200 with --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per method, best kept (default 2, 1 with --quick)")
    ap.add_argument("--loop-repeats", type=int, default=None,
                    help="timed runs of the HF loop, the slowest method (default: --repeats; the suite uses 1)")
    ap.add_argument("--methods", default="", help="comma-separated subset, e.g. 'HF batched,repmap'")
    ap.add_argument("--data", type=Path, default=DATA, help="sentence<TAB>label file")
    ap.add_argument("--json", type=Path, default=RESULTS / "extract.json", help="where to write the results")
    gpu = ap.add_argument_group("GPU mode")
    gpu.add_argument("--gpu", action="store_true",
                     help="gpt2-xl architecture, bf16, on CUDA, batch sizes from the free memory, MFU against the peak")
    gpu.add_argument("--dry-run", action="store_true",
                     help="with --gpu: a tiny model and 64 texts, on CUDA if present else the CPU, to exercise the path")
    gpu.add_argument("--peak-tflops", type=float, default=None, help="the accelerator's dense bf16 peak (default: from a table by device name)")
    gpu.add_argument("--layer", type=int, default=None, help="block to read (default 6; with --gpu the middle one, 24 of 48)")
    gpu.add_argument("--repeat-data", type=int, default=None,
                     help="with --gpu: cycle the sentences this many times, so the GPU has enough work (default 32)")
    gpu.add_argument("--loop-texts", type=int, default=None, help="with --gpu: texts for the (slow) HF loop (default 500)")
    args = ap.parse_args(argv)
    if args.dry_run and not args.gpu:
        ap.error("--dry-run goes with --gpu")
    return args


def make_setup(args: argparse.Namespace) -> Setup:
    import torch

    if not args.gpu:
        return Setup("gpt2-small", LAYER if args.layer is None else args.layer, "cpu", "float32", False, False)
    has_cuda = torch.cuda.is_available()
    if not has_cuda and not args.dry_run:
        raise SystemExit("--gpu needs a CUDA device (torch.cuda.is_available() is False); "
                         "`--gpu --dry-run` runs the same path in miniature on a CPU.")
    shape = "tiny" if args.dry_run else "gpt2-xl"
    layer = SHAPES[shape]["n_layer"] // 2 if args.layer is None else args.layer
    return Setup(shape, layer, "cuda" if has_cuda else "cpu", "bfloat16", True, args.dry_run)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)

    import pandas as pd
    import torch
    import transformers
    from transformers import GPT2LMHeadModel, GPT2Model, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    from repmap_core.capture.models import load_model
    from repmap_core.data.load import adapt_frame

    setup = make_setup(args)
    hf_logging.set_verbosity_error()  # GPT2Model from an LM checkpoint lists the unused head
    hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars
    all_texts, all_labels = read_sentences(args.data)
    if setup.gpu:
        n_texts = args.texts or (64 if setup.dry_run else len(all_texts) * (args.repeat_data or 32))
        repeats = args.repeats or (1 if setup.dry_run else 3)
        loop_texts = min(n_texts, args.loop_texts or (16 if setup.dry_run else 500))
    else:
        n_texts = args.texts or (200 if args.quick else 1000)
        repeats = args.repeats or (1 if args.quick else 2)
        loop_texts = n_texts
    loop_repeats = min(repeats, args.loop_repeats or repeats)
    reps = -(-n_texts // len(all_texts))  # the GPU run cycles the sentences to have enough work
    texts, labels = (all_texts * reps)[:n_texts], (all_labels * reps)[:n_texts]
    threads = torch.get_num_threads()
    load_before = load1()
    peers = available_peers()
    print(f"repmap extraction benchmark: {setup.shape}, {setup.dtype} on {setup.device}, {len(texts)} texts from "
          f"{args.data.name}, block {setup.layer}, last token, best of {repeats} run(s); torch {torch.__version__} "
          f"({threads} threads), transformers {transformers.__version__}"
          + "".join(f", {k} {v}" for k, v in peers.items()))
    missing = [p for p in ("TransformerLens", "nnsight") if p not in peers]
    if missing:
        print(f"  not installed, skipped: {', '.join(missing)} (pip install -r bench/requirements.txt)")

    with tempfile.TemporaryDirectory(prefix="repmap-bench-") as tmp:
        folder = Path(tmp) / f"{setup.shape}-random"
        t0 = time.perf_counter()
        build_model(folder, all_texts, shape=setup.shape, save_dtype="float32" if setup.dtype == "float32" else "bfloat16")
        print(f"built {setup.shape} (random weights) + BPE tokenizer in {time.perf_counter() - t0:.1f}s")

        tok = PreTrainedTokenizerFast.from_pretrained(folder)
        tok.pad_token = tok.eos_token  # GPT-2 style tokenizers have no pad token
        tok.padding_side = "right"
        lengths = np.array([len(x) for x in tok(texts)["input_ids"]])
        n_tokens, mean_len = int(lengths.sum()), float(lengths.mean())
        loop_tokens = int(lengths[:loop_texts].sum())
        print(f"vocab {len(tok)}, {n_tokens} real tokens, mean length {mean_len:.1f}, max {int(lengths.max())}")

        dtype = getattr(torch, setup.dtype)
        lm_head = GPT2LMHeadModel.from_pretrained(folder, dtype=dtype).eval().to(setup.device)
        base = GPT2Model.from_pretrained(folder, dtype=dtype).eval().to(setup.device)
        t0 = time.perf_counter()
        lm = load_model(str(folder), device=setup.device, dtype=setup.dtype)
        repmap_load_s = time.perf_counter() - t0
        dataset = adapt_frame(pd.DataFrame({"text": texts, "label": labels}), name="amazon_cells")
        d, n_layer = lm.info.d_model, lm.info.n_layers
        # CPU and dry run: 32 texts per peer batch, repmap's own default (1,024 tokens on a CPU)
        batch, repmap_budget = HF_BATCH, None
        if setup.device.startswith("cuda"):
            repmap_budget, peer_budget = auto_token_budget(setup, d, n_layer)
            batch = max(1, peer_budget // int(lengths.max()))
            print(f"batch sizes (auto): repmap {repmap_budget} tokens per batch; peers {batch} texts per batch")

        L, dev = setup.layer, setup.device
        methods: dict[str, Callable] = {
            "HF loop": lambda ts, ds: hf_loop(lm_head, tok, ts[:loop_texts], L, dev),
            "HF batched": lambda ts, ds: hf_batched(base, tok, ts, L, batch, dev),
        }
        wanted = {m.strip() for m in args.methods.split(",") if m.strip()}
        if "TransformerLens" in peers and (not wanted or "TransformerLens" in wanted):  # gpt2-xl copies cost minutes
            tl = tl_model(lm_head, dev)
            methods["TransformerLens"] = lambda ts, ds: tl_batched(tl, tok, ts, L, batch, dev)
        if "nnsight" in peers and (not wanted or "nnsight" in wanted):
            nn = nnsight_model(lm_head, folder)
            methods["nnsight"] = lambda ts, ds: nnsight_batched(nn, ts, L, batch)
        methods["repmap"] = lambda ts, ds: repmap_extract(lm, ds, L, repmap_budget)
        if args.methods:
            keep = {m.strip() for m in args.methods.split(",")} | {"repmap"}
            methods = {k: v for k, v in methods.items() if k in keep}
        warm_texts, warm_ds = texts[:8], dataset.take(np.arange(min(8, len(texts))))
        for fn in methods.values():
            fn(warm_texts, warm_ds)  # warm-up: first-call allocations, thread pool, lazy imports, kernels

        shapes = gemm_shapes(d, repmap_budget or 4096)
        gemm_repeats = 3 if args.quick or setup.dry_run else (20 if setup.gpu else 5)
        # Rounds interleave the methods (and the GEMM timing), so a burst of load from another
        # process hurts one round of every method rather than every run of one method.
        runs = {name: [] for name in methods}  # (wall s, cpu s) per round
        acts, gemm_best, device_peak = {}, {}, {}
        for r in range(repeats):
            gemm_best = gemm_best_times(gemm_repeats, gemm_best, shapes, dev, setup.dtype)
            for name, fn in methods.items():
                if name == "HF loop" and r >= loop_repeats:
                    continue
                if dev.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                wall, cpu, acts[name] = timed(lambda fn=fn: fn(texts, dataset))
                if dev.startswith("cuda"):
                    device_peak[name] = max(device_peak.get(name, 0), torch.cuda.max_memory_allocated())
                runs[name].append((wall, cpu))
                print(f"  round {r + 1}/{repeats}  {name:<16} {wall:7.2f}s  (cpu {cpu:6.2f}s)", flush=True)
        memory = repmap_memory(folder, texts, labels, L, dev, setup.dtype)
    load_after = load1()

    rows = {}
    for name, rs in runs.items():
        wall, cpu = min(rs)  # best wall time, with that run's CPU time
        toks = loop_tokens if name == "HF loop" else n_tokens
        rows[name] = {"seconds": wall, "cpu_seconds": cpu, "runs_s": [w for w, _ in rs], "tokens": toks,
                      "tokens_per_s": toks / wall}
        if name in device_peak:
            rows[name]["device_peak_mb"] = device_peak[name] / 2**20
    gemm = gemm_summary(gemm_best)
    fpt = flops_per_token(L + 1, d, mean_len)
    limit_tps = gemm["flops_per_s"] / fpt
    rows["matmul limit"] = {"seconds": n_tokens / limit_tps, "cpu_seconds": None, "runs_s": [], "tokens": n_tokens,
                            "tokens_per_s": limit_tps}
    peak, peak_source = peak_flops(dev, args.peak_tflops) if setup.gpu else (None, "")
    if setup.gpu and peak is None and setup.dry_run:
        peak, peak_source = 989.4e12, "H200 bf16 peak assumed (dry run on a machine without a known accelerator)"
    ref = rows.get("HF loop") or rows["repmap"]
    for r in rows.values():
        r["vs_hf_loop"] = r["tokens_per_s"] / ref["tokens_per_s"]
        r["vs_matmul_limit"] = r["tokens_per_s"] / limit_tps
        if peak:
            r["model_flops_per_s"] = r["tokens_per_s"] * fpt
            r["mfu"] = r["model_flops_per_s"] / peak

    # ---- report
    unit = "TFLOP/s" if setup.gpu else "GFLOP/s"
    scale = 1e12 if setup.gpu else 1e9
    print()
    print(f"GEMM {setup.dtype}: " + ", ".join(f"({s['m']}x{s['k']})@({s['k']}x{s['n']}) {s['gflops'] * 1e9 / scale:.1f} {unit}"
                                       for s in gemm["shapes"]) + f"; combined {gemm['flops_per_s'] / scale:.1f} {unit}")
    print(f"FLOPs/token = {L + 1} blocks x (24*d^2 + 4*T*d), d={d}, T={mean_len:.1f} (mean length) "
          f"= {fpt / 1e6:.1f} MFLOP; limit = GEMM FLOP/s / FLOPs per token")
    if peak:
        print(f"peak for MFU: {peak_source}")
    print()
    header = (f"{'method':<17}{'seconds':>9}{'tokens/s':>11}{'vs HF loop':>12}{'vs limit':>10}{'cpu s':>9}"
              + (f"{'MFU':>8}" if peak else ""))
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        cpu = "" if r["cpu_seconds"] is None else f"{r['cpu_seconds']:.2f}"
        mfu = f"{r['mfu']:.1%}" if peak else ""
        print(f"{name:<17}{r['seconds']:>9.2f}{r['tokens_per_s']:>11.0f}{r['vs_hf_loop']:>11.2f}x"
              f"{r['vs_matmul_limit']:>9.2f}x{cpu:>9}" + (f"{mfu:>8}" if peak else ""))
    if "HF loop" in rows and loop_texts < n_texts:
        print(f"(the HF loop ran on the first {loop_texts} texts; its rate is per token like the others')")
    print()

    half = setup.dtype != "float32"
    act_scale = float(np.abs(acts["repmap"]).max())
    diffs = {}
    for name in acts:
        if name != "repmap":
            n = len(acts[name])
            diffs[f"{name} vs repmap"] = float(np.abs(acts[name] - acts["repmap"][:n]).max())
    ok = {k: (v / act_scale < AGREE_REL_TOL_HALF) if half else (v < AGREE_TOL) for k, v in diffs.items()}
    tol_txt = f"relative tolerance {AGREE_REL_TOL_HALF:g} ({setup.dtype})" if half else f"tolerance {AGREE_TOL:g}"
    print(f"agreement (max |diff| of the ({len(texts)}, {d}) block-{L} last-token activations, {tol_txt}; "
          f"max |activation| {act_scale:.2f}):")
    for k, v in diffs.items():
        print(f"  {k:<28} {v:.2e}  {'ok' if ok[k] else 'MISMATCH'}")
    print()

    rep = rows["repmap"]
    peer_names = [k for k in runs if k != "repmap"]
    fastest = max(peer_names, key=lambda k: rows[k]["tokens_per_s"]) if peer_names else None
    vs_peer = rep["tokens_per_s"] / rows[fastest]["tokens_per_s"] if fastest else None
    elem = 4 if setup.dtype == "float32" else 2
    all_hidden_mb = (n_layer + 1) * n_tokens * d * elem / 2**20  # what output_hidden_states over the whole run is
    pooled_mb = len(texts) * d * 4 / 2**20  # float32 rows
    targets = {
        f"repmap >= {TARGET_VS_LIMIT}x matmul limit": {"value": rep["vs_matmul_limit"], "target": TARGET_VS_LIMIT,
                                                       "met": rep["vs_matmul_limit"] >= TARGET_VS_LIMIT},
    }
    if fastest:
        targets[f"repmap >= {TARGET_VS_PEER}x fastest peer ({fastest})"] = {
            "value": vs_peer, "target": TARGET_VS_PEER, "met": vs_peer >= TARGET_VS_PEER}
    if peak:
        targets[f"repmap MFU >= {TARGET_MFU:.0%}"] = {"value": rep["mfu"], "target": TARGET_MFU, "met": rep["mfu"] >= TARGET_MFU}
    print("targets:")
    for k, t in targets.items():
        shown = f"{t['value']:.1%}" if "MFU" in k else f"{t['value']:.2f}x"
        print(f"  {k:<44} {shown:>7}  {'MET' if t['met'] else 'NOT MET'}")
    peak_rss_mb = peak_rss_bytes() / 2**20
    print()
    print(f"memory (fresh process, {memory['where']}): repmap held at most {memory['extra_mb']:.0f} MiB above its loaded model "
          f"({memory['loaded_mb']:.0f} MiB) while extracting "
          f"({pooled_mb:.1f} MiB of pooled rows; every hidden state of the run would be {all_hidden_mb:.0f} MiB)")
    print(f"peak RSS {peak_rss_mb:.0f} MiB (whole process, with a copy of the model per library); "
          f"torch.get_num_threads() = {threads}; repmap load_model {repmap_load_s:.2f}s (not timed above)")
    # this process alone keeps the 1-minute load near `threads`; much more means others ran too
    busy = max(load_before, load_after) > threads + 0.75 and not setup.gpu
    print(f"1-min load average: {load_before:.1f} before, {load_after:.1f} after ({os.cpu_count()} CPUs)"
          + ("  -- another process was using the CPU: timings are pessimistic, rerun on a quiet machine" if busy else ""))

    section = f"extraction ({setup.shape}, {setup.dtype}, {setup.device})"
    table = []
    for name in runs:
        r = rows[name]
        if name == "repmap":
            continue
        table.append(row(section, f"{name} tokens/s", f"{r['tokens_per_s']:,.0f}", f"repmap {rep['tokens_per_s'] / r['tokens_per_s']:.2f}x",
                         note=f"{r['mfu']:.1%} MFU" if peak else ""))
    table.append(row(section, "matmul limit tokens/s", f"{limit_tps:,.0f}",
                     f"GEMM {gemm['flops_per_s'] / scale:.0f} {unit} / {fpt / 1e6:.0f} MFLOP per token"))
    table.append(row(section, "repmap tokens/s", f"{rep['tokens_per_s']:,.0f}", f"{rep['vs_matmul_limit']:.2f}x limit",
                     f">= {TARGET_VS_LIMIT}x limit", rep["vs_matmul_limit"] >= TARGET_VS_LIMIT))
    if fastest:
        table.append(row(section, f"repmap vs fastest peer ({fastest})", "", f"{vs_peer:.2f}x", f">= {TARGET_VS_PEER}x",
                         vs_peer >= TARGET_VS_PEER))
    if peak:
        table.append(row(section, "repmap MFU", f"{rep['mfu']:.1%}", f"of {peak / 1e12:.0f} TFLOP/s", f">= {TARGET_MFU:.0%}",
                         rep["mfu"] >= TARGET_MFU, note="dry run: not a measurement" if setup.dry_run else ""))
    # extraction must never hold all hidden states: its extra memory stays a small fraction of them
    held_ok = memory["extra_mb"] < 0.25 * all_hidden_mb
    table.append(row(section, "repmap extra memory while extracting", f"{memory['extra_mb']:.0f} MiB",
                     f"{memory['extra_mb'] / all_hidden_mb:.2f}x all hidden states ({all_hidden_mb:.0f} MiB)",
                     "pooled rows only", held_ok, note=f"pooled rows {pooled_mb:.1f} MiB"))
    table.append(row(section, "peak RSS (whole benchmark process)", f"{peak_rss_mb:,.0f} MiB"))
    if not all(ok.values()):
        table.append(row(section, "agreement between methods", "MISMATCH", met=False))

    result = {
        "config": {
            "shape": setup.shape, "dtype": setup.dtype, "device": setup.device, "gpu_mode": setup.gpu,
            "dry_run": setup.dry_run, "texts": len(texts), "tokens": n_tokens, "mean_length": mean_len,
            "max_length": int(lengths.max()), "layer": L, "position": "last", "d_model": d, "n_layer": n_layer,
            "vocab": len(tok), "peer_batch": batch, "repmap_batch_tokens": repmap_budget, "repeats": repeats,
            "loop_repeats": loop_repeats, "loop_texts": loop_texts, "quick": bool(args.quick), "data": str(args.data),
        },
        "machine": {
            "torch": torch.__version__, "transformers": transformers.__version__, "peers": peers, "threads": threads,
            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": sys.version.split()[0],
            "device_name": torch.cuda.get_device_name() if setup.device.startswith("cuda") else "cpu",
        },
        "gemm": gemm,
        "flops_per_token": {"formula": f"{L + 1} * (24*d^2 + 4*T*d)", "value": fpt},
        "peak": {"flops_per_s": peak, "source": peak_source} if peak else None,
        "methods": rows,
        "agreement": {"max_abs_diff": diffs, "max_abs_activation": act_scale, "ok": all(ok.values())},
        "targets": targets,
        "memory": {"repmap_peak_extra_mb": memory["extra_mb"], "repmap_loaded_mb": memory["loaded_mb"], "measured_on": memory["where"],
                   "all_hidden_states_mb": all_hidden_mb,
                   "pooled_rows_mb": pooled_mb, "peak_rss_mb": peak_rss_mb},
        "repmap_load_s": repmap_load_s,
        "load_average_1min": {"before": load_before, "after": load_after},
        "rows": table,
    }
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
