"""The cache's one-array memo (issue 21, item 6): identical concurrent requests compute once, and a memo that
may not compute (a link's view, before Compute) says so and writes nothing."""
from __future__ import annotations

import numpy as np
import pytest

from repmap_core.capture import memo


def test_identical_concurrent_memo_requests_compute_once(cache_dir):
    """Issue 21, item 6: ten sessions on one uncached link each recomputed the same projection. The first
    request holds the entry's lock while it computes; the others wait for it and read its file."""
    import threading
    import time

    calls = []

    def slow():
        calls.append(threading.get_ident())
        time.sleep(0.5)
        return np.arange(10, dtype=np.float32).reshape(5, 2)

    results, errors = [], []

    def ask():
        try:
            results.append(memo.disk_memo({"activations": "k", "layer": 1})({"method": "tsne", "seed": 3}, slow))
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(calls) == 1 and len(results) == 8
    assert all(np.array_equal(r, results[0]) for r in results)
    other = memo.disk_memo({"activations": "k", "layer": 1})({"method": "tsne", "seed": 4}, slow)  # another key computes
    assert len(calls) == 2 and other.shape == (5, 2)


def test_a_memo_that_may_not_compute_says_so_and_writes_nothing(cache_dir):
    reader = memo.disk_memo({"activations": "k", "layer": 0}, may_compute=False)
    with pytest.raises(memo.NotCached):
        reader({"method": "umap"}, lambda: pytest.fail("computed"))
    assert not (cache_dir / "projections").exists() or not any((cache_dir / "projections").rglob("*.safetensors"))
    memo.disk_memo({"activations": "k", "layer": 0})({"method": "umap"}, lambda: np.ones((3, 2), np.float32))
    assert reader({"method": "umap"}, lambda: pytest.fail("computed")).sum() == 6  # cached: read, never computed


def test_records_memo_keeps_records_of_numbers_and_text_and_computes_only_missing_items(cache_dir):
    """Per-item records (per-layer scores) in one checksummed safetensors file: types come back as stored,
    None as NaN in a float column, and only the items not kept are computed."""
    calls = []

    def compute(items):
        calls.append(list(items))
        return {i: {"layer": i, "acc": 0.5 + i / 10, "low": None if i == 2 else 0.4, "ok": i % 2 == 0,
                    "note": f"all {i} rows"} for i in items}

    got = memo.records_memo({"activations": "k", "rows": 10})([0, 2], compute)
    assert calls == [[0, 2]] and got[0] == {"layer": 0, "acc": 0.5, "low": 0.4, "ok": True, "note": "all 0 rows"}
    assert np.isnan(got[2]["low"]) and type(got[2]["layer"]) is int and type(got[2]["ok"]) is bool
    more = memo.records_memo({"activations": "k", "rows": 10})([0, 1, 2], compute)
    assert calls == [[0, 2], [1]] and sorted(more) == [0, 1, 2] and more[1]["note"] == "all 1 rows"
    with pytest.raises(memo.NotCached):
        memo.records_memo({"activations": "k", "rows": 10}, may_compute=False)([3], compute)
    assert memo.records_memo({"activations": "k", "rows": 10}, may_compute=False)([1], compute)[1]["acc"] == 0.6
    assert len(list((cache_dir / "scores").rglob("*.safetensors"))) == 1


def test_identical_requests_from_separate_processes_compute_once(cache_dir, tmp_path):
    """SECURITY.md: the entry's lock holds per process too (two app servers, or a CLI beside the app, on one
    cache). Three processes ask for the same entry at once: one computes, the others wait and read its file."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = (
        "import os, sys, time, numpy as np\n"
        "from repmap_core.capture import memo\n"
        "def slow():\n"
        "    open(sys.argv[1], 'a').write(f'{os.getpid()}\\n')\n"
        "    time.sleep(1.0)\n"
        "    return np.arange(6, dtype=np.float32).reshape(3, 2)\n"
        "ready = os.path.join(os.path.dirname(sys.argv[1]), f'ready-{os.getpid()}')\n"
        "open(ready, 'w').close()\n"
        "while len([f for f in os.listdir(os.path.dirname(ready)) if f.startswith('ready-')]) < 3:\n"
        "    time.sleep(0.01)  # all three ask at the same moment, imports done\n"
        "got = memo.disk_memo({'activations': 'k', 'layer': 1})({'method': 'umap', 'seed': 5}, slow)\n"
        "print(float(got.sum()))\n"
    )
    log = tmp_path / "computed.txt"
    env = {**__import__("os").environ, "REPMAP_CACHE": str(cache_dir), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(log)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert [o.strip() for o, _ in outs] == ["15.0"] * 3
    assert len(log.read_text().split()) == 1  # one process computed; the other two read what it wrote
