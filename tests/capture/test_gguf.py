"""GGUF as a model source: finding files, the conversion's cache rules (the real conversion of
SmolLM2 is tested in test_smollm2.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from repmap_core.capture import gguf
from repmap_core.capture.models import resolve_model
from repmap_core.errors import RepmapError


def test_a_folder_with_two_gguf_files_is_refused_in_one_sentence(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"x")
    (tmp_path / "b.gguf").write_bytes(b"y")
    with pytest.raises(RepmapError) as e:
        gguf.gguf_in_folder(tmp_path)
    assert "holds 2 GGUF files (a.gguf, b.gguf); give the path of the one to load." in str(e.value)
    assert gguf.gguf_in_folder(tmp_path / "missing" if False else tmp_path.parent / "nothing-here") is None


def test_sha256_is_the_files_and_memoised_by_size_and_mtime(tmp_path):
    import hashlib

    f = tmp_path / "m.gguf"
    f.write_bytes(b"abc" * 1000)
    assert gguf.sha256_file(f) == hashlib.sha256(b"abc" * 1000).hexdigest()
    f.write_bytes(b"abd" * 1000)  # rewritten: a new hash, not the memoised one
    assert gguf.sha256_file(f) == hashlib.sha256(b"abd" * 1000).hexdigest()


def test_a_failed_conversion_leaves_nothing_that_reads_as_converted(tmp_path, cache_dir):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)  # a header and nothing else
    with pytest.raises(RepmapError) as e:
        gguf.convert(bad)
    assert "could not be read as a GGUF model" in str(e.value) or "gguf" in str(e.value).lower()
    sha = gguf.sha256_file(bad)
    assert gguf.read_converted(sha) is None
    folder = cache_dir / "gguf"
    assert not any(p.name.startswith(".tmp-") for p in folder.iterdir())  # the temp folder is cleaned up


def test_a_conversion_with_a_mismatched_manifest_is_not_reused(cache_dir):
    sha = "ab" * 32
    folder = gguf.converted_dir(sha)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / gguf.MANIFEST_NAME).write_text(json.dumps({"format": gguf.FORMAT, "sha256": "cd" * 32}))
    assert gguf.read_converted(sha) is None  # another file's conversion under this name: never used
    (folder / gguf.MANIFEST_NAME).write_text(json.dumps({"format": gguf.FORMAT, "sha256": sha, "quantization": "Q4_1"}))
    assert gguf.read_converted(sha).quantization == "Q4_1"


def test_a_gguf_path_resolves_through_the_converter(tmp_path, monkeypatch):
    f = tmp_path / "tiny.gguf"
    f.write_bytes(b"GGUF")
    seen = {}

    def fake_convert(path, **kw):
        seen["path"] = path
        return gguf.ConvertedGGUF(str(tmp_path), "ef" * 32, "Q8_0", path.name, False)

    monkeypatch.setattr(gguf, "convert", fake_convert)
    r = resolve_model(str(f))
    assert seen["path"] == f and r.source == "gguf" and r.quantization == "Q8_0"
    assert r.revision == "gguf-sha256:" + ("ef" * 32)[:16] and r.display == f"{f} (Q8_0 GGUF)"
    r2 = resolve_model(str(tmp_path))  # a folder holding one .gguf and no config.json
    assert r2.source == "gguf" and seen["path"] == f


def test_embedded_entries_name_their_licence_and_quantization():
    smol = gguf.EMBEDDED[gguf.SMOLLM2_ID]
    assert smol.licence == "Apache-2.0" and smol.quantization == "Q4_1" and not smol.optional
    gemma = gguf.EMBEDDED[gguf.GEMMA3_ID]
    assert gemma.optional and gemma.chunked and gemma.licence == "Gemma Terms of Use" and len(gemma.sha256) == 64


@pytest.mark.parametrize("content", ["[1, 2]", '"x"', "null", "{not json"])
def test_a_conversion_manifest_of_another_type_is_no_conversion(content, cache_dir):
    """Issue 21, item 12: valid JSON of the wrong type in the cache counts as absent, never as an error."""
    sha = "ab" * 32
    folder = gguf.converted_dir(sha)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / gguf.MANIFEST_NAME).write_text(content)
    assert gguf.read_converted(sha) is None


def test_a_conversion_parses_each_gguf_file_once_and_leaves_gguf_as_it_was(tmp_path):
    """transformers parses the whole header once for the tokenizer, once for the config and once for the weights
    (~4.6 s each for SmolLM2's vocabulary): within a conversion the second and third reads get the first parse,
    and gguf's tensor-name table is built once per architecture instead of once per module."""
    gguf = pytest.importorskip("gguf")
    from repmap_core.capture.gguf import _parsed_once

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with _parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first  # the same parse, by path
        assert first.fields["llama.block_count"].contents() == 2 and first.tensors[0].name == "token_embd.weight"
        arch = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(arch, 2) is gguf.get_tensor_name_map(arch, 2)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)  # restored
    assert gguf.GGUFReader(path) is not gguf.GGUFReader(path)
