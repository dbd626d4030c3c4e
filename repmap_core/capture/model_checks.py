"""What can be refused about a model in one sentence before (or as) its weights load.

`load_model` and `get_activations` call these before any lock, cache file or "Loading" line, so a
broken model folder costs a second, not minutes, and leaves nothing behind:

- `check_memory`: a lower bound on the parameter count from config.json alone, against the memory
  free where the weights go (e.g. `n_layer: 1000000` is refused instead of loading for minutes).
- `check_model_files`: remote code, an architecture transformers does not know, missing tokenizer
  files, damaged or truncated safetensors, weights of other shapes than config.json says (compared
  on the meta device), blocks without weights, and NaN/inf in the weights (read memory-mapped, for
  models up to 2 GB of weights; larger ones are caught by the activation check in `extract.py`).
- `check_loading`: what transformers itself reports as re-initialised at random while loading.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from repmap_core.capture import model_memory
from repmap_core.capture.model_config import ResolvedModel, check_trust, config_count, model_info, read_config
from repmap_core.capture.model_layout import find_blocks
from repmap_core.capture.model_memory import DTYPE_BYTES, safetensors_header
from repmap_core.capture.quiet import quiet_transformers
from repmap_core.errors import RepmapError

__all__ = ["check_loading", "check_memory", "check_model_files", "estimated_parameters"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json",
                   "vocab.txt", "tokenizer.tiktoken")
SCAN_WEIGHTS_MAX_BYTES = 2 * 1024**3  # weights up to this size are read once and checked for NaN/inf before loading


def estimated_parameters(resolved: ResolvedModel) -> int:
    """A lower bound on the model's parameter count from config.json alone: the MLPs (up and down
    projections, 2 x width x hidden size per block) and the token embeddings. Attention, norms and
    gates only add to it, so a model refused by this bound is too big for certain."""
    cfg = read_config(resolved)
    text_cfg = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    info = model_info(resolved)
    d = info.d_model
    ffn = config_count(text_cfg, ("intermediate_size", "n_inner", "ffn_dim", "d_ff", "intermediate_dim"), resolved,
                        "MLP width")
    if ffn is None:
        ffn = 4 * d if info.model_type == "gpt2" else 0  # GPT-2 leaves n_inner null for 4 x width
    vocab = config_count(text_cfg, ("vocab_size",), resolved, "vocabulary size") or 0
    return info.n_layers * 2 * d * ffn + vocab * d


def check_memory(resolved: ResolvedModel, device: str, dtype: str) -> None:
    """Refuse (one sentence) a model whose config alone says it cannot fit in the memory free on
    `device` (and in RAM, where the weights are read first), before minutes go into loading it."""
    params = estimated_parameters(resolved)
    need = params * DTYPE_BYTES.get(dtype, 4)
    free = {"RAM": model_memory.available_memory_bytes()}  # looked up here, so a test can set it
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            index = torch.device(device).index or 0
            free[device] = int(torch.cuda.mem_get_info(index)[0])
    for where, available in free.items():
        if available is not None and need > available:
            info = model_info(resolved)
            raise RepmapError(
                f"Model '{resolved.name}' needs at least {need / 1e9:.1f} GB in {dtype} (about {params / 1e9:.1f} billion "
                f"parameters for {info.n_layers} blocks of width {info.d_model} in its config.json), more than the "
                f"{available / 1e9:.1f} GB free in {where}; check config.json or use a smaller model or dtype."
            )


def check_model_files(resolved: ResolvedModel, trust_remote_code: bool = False, head: bool = False) -> None:
    """Everything about a model folder that can be refused in one sentence before its weights load:
    remote code, an architecture transformers does not know, missing tokenizer files, weight files
    that are damaged, cut short, of other shapes than the config says, or holding NaN/inf. Expensive
    parts run once per model revision."""
    check_trust(resolved, trust_remote_code)
    cfg = read_config(resolved)
    model_info(resolved)
    folder = Path(resolved.path)
    if not cfg.get("auto_map"):
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        model_type = str(cfg.get("model_type") or "")
        if model_type not in CONFIG_MAPPING_NAMES:
            import transformers

            said = f"model_type '{model_type}'" if model_type else "no model_type"
            raise RepmapError(
                f"Model '{resolved.name}' has {said} in config.json, which transformers {transformers.__version__} does "
                "not know; fix model_type, or upgrade transformers if the architecture is newer than it."
            )
    if not any((folder / name).is_file() for name in TOKENIZER_FILES) and not list(folder.glob("*.tiktoken")):
        raise RepmapError(
            f"Model '{resolved.name}' has no tokenizer files (tokenizer.json, tokenizer.model, vocab.json or vocab.txt); "
            "copy them from where the model came from into its folder."
        )
    _check_weights(resolved.path, resolved.revision, resolved.name, head)


@lru_cache(maxsize=32)
def _check_weights(path: str, revision: str, name: str, head: bool) -> None:
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise RepmapError(f"Model '{name}' has no safetensors weights; repmap does not load pickled .bin files, "
                          "convert it to safetensors first.")
    shapes, total = {}, 0
    for file in files:
        try:
            header, data = safetensors_header(file)
        except ValueError as e:
            raise RepmapError(f"Model '{name}' has a damaged weights file '{file.name}' ({e}); download or save the "
                              "model again.") from None
        shapes.update({k: tuple(int(x) for x in v["shape"]) for k, v in header.items()})
        total += data
    resolved = ResolvedModel(name, path, revision, "folder")
    held = sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values())
    least = estimated_parameters(resolved)
    if least > 1.5 * held:  # e.g. n_layer raised far beyond the blocks the weights hold
        info = model_info(resolved)
        raise RepmapError(
            f"The config.json of model '{name}' describes at least {least:,} parameters ({info.n_layers} blocks of width "
            f"{info.d_model}) but its weights hold {held:,}; the config and the weights do not belong together."
        )
    cfg = read_config(resolved)
    if not cfg.get("auto_map") and not cfg.get("quantization_config"):
        _check_shapes(resolved, shapes, head)
    if total <= SCAN_WEIGHTS_MAX_BYTES:
        _check_finite(name, files)


def _check_shapes(resolved: ResolvedModel, shapes: dict[str, tuple], head: bool) -> None:
    """Compare the weights' shapes with those of the architecture config.json describes, built on
    the meta device (no memory): a tensor of another shape would be silently re-initialised."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(resolved.path)
            with torch.device("meta"):
                model = (AutoModelForCausalLM if head else AutoModel).from_config(config)
    except Exception as e:  # transformers raises many types for a config it cannot build
        raise RepmapError(f"Model '{resolved.name}' has a config.json transformers cannot build a model from: "
                          f"{str(e).splitlines()[0][:160] if str(e) else type(e).__name__}.") from None
    prefix = getattr(model, "base_model_prefix", "") or ""

    def stored(key: str) -> tuple | None:  # the checkpoint may hold it with or without the base model's prefix
        for candidate in (key, f"{prefix}.{key}", key[len(prefix) + 1:] if key.startswith(prefix + ".") else None):
            if candidate in shapes:
                return shapes[candidate]
        return None

    for key, param in model.named_parameters():
        found = stored(key)
        if found is not None and found != tuple(param.shape):
            raise RepmapError(
                f"Model '{resolved.name}' has weight '{key}' of shape {list(found)} where its config.json needs "
                f"{list(param.shape)}; the weights and config.json come from different models, so fix the folder."
            )
    # a block with no weights at all would be random (config.json counts more blocks than were saved)
    n_layers = model_info(resolved).n_layers
    try:
        blocks = find_blocks(model, n_layers)
    except RepmapError:
        return
    names = [k for k, _ in model.named_parameters()]
    for i in range(n_layers):
        own = [k for k in names if k.startswith(f"{blocks}.{i}.")]
        if own and all(stored(k) is None for k in own) and not any(f"{blocks}.{i}." in k for k in shapes):
            raise RepmapError(
                f"The config.json of model '{resolved.name}' counts {n_layers} blocks but its weights hold none for block "
                f"{i}, which would be random; the weights and config.json do not belong together, so fix the folder."
            )


