"""Places in a model: its list of transformer blocks, its final norm, and the names of the sites
between blocks.

Sites use TransformerLens names: `blocks.{L}.hook_resid_post` is the output of block L (before any
final norm), and negative layer indices count from the end. Blocks are found by known suffixes
(`transformer.h`, `model.layers`, ...), not one branch per architecture.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from repmap_core.errors import RepmapError

# block lists by known suffix, most specific first (GPT-2, NeoX/Pythia, Llama/Gemma/Qwen, BERT, OPT, ...)
BLOCK_SUFFIXES = ("transformer.h", "gpt_neox.layers", "model.layers", "encoder.layer",
                  "model.decoder.layers", "decoder.layers", "layers", "h", "blocks", "layer")
FINAL_NORM_NAMES = ("ln_f", "norm", "final_layer_norm", "final_layernorm", "model.norm", "transformer.ln_f",
                    "gpt_neox.final_layer_norm")


def site_name(layer: int) -> str:
    """TransformerLens name of the residual stream after block `layer`."""
    return f"blocks.{layer}.hook_resid_post"


def resolve_layers(layers: str | Sequence[int | str] | None, n_layers: int, model_name: str = "the model") -> list[int]:
    """Turn `"all"`, `"0,6,-1"` or a list into sorted unique non-negative block indices.

    >>> resolve_layers("0,-1", 12)
    [0, 11]
    """
    if layers is None or (isinstance(layers, str) and layers.strip().lower() in ("", "all")):
        return list(range(n_layers))
    items = layers.split(",") if isinstance(layers, str) else list(layers)
    out = set()
    for item in items:
        try:
            layer = int(str(item).strip())
        except ValueError:
            raise RepmapError(f"Layer '{item}' is not a whole number; give layers like 0,6,-1 or all.") from None
        if not -n_layers <= layer < n_layers:
            raise RepmapError(
                f"Layer {layer} is out of range for {model_name}, which has {n_layers} blocks "
                f"(use 0 to {n_layers - 1}, or -{n_layers} to -1)."
            )
        out.add(layer % n_layers)
    return sorted(out)


def find_blocks(model: Any, n_layers: int, override: str | None = None) -> str:
    """Dotted path of the model's list of transformer blocks.

    Tries known suffixes (`transformer.h`, `model.layers`, `encoder.layer`, ...), then any
    ModuleList of exactly `n_layers` children; `override` names it for unusual models.
    """
    import torch

    if override:
        return override
    lists = {name: mod for name, mod in model.named_modules() if isinstance(mod, torch.nn.ModuleList)}
    for suffix in BLOCK_SUFFIXES:
        for name, mod in lists.items():
            if (name == suffix or name.endswith("." + suffix)) and len(mod) == n_layers:
                return name
    candidates = [name for name, mod in lists.items() if len(mod) == n_layers]
    if candidates:
        return min(candidates, key=lambda s: s.count("."))
    raise RepmapError(f"Could not find the list of {n_layers} transformer blocks in this model; name it with blocks_path.")


def final_norm(model: Any) -> Any:
    """The norm applied after the last block (GPT-2 ln_f, Llama norm), or None (BERT)."""
    for name in FINAL_NORM_NAMES:
        try:
            return model.get_submodule(name)
        except AttributeError:
            continue
    return None
