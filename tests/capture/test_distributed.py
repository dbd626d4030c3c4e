"""Data-parallel extraction under torchrun with 2 local CPU workers (gloo): the same activations
as one process, one cache entry, and a worker killed midway costs only its own shard."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from repmap_core.capture import store
from repmap_core.capture.activations import get_activations, plan_activations
from repmap_core.capture.distributed import commit_shards, row_slice, shard_dir, shard_path
from repmap_core.errors import RepmapError
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def torchrun(*args: str, cache, env_extra=None, **kw) -> subprocess.Popen:
    env = dict(os.environ, REPMAP_CACHE=str(cache), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **(env_extra or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "repmap_core", "extract", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def many_rows(tmp_path):
    """3,000 short texts: a few seconds per worker on the tiny model, time enough to kill one."""
    rng = np.random.default_rng(0)
    words = "good bad film phone battery screen lovely broken cheap great awful fine".split()
    rows = [{"text": " ".join(rng.choice(words, rng.integers(4, 30))), "label": int(i % 2)} for i in range(3000)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_row_slices_cover_every_row_in_order():
    for n, world in ((10, 3), (7, 2), (2, 4)):
        parts = [row_slice(n, r, world) for r in range(world)]
        assert np.concatenate(parts).tolist() == list(range(n))


def test_two_workers_equal_one_process_in_one_entry(tiny_gpt2, tmp_path, cache_dir):
    proc = torchrun("--model", str(tiny_gpt2), "--data", "builtin:sentiment", "--layers", "0,2", "--json", cache=cache_dir)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])  # only rank 0 prints
    assert out.count("\n") == 1 and result["layers"] == [0, 2] and result["dataset"]["rows"] == 800
    entry = store.entry_dir(result["cache_key"])
    assert sorted(p.name for p in entry.iterdir()) == ["layer_0.safetensors", "layer_2.safetensors"]  # shards gone
    dist = get_activations(str(tiny_gpt2), "builtin:sentiment", [0, 2])
    assert dist.manifest["workers"] == 2
    single_cache = tmp_path / "single"
    os.environ["REPMAP_CACHE"] = str(single_cache)
    try:
        single = get_activations(str(tiny_gpt2), "builtin:sentiment", [0, 2])
    finally:
        os.environ["REPMAP_CACHE"] = str(cache_dir)
    assert "workers" not in single.manifest
    for L in (0, 2):
        assert np.abs(np.asarray(dist[L]) - np.asarray(single[L])).max() < 1e-5
    assert np.array_equal(dist.labels, single.labels)


def test_a_worker_killed_midway_costs_only_its_shard(tiny_gpt2, many_rows, tmp_path, cache_dir):
    import psutil

    args = ("--model", str(tiny_gpt2), "--data", f"file:{many_rows}", "--layers", "1", "--json")
    proc = torchrun(*args, cache=cache_dir)
    plan = plan_activations(str(tiny_gpt2), f"file:{many_rows}", [1])
    n = len(plan.dataset)
    killed = False
    deadline = time.monotonic() + 240
    for line in proc.stderr:  # progress lines: "[ x%] rank 1: k/1500 texts · ..."
        if "rank 1:" in line and "texts" in line and not killed:
            done, total = line.split("rank 1:")[1].split("texts")[0].strip().split("/")
            if int(done) < int(total):
                assert not shard_path(plan.key, 1, 1, 2).exists()  # midway: its shard is not written yet
                for child in psutil.Process(proc.pid).children(recursive=True):
                    try:
                        if child.environ().get("RANK") == "1":
                            os.kill(child.pid, signal.SIGKILL)
                            killed = True
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
        if time.monotonic() > deadline:
            break
    proc.wait(timeout=120)
    assert killed and proc.returncode != 0
    assert plan.read(1) is None  # no entry was committed
    survived = shard_path(plan.key, 1, 0, 2)
    reused = survived.exists()
    mtime = survived.stat().st_mtime_ns if reused else None
    # the rerun completes; the finished shard (if rank 0 got that far) is reused, not recomputed
    proc = torchrun(*args, cache=cache_dir)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    if reused:
        assert "Rank 0/2: loading" not in err and mtime is not None
    got = get_activations(str(tiny_gpt2), f"file:{many_rows}", [1])
    assert got.n == n and got.manifest["workers"] == 2 and not shard_dir(plan.key, 2).exists()
    os.environ["REPMAP_CACHE"] = str(tmp_path / "single")
    try:
        single = get_activations(str(tiny_gpt2), f"file:{many_rows}", [1])
    finally:
        os.environ["REPMAP_CACHE"] = str(cache_dir)
    assert np.abs(np.asarray(got[1]) - np.asarray(single[1])).max() < 1e-5


def test_commit_refuses_a_missing_shard(tiny_gpt2, cache_dir):
    plan = plan_activations(str(tiny_gpt2), "builtin:sentiment", [0])
    rows = row_slice(len(plan.dataset), 0, 2)
    acts = np.zeros((len(rows), 32), np.float32)
    manifest = plan.manifest(0, device="cpu", tokens=1, seconds=0.0, created=store.now_iso(),
                             row_start=int(rows[0]), row_stop=int(rows[-1]) + 1, rank=0, world=2)
    store.write_file(shard_path(plan.key, 0, 0, 2), {"activations": acts}, manifest)
    with pytest.raises(RepmapError, match="shard of layer 0 from worker 1 of 2 is missing or damaged"):
        commit_shards(plan, [0], 2)
    assert plan.read(0) is None  # nothing half-committed



def test_two_cpu_workers_measure_the_precision_once_and_agree_on_the_key(tiny_gpt2, cache_dir):
    """With the precision measured (no REPMAP_DTYPE), rank 0 measures and keeps it, rank 1 reads its record:
    two measurements near the 1.5x threshold could pick two dtypes, and so two keys, for one entry."""
    proc = torchrun("--model", str(tiny_gpt2), "--data", "builtin:sentiment", "--layers", "1", "--limit", "64", "--json",
                    cache=cache_dir, env_extra={"REPMAP_DTYPE": "auto"})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["precision"]["reason"] != "forced by REPMAP_DTYPE" and "fp32_gflops" in result["precision"]
    assert [p.name for p in store.entry_dir(result["cache_key"]).iterdir()] == ["layer_1.safetensors"]
    kept = json.loads((cache_dir / "speed" / "precision.json").read_text())
    assert len(kept) == 1 and len(next(iter(kept.values()))) == 1  # one machine, one shape: measured once