# the exponent bits of each float format: all set means inf or NaN
_EXPONENT_MASKS = {"F64": (np.uint64, 0x7FF0000000000000), "F32": (np.uint32, 0x7F800000),
                   "F16": (np.uint16, 0x7C00), "BF16": (np.uint16, 0x7F80)}


def _check_finite(name: str, files: list[Path]) -> None:
    """Refuse weights holding NaN or inf, read straight from the memory-mapped files (a bit test on
    each value's exponent, ~0.1 s per 500 MB, no copies through torch)."""
    chunk = 1 << 24  # values per test, so the temporaries stay small
    for file in files:
        header, data = safetensors_header(file)
        start = file.stat().st_size - data
        raw = np.memmap(file, dtype=np.uint8, mode="r")
        for key, info in header.items():
            kind = _EXPONENT_MASKS.get(str(info["dtype"]).upper())
            if kind is None:
                continue
            utype, mask = kind
            a, b = (int(x) for x in info["data_offsets"])
            values = raw[start + a:start + b].view(utype)
            for i in range(0, len(values), chunk):
                if bool(((values[i:i + chunk] & utype(mask)) == utype(mask)).any()):
                    raise RepmapError(
                        f"Model '{name}' has NaN or inf values in weight '{key}' ({file.name}), so every activation "
                        "would be meaningless; download or save the model again."
                    )
        del raw


def check_loading(resolved: ResolvedModel, loading: dict) -> None:
    """Refuse weights transformers would silently re-initialise at random: tensors of another shape
    than the config says, or weights missing from the checkpoint (a pooler, unused here, may be)."""
    mismatched = loading.get("mismatched_keys") or []
    if mismatched:
        key, found, wanted = mismatched[0]
        raise RepmapError(
            f"Model '{resolved.name}' has weight '{key}' of shape {list(found)} where its config.json needs "
            f"{list(wanted)}; the weights and config.json come from different models, so fix the folder."
        )
    missing = sorted(k for k in loading.get("missing_keys") or [] if ".pooler." not in f".{k}")
    if missing:
        raise RepmapError(
            f"Model '{resolved.name}' lacks {len(missing)} weight(s) its config.json needs (first: '{missing[0]}'), "
            "which would be random; the weights and config.json do not belong together, so fix the folder."
        )
