"""The GPU check's dry run (issue 17): the whole path of `python -m bench.gpu_check` on the CPU with tiny
models, and the summary it writes: one JSON and one markdown file, every part ok with its numbers."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

PART_NAMES = ["extract_bench", "precision", "steering", "finetune", "oom_backoff", "gemma"]
# numbers each part must report, finite and positive where marked
POSITIVE = {"extract_bench": ["repmap_tokens_per_s", "mfu", "peak_tflops", "tokens"],
            "precision": ["tokens_per_s_bf16", "tokens_per_s_fp32", "max_abs_diff", "rows", "layers"],
            "steering": ["prompt_forwards_per_s", "held_out_prompts", "vector_norm", "residual_norm", "sweep_s"],
            "finetune": ["steps_per_s", "steps", "seconds"],
            "oom_backoff": ["ooms", "first_batch_rows", "largest_batch_that_ran", "batches_that_ran"],
            "gemma": ["tokens_per_s_bf16", "max_abs_diff", "rows"]}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[dict, Path, Path, float]:
    out = tmp_path_factory.mktemp("gpu_check")
    outside = tmp_path_factory.mktemp("inherited_cache")  # the cache the caller had: must stay untouched
    env = dict(os.environ, REPMAP_CACHE=str(outside), HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    # a generous deadline: this shared 2-core machine is slow under load; the default is 110 s
    r = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--dry-run", "--out", str(out), "--deadline", "300"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    seconds = time.perf_counter() - t0
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    return json.loads((out / "gpu_check.json").read_text()), out, outside, seconds


@pytest.mark.slow
def test_the_dry_run_writes_one_summary_with_every_part_ok(dry_run):
    summary, out, outside, seconds = dry_run
    assert summary["dry_run"] is True and summary["ok"] is True
    assert summary["machine"]["device"] == "cpu" and summary["seconds"] <= 300
    assert [p["name"] for p in summary["parts"]] == PART_NAMES
    for part in summary["parts"]:
        assert part["ok"] is True and part["error"] is None and part["skipped"] is None, part
        assert part["checks"] and all(part["checks"].values()), part["checks"]
        assert 0 < part["seconds"] <= part["budget_s"] + 5, part
        for key in POSITIVE[part["name"]]:
            value = part["numbers"][key]
            assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (part["name"], key, value)
    md = (out / "gpu_check.md").read_text()
    assert md.startswith("# repmap GPU check (dry run)") and "overall: **ok**" in md
    for name in PART_NAMES:
        assert f"| {name} | ok |" in md and f"## {name}:" in md


@pytest.mark.slow
def test_the_dry_run_numbers_mean_what_they_say(dry_run):
    parts = {p["name"]: p["numbers"] for p in dry_run[0]["parts"]}
    assert parts["extract_bench"]["dtype"] == "bfloat16" and parts["extract_bench"]["mfu"] < 1
    for name in ("precision", "gemma"):
        p = parts[name]
        assert 0 < p["max_relative_diff"] < 0.05 and len(p["per_layer"]) == p["layers"] == 3
        assert set(p["probe_cv_acc_bf16"]) == set(p["probe_cv_acc_fp32"]) == {"0", "1", "2"}
    assert parts["steering"]["alphas"] == [-1.0, -0.5, 0.0, 0.5, 1.0] and "layer 2" in parts["steering"]["verdict"]
    assert parts["finetune"]["precision"] == "float32" and parts["finetune"]["device"] == "cpu"
    oom = parts["oom_backoff"]  # simulated: batches above 8 rows raise torch.cuda.OutOfMemoryError
    assert oom["simulated"] is True and oom["first_batch_rows"] == oom["rows"] == 64
    assert oom["largest_batch_that_ran"] == 8 and oom["ooms"] == 7 and oom["relative_diff_vs_normal_run"] < 1e-4


@pytest.mark.slow
def test_the_dry_run_keeps_to_its_private_cache(dry_run):
    _, out, outside, _ = dry_run
    assert (out / "cache" / "activations").is_dir() and (out / "cache" / "models").is_dir()
    assert not any(outside.iterdir())


def test_a_failing_part_is_reported_and_a_late_one_skipped(tmp_path):
    from bench import gpu_check

    check = gpu_check.Check(True, tmp_path, "cpu", gpu_check.DRY, time.monotonic() + 60)

    def broken(_check):
        raise ValueError("the planted failure")

    entry = gpu_check.run_part(check, "steering", broken)
    assert entry["ok"] is False and entry["error"] == "ValueError: the planted failure" and entry["seconds"] >= 0
    assert gpu_check.run_part(check, "finetune", lambda c: {"numbers": {"x": 1.0}, "checks": {"fine": True}})["ok"] is True

    def overrun(c):
        c.part_deadline = time.monotonic() - 1  # as if its time had run out
        c.progress()(0.5, "working")  # repmap calls this between batches: it stops the part
        return {"numbers": {}, "checks": {}}

    stopped = gpu_check.run_part(check, "precision", overrun)
    assert stopped["ok"] is False and stopped["error"] == "DeadlineReached: stopped at its time limit while: working"
    check.deadline = time.monotonic() + 2  # less than a part's minimum left
    late = gpu_check.run_part(check, "gemma", broken)
    assert late["ok"] is None and late["skipped"].startswith("skipped:") and late["error"] is None
