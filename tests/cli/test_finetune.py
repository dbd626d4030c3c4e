"""`python -m repmap_core finetune`: a checkpoint in the cache as one JSON object, the same request
reused, and one-class data refused before anything is trained or cached."""
from __future__ import annotations

import json

import pytest

from repmap_core.capture.model_config import FINETUNE_MANIFEST
from tests.cli.test_cli import one_json_object, run_cli


@pytest.mark.slow
def test_finetune_writes_a_checkpoint_once_and_reuses_it(tiny_gpt2, tmp_path, cache_dir):
    data = tmp_path / "reviews.csv"
    rows = [f"The film was {w},1" for w in ("great", "good", "lovely", "fine")] * 4 + \
           [f"The film was {w},0" for w in ("awful", "bad", "dull", "poor")] * 4
    data.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    args = ("finetune", "--model", str(tiny_gpt2), "--data", f"file:{data}", "--epochs", "1", "--batch-size", "8",
            "--max-length", "16", "--json")
    r = run_cli(*args, cache=cache_dir)
    assert r.returncode == 0, r.stderr
    out = one_json_object(r.stdout)
    assert not out["reused"] and out["base_model"] == str(tiny_gpt2) and out["dataset"]["rows"] == 32
    assert out["dataset"]["train_rows"] + out["dataset"]["val_rows"] == 32 and out["metrics"]["steps"] >= 1
    manifest = json.loads((cache_dir / "models" / out["path"].split("/")[-1] / FINETUNE_MANIFEST).read_text())
    assert manifest["config"]["epochs"] == 1 and manifest["config"]["max_length"] == 16
    again = one_json_object(run_cli(*args, cache=cache_dir).stdout)
    assert again["reused"] and again["path"] == out["path"] and again["metrics"] == out["metrics"]


def test_one_class_data_is_refused_before_training(tiny_gpt2, tmp_path, cache_dir):
    data = tmp_path / "positive.csv"
    data.write_text("text,label\n" + "\n".join(f"row {i},1" for i in range(20)) + "\n", encoding="utf-8")
    r = run_cli("finetune", "--model", str(tiny_gpt2), "--data", f"file:{data}", "--json", cache=cache_dir)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    assert "has only one class (all 20 rows are labelled 1)" in r.stderr
    assert not (cache_dir / "models").exists()
