"""Model resolution (folder, embedded, HF cache, hub; offline as a normal state), loading through
the real path, generic block finding, layer parsing, and the one-sentence errors."""
from __future__ import annotations

import json
import shutil

import pytest

from repmap_core.capture import models
from repmap_core.capture.models import (
    EMBEDDED_MODEL_ID,
    find_blocks,
    load_model,
    model_info,
    resolve_layers,
    resolve_model,
    site_name,
)
from repmap_core.catalog import list_local_models
from repmap_core.errors import RepmapError


def test_local_folder_resolves_with_a_content_revision(tiny_gpt2, tmp_path):
    r = resolve_model(str(tiny_gpt2))
    assert r.source == "folder" and r.path == str(tiny_gpt2.resolve())
    assert r.revision.startswith("sha256:")
    # same content elsewhere -> same revision; one changed byte -> a different one
    copy = shutil.copytree(tiny_gpt2, tmp_path / "copy")
    assert resolve_model(str(copy)).revision == r.revision
    cfg = json.loads((copy / "config.json").read_text())
    cfg["resid_pdrop"] = 0.25
    (copy / "config.json").write_text(json.dumps(cfg))
    assert resolve_model(str(copy)).revision != r.revision


def test_embedded_model_resolves_offline():
    r = resolve_model(EMBEDDED_MODEL_ID)
    assert r.source == "embedded" and r.revision.startswith("sha256:")
    info = model_info(r)
    assert (info.n_layers, info.d_model, info.model_type, info.is_encoder) == (6, 384, "bert", True)
    names = [m.name for m in list_local_models()]
    assert names[0] == EMBEDDED_MODEL_ID


def test_model_from_the_hf_cache_resolves_offline(tiny_gpt2, tmp_path, monkeypatch):
    """A model already in the local Hugging Face cache is found with the hub unreachable."""
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    snap = hub / "models--someone--tiny" / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_gpt2, snap)
    (hub / "models--someone--tiny" / "refs").mkdir()
    (hub / "models--someone--tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    import huggingface_hub._snapshot_download as sd

    monkeypatch.setattr(sd.constants, "HF_HUB_CACHE", str(hub))
    r = resolve_model("someone/tiny")
    assert (r.source, r.revision) == ("hf-cache", "a" * 40)
    assert load_model(r).info.n_layers == 3


@pytest.mark.parametrize("name, phrase", [
    ("someone/not-downloaded-model", "is not available offline"),
    ("gpt2", "is not available offline"),
    ("bad name with spaces!!", "is not a valid Hugging Face model id"),
    ("../../etc/passwd", "is not a model folder or a Hugging Face model id"),
    ("/etc/passwd", "is not a model folder or a Hugging Face model id"),
    ("", "No model given"),
])
def test_unavailable_models_get_one_sentence(name, phrase):
    with pytest.raises(RepmapError, match=phrase) as e:
        resolve_model(name)
    assert "\n" not in str(e.value) and str(e.value).endswith(".")


@pytest.mark.parametrize("error, phrase", [
    ("RepositoryNotFoundError", "was not found on the Hugging Face Hub"),
    ("GatedRepoError", "is gated; accept its licence"),
    ("RevisionNotFoundError", "has no revision"),
])
def test_hub_errors_online_get_one_sentence(monkeypatch, error, phrase):
    """Online answers we cannot produce here (unknown id, gated, bad revision), simulated at the hub call."""
    import huggingface_hub
    from huggingface_hub import errors
    from huggingface_hub.errors import LocalEntryNotFoundError

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, local_files_only=False):
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        exc = getattr(errors, error).__new__(getattr(errors, error))
        Exception.__init__(exc, "simulated")
        raise exc

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(RepmapError, match=phrase):
        resolve_model("someone/model", revision="v9" if "Revision" in error else None)


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(RepmapError, match="has no config.json"):
        resolve_model(str(tmp_path))


def test_remote_code_model_refused_unless_trusted(tiny_gpt2, tmp_path):
    folder = shutil.copytree(tiny_gpt2, tmp_path / "custom")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RepmapError, match="needs its own code to run.*Trust remote code"):
        load_model(str(folder))


def test_pickled_weights_are_never_loaded(tiny_gpt2, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = shutil.copytree(tiny_gpt2, tmp_path / "binonly")
    state = load_file(str(folder / "model.safetensors"))
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(RepmapError, match="no safetensors weights"):
        load_model(str(folder))


@pytest.mark.parametrize("kind, path", [("gpt2", "h"), ("bert", "encoder.layer"), ("llama", "layers"),
                                        ("gpt_neox", "layers"), ("qwen2", "layers"), ("gemma", "layers")])
def test_blocks_found_generically(tiny_models, kind, path):
    lm = load_model(str(tiny_models[kind]))
    assert lm.blocks_path == path and len(lm.blocks) == 3
    assert lm.dtype == "float32" and lm.device == "cpu"
    assert lm.tokenizer.truncation_side == "left" and lm.tokenizer.pad_token is not None
    assert lm.info.is_encoder == (kind == "bert")
    assert (lm.final_norm() is None) == (kind == "bert")
    assert not any(p.requires_grad for p in lm.model.parameters())


def test_find_blocks_fallback_and_override(tiny_gpt2):
    import torch

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stack = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(4)])
            self.other = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(2)])

    assert find_blocks(Odd(), 4) == "stack"
    assert find_blocks(Odd(), 2, override="other") == "other"
    with pytest.raises(RepmapError, match="Could not find the list of 7"):
        find_blocks(Odd(), 7)


