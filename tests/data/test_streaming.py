"""Data larger than memory: chunked reading equals whole reading, streamed activations equal the
in-memory ones in the same cache entry, a failure mid-stream caches nothing, and large sets are
scored with a streamed probe."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from repmap_core.analysis import separation
from repmap_core.capture import store
from repmap_core.capture.activations import get_activations, stream_activations
from repmap_core.capture.stream_writer import LayerStreamWriter
from repmap_core.data.load import load_dataset, open_stream
from repmap_core.errors import RepmapError
from repmap_core.locations import cache_root


def write_rows(path, n=700, paired=False):
    rng = np.random.default_rng(0)
    words = "good bad film phone battery screen lovely broken cheap great awful fine".split()
    if paired:
        rows = [{"question": f"Q{i}: " + " ".join(rng.choice(words, 5)) + "\n\nChoices:\n (A) Yes\n (B) No",
                 "answer_matching_behavior": " (A)" if i % 2 else " (B)",
                 "answer_not_matching_behavior": " (B)" if i % 2 else " (A)"} for i in range(n)]
    else:
        rows = [{"text": " ".join(rng.choice(words, rng.integers(3, 12))), "label": i % 2} for i in range(n)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if str(path).endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    elif str(path).endswith(".csv"):
        pd.DataFrame(rows).to_csv(path, index=False)
    elif str(path).endswith(".parquet"):
        pd.DataFrame(rows).to_parquet(path)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name, paired", [("rows.jsonl", False), ("rows.csv", False), ("rows.jsonl.gz", False),
                                          ("rows.parquet", False), ("ab.jsonl", True)])
def test_chunked_reading_equals_whole_reading(tmp_path, name, paired):
    path = write_rows(tmp_path / name, paired=paired)
    whole = load_dataset(f"file:{path}")
    stream = open_stream(f"file:{path}", chunk_rows=128)
    chunks = list(stream.chunks())
    assert len(chunks) > 1 and len(stream) == len(whole) and stream.fingerprint == whole.fingerprint
    assert sum((c.texts for c in chunks), []) == whole.texts
    assert np.array_equal(np.concatenate([c.pair_ids for c in chunks]), whole.pair_ids)
    assert stream.is_paired == whole.is_paired and stream.has_answers == whole.has_answers


def test_limit_takes_the_first_rows_and_keeps_pairs_whole(tmp_path):
    path = write_rows(tmp_path / "ab.jsonl", n=100, paired=True)
    stream = open_stream(f"file:{path}", chunk_rows=64, limit=31)  # 31 would split the 16th pair
    rows = list(stream.chunks())
    assert len(stream) == 30 and sum(len(c) for c in rows) == 30
    ids = np.concatenate([c.pair_ids for c in rows])
    assert ids.tolist() == [i // 2 for i in range(30)]


@pytest.mark.slow
def test_streamed_activations_equal_the_in_memory_ones_in_one_entry(tiny_gpt2, tmp_path, cache_dir, monkeypatch):
    path = write_rows(tmp_path / "ab.jsonl", n=300, paired=True)
    streamed = stream_activations(str(tiny_gpt2), f"file:{path}", [0, 2], "answer", chunk_rows=97)
    assert streamed.manifest["streamed"] and streamed.n == 600
    monkeypatch.setenv("REPMAP_CACHE", str(tmp_path / "other"))
    whole = get_activations(str(tiny_gpt2), f"file:{path}", [0, 2], "answer")
    assert whole.manifest["key"] == streamed.manifest["key"]  # the same identity: one entry serves both
    for L in (0, 2):
        assert np.abs(np.asarray(streamed[L]) - np.asarray(whole[L])).max() < 1e-5
    assert np.array_equal(streamed.pair_ids, whole.pair_ids) and np.array_equal(streamed.labels, whole.labels)
    monkeypatch.setenv("REPMAP_CACHE", str(cache_dir))
    again = get_activations(str(tiny_gpt2), f"file:{path}", [2], "answer")  # a whole-data request hits the streamed entry
    assert again.manifest.get("streamed") is True


def test_a_failure_mid_stream_caches_nothing(tiny_gpt2, tmp_path, cache_dir, monkeypatch):
    path = write_rows(tmp_path / "rows.jsonl", n=400)
    import repmap_core.capture.activations as acts

    calls = {"n": 0}
    real = acts.extract_activations

    def fail_on_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("the machine went away")
        return real(*a, **k)

    monkeypatch.setattr(acts, "extract_activations", fail_on_third)
    with pytest.raises(RuntimeError):
        stream_activations(str(tiny_gpt2), f"file:{path}", [1], chunk_rows=100)
    files = [p.name for p in (cache_dir / "activations").rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert files == []  # no layer file, no temp file
    monkeypatch.setattr(acts, "extract_activations", real)
    assert stream_activations(str(tiny_gpt2), f"file:{path}", [1], chunk_rows=100).n == 400


def test_stream_writer_makes_a_checked_safetensors_file(cache_dir):
    from safetensors.numpy import load_file

    rng = np.random.default_rng(1)
    A, y, p = rng.normal(size=(250, 8)).astype(np.float32), rng.integers(0, 2, 250), np.arange(250)
    path = cache_root() / "t" / "layer_0.safetensors"
    with LayerStreamWriter(path, 250, 8, {"k": 1}) as w:
        for s in (200, 0, 100):  # any order of blocks
            w.write_rows(s, A[s:s + 100], y[s:s + 100], p[s:s + 100])
        w.commit({"k": 1, "tokens": 99})
    store._verified.clear()
    tensors, manifest = store.read_file(path)  # verifies the checksum
    assert manifest == {"k": 1, "tokens": 99} and np.array_equal(tensors["activations"], A)
    assert np.array_equal(load_file(str(path))["labels"], y.astype(np.int8))  # the safetensors library reads it too
    with pytest.raises(ValueError, match="do not fit"):
        with LayerStreamWriter(path.with_name("x.safetensors"), 10, 8, {}) as w:
            w.write_rows(5, A[:10], y[:10], p[:10])
    assert not list(path.parent.glob(".tmp*"))  # the aborted writer left nothing


def test_large_sets_are_scored_with_a_streamed_probe(monkeypatch):
    rng = np.random.default_rng(2)
    n, d = 6000, 32
    w = rng.normal(size=d)
    y = rng.integers(0, 2, n)
    X = (rng.normal(size=(n, d)) + np.outer(2 * y - 1, w / np.linalg.norm(w))).astype(np.float32)
    exact = separation.separation_at(X, y, np.full(n, -1), 0)
    monkeypatch.setattr(separation, "MAX_EXACT_ROWS", 2000)
    big = separation.separation_at(X, y, np.full(n, -1), 0)
    assert "streamed SGD probe" in big.scored_on and exact.scored_on == "all rows"
    assert abs(big.probe_test_acc - exact.probe_test_acc) < 0.02
    assert big.fisher == pytest.approx(exact.fisher, rel=1e-9)


def test_open_stream_bad_input(tmp_path):
    with pytest.raises(RepmapError, match="at least one row"):
        open_stream("builtin:sentiment", chunk_rows=0)
    (tmp_path / "e.csv").write_text("text,label\n", encoding="utf-8")
    with pytest.raises(RepmapError, match="no data rows"):
        open_stream(f"file:{tmp_path / 'e.csv'}")


def test_stream_under_torchrun_is_refused_in_one_sentence(tmp_path, cache_dir):
    """Each rank would otherwise load every row, silently undoing what --stream promises."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n', encoding="utf-8")
    env = dict(os.environ, RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", HF_HUB_OFFLINE="1", REPMAP_CACHE=str(cache_dir))
    proc = subprocess.run([sys.executable, "-m", "repmap_core", "extract", "--model", "no-model-needed",
                           "--data", f"file:{data}", "--stream", "--json"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], env=env, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --stream runs in one process and is not combined with torchrun yet; drop --stream (each rank then "
        "loads the rows) or run the streamed extraction without torchrun.")
