"""A model located on disk (`ResolvedModel`) and what its config.json says, read without loading weights."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from repmap_core.errors import RepmapError

FINETUNE_MANIFEST = "repmap_finetune.json"  # a finetuned model folder's record (finetune/checkpoints.py writes it)
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


def short_name(name: str) -> str:
    """The last part of a hub id or folder, for people: `HuggingFaceTB/SmolLM2-135M-Instruct` -> `SmolLM2-135M-Instruct`."""
    return str(name).rstrip("/").split("/")[-1]


def read_config(resolved: ResolvedModel) -> dict:
    try:
        cfg = json.loads((Path(resolved.path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RepmapError(f"The config.json of model '{resolved.name}' could not be read: {e}.") from None
    if not isinstance(cfg, dict):
        raise RepmapError(f"The config.json of model '{resolved.name}' is a JSON {type(cfg).__name__}, not an object of "
                          "settings; replace it with the model's own config.json.")
    return cfg


def config_count(section: dict, keys: Sequence[str], resolved: ResolvedModel, what: str) -> int | None:
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
    n_layers = config_count(text_cfg, ("num_hidden_layers", "n_layer", "num_layers"), resolved, "number of blocks")
    d_model = config_count(text_cfg, ("hidden_size", "n_embd", "d_model"), resolved, "width")
    if n_layers is None or d_model is None:
        raise RepmapError(f"Model '{resolved.name}' has a config without a layer count or width; it is not a supported transformer.")
    model_type = str(cfg.get("model_type", ""))
    max_pos = config_count(text_cfg, ("max_position_embeddings", "n_positions"), resolved, "context length")
    return ModelInfo(int(n_layers), int(d_model), model_type, model_type in ENCODER_TYPES, max_pos)
