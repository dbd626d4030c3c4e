"""What a model name refers to, found out before anything heavy is touched: a local folder or `.gguf` file
(checked against a served app's model roots before the path is even looked at), a model in the local Hugging
Face cache, or a GGUF model with no conversion in the cache yet, whose block count is read from the file's
header instead of converting it (minutes for a big model). `models.resolve_model` and the pages' link checks
both start here, so a name from a link never reaches a path outside the roots.
"""
from __future__ import annotations

from pathlib import Path

from repmap_core import access
from repmap_core.capture import gguf
from repmap_core.capture.model_config import ResolvedModel
from repmap_core.errors import RepmapError, path_error

__all__ = ["looks_like_path", "local_model_path", "hf_cache_snapshot", "unconverted_gguf", "needs_conversion"]

# weights and tokenizer files only: never .bin/.pt pickles, never code unless trusted
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]  # tokenizer.json is *.json


def looks_like_path(name: str) -> bool:
    """True for what can only be a path (`./x`, `/x`, `~/x`, `a/b/c`, `a\\b`, `x.gguf`), never a hub id."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name or name.lower().endswith(".gguf")


def local_model_path(name: str) -> Path | None:
    """The local path `name` stands for, or None for a hub id. A name that looks like a path is checked
    against the model roots (when a policy is enforced) before it is touched at all; a hub-id-shaped name
    (`org/name`) is a local folder only when one exists under the working directory, and is checked then.
    A path the system cannot look at (a name too long, say) is refused in one sentence."""
    path = Path(name).expanduser()
    if looks_like_path(name):
        access.check_model_path(path)  # before anything is read, or even looked for
    else:
        try:
            if not path.exists():
                return None
        except OSError:  # too long to be a folder name here: a hub id, or nothing
            return None
        access.check_model_path(path)
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as e:
        raise path_error(name, e, "a model folder or file") from None
    return path


def hf_cache_snapshot(name: str) -> ResolvedModel | None:
    """`name` as the local Hugging Face cache holds it (config, tokenizer, safetensors), or None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(name, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, HFValidationError, OSError):
        return None
    return ResolvedModel(name, str(path), path.name, "hf-cache") if (path / "config.json").exists() else None


def unconverted_gguf(name: str) -> Path | None:
    """The GGUF file that resolving `name` would convert first (an embedded GGUF model, a `.gguf` path or a
    folder holding one, with no conversion in the cache yet), or None when nothing would be converted."""
    name = str(name).strip()
    path = local_model_path(name)
    if path is not None:
        if path.is_dir() and not (path / "config.json").exists():
            try:
                path = gguf.gguf_in_folder(path) or path
            except RepmapError:
                return None
        if path.is_file() and path.suffix.lower() == ".gguf":
            return path if gguf.read_converted(gguf.sha256_file(path)) is None else None
        return None
    entry = gguf.embedded_gguf(name)
    if entry is None or hf_cache_snapshot(name) is not None:
        return None
    paths = gguf._chunk_paths(entry) or []
    sha = entry.sha256 or (gguf.sha256_file(paths[0]) if len(paths) == 1 else "")
    return paths[0] if paths and (not sha or gguf.read_converted(sha) is None) else None


def needs_conversion(name: str) -> bool:
    """True when resolving `name` would first convert a GGUF file (minutes for a big one): an embedded
    GGUF model or a .gguf path that the cache holds no conversion of yet. A path outside a served app's
    roots is refused in one sentence before it is looked at (nothing of it is read or hashed)."""
    return unconverted_gguf(name) is not None
