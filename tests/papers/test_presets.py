"""Paper presets: checks before starting, the published numbers, every scaled-down version's protocol run
with a quick stand-in for SmolLM2 (the embedded MiniLM, or a tiny random causal LM where steering needs
logits; one module cache, so finetunes and activations are shared), one scaled preset on the real SmolLM2,
the CLI and the page."""
from __future__ import annotations

import json
import math

import pytest
from streamlit.testing.v1 import AppTest

from repmap_core.errors import RepmapError
from repmap_core.papers.presets import PRESETS, SCALED_LABEL, check, memory_bytes, needs, run
from tests.cli.test_cli import one_json_object, run_cli
from tests.conftest import ROOT, SMOLLM2_ID

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("presets_cache")


@pytest.fixture
def cache(shared_cache, monkeypatch):
    monkeypatch.setenv("REPMAP_CACHE", str(shared_cache))
    return shared_cache


def test_published_numbers_are_the_papers():
    assert PRESETS["gao-table1-amazon"].published["table1"] == {"base": (0.92, 0.88), "finetuned": (0.96, 0.91),
                                                                  "modeled": (1.00, 1.00)}
    assert PRESETS["gao-table1-amazon"].published["delta_accuracy"] == 0.8994
    assert PRESETS["gao-table1-sciq"].published["table1"]["modeled"] == (0.85, 0.79)
    assert PRESETS["gao-table1-hh"].published["table1"]["base"] == (0.65, 0.54)
    assert PRESETS["gao-table2-weak"].published["table2"] == {"base": (0.66, 0.53), "finetuned": (0.68, 0.55),
                                                              "modeled": (0.69, 0.55)}
    assert PRESETS["gao-between"].published["vector_transfer_accuracy"] == 0.5025
    assert PRESETS["lrt-gemma"].published["lrt_pearson_r_range"] == [0.73, 0.98]
    assert PRESETS["rimsky-base-chat"].published["rebound_layer"] == 11
    models = {m.name for p in PRESETS.values() for m in p.full.models}
    assert {"gpt2", "gpt2-xl", "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-chat-hf", "google/gemma-2-2b",
            "google/gemma-2-9b"} <= models


def test_check_flags_missing_models_offline_in_one_sentence_and_passes_scaled():
    for preset in PRESETS.values():
        problems = check(preset)
        missing = [p for p in problems if "not available offline" in p]
        assert missing, preset.name
        for p in problems:
            assert p.endswith(".") and p.count(". ") == 0, p  # one sentence each
        assert check(preset, scaled=True) == [], preset.name
    assert any(p.startswith("gpt2-xl is not available offline") for p in check(PRESETS["gao-between"]))


def test_needs_estimates_memory_from_parameters_and_time_with_a_basis():
    lrt = PRESETS["lrt-gemma"]
    # both Gemma models at once, 4 bytes each in fp32 on CPU (2 in bf16 on a GPU), + 15%
    assert memory_bytes(lrt, dtype="bfloat16") == int((2_614_341_888 + 9_241_705_984) * 2 * 1.15)
    # finetuning GPT-2 small: 16 bytes per parameter (fp32 weights, gradients, AdamW moments)
    assert memory_bytes(PRESETS["gao-table1-amazon"], dtype="bfloat16") == int(124_439_808 * 16 * 1.15)
    n = needs(PRESETS["gao-between"])
    assert "TFLOP" in n["time_basis"] and n["time"].startswith("~") and n["memory_gb"] > 6
    small = needs(PRESETS["gao-between"], scaled=True)
    assert "measured now" in small["time_basis"] and small["time"].startswith("~")  # computed here, not a constant
    assert "MiniLM (22M) → SmolLM2 (135M)" in small["stands_in"]


def test_run_refuses_the_full_version_in_one_sentence():
    with pytest.raises(RepmapError) as e:
        run("gao-between", scaled=False)
    assert str(e.value).startswith("gpt2 is not available offline") and str(e.value).count(". ") == 0
    with pytest.raises(RepmapError, match="There is no preset 'nope'"):
        run("nope")


def _numbers(result) -> dict:
    return {r["quantity"]: r["this run"] for r in result.table}


@pytest.mark.parametrize("name", ["gao-table1-amazon", "gao-table1-sciq", "gao-table1-hh", "gao-table2-weak"])
def test_scaled_within_presets_fill_table_one_beside_the_paper(name, cache):
    steps = []
    result = run(name, scaled=True, progress=lambda f, m: steps.append(f), stand_in=MINILM)
    assert result.scaled and result.label == SCALED_LABEL
    assert "not comparable in value" in SCALED_LABEL
    assert steps and steps[-1] == 1.0
    key = "table2" if name == "gao-table2-weak" else "table1"
    assert len(result.table) in (8, 9) and all(set(r) == {"quantity", "published", "this run"} for r in result.table)
    probes = [r for r in result.table if r["quantity"].startswith("probe accuracy")]
    assert [r["published"] for r in probes] == [x for k in ("base", "finetuned", "modeled")
                                                for x in PRESETS[name].published[key][k]]
    for r in probes:
        assert 0.0 <= r["this run"] <= 1.0
    # train accuracy on these small sets is well above chance; held-out ones at least near it
    assert all(r["this run"] >= 0.5 for r in probes if r["quantity"].endswith("train"))
    assert math.isfinite(_numbers(result)["fit R² (held out)"])
    assert result.raw["within"]["fit_labels"] == ("weak" if key == "table2" else "ground truth")
    if name == "gao-table1-amazon":  # the paper's finding, in miniature: the modelled activations carry the label
        n = _numbers(result)
        assert n["probe accuracy, modelled λ̂ = Aλ+b+yδ, test"] > n["probe accuracy, base λ, test"] + 0.1
        assert n["sign(λ̃·δ) accuracy"] > 0.65 and result.raw["finetune"]["metrics"]["val_acc"] > 0.6
    json.dumps(result.as_dict(), allow_nan=False)


