"""What pickers offer offline: the embedded model first, the Hugging Face cache's models (not its data
sets, not the embedded model twice), an embedded GGUF model unless its full-precision copy is cached,
and finetuned checkpoints labelled by what they were finetuned from and on."""
from __future__ import annotations

import json
from types import SimpleNamespace

import huggingface_hub
import pytest

from repmap_core import catalog
from repmap_core.capture import gguf
from repmap_core.capture.model_config import FINETUNE_MANIFEST
from repmap_core.finetune.checkpoints import FORMAT, HEAD_NAME
from repmap_core.locations import EMBEDDED_MODEL_ID


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A cache with one finetuned checkpoint (and one half-written one), an HF cache with two models and
    a data set, the embedded MiniLM folder, and two embedded GGUF models."""
    monkeypatch.setenv("REPMAP_CACHE", str(tmp_path / "cache"))
    done = tmp_path / "cache" / "models" / ("ab" * 16)
    done.mkdir(parents=True)
    (done / "config.json").write_text("{}")
    (done / HEAD_NAME).write_bytes(b"\0" * 1000)
    (done / FINETUNE_MANIFEST).write_text(json.dumps({
        "format": FORMAT, "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "dataset": {"name": "file:/data/x/reviews.csv"},
        "config": {}, "metrics": {"val_acc": 0.914}, "pooling": "last", "created": "2026-01-02T03:04:05"}))
    partial = tmp_path / "cache" / "models" / ".tmp-cd-1"  # a killed writer's folder: never listed
    partial.mkdir()
    minilm = tmp_path / "minilm"
    minilm.mkdir()
    (minilm / "weights.bin").write_bytes(b"\0" * 2_000_000)
    monkeypatch.setattr(catalog, "embedded_model_path", lambda: minilm)
    repos = [SimpleNamespace(repo_type="model", repo_id="someone/tiny", size_on_disk=3_000_000),
             SimpleNamespace(repo_type="dataset", repo_id="someone/data", size_on_disk=1),
             SimpleNamespace(repo_type="model", repo_id=EMBEDDED_MODEL_ID, size_on_disk=1),
             SimpleNamespace(repo_type="model", repo_id="org/cached-in-full", size_on_disk=5_000_000)]
    monkeypatch.setattr(huggingface_hub, "scan_cache_dir", lambda: SimpleNamespace(repos=repos))
    entries = [gguf.EmbeddedGGUF("org/cached-in-full", "a.gguf", ("a",), "", "MIT", "Q4_1"),
               gguf.EmbeddedGGUF("org/only-gguf", "b.gguf", ("b",), "", "MIT", "Q8_0")]
    monkeypatch.setattr(gguf, "installed_embedded", lambda: entries)
    monkeypatch.setattr(gguf, "file_mb", lambda entry: 98.0)
    return done


def test_the_catalogue_lists_each_offline_model_once_in_order_with_its_label(planted):
    models = catalog.list_local_models()
    assert [(m.name, m.source) for m in models] == [
        (EMBEDDED_MODEL_ID, "embedded"), ("someone/tiny", "hf-cache"), ("org/cached-in-full", "hf-cache"),
        ("org/only-gguf", "embedded-gguf"), (str(planted), "finetuned")]
    by_name = {m.name: m for m in models}
    assert not by_name[EMBEDDED_MODEL_ID].causal and by_name["org/only-gguf"].causal  # an encoder has no logits to steer
    assert by_name[EMBEDDED_MODEL_ID].size_mb == pytest.approx(2.0)
    assert by_name["org/only-gguf"].label == "org/only-gguf (Q8_0 GGUF, embedded)"
    assert by_name[str(planted)].label == f"finetuned SmolLM2-135M-Instruct on file:reviews.csv, val acc 0.91 · {'ab' * 4}"


def test_a_missing_hf_cache_is_no_models_not_an_error(planted, monkeypatch):
    def no_cache():
        raise huggingface_hub.CacheNotFound("no cache here", cache_dir="/nowhere")

    monkeypatch.setattr(huggingface_hub, "scan_cache_dir", no_cache)
    sources = [m.source for m in catalog.list_local_models()]
    assert "hf-cache" not in sources and sources.count("embedded-gguf") == 2  # nothing cached in full now


def test_short_name_is_the_last_part_of_an_id_or_folder():
    assert catalog.short_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "SmolLM2-135M-Instruct"
    assert catalog.short_name("/models/finetuned/abc/") == "abc"
    assert catalog.short_name("gpt2") == "gpt2"