def test_resolve_layers_and_site_names():
    assert resolve_layers("all", 4) == [0, 1, 2, 3]
    assert resolve_layers("0,6,-1", 12) == [0, 6, 11]
    assert resolve_layers([-1, 11, 0], 12) == [0, 11]
    assert site_name(6) == "blocks.6.hook_resid_post"
    with pytest.raises(RepmapError, match=r"Layer 12 is out of range for gpt2, which has 12 blocks \(use 0 to 11, or -12 to -1\)"):
        resolve_layers("0,12", 12, "gpt2")
    with pytest.raises(RepmapError, match="out of range"):
        resolve_layers("-13", 12)
    with pytest.raises(RepmapError, match="'six' is not a whole number"):
        resolve_layers("0,six", 12)


def test_device_and_dtype_defaults(monkeypatch):
    """The tests run in fp32 (conftest sets REPMAP_DTYPE); the measured choice is tested in test_precision."""
    assert models.default_device() == "cpu"
    assert models.default_dtype("cpu") == "float32"
    monkeypatch.setenv("REPMAP_DTYPE", "bfloat16")
    assert models.default_dtype("cpu") == "bfloat16"


def test_fused_gelu_matches_the_original_model(tiny_gpt2):
    """load_model swaps GPT-2's Python tanh-GELU for PyTorch's fused one: same function, faster."""
    import torch
    from transformers import AutoModel
    from transformers.activations import NewGELUActivation

    lm = load_model(str(tiny_gpt2))
    plain = AutoModel.from_pretrained(str(tiny_gpt2)).eval()
    assert any(type(m) is NewGELUActivation for m in plain.modules())
    assert not any(type(m) is NewGELUActivation for m in lm.model.modules())
    ids = lm.tokenizer("The screen is gorgeous but the battery dies by noon.", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        a = lm.model(ids, output_hidden_states=True).hidden_states
        b = plain(ids, output_hidden_states=True).hidden_states
    assert max(float((x - y).abs().max()) for x, y in zip(a, b)) < 1e-5
    assert float(b[-1].abs().max()) > 0.1


def test_device_map_loading_and_the_fit_check(tiny_gpt2, monkeypatch):
    """device_map="auto" (accelerate) puts a model where it fits (here: the CPU); extraction through
    it equals the plain model; a model that cannot fit is refused before loading."""
    import numpy as np

    from repmap_core.capture import models as m
    from repmap_core.capture.activations import get_activations
    from repmap_core.capture.extract import extract_activations
    from repmap_core.data.load import load_dataset

    spread = load_model(str(tiny_gpt2), device_map="auto")
    plain = load_model(str(tiny_gpt2))
    assert spread.placement and sum(spread.placement.values()) >= 1 and spread.device == "cpu"
    ds = load_dataset("builtin:sentiment", limit=40)
    a = extract_activations(spread, ds, [0, 2], "mean").activations
    b = extract_activations(plain, ds, [0, 2], "mean").activations
    assert all(np.abs(a[L] - b[L]).max() < 1e-5 for L in (0, 2))
    aset = get_activations(str(tiny_gpt2), ds, [1], device_map="auto")
    assert aset.manifest["placement"] == spread.placement
    size = m.weights_bytes(m.resolve_model(str(tiny_gpt2)), "float32")
    assert size == 4 * sum(p.numel() for p in plain.model.parameters())  # read from the headers alone
    from repmap_core.capture import model_memory

    monkeypatch.setattr(model_memory, "free_memory_bytes", lambda offload: {"cuda:0": 1000})
    with pytest.raises(RepmapError, match=r"needs about .* GB in bfloat16 and only 0.0 GB on cuda:0 is free; use more GPUs, CPU offload"):
        load_model(str(tiny_gpt2), device_map="auto", dtype="bfloat16")


def test_a_link_names_a_finetuned_model_by_its_key_never_by_the_servers_path(cache_dir, tiny_gpt2):
    import shutil

    from repmap_core.capture.models import link_name

    folder = cache_dir / "models" / ("ab" * 16)
    shutil.copytree(tiny_gpt2, folder)
    name = link_name(str(folder))
    assert name == "finetuned:" + "ab" * 16 and str(cache_dir) not in name
    assert resolve_model(name).path == str(folder.resolve())  # the link resolves to the same folder
    assert link_name("gpt2") == "gpt2" and link_name(str(tiny_gpt2)) == str(tiny_gpt2)  # others as given
    with pytest.raises(RepmapError, match="does not name a finetuned model"):
        resolve_model("finetuned:../../etc")
