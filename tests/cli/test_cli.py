"""The headless contract: `python -m repmap_core extract|layers ... --json` prints one JSON object on
stdout and nothing else; bad input exits non-zero with one line on stderr."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, SHARED_DATA, needs_shared_data


def run_cli(*args: str, cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, REPMAP_CACHE=str(cache), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "repmap_core", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def one_json_object(stdout: str) -> dict:
    assert stdout.count("\n") == 1 and stdout.endswith("\n"), f"stdout must be exactly one JSON line: {stdout!r}"
    return json.loads(stdout)


@pytest.fixture
def ab_file(tmp_path) -> Path:
    path = tmp_path / "ab.jsonl"
    rows = [{"question": f"Question {i}: is item {i} {'good' if i % 2 else 'bad'}?\n\nChoices:\n (A) Yes\n (B) No",
             "answer_matching_behavior": " (A)" if i % 3 else " (B)",
             "answer_not_matching_behavior": " (B)" if i % 3 else " (A)"} for i in range(12)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_extract_json_and_export(tiny_gpt2, ab_file, tmp_path, cache_dir):
    out_dir = tmp_path / "export"
    r = run_cli("extract", "--model", str(tiny_gpt2), "--data", f"file:{ab_file}", "--layers", "0,-1",
                "--position", "answer", "--export", str(out_dir), "--json", cache=cache_dir)
    assert r.returncode == 0, r.stderr
    result = one_json_object(r.stdout)
    assert result["layers"] == [0, 2] and result["sites"] == ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]
    assert result["position"] == "answer" and result["dataset"]["rows"] == 24 and result["dataset"]["pairs"] == 12
    assert result["d_model"] == 32 and result["revision"].startswith("sha256:")
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["labels.npy", "layer_0.npy", "layer_2.npy", "manifest.json", "pair_ids.npy"]
    layer2 = np.load(out_dir / "layer_2.npy", allow_pickle=False)
    labels = np.load(out_dir / "labels.npy", allow_pickle=False)
    pairs = np.load(out_dir / "pair_ids.npy", allow_pickle=False)
    assert layer2.shape == (24, 32) and layer2.dtype == np.float32 and np.isfinite(layer2).all()
    assert labels.tolist() == [1, 0] * 12 and pairs.tolist() == [i // 2 for i in range(24)]
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["layers"] == [0, 2] and manifest["position"] == "answer" and manifest["key"] == result["cache_key"]
    # the entry is cached: a second run reuses it (same key, same arrays) without recomputing
    r2 = run_cli("extract", "--model", str(tiny_gpt2), "--data", f"file:{ab_file}", "--layers", "2",
                 "--position", "answer", "--export", str(tmp_path / "again"), "--json", cache=cache_dir)
    assert one_json_object(r2.stdout)["cache_key"] == result["cache_key"]
    assert "Loading" not in r2.stderr  # the model was not loaded
    # the precision, and why: forced by the tests' REPMAP_DTYPE; --dtype bfloat16 is another entry
    assert result["dtype"] == "float32" and result["precision"] == manifest["precision"] == {
        "dtype": "float32", "reason": "forced by REPMAP_DTYPE", "native_bf16": None}
    r3 = run_cli("extract", "--model", str(tiny_gpt2), "--data", f"file:{ab_file}", "--layers", "2",
                 "--position", "answer", "--dtype", "bfloat16", "--json", cache=cache_dir)
    bf16 = one_json_object(r3.stdout)
    assert bf16["cache_key"] != result["cache_key"] and bf16["precision"]["reason"] == "asked for"
    assert np.array_equal(np.load(tmp_path / "again" / "layer_2.npy"), layer2)


@pytest.mark.slow
def test_layers_json(tiny_bert, tmp_path, cache_dir):
    path = tmp_path / "s.csv"
    rng = np.random.default_rng(0)
    words = ["great", "awful", "fine", "broken", "lovely", "terrible", "good", "bad"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(60):
            w.writerow([" ".join(rng.choice(words, 5)), i % 2])
    r = run_cli("layers", "--model", str(tiny_bert), "--data", f"file:{path}", "--folds", "3", "--json", cache=cache_dir)
    assert r.returncode == 0, r.stderr
    result = one_json_object(r.stdout)
    assert result["position"] == "mean"  # auto -> mean for an encoder
    assert [x["layer"] for x in result["layers"]] == [0, 1, 2]
    for row in result["layers"]:
        assert set(row) >= {"layer", "site", "probe_test_acc", "probe_train_acc", "probe_cv_acc", "silhouette", "fisher",
                            "probe_cv_low", "probe_cv_high", "null_acc", "null_high", "null_permutations"}
        assert 0.0 <= row["probe_test_acc"] <= 1.0
        assert row["probe_cv_low"] <= row["probe_cv_acc"] <= row["probe_cv_high"] and row["null_permutations"] == 100
        assert 0.2 < row["null_acc"] <= row["null_high"] < 0.9  # shuffled labels: near chance on 60 rows
    assert result["best_layer"] in (0, 1, 2)


@pytest.mark.parametrize("args, phrase", [
    (["--model", "someone/absent-model", "--data", "builtin:sentiment"], "is not available offline"),
    (["--model", "{gpt2}", "--data", "file:/does/not/exist.csv"], "does not exist"),
    (["--model", "{gpt2}", "--data", "builtin:sentiment", "--layers", "0,7"], "Layer 7 is out of range"),
    (["--model", "{gpt2}", "--data", "builtin:sentiment", "--position", "answer"], "Position 'answer' needs rows with an answer"),
    (["--model", "{gpt2}", "--data", "builtin:nope"], "There is no built-in data set 'nope'"),
    (["--model", "{gpt2}", "--data", "{missing_col}"], "match no known schema"),
    (["--model", "{gpt2}", "--data", "{empty}"], "is empty"),
    (["--model", "{gpt2}", "--data", "{three_labels}"], "Labels must be binary"),
    (["--model", "{gpt2}", "--data", "{latin1}"], "is not valid UTF-8"),
])
def test_bad_input_exits_with_one_line(tiny_gpt2, tmp_path, cache_dir, args, phrase):
    files = {"missing_col": ("m.csv", "review,stars\nnice,5\n"), "empty": ("e.csv", ""),
             "three_labels": ("t.csv", "text,label\na,0\nb,1\nc,2\n")}
    subs = {"{gpt2}": str(tiny_gpt2)}
    for key, (name, content) in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
        subs[f"{{{key}}}"] = f"file:{tmp_path / name}"
    (tmp_path / "l.csv").write_bytes("text,label\ncaf\u00e9,1\n".encode("latin-1"))
    subs["{latin1}"] = f"file:{tmp_path / 'l.csv'}"
    args = [subs.get(a, a) for a in args]
    r = run_cli("extract", *args, "--json", cache=cache_dir)
    assert r.returncode == 2
    assert r.stdout == ""
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and phrase in last
    # nothing was cached for a failed request
    assert not (cache_dir / "activations").exists() or not any((cache_dir / "activations").rglob("*.safetensors"))


def test_argument_errors_are_usage_errors(cache_dir):
    r = run_cli("extract", "--data", "builtin:sentiment", cache=cache_dir)
    assert r.returncode != 0 and "--model" in r.stderr and r.stdout == ""


@pytest.mark.slow
@needs_shared_data
def test_minilm_on_real_reviews_later_layers_separate_better(tmp_path, cache_dir):
    """The acceptance check: real Amazon reviews, the embedded model, per-layer probe accuracy."""
    path = tmp_path / "amazon.csv"
    with open(SHARED_DATA / "uci-sentiment" / "amazon_cells_labelled.txt", encoding="utf-8") as src, \
            open(path, "w", newline="", encoding="utf-8") as dst:
        w = csv.writer(dst)
        w.writerow(["text", "label"])
        for line in src:
            text, label = line.rstrip("\n").rsplit("\t", 1)
            w.writerow([text, label])
    r = run_cli("layers", "--model", "sentence-transformers/all-MiniLM-L6-v2", "--data", f"file:{path}", "--json",
                cache=cache_dir, timeout=600)
    assert r.returncode == 0, r.stderr
    result = one_json_object(r.stdout)
    acc = {x["layer"]: x["probe_cv_acc"] for x in result["layers"]}
    assert sorted(acc) == [0, 1, 2, 3, 4, 5] and result["dataset"]["rows"] == 1000
    later = max(acc[4], acc[5])
    assert later > acc[0] + 0.03, acc  # measured: 0.842 at layer 0 vs 0.907 at layer 4
    assert later > 0.85


@pytest.fixture
def planted_arrays(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 1500, 16
    y = rng.integers(0, 2, n)
    before = rng.normal(size=(n, d)).astype(np.float32)
    A = (np.eye(d) + 0.2 * rng.normal(size=(d, d)) / 4).astype(np.float32)
    delta = rng.normal(size=d).astype(np.float32)
    after = before @ A.T + 0.3 + np.outer(2 * y - 1, delta) + 0.05 * rng.normal(size=(n, d)).astype(np.float32)
    target = (before @ rng.normal(size=(d, 24)) + 1).astype(np.float32)
    paths = {}
    for name, arr in {"before": before, "after": after, "target": target}.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    paths["labels"] = tmp_path / "labels.npy"
    np.save(paths["labels"], 2 * y - 1)  # ±1 labels are accepted too
    from safetensors.numpy import save_file

    paths["after_st"] = tmp_path / "after.safetensors"
    save_file({"x": after}, str(paths["after_st"]))
    paths["before_npz"] = tmp_path / "before.npz"
    np.savez(paths["before_npz"], first=before, second=after)
    return paths, delta, A


def test_within_prints_the_documented_json_and_saves_the_fit(planted_arrays, tmp_path, cache_dir):
    paths, delta, A = planted_arrays
    r = run_cli("within", "--before", str(paths["before_npz"]), "--after", str(paths["after_st"]), "--labels",
                str(paths["labels"]), "--save", str(tmp_path / "fit.npz"), "--json", cache=cache_dir)
    assert r.returncode == 0, r.stderr
    out = one_json_object(r.stdout)
    assert set(out) >= {"delta_projection_accuracy", "delta_projection_accuracy_centered", "probe", "fit"}
    assert set(out["probe"]) >= {"base", "finetuned", "modeled"}
    assert set(out["probe"]["base"]) == {"train", "test"}
    assert set(out["fit"]) >= {"method", "r2_test", "seconds"} and out["fit"]["method"] == "lstsq"
    assert out["delta_projection_accuracy_centered"] > 0.95 and out["fit"]["r2_test"] > 0.95
    # alpha auto by default: chosen on held-out rows; rows well above the width, so no n <= d sentence
    assert out["fit"]["alpha_chosen"] and out["fit"]["alpha"] > 0 and out["fit"]["n_le_d"] is False
    assert out["fit"]["rows"] == 1200 and out["fit"]["width"] == 17
    r2 = out["intervals"]["r2_test"]
    assert r2["low"] <= out["fit"]["r2_test"] <= r2["high"] and r2["method"] == "bootstrap (rows)"
    acc = out["intervals"]["delta_projection_accuracy_centered"]
    assert acc["method"] == "wilson" and acc["low"] > acc["null_high"] and abs(acc["null"] - 0.5) < 0.05
    with np.load(tmp_path / "fit.npz", allow_pickle=False) as z:
        assert set(z.files) == {"A", "b", "delta"}
        cos = float(z["delta"] @ delta / np.linalg.norm(z["delta"]) / np.linalg.norm(delta))
        assert cos > 0.99 and np.linalg.norm(z["A"] - A) / np.linalg.norm(A) < 0.05


def test_between_prints_the_documented_json_and_saves_the_map(planted_arrays, tmp_path, cache_dir):
    paths, _, _ = planted_arrays
    r = run_cli("between", "--source", str(paths["before"]), "--target", str(paths["target"]), "--labels",
                str(paths["labels"]), "--method", "ridge", "--save", str(tmp_path / "map.npz"), "--json", cache=cache_dir)
    assert r.returncode == 0, r.stderr
    out = one_json_object(r.stdout)
    assert set(out["map"]) >= {"method", "r2_train", "r2_test", "seconds"} and out["map"]["method"] == "ridge"
    assert set(out["probe"]) == {"source", "target"} and set(out["transfer"]) >= {"vector", "functional"}
    assert "linear_cka" in out["similarity"] and out["map"]["r2_test"] > 0.99
    with np.load(tmp_path / "map.npz", allow_pickle=False) as z:
        assert z["A"].shape == (24, 16) and z["b"].shape == (24,)


@pytest.mark.slow
def test_within_alpha_is_auto_a_number_or_refused(planted_arrays, tmp_path, cache_dir):
    paths, _, _ = planted_arrays
    rows = np.random.default_rng(5).choice(1500, 20, replace=False)  # 16 training rows for 17 features: n <= d
    for name in ("before", "after", "labels"):
        np.save(tmp_path / f"few_{name}.npy", np.load(paths[name])[rows])
    args = ["within", "--before", str(tmp_path / "few_before.npy"), "--after", str(tmp_path / "few_after.npy"),
            "--labels", str(tmp_path / "few_labels.npy"), "--json"]
    auto = one_json_object(run_cli(*args, cache=cache_dir).stdout)
    assert auto["fit"]["n_le_d"] is True and auto["fit"]["rows"] == 16 and "Only 16 training rows for 17 features" in \
        auto["fit"]["note"]
    plain = one_json_object(run_cli(*args, "--alpha", "0", cache=cache_dir).stdout)
    assert plain["fit"]["alpha"] == 0.0 and not plain["fit"]["alpha_chosen"] and plain["fit"]["r2_train"] > 0.999
    r = run_cli(*args, "--alpha", "lots", cache=cache_dir)
    assert r.returncode == 2 and "--alpha must be 'auto' or a finite number of at least 0 (0 means no penalty), not 'lots'" in r.stderr


@pytest.mark.parametrize("case, phrase", [
    ("rows", "have 1500 and 1499 rows"),
    ("widths", "widths 16 and 24"),
    ("pickle", "holds Python objects (pickle), which repmap never loads"),
    ("pt", "never .pt or .pkl"),
    ("labels", "must be 0/1 or -1/+1"),
])
def test_within_bad_input(planted_arrays, tmp_path, cache_dir, case, phrase):
    paths, _, _ = planted_arrays
    after = str(paths["after"])
    labels = str(paths["labels"])
    if case == "rows":
        np.save(tmp_path / "short.npy", np.load(paths["after"])[:-1])
        after = str(tmp_path / "short.npy")
    elif case == "widths":
        after = str(paths["target"])
    elif case == "pickle":
        np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        after = str(tmp_path / "obj.npy")
    elif case == "pt":
        (tmp_path / "acts.pt").write_bytes(b"not really")
        after = str(tmp_path / "acts.pt")
    elif case == "labels":
        np.save(tmp_path / "y3.npy", np.arange(1500) % 3)
        labels = str(tmp_path / "y3.npy")
    r = run_cli("within", "--before", str(paths["before"]), "--after", after, "--labels", labels, "--json", cache=cache_dir)
    assert r.returncode == 2 and r.stdout == ""
    assert phrase in r.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_finetune_follows_dtype_and_says_its_precision(tiny_gpt2, cache_dir):
    """`--dtype` was accepted by `finetune` and did nothing (its autocast followed REPMAP_DTYPE alone): now it sets
    the precision of every model the command runs, and the JSON says which one trained (and the cache keeps two)."""
    args = ["finetune", "--model", str(tiny_gpt2), "--data", "builtin:sentiment", "--limit", "40", "--epochs", "1", "--json"]
    plain = one_json_object(run_cli(*args, cache=cache_dir).stdout)  # the tests' REPMAP_DTYPE=float32
    bf16 = one_json_object(run_cli(*args, "--dtype", "bfloat16", cache=cache_dir).stdout)
    assert plain["precision"] == "float32" and bf16["precision"] == "bf16-autocast"
    assert bf16["path"] != plain["path"] and not bf16["reused"]
    again = one_json_object(run_cli(*args, "--dtype", "float32", cache=cache_dir).stdout)
    assert again["path"] == plain["path"] and again["reused"]


@pytest.mark.slow
def test_recipe_within_end_to_end_on_a_tiny_model(tiny_gpt2, cache_dir):
    r = run_cli("recipe", "within", "--model", str(tiny_gpt2), "--data", "builtin:sentiment", "--limit", "100",
                "--epochs", "1", "--json", cache=cache_dir)
    assert r.returncode == 0, r.stderr
    out = one_json_object(r.stdout)
    # finetuned on one half, analysed on the other: no row is in both
    assert out["rows"]["finetune"] + out["rows"]["analysed"] == 100 and out["rows"]["analysed"] >= 40
    assert out["layer"] == 2 and out["site"] == "blocks.2.hook_resid_post" and out["position"] == "last"
    assert [row["representation"].split()[0] for row in out["table"]] == ["base", "finetuned", "modelled", "modelled", "modelled"]
    assert set(out["within"]) >= {"delta_projection_accuracy", "delta_projection_accuracy_centered", "probe", "fit"}
    assert (cache_dir / "models" / out["finetune"]["path"].split("/")[-1] / "repmap_finetune.json").exists()
    assert out["published"]["table1"]["Amazon Polarity"][2] == [1.0, 1.0]


@pytest.mark.slow
def test_recipe_between_end_to_end_on_two_tiny_models(tiny_gpt2, tiny_models, cache_dir):
    r = run_cli("recipe", "between", "--source", str(tiny_gpt2), "--target", str(tiny_models["llama"]), "--data",
                "builtin:sentiment", "--limit", "120", "--method", "lstsq", "--source-layer", "1", "--json", cache=cache_dir)
    assert r.returncode == 0, r.stderr
    out = one_json_object(r.stdout)
    assert out["source"]["layer"] == 1 and out["target"]["layer"] == 2 and out["rows"] == 120
    assert set(out["between"]["transfer"]) >= {"vector", "functional", "details"}
    assert out["published"]["vector_transfer_accuracy_gpt2_to_gpt2xl"] == 0.5025
    r = run_cli("recipe", "between", "--source", str(tiny_gpt2), "--data", "builtin:sentiment", "--json", cache=cache_dir)
    assert r.returncode == 2 and "needs --source (the weak model) and --target" in r.stderr


@pytest.mark.slow
def test_between_refuses_exports_from_different_data(tiny_gpt2, tiny_models, tmp_path, cache_dir):
    """Two `extract --export` folders made from different rows: their fingerprints differ."""
    for name, data in (("a", "builtin:sentiment"), ("b", "builtin:science_qa")):
        r = run_cli("extract", "--model", str(tiny_gpt2), "--data", data, "--limit", "40", "--layers", "-1",
                    "--export", str(tmp_path / name), "--json", cache=cache_dir)
        assert r.returncode == 0, r.stderr
    r = run_cli("between", "--source", str(tmp_path / "a" / "layer_2.npy"), "--target", str(tmp_path / "b" / "layer_2.npy"),
                "--labels", str(tmp_path / "a" / "labels.npy"), "--json", cache=cache_dir)
    assert r.returncode == 2 and r.stdout == ""
    assert "come from different data (builtin:sentiment" in r.stderr and "extract both on the same rows" in r.stderr


@pytest.mark.slow
def test_steering_vectors_json_and_export(tiny_gpt2, tmp_path, cache_dir):
    r = run_cli("steering-vectors", "--model", str(tiny_gpt2), "--data", "builtin:survival_instinct", "--layers", "all",
                "--limit", "60", "--export", str(tmp_path / "sv"), "--json", cache=cache_dir)
    assert r.returncode == 0, r.stderr
    out = one_json_object(r.stdout)
    assert out["layers"] == [0, 1, 2] and len(out["cosine"]) == 3 and all(len(row) == 3 for row in out["cosine"])
    assert all(abs(out["cosine"][i][i] - 1) < 1e-5 for i in range(3)) and out["position"] == "answer"
    assert out["data"]["questions_train"] + out["data"]["questions_held_out"] == 30
    assert out["data"]["pairs_train"] == 2 * out["data"]["questions_train"]  # each question in both letter orders
    balance = out["data"]["letter_balance"]
    assert balance["both_orders"] and balance["matching_letter_counts"]["A"] == balance["matching_letter_counts"]["B"]
    from repmap_core.steering import load_vectors

    v = load_vectors(tmp_path / "sv" / "layer_1.safetensors")[1]
    assert v.vector.shape == (32,) and abs(v.norm - out["norms"][1]) < 1e-4 and v.count == out["data"]["pairs_train"]
    r = run_cli("steering-vectors", "--model", str(tiny_gpt2), "--data", "builtin:sentiment", "--json", cache=cache_dir)
    assert r.returncode == 2 and "has no A/B pairs" in r.stderr


@pytest.mark.slow
def test_recipes_rimsky_and_lrt_on_tiny_causal_models(tiny_gpt2, tiny_models, cache_dir):
    r = run_cli("recipe", "rimsky", "--model", str(tiny_gpt2), "--chat", str(tiny_models["llama"]), "--data",
                "builtin:survival_instinct", "--limit", "40", "--json", cache=cache_dir)
    assert r.returncode == 0, r.stderr
    out = one_json_object(r.stdout)
    assert sorted(out["cosine_per_layer"]) == ["0", "1", "2"] and len(out["base"]["layer_cosine"]) == 3
    assert len(out["chat"]["pca"]) == 3 and len(out["chat"]["pca"][0]) == 2
    r = run_cli("recipe", "lrt", "--source", str(tiny_gpt2), "--target", str(tiny_models["llama"]), "--data",
                "builtin:survival_instinct", "--limit", "60", "--source-layer", "1", "--target-layer", "2",
                "--multipliers=-4,0,4", "--json", cache=cache_dir)
    assert r.returncode == 0, r.stderr
    out = one_json_object(r.stdout)
    assert out["native"]["alphas"] == [-4.0, 0.0, 4.0] and len(out["transferred"]["mean"]) == 3
    cmp = out["comparison"]
    assert out["map"]["with_bias"] is False and {"pearson_r", "mse", "pearson_r_interval", "null_pearson_r", "slope_ratio",
                                                 "native_slope", "transferred_slope", "transferred_minus_random"} <= set(cmp)
    # random tiny models: the target's own vector does not steer, so r is withheld with the sentence saying why
    assert cmp["pearson_r"] is None and cmp["r_undefined"].startswith("r is undefined here") or -1 <= cmp["pearson_r"] <= 1
    assert out["native"]["mean"][1] == out["transferred"]["mean"][1]  # no steering at 0: the same model, the same gaps
    assert out["published"]["lrt_pearson_r_range"] == [0.73, 0.98]


@pytest.mark.slow
def test_between_updown_reports_the_round_trip_and_saves_both_maps(tmp_path, cache_dir):
    """`--method updown`: the round-trip error and down map's R² in the JSON, A, b, D, d in the file."""
    from safetensors.numpy import load_file

    rng = np.random.default_rng(3)
    S = rng.normal(size=(600, 8)).astype(np.float32)
    T = (S @ rng.normal(size=(8, 12)) + 0.05 * rng.normal(size=(600, 12))).astype(np.float32)
    y = (S[:, 0] > 0).astype(np.int64)
    for name, arr in (("s.npy", S), ("t.npy", T), ("y.npy", y)):
        np.save(tmp_path / name, arr, allow_pickle=False)
    proc = run_cli("between", "--source", str(tmp_path / "s.npy"), "--target", str(tmp_path / "t.npy"),
                   "--labels", str(tmp_path / "y.npy"), "--method", "updown", "--save", str(tmp_path / "m.safetensors"),
                   "--json", cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    out = one_json_object(proc.stdout)
    assert out["map"]["method"] == "updown" and out["map"]["r2_test"] > 0.99
    assert out["map"]["round_trip_error_test"] < 0.01 and out["map"]["down_r2_test"] > 0.99
    saved = load_file(tmp_path / "m.safetensors")
    assert set(saved) == {"A", "b", "D", "d"} and saved["D"].shape == (8, 12)
