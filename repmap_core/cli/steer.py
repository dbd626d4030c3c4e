"""`steer`: a steering sweep without the Python API.

    python -m repmap_core steer --model HuggingFaceTB/SmolLM2-135M-Instruct --data builtin:corrigible \\
        --layer 14 --alphas=-1,-0.5,0,0.5,1 --json

The vector comes from `--data`'s training questions (CAA, both letter orders), or from a file
written by `steering-vectors --export` (`--vector layer_14.safetensors`; then every question of
`--data` is held out). The held-out questions are swept with the vector and with a random
direction of the same norm; the side effect is the change in next-token loss on neutral text.
"""
from __future__ import annotations

import argparse

import numpy as np

from repmap_core.cli import contract
from repmap_core.errors import RepmapError
from repmap_core.progress import Progress
from repmap_core.steering.apply import SCALE_UNITS, SCALES
from repmap_core.steering.run import DEFAULT_ALPHAS

COMMANDS = ("steer",)


def add_parser(sub) -> None:
    p = sub.add_parser("steer", help="sweep a steering vector's multiplier on held-out A/B questions (with a random baseline)")
    p.add_argument("--model", required=True, help="a causal LM: hub id, folder, .gguf file, or the embedded SmolLM2")
    p.add_argument("--data", required=True, help="A/B questions, e.g. builtin:corrigible")
    p.add_argument("--layer", type=int, required=True, help="the block whose output is steered (negative from the end)")
    p.add_argument("--alphas", default=DEFAULT_ALPHAS, help="multipliers, written with = (--alphas=-1,0,1)")
    p.add_argument("--scale", default=SCALES[0], choices=SCALES,
                   help="what one unit of α adds along the vector's direction: " +
                        "; ".join(f"{k}: {v}" for k, v in SCALE_UNITS.items()))
    p.add_argument("--vector", default=None, metavar="FILE.safetensors", help="a vector file (steering-vectors --export)")
    p.add_argument("--test-frac", type=float, default=0.3, help="questions held out (when the vector is made here)")
    p.add_argument("--limit", type=int, default=None, help="at most N rows of --data (two per question)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-balance", action="store_true", help="do not ask each question in both letter orders")
    p.add_argument("--json", action="store_true")


def parse_alphas(text: str) -> list[float]:
    return contract.parse_multipliers(text, "--alphas")


def run(args: argparse.Namespace, progress: Progress) -> dict:
    from repmap_core.capture.activations import get_activations
    from repmap_core.capture.models import load_model, model_info, resolve_layers, resolve_model
    from repmap_core.data.load import load_dataset
    from repmap_core.steering import VectorSet, compute_vectors, load_vectors
    from repmap_core.steering.compare import residual_scales
    from repmap_core.steering.run import sweep_layer

    alphas = parse_alphas(args.alphas)
    dataset = load_dataset(args.data, limit=args.limit, seed=args.seed)
    resolved = resolve_model(args.model, progress=progress)
    layer = resolve_layers([args.layer], model_info(resolved).n_layers, f"model '{resolved.name}'")[0]
    lm = load_model(resolved, head=True)
    loader = lambda r, device, dtype: lm  # noqa: E731  one model for vectors and sweeps
    if args.vector:
        vectors = load_vectors(args.vector)
        if layer not in vectors:
            raise RepmapError(f"'{args.vector}' holds vectors for layers {', '.join(map(str, sorted(vectors)))}, not {layer}.")
        everything = compute_vectors(resolved.name, dataset, [layer], test_frac=0.5, seed=args.seed,
                                     balance=not args.no_balance, loader=loader, progress=progress)
        rows = np.arange(len(everything.dataset))
        aset = get_activations(resolved, everything.dataset, [layer], "answer", loader=loader)
        norm, spread = residual_scales(aset[layer])
        vs = VectorSet({layer: vectors[layer]}, everything.dataset, rows[:0], rows, everything.manifest, everything.balance,
                       {layer: norm}, everything.question_ids, {layer: spread})
    else:
        vs = compute_vectors(resolved.name, dataset, [layer], test_frac=args.test_frac, seed=args.seed,
                             balance=not args.no_balance, loader=loader, progress=progress)
    out = sweep_layer(vs, lm, layer, alphas, scale=args.scale, seed=args.seed, progress=progress)
    res = out.sweep

    def curve(c) -> dict:
        return {"mean": c.mean.tolist(), "low": c.low.tolist(), "high": c.high.tolist(), "agreement": c.agreement.tolist(),
                "agreement_low": c.agreement_low.tolist(), "agreement_high": c.agreement_high.tolist()}

    return {"model": resolved.name, "revision": resolved.revision, "quantization": resolved.quantization or None,
            "data": dataset.name, "layer": layer, "site": f"blocks.{layer}.hook_resid_post",
            "scale": {"name": args.scale, "unit": SCALE_UNITS[args.scale], "residual_spread": vs.spread(layer),
                      "residual_norm": vs.norm(layer), "vector_norm": vs.vectors[layer].norm,
                      "added_norm_per_unit_alpha": res.curve.factor * vs.vectors[layer].norm},
            "vector": {"source": args.vector or "caa (training questions)", "balance": vs.balance.sentence() if vs.balance else None},
            "held_out": {"questions": int(len(np.unique(vs.held_out_groups()))), "prompts": res.curve.n_questions,
                         "intervals": "95%, bootstrap over questions (both letter orders of a question resample together)"},
            "alphas": alphas, "propensity": curve(res.curve), "random_direction": curve(res.random),
            "slope": res.slope.as_dict(), "random_slope": res.random_slope.as_dict(),
            "vector_minus_random_slope": res.difference.as_dict(),
            "effect": res.effect,
            "side_effect": {"unsteered_nats": res.side_effect["base"],
                            "per_alpha": [{"alpha": a, "loss_nats": res.side_effect[float(a)],
                                           "change_nats": res.side_effect_delta[float(a)].as_dict()} for a in alphas]},
            "verdict": res.verdict,
            "preview": [{"prompt_end": p[-120:], "plain": a, "steered": b}
                        for p, a, b in zip(out.preview_prompts, out.plain, out.steered)]}