def test_scaled_between_preset_on_the_real_models(cache, smollm2_converted):
    """MiniLM (22M) -> SmolLM2 (135M) on the 800 built-in reviews: the real scaled preset."""
    if smollm2_converted is None:
        pytest.skip("the SmolLM2 wheel is not installed")
    (cache / "gguf").mkdir(parents=True, exist_ok=True)
    if not (cache / "gguf" / smollm2_converted.name).exists():
        (cache / "gguf" / smollm2_converted.name).symlink_to(smollm2_converted, target_is_directory=True)
    result = run("gao-between", scaled=True)
    n = _numbers(result)
    assert result.table[0]["published"] == 0.5025
    assert 0.8 <= n["source probe accuracy (test)"] <= 1 and 0.8 <= n["target probe accuracy (test)"] <= 1
    assert 0 <= n["probe carried as A w: sign(t·Aw) accuracy"] <= 1 and math.isfinite(n["map R² (held out)"])
    assert result.raw["source"]["model"] == MINILM and result.raw["target"]["model"] == SMOLLM2_ID
    assert result.raw["source"]["layer"] == 5 and result.raw["target"]["layer"] == 29


def test_scaled_rimsky_and_lrt_presets(cache, tiny_gpt2):
    rimsky = run("rimsky-base-chat", scaled=True, stand_in=str(tiny_gpt2))
    n = _numbers(rimsky)
    # the tiny model has no chat template: both prompt formats are the same text, so every cosine is 1
    assert abs(n["base vs chat cosine, first layer"] - 1.0) < 1e-5
    assert n["layer where the PCA trace of base vectors turns"] in range(3)
    assert len(rimsky.raw["cosine_per_layer"]) == 3 and rimsky.table[0]["published"] == 1.0
    assert rimsky.raw["chat_template"] == [False, True]
    lrt = run("lrt-gemma", scaled=True, stand_in=str(tiny_gpt2))
    n = _numbers(lrt)
    assert lrt.table[0]["published"] == "0.73–0.98"
    # a random tiny model's own vector does not steer: r is withheld with the sentence saying why, not a number
    if lrt.raw["comparison"]["pearson_r"] is None:
        assert n["Pearson r, native vs carried"] == "undefined"
        assert n["why r is undefined"].startswith("r is undefined here: the target's own vector does not steer")
    else:
        assert -1 <= float(n["Pearson r, native vs carried"].split(" [")[0]) <= 1
    assert math.isfinite(n["map R² (held out)"]) and lrt.raw["target"]["layer"] == 1  # the tiny model's middle block
    assert lrt.raw["held_out_questions"] >= 20 and "both orders" in lrt.raw["letter_balance"]


def test_cli_preset_list_and_run_scaled(cache):
    r = run_cli("preset", "list", "--json", cache=cache)
    assert r.returncode == 0, r.stderr
    listed = one_json_object(r.stdout)["presets"]
    assert [p["name"] for p in listed] == list(PRESETS)
    assert all(p["problems"] and p["scaled"]["problems"] == [] for p in listed)
    r = run_cli("preset", "run", "gao-table1-amazon", "--scaled", "--stand-in", MINILM, "--json", cache=cache)
    assert r.returncode == 0, r.stderr
    out = one_json_object(r.stdout)
    assert out["preset"] == "gao-table1-amazon" and out["scaled"] and out["label"] == SCALED_LABEL
    assert out["table"][0]["published"] == 0.92 and 0.5 <= out["table"][0]["this run"] <= 1
    r = run_cli("preset", "run", "gao-between", "--json", cache=cache)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: gpt2 is not available offline") and r.stderr.count("\n") == 1


def test_page_runs_a_scaled_preset_and_shows_the_table(cache, smollm2_converted):
    if smollm2_converted is None:
        pytest.skip("the SmolLM2 wheel is not installed")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.switch_page("views/presets.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Reproduce the papers"]
    assert at.button(key="presets.run.gao-between").disabled  # gpt2 is not here offline
    assert any("gpt2-xl is not available offline" in w.value for w in at.warning)
    assert any("MiniLM (22M) → SmolLM2 (135M)" in c.value for c in at.caption)  # what each scaled version stands in with
    at.button(key="presets.run_scaled.gao-between").click().run()  # the module cache holds its activations already
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert len(at.dataframe) == 1  # only the preset that ran has a table
    table = at.dataframe[0].value
    assert list(table.columns) == ["quantity", "paper", "this run"]
    assert table["paper"].iloc[0] == "0.5025" and 0 <= float(table["this run"].iloc[0]) <= 1  # as the paper prints it
    assert any(SCALED_LABEL in c.value for c in at.caption)
