"""Data-parallel extraction under torchrun (one process per GPU, or per CPU worker).

    torchrun --nproc_per_node 8 -m repmap_core extract --model M --data SPEC --layers all --json

Each rank takes a contiguous slice of the rows (so rows keep their order), extracts the missing
layers for it, and writes one shard file per layer into the cache entry's `shards-<world>/`
folder (atomic and checksummed, like any cache file). After a barrier, rank 0 checks that
every shard is present, valid and covers its slice, concatenates them into the entry's layer
files (written atomically) and removes the shards. A rank that dies leaves at most a temp file;
torchrun stops the others; the rerun reuses every valid shard and recomputes only the missing
ones. Multi-node runs need the cache on storage every node sees (REPMAP_CACHE).

Why torchrun and not Ray: it comes with torch (no new dependency or cluster service), launches
under SLURM with `srun torchrun ...`, and the work is embarrassingly parallel, so the
filesystem (the cache) is all the coordination it needs beyond one barrier.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass

import numpy as np

from repmap_core.capture import store
from repmap_core.capture.activations import ActivationSet, Loader, _default_loader, plan_activations
from repmap_core.capture.extract import extract_activations
from repmap_core.errors import RepmapError
from repmap_core.progress import Progress, silent


@dataclass(frozen=True)
class WorkerInfo:
    rank: int
    world: int
    local_rank: int


def worker_info() -> WorkerInfo:
    """This process's place under torchrun (RANK/WORLD_SIZE/LOCAL_RANK); 0 of 1 otherwise."""
    return WorkerInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                      int(os.environ.get("LOCAL_RANK", 0)))


def row_slice(n: int, rank: int, world: int) -> np.ndarray:
    """The contiguous rows of rank `rank` of `world` (the first n % world ranks get one more)."""
    return np.array_split(np.arange(n), world)[rank]


def shard_dir(key: str, world: int):
    return store.entry_dir(key) / f"shards-{world}"


def shard_path(key: str, layer: int, rank: int, world: int):
    return shard_dir(key, world) / f"layer_{layer}.rank{rank}.safetensors"


def _read_shard(key: str, layer: int, rank: int, world: int, identity: dict, rows: np.ndarray):
    """A shard's activations if it is valid for this request and slice, else None (bad ones deleted)."""
    path = shard_path(key, layer, rank, world)
    if not path.exists():
        return None
    try:
        tensors, manifest = store.read_file(path)
        ok = (all(manifest.get(k) == v for k, v in identity.items()) and manifest.get("layer") == layer
              and manifest.get("row_start") == int(rows[0]) and manifest.get("row_stop") == int(rows[-1]) + 1
              and tensors["activations"].shape[0] == len(rows))
        if ok:
            return tensors["activations"]
    except (store.CorruptEntry, OSError, KeyError):
        pass
    path.unlink(missing_ok=True)
    return None


def _barrier(world: int) -> None:
    if world <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")  # CPU-friendly; NCCL is not needed for a barrier
    dist.barrier()


def distributed_extract(model: str, data, layers="all", position: str = "auto", *, max_length: int = 512,
                        limit: int | None = None, seed: int = 0, device: str | None = None, dtype: str | None = None,
                        trust_remote_code: bool = False, loader: Loader | None = None,
                        progress: Progress | None = None, worker: WorkerInfo | None = None) -> ActivationSet | None:
    """Extract this rank's rows into shards; rank 0 commits the entry. Returns the ActivationSet
    on rank 0 (None on other ranks). With one process it is `get_activations`."""
    w = worker or worker_info()
    if device is None and w.world > 1:
        import torch

        device = f"cuda:{w.local_rank}" if torch.cuda.is_available() else "cpu"
    # a CPU's precision is measured (capture/precision.py): rank 0 measures and keeps it, the others read its
    # record, so every rank derives the same dtype and so the same key
    measure_once = w.world > 1 and dtype is None and not str(device).startswith("cuda")
    if measure_once and w.rank != 0:
        _barrier(w.world)
    plan = plan_activations(model, data, layers, position, max_length=max_length, limit=limit, seed=seed,
                            device=device, dtype=dtype)
    if measure_once and w.rank == 0:
        _barrier(w.world)
    report = progress or silent
    # every rank derives the same identity and key: it holds the dtype, never the rank's device
    missing = [L for L in plan.layers if plan.read(L) is None]
    if missing:
        rows = row_slice(len(plan.dataset), w.rank, w.world)
        need = [L for L in missing if _read_shard(plan.key, L, w.rank, w.world, plan.identity, rows) is None]
        if need and len(rows):
            report(0.0, f"Rank {w.rank}/{w.world}: loading {plan.resolved.name}")
            lm = (loader or _default_loader(trust_remote_code))(plan.resolved, plan.device, plan.dtype)
            t0 = time.perf_counter()
            result = extract_activations(lm, plan.dataset.take(rows), need, plan.position, max_length=plan.max_length,
                                         progress=lambda f, m: report(0.05 + 0.85 * f, f"rank {w.rank}: {m}"))
            created = store.now_iso()
            for L in need:
                manifest = plan.manifest(L, device=lm.device, tokens=result.n_tokens, seconds=time.perf_counter() - t0,
                                         created=created, fp32_recomputed_rows=result.fp32_recomputed_rows,
                                         row_start=int(rows[0]), row_stop=int(rows[-1]) + 1, rank=w.rank, world=w.world)
                store.write_file(shard_path(plan.key, L, w.rank, w.world), {"activations": result.activations[L]}, manifest)
        _barrier(w.world)
        if w.rank == 0:
            report(0.9, "Committing the shards")
            commit_shards(plan, missing, w.world)
        _barrier(w.world)
    if w.rank != 0:
        return None
    report(1.0, "Done")
    return plan.assemble({L: plan.read(L) for L in plan.layers})


def commit_shards(plan, layers: list[int], world: int) -> None:
    """Concatenate every rank's shard of each layer, in rank order, into the entry's layer file.

    Refuses (RepmapError) when a shard is missing or invalid: the entry is then not written, and
    a rerun recomputes what is missing."""
    n = len(plan.dataset)
    with store.entry_lock(plan.key):
        for L in layers:
            if plan.read(L) is not None:
                continue
            parts, manifests = [], []
            for rank in range(world):
                rows = row_slice(n, rank, world)
                if not len(rows):
                    continue
                part = _read_shard(plan.key, L, rank, world, plan.identity, rows)
                if part is None:
                    raise RepmapError(
                        f"The shard of layer {L} from worker {rank} of {world} is missing or damaged; run the extraction "
                        "again: finished shards are reused and only the missing ones are recomputed."
                    )
                parts.append(np.asarray(part))
                manifests.append(store.read_file(shard_path(plan.key, L, rank, world))[1])
            acts = np.concatenate(parts)  # (n, d), rows in their original order
            first = manifests[0]
            manifest = plan.manifest(L, device=first["device"], tokens=sum(m["tokens"] for m in manifests),
                                     seconds=max(m["seconds"] for m in manifests), created=store.now_iso(),
                                     fp32_recomputed_rows=sum(m["fp32_recomputed_rows"] for m in manifests),
                                     workers=world)
            plan.write(L, acts, manifest)
        shutil.rmtree(shard_dir(plan.key, world), ignore_errors=True)
